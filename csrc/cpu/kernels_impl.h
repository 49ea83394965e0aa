// Body of the CPU kernels, included by capability/*.cpp: CPU_CAPABILITY names the namespace and tells at::vec
// which instructions to use (AVX512, AVX2 or the portable DEFAULT).
//
// GCC cannot follow gemm_tile's block_sums (below) through its first tile, which writes every element before any is
// read, and printed some 190 false "may be used uninitialized" warnings per capability file, at the intrinsics
// inlined there: hence off for the whole file, before the headers that define them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma once

#include "kernels.h"

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace fused_sigmoid::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Pre-activations are held for this many outputs at a time: few enough to stay in L1 between the dot products
// and the sigmoid, enough that the sigmoid runs on full vectors even when out_features is 1.
constexpr int64_t kBlockValues = 1024;
// Rows of x that a backward block may hold, in bytes: a quarter of a core's L2.
constexpr int64_t kBlockBytes = 256 * 1024;
// Outputs from this size on are written around the cache (store_streaming).
constexpr int64_t kStreamingBytes = 16 * 1024 * 1024;

// Loops over an array of accumulators (a tile's rows and column vectors, a group's rows) are unrolled before
// anything else sees them, so that the arrays become registers: left to the heuristics, GCC kept one tile
// instantiation's accumulators on the stack and ran five times slower.
#define FUSED_SIGMOID_UNROLL _Pragma("GCC unroll 16")

// The functors below take opmath vectors only (float for the half types): at::vec::map then widens half inputs
// to float around them instead of running the arithmetic, with a rounding per step, in the half type.

// Eager PyTorch's CPU sigmoid, 1 / (1 + exp(-z)) with the same vectorised exp, so the two round alike.
template <typename T>
struct Sigmoid {
  Vectorized<T> operator()(Vectorized<T> z) const {
    return (Vectorized<T>(T(1)) + z.neg().exp()).reciprocal();
  }
};

// Eager PyTorch's sigmoid_backward: dy * (1 - y) * y.
template <typename T>
struct SigmoidGrad {
  Vectorized<T> operator()(Vectorized<T> dy, Vectorized<T> y) const {
    return dy * (Vectorized<T>(T(1)) - y) * y;
  }
};

// Forward and backward loops for fixed in_features K and out_features M: every loop unrolls and the compiler
// vectorises across rows (the stride-K loads become shuffles), which is what lets a 3 -> 2 layer run at memory
// speed. x is contiguous (rows, K).
template <int K, int M, typename T>
void dot_rows_fixed(const T* __restrict x, const T* __restrict w_in, const T* __restrict b_in, int64_t rows,
                    T* __restrict z) {
  T w[M * K];
  T b[M];
  std::copy(w_in, w_in + M * K, w);
  std::copy(b_in, b_in + M, b);
  for (int64_t r = 0; r < rows; ++r) {
    for (int m = 0; m < M; ++m) {
      T acc = T(0);
      for (int k = 0; k < K; ++k) {
        acc += x[r * K + k] * w[m * K + k];
      }
      z[r * M + m] = acc + b[m];
    }
  }
}

// dx = dz @ w for the rows (when dx is not null) and weight_sums += dz^T @ x (when weight_sums is not null).
template <int K, int M, typename T>
void backward_rows_fixed(const T* __restrict dz, const T* __restrict x, const T* __restrict w_in, int64_t rows,
                         T* __restrict dx, T* __restrict weight_sums) {
  T w[M * K];
  std::copy(w_in, w_in + M * K, w);
  if (weight_sums != nullptr) {
    // M * K independent running sums: enough of them to keep the FMA units busy without vectorising across rows.
    T acc[M * K];
    std::copy(weight_sums, weight_sums + M * K, acc);
    for (int64_t r = 0; r < rows; ++r) {
      for (int m = 0; m < M; ++m) {
        for (int k = 0; k < K; ++k) {
          acc[m * K + k] += dz[r * M + m] * x[r * K + k];
        }
      }
    }
    std::copy(acc, acc + M * K, weight_sums);
  }
  if (dx != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int k = 0; k < K; ++k) {
        T acc = T(0);
        for (int m = 0; m < M; ++m) {
          acc += dz[r * M + m] * w[m * K + k];
        }
        dx[r * K + k] = acc;
      }
    }
  }
}

template <typename T>
using FixedForward = void (*)(const T*, const T*, const T*, int64_t, T*);
template <typename T>
using FixedBackward = void (*)(const T*, const T*, const T*, int64_t, T*, T*);

template <typename T, int K>
std::pair<FixedForward<T>, FixedBackward<T>> fixed_kernels_for_m(int64_t M) {
  switch (M) {
    case 1: return {dot_rows_fixed<K, 1, T>, backward_rows_fixed<K, 1, T>};
    case 2: return {dot_rows_fixed<K, 2, T>, backward_rows_fixed<K, 2, T>};
    case 3: return {dot_rows_fixed<K, 3, T>, backward_rows_fixed<K, 3, T>};
    case 4: return {dot_rows_fixed<K, 4, T>, backward_rows_fixed<K, 4, T>};
    default: return {nullptr, nullptr};
  }
}

// The fixed-shape kernels for (K, M), or nulls when the shape has none (K > 8, M > 4, or K == 0).
template <typename T>
std::pair<FixedForward<T>, FixedBackward<T>> fixed_kernels(int64_t K, int64_t M) {
  static_assert(kMaxFixedInFeatures == 8 && kMaxFixedOutFeatures == 4, "the switches list every fixed shape");
  switch (K) {
    case 1: return fixed_kernels_for_m<T, 1>(M);
    case 2: return fixed_kernels_for_m<T, 2>(M);
    case 3: return fixed_kernels_for_m<T, 3>(M);
    case 4: return fixed_kernels_for_m<T, 4>(M);
    case 5: return fixed_kernels_for_m<T, 5>(M);
    case 6: return fixed_kernels_for_m<T, 6>(M);
    case 7: return fixed_kernels_for_m<T, 7>(M);
    case 8: return fixed_kernels_for_m<T, 8>(M);
    default: return {nullptr, nullptr};
  }
}

// The sum of a vector's lanes by a butterfly: lane i gets lane i + V/2 added, then i + V/4, and so on, the order
// that horizontal_sums keeps for four vectors at once. ATen's vec_reduce_all is this butterfly for float only where
// it was compiled by GCC (elsewhere a serial sum), and for double round-trips through memory once per lane, which
// made float64 rows four times slower than BLAS: so it is written here. Double has its butterfly in registers too:
// summed through memory, it made GCC keep dot_row_group's accumulators in memory, stored on every step of its loop.
// With this and that loop's partial vector moved out of it, float64 direct forwards went from 0.57-0.85x eager to
// 0.96-1.44x (262144 x 30 -> 1, 65536 x 100 -> 5, 65536 x 64 -> 8, one thread, medians of 15 paired runs).
template <typename T>
inline T horizontal_sum(const Vectorized<T>& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    __m512 t = v;
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, 0x4E));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, 0xB1));
    t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0x4E));
    t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0xB1));
    return _mm512_cvtss_f32(t);
  } else if constexpr (std::is_same_v<T, double>) {
    const __m512d t = v;
    const __m256d quarters = _mm256_add_pd(_mm512_castpd512_pd256(t), _mm512_extractf64x4_pd(t, 1));
    const __m128d pairs = _mm_add_pd(_mm256_castpd256_pd128(quarters), _mm256_extractf128_pd(quarters, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pairs, _mm_unpackhi_pd(pairs, pairs)));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    __m256 t = v;
    t = _mm256_add_ps(t, _mm256_permute2f128_ps(t, t, 0x1));
    t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, 0x4E));
    t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, 0xB1));
    return _mm256_cvtss_f32(t);
  } else if constexpr (std::is_same_v<T, double>) {
    const __m256d t = v;
    const __m128d pairs = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pairs, _mm_unpackhi_pd(pairs, pairs)));
  }
#endif
  constexpr int64_t V = Vectorized<T>::size();
  T lanes[V];
  v.store(lanes);
  for (int64_t width = V / 2; width > 0; width /= 2) {
    for (int64_t i = 0; i < width; ++i) {
      lanes[i] += lanes[i + width];
    }
  }
  return lanes[0];
}

// The lane sums of four float vectors at once, each added in exactly horizontal_sum's order (a butterfly that pairs
// lane i with i ^ 8, then i ^ 4, i ^ 2, i ^ 1 on AVX-512; i ^ 4, i ^ 2, i ^ 1 on AVX2), so a row sums to the same
// bits in a group of four as alone. The butterfly's first levels interleave the four vectors instead of reducing
// each one in full: about half the shuffles and additions, and 1.04-1.22x faster direct forwards at one thread
// (262144 x 16 -> 1 and 65536 x 128 -> 4 in float, 65536 x 64 -> 2 in bfloat16).
inline std::array<float, 4> horizontal_sums(const Vectorized<float> (&v)[4]) {
  std::array<float, 4> sums;
#if defined(CPU_CAPABILITY_AVX512)
  // Lanes 0-7 of ab hold a's pairs (i, i + 8), lanes 8-15 b's; the same for cd.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x44), _mm512_shuffle_f32x4(v[0], v[1], 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], 0x44), _mm512_shuffle_f32x4(v[2], v[3], 0xEE));
  // Each 128-bit block now holds one vector's pairs (i, i ^ 4): a, b, c, d in blocks 0-3.
  __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0x4E));
  t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0xB1));
  // The totals are lanes 0, 4, 8 and 12.
  _mm_storeu_ps(sums.data(), _mm512_castps512_ps128(_mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t)));
#elif defined(CPU_CAPABILITY_AVX2)
  // The low 128 bits of ab hold a's pairs (i, i + 4), the high 128 b's; the same for cd.
  const __m256 ab =
      _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20), _mm256_permute2f128_ps(v[0], v[1], 0x31));
  const __m256 cd =
      _mm256_add_ps(_mm256_permute2f128_ps(v[2], v[3], 0x20), _mm256_permute2f128_ps(v[2], v[3], 0x31));
  // Pairs (i, i ^ 2): a and c in the low 128 bits, b and d in the high.
  __m256 t = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, 0x44), _mm256_shuffle_ps(ab, cd, 0xEE));
  t = _mm256_add_ps(t, _mm256_shuffle_ps(t, t, 0xB1));
  // The totals of a, b, c and d are lanes 0, 4, 2 and 6.
  _mm_storeu_ps(sums.data(),
                _mm256_castps256_ps128(_mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0))));
#else
  for (int i = 0; i < 4; ++i) {
    sums[i] = horizontal_sum(v[i]);
  }
#endif
  return sums;
}

// z[i * M] = the lane sum of acc[i] + bias, for a group of R rows (z points at one output column of the first).
template <int R, typename T>
inline void store_row_sums(const Vectorized<T> (&acc)[R], T bias, int64_t M, T* z) {
  if constexpr (R == 4 && std::is_same_v<T, float>) {
    const std::array<float, 4> sums = horizontal_sums(acc);
    for (int i = 0; i < R; ++i) {
      z[i * M] = sums[i] + bias;
    }
  } else {
    for (int i = 0; i < R; ++i) {
      z[i * M] = horizontal_sum(acc[i]) + bias;
    }
  }
}

// Full vectors where they fit: at::vec's partial loads and stores go through memory on AVX2.
template <typename T>
inline Vectorized<T> load_columns(const T* p, int64_t count) {
  return count == Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, count);
}

// load_columns for a vector of bfloat16/float16 values (count of them at p, the rest zeros), widened to two float
// vectors: its first and second half.
template <typename scalar_t>
inline auto load_widened_columns(const scalar_t* p, int64_t count) {
  return at::vec::convert_to_float<scalar_t>(load_columns(p, count));
}

// The general forward loop: z[r, m] = x[r, :] . w[m, :] + b[m] by vector FMAs along K for R rows at once, one
// accumulator per row, with masked loads for the tail (their zero lanes cannot turn an infinity into NaN). Every
// row is summed in the same order however the rows are grouped, so a row's result does not depend on where a
// thread's range of rows began.
template <int R, typename T>
inline void dot_row_group(const T* x, int64_t ldx, const T* w, const T* b, int64_t K, int64_t M, T* z) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  for (int64_t m = 0; m < M; ++m) {
    Vec acc[R];
    FUSED_SIGMOID_UNROLL
    for (int i = 0; i < R; ++i) {
      acc[i] = Vec(T(0));
    }
    // Whole vectors, then the partial one: with its branch inside the loop (and horizontal_sum's butterfly in
    // registers) those float64 forwards ran 0.87-1.13x eager against 0.96-1.23x.
    int64_t k = 0;
    for (; k + V <= K; k += V) {
      const Vec wk = Vec::loadu(w + m * K + k);
      FUSED_SIGMOID_UNROLL
      for (int i = 0; i < R; ++i) {
        acc[i] = at::vec::fmadd(Vec::loadu(x + i * ldx + k), wk, acc[i]);
      }
    }
    if (k < K) {
      const int64_t count = K - k;
      const Vec wk = Vec::loadu(w + m * K + k, count);
      FUSED_SIGMOID_UNROLL
      for (int i = 0; i < R; ++i) {
        acc[i] = at::vec::fmadd(Vec::loadu(x + i * ldx + k, count), wk, acc[i]);
      }
    }
    store_row_sums<R>(acc, b[m], M, z + m);
  }
}

// dot_row_group for bfloat16/float16 rows, read in place: each vector of them becomes two float vectors in
// registers (the first and second half of its values), multiplied into the row's float accumulator in that order,
// so no float copy of the rows is written and read back. w, b and z are float. Kept apart from dot_row_group: one
// loop for both, loading an array of one or two opmath vectors per step, gave the same bits but ran the float32
// forward 1.3-1.4x slower (262144 x 30 -> 1, 65536 x 30 -> 8, one thread).
template <int R, typename scalar_t>
inline void dot_half_row_group(const scalar_t* x, int64_t ldx, const float* w, const float* b, int64_t K, int64_t M,
                               float* z) {
  using Vec = Vectorized<float>;
  constexpr int64_t V = Vec::size();
  for (int64_t m = 0; m < M; ++m) {
    Vec acc[R];
    for (int i = 0; i < R; ++i) {
      acc[i] = Vec(0.0f);
    }
    for (int64_t k = 0; k < K; k += 2 * V) {
      const int64_t count = std::min<int64_t>(2 * V, K - k);
      const Vec w_low = load_columns(w + m * K + k, std::min(V, count));
      const Vec w_high = count > V ? load_columns(w + m * K + k + V, count - V) : Vec(0.0f);
      for (int i = 0; i < R; ++i) {
        const auto [low, high] = load_widened_columns(x + i * ldx + k, count);
        acc[i] = at::vec::fmadd(high, w_high, at::vec::fmadd(low, w_low, acc[i]));
      }
    }
    store_row_sums<R>(acc, b[m], M, z + m);
  }
}

// Rows four at a time (four independent FMA chains hide the latency), the rest one at a time by the same loop. x
// is read in place, in its own type; w, b and z are in its opmath type.
template <typename scalar_t, typename T>
void dot_rows_vectorized(const scalar_t* x, int64_t ldx, const T* w, const T* b, int64_t rows, int64_t K, int64_t M,
                         T* z) {
  const auto group = [&](auto group_rows, int64_t r) {
    constexpr int R = decltype(group_rows)::value;
    if constexpr (std::is_same_v<scalar_t, T>) {
      dot_row_group<R>(x + r * ldx, ldx, w, b, K, M, z + r * M);
    } else {
      dot_half_row_group<R>(x + r * ldx, ldx, w, b, K, M, z + r * M);
    }
  };
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    group(std::integral_constant<int, 4>(), r);
  }
  for (; r < rows; ++r) {
    group(std::integral_constant<int, 1>(), r);
  }
}

// Stores v at p (a whole vector) without first reading p's cache line (a non-temporal store) when p is aligned for
// it; an ordinary store otherwise. For outputs far larger than the cache that nothing reads soon: a normal store
// reads each line from memory before writing it, a third more traffic. stream_fence() must follow before another
// thread may read what was stored.
template <typename T>
inline void store_streaming(const Vectorized<T>& v, T* p) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  constexpr uintptr_t alignment = sizeof(Vectorized<T>);
  if (reinterpret_cast<uintptr_t>(p) % alignment == 0) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      _mm512_stream_ps(p, v);
    } else {
      _mm512_stream_pd(p, v);
    }
#else
    if constexpr (std::is_same_v<T, float>) {
      _mm256_stream_ps(p, v);
    } else {
      _mm256_stream_pd(p, v);
    }
#endif
    return;
  }
#endif
  v.store(p);
}

inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// weight_sums[0, :] += sum_r dz[r] x[r, :] for one output and rows of NV = ceil(K / V) vectors, the last one partial
// where V does not divide K: row after row, each of a row's vectors into sums of its own (two rows in turn, so at
// least four FMA chains), so the block of x is read once, in order. The loop below by stretches of K sweeps the
// block once per vector of a row instead: at 262144 x 30 -> 1 float (one thread, AVX2, fastest of 40 calls) the
// backward ran 0.82-0.92x eager with it and 0.96-1.09x with this one; 20 and 44 inputs gained about a tenth. With
// more outputs this order was slower (30 -> 6: 1.5-1.9x the time). Not inlined, so that its instances leave the
// code of the loops below (all inlined into one kernel) as it was.
template <int64_t NV, typename T>
C10_NOINLINE void add_one_output_weight_sums(const T* dz, const T* x, int64_t ldx, int64_t rows, int64_t K,
                                             T* weight_sums) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec sums[2][NV];
  for (int i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < NV; ++j) {
      sums[i][j] = Vec(T(0));
    }
  }
  const auto add_row = [&](int64_t r, int i) {
    const Vec g(dz[r]);
    for (int64_t j = 0; j < NV; ++j) {
      sums[i][j] = at::vec::fmadd(g, Vec::loadu(x + r * ldx + j * V, std::min<int64_t>(V, K - j * V)), sums[i][j]);
    }
  };
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    add_row(r, 0);
    add_row(r + 1, 1);
  }
  for (; r < rows; ++r) {
    add_row(r, 0);
  }
  for (int64_t j = 0; j < NV; ++j) {
    const int64_t count = std::min<int64_t>(V, K - j * V);
    T* out = weight_sums + j * V;
    (Vec::loadu(out, count) + (sums[0][j] + sums[1][j])).store(out, count);
  }
}

// Rows of one vector keep the loop below (four rows in turn): this one would run two FMA chains.
constexpr int64_t kMinOneOutputRowVectors = 2;
constexpr int64_t kMaxOneOutputRowVectors = 6;

// f(integral_constant<vectors>) for vectors from kMinOneOutputRowVectors to kMaxOneOutputRowVectors.
template <typename F>
void with_row_vectors(int64_t vectors, const F& f) {
  switch (vectors) {
    case 2: return f(std::integral_constant<int64_t, 2>());
    case 3: return f(std::integral_constant<int64_t, 3>());
    case 4: return f(std::integral_constant<int64_t, 4>());
    case 5: return f(std::integral_constant<int64_t, 5>());
    default: return f(std::integral_constant<int64_t, kMaxOneOutputRowVectors>());
  }
}

// The general backward loops, vectorised along K. Except for one output's short rows (add_one_output_weight_sums),
// weight_sums[m, k:k+V] += sum_r dz[r, m] x[r, k:k+V] runs over the block's rows with the sums in four registers
// (rows in turn, to hide the FMA latency) rather than in memory, which would chain every row's update through a
// store and a reload. Then dx[r, :] = sum_m dz[r, m] w[m, :], row by row. Reading the block of x before writing
// its dx matters: x and dx are both large, hence page-aligned, allocations, and loads that follow stores at the
// same address modulo 4 KiB stall (4K aliasing), which made the interleaved order twice as slow.
template <typename T>
void backward_rows_vectorized(const T* dz, const T* x, int64_t ldx, const T* w, int64_t rows, int64_t K,
                              int64_t M, T* dx, T* weight_sums, bool stream_dx) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t row_vectors = (K + V - 1) / V;
  if (weight_sums != nullptr && M == 1 && row_vectors >= kMinOneOutputRowVectors &&
      row_vectors <= kMaxOneOutputRowVectors) {
    with_row_vectors(row_vectors, [&](auto vectors) {
      add_one_output_weight_sums<decltype(vectors)::value>(dz, x, ldx, rows, K, weight_sums);
    });
  } else if (weight_sums != nullptr) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; k += V) {
        const int64_t count = std::min<int64_t>(V, K - k);
        Vec acc[4] = {Vec(T(0)), Vec(T(0)), Vec(T(0)), Vec(T(0))};
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) {
          for (int i = 0; i < 4; ++i) {
            acc[i] = at::vec::fmadd(Vec(dz[(r + i) * M + m]), Vec::loadu(x + (r + i) * ldx + k, count), acc[i]);
          }
        }
        for (; r < rows; ++r) {
          acc[0] = at::vec::fmadd(Vec(dz[r * M + m]), Vec::loadu(x + r * ldx + k, count), acc[0]);
        }
        T* sums = weight_sums + m * K + k;
        (Vec::loadu(sums, count) + ((acc[0] + acc[1]) + (acc[2] + acc[3]))).store(sums, count);
      }
    }
  }
  if (dx != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = dz + r * M;
      for (int64_t k = 0; k < K; k += V) {
        const int64_t count = std::min<int64_t>(V, K - k);
        Vec acc(T(0));
        for (int64_t m = 0; m < M; ++m) {
          acc = at::vec::fmadd(Vec(g[m]), Vec::loadu(w + m * K + k, count), acc);
        }
        if (stream_dx && count == V) {
          store_streaming(acc, dx + r * K + k);
        } else {
          acc.store(dx + r * K + k, count);
        }
      }
    }
  }
}

// weight_sums[m0 + j, :] += sum_r dz[r, m0 + j] x[r, :] for the G outputs from m0, each vector of half values of x
// widened once for all G of them. One output takes two rows in turn, so that four FMA chains hide the latency; two
// to four outputs have that many chains already.
template <int G, typename scalar_t>
void add_half_weight_sums(const float* dz, const scalar_t* x, int64_t ldx, int64_t rows, int64_t K, int64_t M,
                          int64_t m0, float* weight_sums) {
  using Vec = Vectorized<float>;
  constexpr int64_t V = Vec::size();
  constexpr int kRowsInTurn = G == 1 ? 2 : 1;
  for (int64_t k = 0; k < K; k += 2 * V) {
    const int64_t count = std::min<int64_t>(2 * V, K - k);
    Vec low[kRowsInTurn][G];
    Vec high[kRowsInTurn][G];
    for (int i = 0; i < kRowsInTurn; ++i) {
      for (int j = 0; j < G; ++j) {
        low[i][j] = Vec(0.0f);
        high[i][j] = Vec(0.0f);
      }
    }
    const auto add_row = [&](int64_t r, int i) {
      const auto [lo, hi] = load_widened_columns(x + r * ldx + k, count);
      for (int j = 0; j < G; ++j) {
        const Vec g(dz[r * M + m0 + j]);
        low[i][j] = at::vec::fmadd(g, lo, low[i][j]);
        high[i][j] = at::vec::fmadd(g, hi, high[i][j]);
      }
    };
    int64_t r = 0;
    for (; r + kRowsInTurn <= rows; r += kRowsInTurn) {
      for (int i = 0; i < kRowsInTurn; ++i) {
        add_row(r + i, i);
      }
    }
    for (; r < rows; ++r) {
      add_row(r, 0);
    }
    const int64_t low_count = std::min(V, count);
    for (int j = 0; j < G; ++j) {
      Vec low_sum = low[0][j];
      Vec high_sum = high[0][j];
      if constexpr (kRowsInTurn == 2) {
        low_sum = low_sum + low[1][j];
        high_sum = high_sum + high[1][j];
      }
      float* sums = weight_sums + (m0 + j) * K + k;
      (load_columns(sums, low_count) + low_sum).store(sums, low_count);
      if (count > V) {
        (load_columns(sums + V, count - V) + high_sum).store(sums + V, count - V);
      }
    }
  }
}

// backward_rows_vectorized for bfloat16/float16 rows, read and written in place as dot_half_row_group reads them:
// each vector of x becomes two float vectors in registers, and each row of dx is formed in float and rounded once.
// dz, w and weight_sums are float. It replaced a float copy of each block of rows for the float loops, which cost
// more than the arithmetic (with 4096 features a block was a single row): float16 training steps ran 1.1-1.7x
// faster without it, 8192 x 4096 -> 1 in 17 ms instead of 28.
template <typename scalar_t>
void backward_half_rows_vectorized(const float* dz, const scalar_t* x, int64_t ldx, const float* w, int64_t rows,
                                   int64_t K, int64_t M, scalar_t* dx, float* weight_sums) {
  using Vec = Vectorized<float>;
  using HalfVec = Vectorized<scalar_t>;
  constexpr int64_t V = Vec::size();
  static_assert(HalfVec::size() == 2 * V, "a vector of half values widens to two float vectors");
  if (weight_sums != nullptr) {
    // Up to four outputs per pass over the block's rows: eight float sums and a widened vector of x still fit in
    // AVX2's sixteen registers.
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: add_half_weight_sums<1>(dz, x, ldx, rows, K, M, m0, weight_sums); break;
        case 2: add_half_weight_sums<2>(dz, x, ldx, rows, K, M, m0, weight_sums); break;
        case 3: add_half_weight_sums<3>(dz, x, ldx, rows, K, M, m0, weight_sums); break;
        default: add_half_weight_sums<4>(dz, x, ldx, rows, K, M, m0, weight_sums); break;
      }
    }
  }
  if (dx != nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = dz + r * M;
      for (int64_t k = 0; k < K; k += 2 * V) {
        const int64_t count = std::min<int64_t>(2 * V, K - k);
        const int64_t low_count = std::min(V, count);
        Vec lo(0.0f);
        Vec hi(0.0f);
        for (int64_t m = 0; m < M; ++m) {
          lo = at::vec::fmadd(Vec(g[m]), load_columns(w + m * K + k, low_count), lo);
          if (count > V) {
            hi = at::vec::fmadd(Vec(g[m]), load_columns(w + m * K + k + V, count - V), hi);
          }
        }
        const HalfVec rounded = at::vec::convert_from_float<scalar_t>(lo, hi);
        if (count == 2 * V) {
          rounded.store(dx + r * K + k);
        } else {
          rounded.store(dx + r * K + k, count);
        }
      }
    }
  }
}

// dst[i] = src[i] in opmath: vector conversions for the half types, a copy otherwise.
template <typename scalar_t, typename T>
void widen(const scalar_t* src, int64_t n, T* dst) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    std::copy(src, src + n, dst);
  } else {
    using bVec = Vectorized<scalar_t>;
    constexpr int64_t F = Vectorized<float>::size();
    int64_t i = 0;
    for (; i + bVec::size() <= n; i += bVec::size()) {
      auto [low, high] = at::vec::convert_to_float<scalar_t>(bVec::loadu(src + i));
      low.store(dst + i);
      high.store(dst + i + F);
    }
    for (; i < n; ++i) {
      dst[i] = static_cast<T>(src[i]);
    }
  }
}

// Rows [0, rows) of x in opmath as a contiguous (rows, K) block.
template <typename scalar_t, typename T>
void widen_rows(const scalar_t* x, int64_t ldx, int64_t rows, int64_t K, T* block) {
  if (ldx == K) {
    widen(x, rows * K, block);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    widen(x + r * ldx, K, block + r * K);
  }
}

template <typename scalar_t>
void linear_sigmoid_rows_typed(
    const scalar_t* x,
    int64_t ldx,
    const scalar_t* weight,
    const scalar_t* bias,
    int64_t rows,
    int64_t K,
    int64_t M,
    scalar_t* y) {
  using T = at::opmath_type<scalar_t>;
  // Weight and bias in opmath once per call, so the inner loops never convert them.
  const std::vector<T> w(weight, weight + M * K);
  std::vector<T> b(M, T(0));
  if (bias != nullptr) {
    std::copy(bias, bias + M, b.begin());
  }
  const FixedForward<T> fixed = fixed_kernels<T>(K, M).first;
  // The fixed kernels take contiguous opmath rows: half types and strided rows go through a copy of each block.
  // The vectorised loop reads the rows in place.
  const bool needs_opmath_copy = fixed != nullptr && (!std::is_same_v<T, scalar_t> || ldx != K);
  const int64_t block_rows = std::max<int64_t>(1, kBlockValues / std::max<int64_t>({M, needs_opmath_copy ? K : 1, 1}));
  std::vector<T> z(block_rows * M);
  std::vector<T> x_block(needs_opmath_copy ? block_rows * K : 0);
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    if (fixed == nullptr) {
      dot_rows_vectorized(x + r0 * ldx, ldx, w.data(), b.data(), n, K, M, z.data());
    } else if (needs_opmath_copy) {
      widen_rows(x + r0 * ldx, ldx, n, K, x_block.data());
      fixed(x_block.data(), w.data(), b.data(), n, z.data());
    } else {
      // Only reached when scalar_t is T.
      fixed(reinterpret_cast<const T*>(x + r0 * ldx), w.data(), b.data(), n, z.data());
    }
    at::vec::map(Sigmoid<T>(), y + r0 * M, z.data(), n * M);
  }
}

// Rows of one register tile of the tiled kernel, two vectors wide. The tile needs at least 8 independent
// accumulators (two FMA units, four cycles of latency) and must leave registers for the two weight vectors and
// the broadcast input. With 32 vector registers (AVX-512, on a Zen 4) 6 rows ran fastest (8 rows 3% slower, 4 and 12
// rows up to 25% and 45% slower). With AVX2's 16, 6 rows too (12 accumulators, 2 weight vectors, the broadcast: 15
// registers): on a Zen 4 they ran even with 4 rows (and 15-28% faster than 3), and on a Zen 3 faster than 4, one
// thread, paired with eager: 16384 x 256 -> 256 float32 forward 0.93-1.03x eager against 0.83-0.94x, training step
// 0.97-0.98x against 0.77-0.84x; 16384 x 128 -> 256 1.01-1.02x against 0.93x, 1.13-1.16x against 0.89-0.93x. Short
// rows lost some of their forward lead there (65536 x 64 -> 64 about 10% slower, 1.1-1.2x eager against 1.2-1.3x;
// 30001 x 100 -> 20 1.0-1.1x against 1.1-1.3x).
// The portable build keeps 3: its vectors are pairs of SSE registers, and 3 rows already fill the 16 of them.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 3;
#endif
constexpr int kTileVectors = 2;
constexpr int64_t kTileDepth = 32;

// One register tile of C = A @ B: R rows by NV vectors of columns, over the full depth K. A(r, k) is
// a[r * a_row + k * a_depth], so A may be a transposed view (the weight gradient's dz^T); B(k, c) is
// b[k * ldb + c], and every row of B must hold NV whole vectors from b (zero-padded columns where the matrix is
// narrower). Each finished vector of sums goes to epilogue(r, j, sums) for row r and column vector j, which applies
// the bias and sigmoid, or stores, or adds, and is told nothing about padding: it checks its own column count.
template <int R, int NV, typename T, typename Epilogue>
inline void gemm_tile(const T* a, int64_t a_row, int64_t a_depth, const T* b, int64_t ldb, int64_t K,
                      const Epilogue& epilogue) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  // Products are summed in blocks of kTileDepth along K, in registers, and the block sums added up in an L1
  // buffer: one chain of K additions per output would lose more precision than BLAS does (about 3x eager's error
  // at K = 257). The buffer is plain memory on purpose: a second array of vectors made GCC keep the
  // accumulators themselves on the stack.
  alignas(64) T block_sums[R * NV * V];
  if (K == 0) {
    std::fill(block_sums, block_sums + R * NV * V, T(0));
  }
  for (int64_t k0 = 0; k0 < K; k0 += kTileDepth) {
    const int64_t k1 = std::min(K, k0 + kTileDepth);
    // The accumulators start as the first product rather than as zeros: GCC turns a loop of zero stores into a
    // memset, and an array that a memset has touched is no longer kept in registers.
    Vec acc[R][NV];
    {
      Vec bk[NV];
      FUSED_SIGMOID_UNROLL
      for (int j = 0; j < NV; ++j) {
        bk[j] = Vec::loadu(b + k0 * ldb + j * V);
      }
      FUSED_SIGMOID_UNROLL
      for (int r = 0; r < R; ++r) {
        const Vec ab(a[r * a_row + k0 * a_depth]);
        FUSED_SIGMOID_UNROLL
        for (int j = 0; j < NV; ++j) {
          acc[r][j] = ab * bk[j];
        }
      }
    }
    for (int64_t k = k0 + 1; k < k1; ++k) {
      Vec bk[NV];
      FUSED_SIGMOID_UNROLL
      for (int j = 0; j < NV; ++j) {
        bk[j] = Vec::loadu(b + k * ldb + j * V);
      }
      FUSED_SIGMOID_UNROLL
      for (int r = 0; r < R; ++r) {
        const Vec ab(a[r * a_row + k * a_depth]);
        FUSED_SIGMOID_UNROLL
        for (int j = 0; j < NV; ++j) {
          acc[r][j] = at::vec::fmadd(ab, bk[j], acc[r][j]);
        }
      }
    }
    FUSED_SIGMOID_UNROLL
    for (int r = 0; r < R; ++r) {
      FUSED_SIGMOID_UNROLL
      for (int j = 0; j < NV; ++j) {
        T* sums = block_sums + (r * NV + j) * V;
        (k0 == 0 ? acc[r][j] : Vec::loadu(sums) + acc[r][j]).store(sums);
      }
    }
  }
  FUSED_SIGMOID_UNROLL
  for (int j = 0; j < NV; ++j) {
    FUSED_SIGMOID_UNROLL
    for (int r = 0; r < R; ++r) {
      epilogue(r, j, Vec::loadu(block_sums + (r * NV + j) * V));
    }
  }
}

// Calls tile(std::integral_constant<int, R>(), r0) for rows [0, rows) in tiles of TileRows rows, then one
// narrower tile for the rest, so that no row runs in a one-row tile (which reloads B for every row).
template <int R, typename Tile>
inline void last_row_tile(int64_t remaining, int64_t r0, const Tile& tile) {
  if constexpr (R > 0) {
    if (remaining == R) {
      tile(std::integral_constant<int, R>(), r0);
      return;
    }
    last_row_tile<R - 1>(remaining, r0, tile);
  }
}

template <int TileRows = kTileRows, typename Tile>
inline void over_row_tiles(int64_t rows, const Tile& tile) {
  int64_t r0 = 0;
  for (; r0 + TileRows <= rows; r0 += TileRows) {
    tile(std::integral_constant<int, TileRows>(), r0);
  }
  last_row_tile<TileRows - 1>(rows - r0, r0, tile);
}

template <typename T>
inline int64_t columns_in_vector(int64_t columns, int64_t c0, int j) {
  return std::min<int64_t>(Vectorized<T>::size(), columns - c0 - j * Vectorized<T>::size());
}

constexpr int64_t padded_columns(int64_t columns, int64_t tile_cols) {
  return (columns + tile_cols - 1) / tile_cols * tile_cols;
}

// Asks for the first K values of rows [0, rows) of x (row stride ldx) to be brought into cache, line by line.
template <typename T>
inline void prefetch_rows(const T* x, int64_t ldx, int64_t rows, int64_t K) {
  constexpr uintptr_t kCacheLine = 64;
  for (int64_t r = 0; r < rows; ++r) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(x + r * ldx) / kCacheLine * kCacheLine;
    const uintptr_t end = reinterpret_cast<uintptr_t>(x + r * ldx + K);
    for (uintptr_t line = begin; line < end; line += kCacheLine) {
      __builtin_prefetch(reinterpret_cast<const void*>(line));
    }
  }
}

// Copies the rows x columns matrix src (row stride ld) into panels of TileCols columns: panel p holds columns
// [p * TileCols, (p + 1) * TileCols) of every row, one row after another, zero-padded past the last column; panels
// must hold rows * padded_columns(columns, TileCols) values. A tile then reads its B as one contiguous stream
// instead of one cache line every ld values. On this Zen 3 (one thread, medians of 15 runs paired with eager, two
// runs each) 16384 x 256 -> 256 float32 ran its forward at 1.01-1.08x eager against 0.81-1.09x and a training step
// at 1.06-1.10x against 0.89-0.96x; 65536 x 512 -> 9 a step at 2.16-2.40x against 1.66-1.76x, 4096 x 128 -> 500
// 1.19x against 1.03-1.10x. The copies have a fixed length, so they compile to a few vector moves: a memmove call
// for each 64-byte piece took an eighth as long as the rest of the weight gradient.
template <int64_t TileCols, typename T>
void pack_panels(const T* src, int64_t ld, int64_t rows, int64_t columns, T* panels) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < columns; c0 += TileCols) {
      const T* from = src + r * ld + c0;
      T* to = panels + c0 * rows + r * TileCols;
      const int64_t width = std::min(TileCols, columns - c0);
      if (width == TileCols) {
        for (int64_t c = 0; c < TileCols; ++c) {
          to[c] = from[c];
        }
      } else {
        for (int64_t c = 0; c < TileCols; ++c) {
          to[c] = c < width ? from[c] : T(0);
        }
      }
    }
  }
}

// y = sigmoid(x @ wt + bias) by register tiles of NV vectors of columns; wt_panels is the weight transposed to
// (K, M) and packed in panels of NV vectors (pack_panels' layout), bias padded to whole tiles.
template <int NV, typename T>
void sigmoid_tiles(const T* x, int64_t ldx, const T* wt_panels, const T* bias, int64_t rows, int64_t K,
                   int64_t M, T* y) {
  using Vec = Vectorized<T>;
  constexpr int64_t tile_cols = NV * Vec::size();
  // A one-vector tile is taller (8 accumulators still hide the FMA latency; 12 ran slower).
  // A layer one tile wide (every one-vector layer, and two-vector layers up to 16 float outputs on AVX2) asks for the
  // next tile's rows while it works: it spends little time on each row, and the hardware prefetcher, seeing one word
  // from each of 8 rows in turn, left the one-vector tile waiting on memory at half the speed; 30001 x 100 -> 10
  // float32 on a Zen 3 ran 1.2-1.4x eager in 6-row two-vector tiles without it, 1.6x with it (one thread). Where a
  // row of tiles spans several column tiles, its rows of x are read long enough for the hardware prefetcher: there
  // the two-vector tile ran 3% slower with the prefetch (Zen 4).
  constexpr int tile_height = NV == 1 ? 8 : kTileRows;
  const bool one_tile_wide = M <= tile_cols;
  over_row_tiles<tile_height>(rows, [&](auto tile_rows, int64_t r0) {
    constexpr int R = decltype(tile_rows)::value;
    if (one_tile_wide && r0 + R < rows) {
      prefetch_rows(x + (r0 + R) * ldx, ldx, std::min<int64_t>(R, rows - r0 - R), K);
    }
    // Each row tile sweeps every column tile while its rows of x stay in L1.
    for (int64_t c0 = 0; c0 < M; c0 += tile_cols) {
      T* y_tile = y + r0 * M + c0;
      gemm_tile<R, NV>(
          x + r0 * ldx, ldx, 1, wt_panels + c0 * K, tile_cols, K, [&](int r, int j, Vec sums) {
            const int64_t count = columns_in_vector<T>(M, c0, j);
            if (count > 0) {
              const Vec b = Vec::loadu(bias + c0 + j * Vec::size());
              Sigmoid<T>()(sums + b).store(y_tile + r * M + j * Vec::size(), count);
            }
          });
    }
  });
}

// The forward of the tiled kernel's shapes. Up to one vector of outputs (out_features 9..16 in float on AVX-512) the
// tiles are one vector wide: two vectors would leave more than half of every tile's columns padding.
template <typename T>
void linear_sigmoid_tiled_rows_typed(const T* x, int64_t ldx, const T* weight, const T* bias, int64_t rows,
                                     int64_t K, int64_t M, T* y) {
  constexpr int64_t V = Vectorized<T>::size();
  const bool narrow = M <= V;
  const int64_t tile_cols = (narrow ? 1 : kTileVectors) * V;
  const int64_t ldw = padded_columns(M, tile_cols);
  // The weight transposed, in panels one tile wide; at least one row, so that wt.data() is a real pointer to
  // offset even when K is 0.
  std::vector<T> wt(std::max<int64_t>(K, 1) * ldw, T(0));
  for (int64_t m = 0; m < M; ++m) {
    T* panel = wt.data() + (m / tile_cols) * tile_cols * K + m % tile_cols;
    for (int64_t k = 0; k < K; ++k) {
      panel[k * tile_cols] = weight[m * K + k];
    }
  }
  std::vector<T> b(ldw, T(0));
  if (bias != nullptr) {
    std::copy(bias, bias + M, b.begin());
  }
  if (narrow) {
    sigmoid_tiles<1>(x, ldx, wt.data(), b.data(), rows, K, M, y);
  } else {
    sigmoid_tiles<kTileVectors>(x, ldx, wt.data(), b.data(), rows, K, M, y);
  }
}

template <typename T>
struct ScalarTypeTag {
  using type = T;
};

// AT_DISPATCH's switch without its error branch, which would build c10's error code into this capability file (see
// kernel_dtype_not_implemented): f(ScalarTypeTag<scalar type>{}) for float and double, and with kHalfTypes for
// bfloat16 and float16 too.
template <bool kHalfTypes, typename F>
void dispatch_floating_types(c10::ScalarType dtype, const char* kernel, const F& f) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return f(ScalarTypeTag<float>{});
    case c10::ScalarType::Double:
      return f(ScalarTypeTag<double>{});
    case c10::ScalarType::BFloat16:
      if constexpr (kHalfTypes) {
        return f(ScalarTypeTag<c10::BFloat16>{});
      }
      break;
    case c10::ScalarType::Half:
      if constexpr (kHalfTypes) {
        return f(ScalarTypeTag<c10::Half>{});
      }
      break;
    default:
      break;
  }
  kernel_dtype_not_implemented(kernel, dtype);
}

void linear_sigmoid_tiled_rows(
    c10::ScalarType dtype,
    const void* x,
    int64_t ldx,
    const void* w,
    const void* bias,
    int64_t rows,
    int64_t K,
    int64_t M,
    void* y) {
  dispatch_floating_types<false>(dtype, "linear_sigmoid_tiled_rows", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    linear_sigmoid_tiled_rows_typed(
        static_cast<const scalar_t*>(x),
        ldx,
        static_cast<const scalar_t*>(w),
        static_cast<const scalar_t*>(bias),
        rows,
        K,
        M,
        static_cast<scalar_t*>(y));
  });
}

void linear_sigmoid_rows(
    c10::ScalarType dtype,
    const void* x,
    int64_t ldx,
    const void* w,
    const void* bias,
    int64_t rows,
    int64_t K,
    int64_t M,
    void* y) {
  dispatch_floating_types<true>(dtype, "linear_sigmoid_rows", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    linear_sigmoid_rows_typed(
        static_cast<const scalar_t*>(x),
        ldx,
        static_cast<const scalar_t*>(w),
        static_cast<const scalar_t*>(bias),
        rows,
        K,
        M,
        static_cast<scalar_t*>(y));
  });
}

void sigmoid_inplace(c10::ScalarType dtype, void* y, int64_t n) {
  dispatch_floating_types<true>(dtype, "sigmoid_inplace", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    auto* data = static_cast<scalar_t*>(y);
    at::vec::map(Sigmoid<at::opmath_type<scalar_t>>(), data, data, n);
  });
}

// column_sums[m] += sum_r dz[r, m] for a contiguous (rows, M) block, in double. Every float is exact in double and
// a double sum of a few million of them keeps far more bits than a float result can show, so the bias gradient is
// rounded once, at the end: summed in float, even in groups, a one-output layer's bias gradient (whose terms
// mostly cancel) came out up to eight times eager's cascaded float error.
// For few outputs, rows go eight at a time into 8 * M independent sums (vector converts and adds), then fold.
template <int M, typename T>
void add_column_sums_few(const T* dz, int64_t rows, double* column_sums) {
  constexpr int64_t kRowsPerStep = 8;
  double sums[kRowsPerStep * M] = {};
  int64_t r = 0;
  for (; r + kRowsPerStep <= rows; r += kRowsPerStep) {
    const T* step = dz + r * M;
    for (int64_t i = 0; i < kRowsPerStep * M; ++i) {
      sums[i] += static_cast<double>(step[i]);
    }
  }
  for (; r < rows; ++r) {
    for (int64_t m = 0; m < M; ++m) {
      sums[m] += static_cast<double>(dz[r * M + m]);
    }
  }
  for (int64_t i = 0; i < kRowsPerStep * M; ++i) {
    column_sums[i % M] += sums[i];
  }
}

template <typename T>
void add_column_sums(const T* dz, int64_t rows, int64_t M, double* column_sums) {
  switch (M) {
    case 1: return add_column_sums_few<1>(dz, rows, column_sums);
    case 2: return add_column_sums_few<2>(dz, rows, column_sums);
    case 3: return add_column_sums_few<3>(dz, rows, column_sums);
    case 4: return add_column_sums_few<4>(dz, rows, column_sums);
    case 5: return add_column_sums_few<5>(dz, rows, column_sums);
    case 6: return add_column_sums_few<6>(dz, rows, column_sums);
    case 7: return add_column_sums_few<7>(dz, rows, column_sums);
    case 8: return add_column_sums_few<8>(dz, rows, column_sums);
    default:
      // Many outputs: a row at a time, the compiler vectorising along the row.
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t m = 0; m < M; ++m) {
          column_sums[m] += static_cast<double>(dz[r * M + m]);
        }
      }
  }
}

// dz = dy * (1 - y) * y in opmath into dz_opmath and, for the half types when dz_rounded is not null, rounded to
// scalar_t there too. (When scalar_t is its own opmath type there is nothing to round.) For the half types
// dz_opmath may be null when only the rounded dz is wanted. Always inlined: called for one vector at a time, the
// loop and its tail fold away.
template <typename scalar_t>
C10_ALWAYS_INLINE void sigmoid_grad(const scalar_t* dy, const scalar_t* y, int64_t n,
                                    at::opmath_type<scalar_t>* dz_opmath, scalar_t* dz_rounded) {
  if constexpr (std::is_same_v<at::opmath_type<scalar_t>, scalar_t>) {
    at::vec::map2(SigmoidGrad<scalar_t>(), dz_opmath, dy, y, n);
  } else {
    using bVec = Vectorized<scalar_t>;
    using fVec = Vectorized<float>;
    for (int64_t i = 0; i < n; i += bVec::size()) {
      const int64_t count = std::min<int64_t>(bVec::size(), n - i);
      auto [dy0, dy1] = at::vec::convert_to_float<scalar_t>(bVec::loadu(dy + i, count));
      auto [y0, y1] = at::vec::convert_to_float<scalar_t>(bVec::loadu(y + i, count));
      const fVec g0 = SigmoidGrad<float>()(dy0, y0);
      const fVec g1 = SigmoidGrad<float>()(dy1, y1);
      if (dz_rounded != nullptr) {
        at::vec::convert_from_float<scalar_t>(g0, g1).store(dz_rounded + i, count);
      }
      if (dz_opmath != nullptr) {
        g0.store(dz_opmath + i, std::min<int64_t>(count, fVec::size()));
        if (count > fVec::size()) {
          g1.store(dz_opmath + i + fVec::size(), count - fVec::size());
        }
      }
    }
  }
}

// dz = dy * (1 - y) * y into dz, returning where its opmath values are: dz itself for float and double; for the half
// types dz_opmath (n values, or nothing when it is null), which the rounded dz was made from.
template <typename scalar_t>
C10_ALWAYS_INLINE const at::opmath_type<scalar_t>* store_sigmoid_grad(
    const scalar_t* dy,
    const scalar_t* y,
    int64_t n,
    scalar_t* dz,
    at::opmath_type<scalar_t>* dz_opmath) {
  if constexpr (std::is_same_v<at::opmath_type<scalar_t>, scalar_t>) {
    sigmoid_grad<scalar_t>(dy, y, n, dz, nullptr);
    return dz;
  } else {
    sigmoid_grad<scalar_t>(dy, y, n, dz_opmath, dz);
    return dz_opmath;
  }
}

// dz and its column sums for blocks at least a vector wide, row by row, a vector at a time: the opmath dz goes from
// registers straight into the sums (in L1), never through a buffer of the block. (A buffer of the block's float dz,
// summed after, made this pass 1.5x eager's sigmoid_backward plus sum at bfloat16 16384 x 256 -> 256; strips of
// one vector of columns down the block, with their sums in registers, ran 2x eager's at 4096 x 1024 -> 1024, where
// the block's rows are 16 streams from memory at once.)
template <typename scalar_t>
void sigmoid_grad_and_column_sums_by_rows(
    const scalar_t* dy,
    const scalar_t* y,
    int64_t rows,
    int64_t M,
    scalar_t* dz,
    double* column_sums) {
  using T = at::opmath_type<scalar_t>;
  constexpr int64_t kVector = Vectorized<scalar_t>::size();
  alignas(64) T grad[kVector];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = r * M;
    int64_t c = 0;
    // Whole vectors apart from the row's tail: their count is the constant kVector, so sigmoid_grad's loop folds.
    for (; c + kVector <= M; c += kVector) {
      const T* g = store_sigmoid_grad(dy + row + c, y + row + c, kVector, dz + row + c, grad);
      for (int64_t i = 0; i < kVector; ++i) {
        column_sums[c + i] += static_cast<double>(g[i]);
      }
    }
    if (c < M) {
      const T* tail = store_sigmoid_grad(dy + row + c, y + row + c, M - c, dz + row + c, grad);
      for (int64_t i = 0; i < M - c; ++i) {
        column_sums[c + i] += static_cast<double>(tail[i]);
      }
    }
  }
}

template <typename scalar_t>
void sigmoid_backward_rows_typed(
    const scalar_t* dy,
    const scalar_t* y,
    int64_t rows,
    int64_t M,
    scalar_t* dz,
    double* column_sums) {
  using T = at::opmath_type<scalar_t>;
  if (column_sums == nullptr) {
    store_sigmoid_grad<scalar_t>(dy, y, rows * M, dz, nullptr);
    return;
  }
  if (M >= Vectorized<scalar_t>::size()) {
    sigmoid_grad_and_column_sums_by_rows(dy, y, rows, M, dz, column_sums);
    return;
  }
  // Narrower blocks: dz for as many whole rows as fill a stack buffer, then their column sums (vectorised across
  // rows). The half types sum the float dz that the buffer holds, before dz is rounded for the GEMMs.
  constexpr int64_t kStackValues = 1024;
  alignas(64) T stack_buffer[kStackValues];
  const int64_t step_rows = kStackValues / M;
  for (int64_t r = 0; r < rows; r += step_rows) {
    const int64_t step = std::min(step_rows, rows - r);
    const T* grad = store_sigmoid_grad(dy + r * M, y + r * M, step * M, dz + r * M, stack_buffer);
    add_column_sums(grad, step, M, column_sums);
  }
}

template <typename scalar_t>
void linear_sigmoid_backward_rows_typed(
    const scalar_t* dy,
    const scalar_t* y,
    const scalar_t* x,
    int64_t ldx,
    const scalar_t* weight,
    int64_t rows,
    int64_t K,
    int64_t M,
    scalar_t* dx,
    at::opmath_type<scalar_t>* weight_sums,
    double* bias_sums) {
  using T = at::opmath_type<scalar_t>;
  const std::vector<T> w(weight, weight + M * K);
  const FixedBackward<T> fixed = fixed_kernels<T>(K, M).second;
  // The fixed kernels take contiguous opmath rows; the vectorised loops read (and write) rows in place.
  const bool needs_opmath_copy = fixed != nullptr && (!std::is_same_v<T, scalar_t> || ldx != K);
  // The weight-gradient loop sweeps the block's rows of x once per output and stretch of K: they must stay in L2.
  // Half rows read in place are counted as float rows too, which leaves room for their grad_input rows: blocks of
  // a full kBlockBytes of half rows ran 8192 x 4096 -> 1 about 12% slower (though 16384 x 1024 -> 2 in float16 25%
  // faster).
  const int64_t block_rows = std::max<int64_t>(
      1, std::min(kBlockValues / std::max<int64_t>({M, needs_opmath_copy ? K : 1, 1}),
                  kBlockBytes / std::max<int64_t>(1, K * int64_t(sizeof(T)))));
  std::vector<T> dz(block_rows * M);
  std::vector<T> x_block(needs_opmath_copy && weight_sums != nullptr ? block_rows * K : 0);
  std::vector<T> dx_block(needs_opmath_copy && dx != nullptr ? block_rows * K : 0);
  // A chunk's grad_input this large (wide rows: 4096 float rows of 1024 features and more) is written with
  // non-temporal stores, after one store per page has faulted in its fresh pages all at once. Where the buffer has
  // no 2 MiB pages (empty_large, large_buffers.h) writing a fresh 128 MiB output is mostly page faults: measured at
  // 8192 x 4096 -> 1, one thread, the grad_input alone took 75 ms with ordinary stores, 67 ms streamed, and the
  // whole training step went from 0.85x eager to 0.97x with the pages faulted first. With 2 MiB pages the first
  // pass costs under 1 ms of a 30 ms step.
  const int64_t dx_bytes = rows * K * int64_t(sizeof(scalar_t));
  const bool stream_dx =
      std::is_same_v<T, scalar_t> && dx != nullptr && !needs_opmath_copy && dx_bytes >= kStreamingBytes;
  if (stream_dx) {
    constexpr int64_t kPage = 4096;
    char* bytes = reinterpret_cast<char*>(dx);
    for (int64_t offset = 0; offset < dx_bytes; offset += kPage) {
      bytes[offset] = 0;
    }
  }
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    sigmoid_grad<scalar_t>(dy + r0 * M, y + r0 * M, n * M, dz.data(), nullptr);
    if (bias_sums != nullptr) {
      add_column_sums(dz.data(), n, M, bias_sums);
    }
    scalar_t* dx_rows = dx != nullptr ? dx + r0 * K : nullptr;
    if (needs_opmath_copy) {
      const T* xb = nullptr;
      if (weight_sums != nullptr) {
        widen_rows(x + r0 * ldx, ldx, n, K, x_block.data());
        xb = x_block.data();
      }
      fixed(dz.data(), xb, w.data(), n, dx_rows != nullptr ? dx_block.data() : nullptr, weight_sums);
      if (dx_rows != nullptr) {
        at::vec::convert(dx_block.data(), dx_rows, n * K);
      }
    } else if constexpr (std::is_same_v<T, scalar_t>) {
      if (fixed != nullptr) {
        fixed(dz.data(), x + r0 * ldx, w.data(), n, dx_rows, weight_sums);
      } else {
        backward_rows_vectorized(dz.data(), x + r0 * ldx, ldx, w.data(), n, K, M, dx_rows, weight_sums, stream_dx);
      }
    } else {
      backward_half_rows_vectorized(dz.data(), x + r0 * ldx, ldx, w.data(), n, K, M, dx_rows, weight_sums);
    }
  }
  if (stream_dx) {
    stream_fence();
  }
}

// The tiled kernel's backward (float and double) over a chunk of rows, block by block: dz = dy * (1 - y) * y goes
// to a buffer that stays in L2 and is never stored; dx = dz @ w and weight_sums += dz^T @ x run on it by register
// tiles, and bias_sums gets its column sums. Eager writes dz, then reads it back for two BLAS calls and a sum.
template <typename T>
void linear_sigmoid_backward_tiled_rows_typed(const T* dy, const T* y, const T* x, int64_t ldx, const T* weight,
                                              int64_t rows, int64_t K, int64_t M, T* dx, T* weight_sums,
                                              double* bias_sums) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  constexpr int64_t tile_cols = kTileVectors * V;
  // Rows per block: dz's and x's rows for the block fit in a quarter of L2 together. At least a depth block.
  const int64_t block_rows = std::max<int64_t>(kTileDepth, kBlockBytes / ((K + M) * int64_t(sizeof(T))));
  const int64_t ldk = padded_columns(K, tile_cols);
  // The weight as dx's B, in panels one tile wide (see pack_panels).
  std::vector<T> w_panels(dx != nullptr ? M * ldk : 0);
  if (dx != nullptr) {
    pack_panels<tile_cols>(weight, K, M, K, w_panels.data());
  }
  // x is the weight gradient's B, each block's rows copied into panels one tile wide (see pack_panels).
  std::vector<T> x_panels(weight_sums != nullptr ? block_rows * ldk : 0);
  std::vector<T> dz_tile(weight_sums != nullptr ? block_rows * kTileRows : 0);
  std::vector<T> dz(block_rows * M);
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    sigmoid_grad<T>(dy + r0 * M, y + r0 * M, n * M, dz.data(), nullptr);
    if (bias_sums != nullptr) {
      add_column_sums(dz.data(), n, M, bias_sums);
    }
    if (dx != nullptr) {
      T* dx_block = dx + r0 * K;
      over_row_tiles(n, [&](auto tile_rows, int64_t t0) {
        for (int64_t c0 = 0; c0 < K; c0 += tile_cols) {
          gemm_tile<decltype(tile_rows)::value, kTileVectors>(
              dz.data() + t0 * M, M, 1, w_panels.data() + c0 * M, tile_cols, M, [&](int r, int j, Vec sums) {
                const int64_t count = columns_in_vector<T>(K, c0, j);
                if (count > 0) {
                  sums.store(dx_block + (t0 + r) * K + c0 + j * V, count);
                }
              });
        }
      });
    }
    if (weight_sums != nullptr) {
      pack_panels<tile_cols>(x + r0 * ldx, ldx, n, K, x_panels.data());
      // Rows of the weight gradient are outputs m: A(m, r) = dz[r, m], dz^T. Each row tile's R columns of dz are
      // packed into dz_tile (one panel R wide), which the tile then reads as one stream from L1 for every column tile.
      over_row_tiles(M, [&](auto tile_rows, int64_t m0) {
        constexpr int R = decltype(tile_rows)::value;
        pack_panels<R>(dz.data() + m0, M, n, R, dz_tile.data());
        for (int64_t c0 = 0; c0 < K; c0 += tile_cols) {
          gemm_tile<R, kTileVectors>(
              dz_tile.data(), 1, R, x_panels.data() + c0 * n, tile_cols, n, [&](int r, int j, Vec sums) {
                const int64_t count = columns_in_vector<T>(K, c0, j);
                if (count > 0) {
                  T* partial = weight_sums + (m0 + r) * K + c0 + j * V;
                  (load_columns(partial, count) + sums).store(partial, count);
                }
              });
        }
      });
    }
  }
}

// Calls typed(...) with the backward kernels' untyped arguments cast for scalar_t (weight_sums in its opmath type):
// the one place the two backward entry points below turn void pointers into typed ones.
template <typename scalar_t, typename Typed>
void call_with_typed_backward_args(const Typed& typed, const void* dy, const void* y, const void* x, int64_t ldx,
                                   const void* w, int64_t rows, int64_t K, int64_t M, void* dx, void* weight_sums,
                                   double* bias_sums) {
  typed(static_cast<const scalar_t*>(dy), static_cast<const scalar_t*>(y), static_cast<const scalar_t*>(x), ldx,
        static_cast<const scalar_t*>(w), rows, K, M, static_cast<scalar_t*>(dx),
        static_cast<at::opmath_type<scalar_t>*>(weight_sums), bias_sums);
}

void linear_sigmoid_backward_tiled_rows(
    c10::ScalarType dtype,
    const void* dy,
    const void* y,
    const void* x,
    int64_t ldx,
    const void* w,
    int64_t rows,
    int64_t K,
    int64_t M,
    void* dx,
    void* weight_sums,
    double* bias_sums) {
  dispatch_floating_types<false>(dtype, "linear_sigmoid_backward_tiled_rows", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    call_with_typed_backward_args<scalar_t>(
        [](auto... args) { linear_sigmoid_backward_tiled_rows_typed(args...); }, dy, y, x, ldx, w, rows, K, M, dx,
        weight_sums, bias_sums);
  });
}

void linear_sigmoid_backward_rows(
    c10::ScalarType dtype,
    const void* dy,
    const void* y,
    const void* x,
    int64_t ldx,
    const void* w,
    int64_t rows,
    int64_t K,
    int64_t M,
    void* dx,
    void* weight_sums,
    double* bias_sums) {
  dispatch_floating_types<true>(dtype, "linear_sigmoid_backward_rows", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    call_with_typed_backward_args<scalar_t>(
        [](auto... args) { linear_sigmoid_backward_rows_typed(args...); }, dy, y, x, ldx, w, rows, K, M, dx,
        weight_sums, bias_sums);
  });
}

void sigmoid_backward_rows(
    c10::ScalarType dtype,
    const void* dy,
    const void* y,
    int64_t rows,
    int64_t M,
    void* dz,
    double* column_sums) {
  dispatch_floating_types<true>(dtype, "sigmoid_backward_rows", [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    sigmoid_backward_rows_typed(
        static_cast<const scalar_t*>(dy),
        static_cast<const scalar_t*>(y),
        rows,
        M,
        static_cast<scalar_t*>(dz),
        column_sums);
  });
}

} // namespace

extern const KernelTable kernel_table{
    linear_sigmoid_rows,
    linear_sigmoid_tiled_rows,
    sigmoid_inplace,
    sigmoid_backward_rows,
    linear_sigmoid_backward_rows,
    linear_sigmoid_backward_tiled_rows,
    C10_STRINGIZE(CPU_CAPABILITY),
};

} // namespace CPU_CAPABILITY
} // namespace fused_sigmoid::cpu
