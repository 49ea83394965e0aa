// Body of the CPU kernels, included by capability/*.cpp: CPU_CAPABILITY names the namespace and tells at::vec
// which instructions to use (AVX512, AVX2 or the portable DEFAULT).
#pragma once

#include "kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace fused_sigmoid::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Pre-activations are held for this many outputs at a time: few enough to stay in L1 between the dot products
// and the sigmoid, enough that the sigmoid runs on full vectors even when out_features is 1.
constexpr int64_t kBlockValues = 1024;

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

// z[m] = bias[m] + sum_k x[k] * w[m, k] for one row, with K known at compile time so the row sits in registers
// and the loops unroll: the case of logistic heads with a handful of features.
template <int K, typename T, typename X>
inline void dot_row_fixed_k(const X* x, const T* w, const T* bias, int64_t M, T* z) {
  T xk[K];
  for (int k = 0; k < K; ++k) {
    xk[k] = static_cast<T>(x[k]);
  }
  for (int64_t m = 0; m < M; ++m) {
    T acc = T(0);
    for (int k = 0; k < K; ++k) {
      acc += xk[k] * w[m * K + k];
    }
    z[m] = acc + bias[m];
  }
}

// sum_k a[k] * b[k] with two vector accumulators (to hide the FMA latency) and a masked load for the tail,
// whose zero lanes cannot turn an infinity into NaN.
template <typename T>
inline T dot_vectorized(const T* a, const T* b, int64_t K) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec acc0(T(0));
  Vec acc1(T(0));
  int64_t k = 0;
  for (; k + 2 * V <= K; k += 2 * V) {
    acc0 = at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), acc0);
    acc1 = at::vec::fmadd(Vec::loadu(a + k + V), Vec::loadu(b + k + V), acc1);
  }
  if (k + V <= K) {
    acc0 = at::vec::fmadd(Vec::loadu(a + k), Vec::loadu(b + k), acc0);
    k += V;
  }
  if (k < K) {
    acc1 = at::vec::fmadd(Vec::loadu(a + k, K - k), Vec::loadu(b + k, K - k), acc1);
  }
  return at::vec::vec_reduce_all<T>([](Vec p, Vec q) { return p + q; }, acc0 + acc1);
}

// Runs row_dot over the rows one block at a time and applies the sigmoid to each block of pre-activations while
// it is in L1, writing every output once. row_dot(r, z) fills z[0, M) for row r.
template <typename scalar_t, typename RowDot>
void sigmoid_of_row_blocks(int64_t rows, int64_t M, scalar_t* y, const RowDot& row_dot) {
  using T = at::opmath_type<scalar_t>;
  const int64_t block_rows = std::max<int64_t>(1, kBlockValues / std::max<int64_t>(M, 1));
  std::vector<T> z(block_rows * M);
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      row_dot(r0 + r, z.data() + r * M);
    }
    at::vec::map(Sigmoid<T>(), y + r0 * M, z.data(), n * M);
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

  switch (K) {
#define FUSED_SIGMOID_FIXED_K_CASE(KK)                                                        \
  case KK:                                                                                   \
    sigmoid_of_row_blocks(rows, M, y, [&](int64_t r, T* z) {                                 \
      dot_row_fixed_k<KK>(x + r * ldx, w.data(), b.data(), M, z);                            \
    });                                                                                      \
    return;
    FUSED_SIGMOID_FIXED_K_CASE(1)
    FUSED_SIGMOID_FIXED_K_CASE(2)
    FUSED_SIGMOID_FIXED_K_CASE(3)
    FUSED_SIGMOID_FIXED_K_CASE(4)
    FUSED_SIGMOID_FIXED_K_CASE(5)
    FUSED_SIGMOID_FIXED_K_CASE(6)
    FUSED_SIGMOID_FIXED_K_CASE(7)
    FUSED_SIGMOID_FIXED_K_CASE(8)
#undef FUSED_SIGMOID_FIXED_K_CASE
    default:
      break;
  }

  // Half types are widened one row at a time so the dot product runs on float vectors.
  std::vector<T> x_row(std::is_same_v<T, scalar_t> ? 0 : K);
  sigmoid_of_row_blocks(rows, M, y, [&](int64_t r, T* z) {
    const T* xr;
    if constexpr (std::is_same_v<T, scalar_t>) {
      xr = x + r * ldx;
    } else {
      std::copy(x + r * ldx, x + r * ldx + K, x_row.begin());
      xr = x_row.data();
    }
    for (int64_t m = 0; m < M; ++m) {
      z[m] = dot_vectorized(xr, w.data() + m * K, K) + b[m];
    }
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "linear_sigmoid_rows", [&] {
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "sigmoid_inplace", [&] {
    auto* data = static_cast<scalar_t*>(y);
    at::vec::map(Sigmoid<at::opmath_type<scalar_t>>(), data, data, n);
  });
}

// column_sums[m] += sum_r dz[r, m]. When M divides the vector width, whole vectors of the flat block are summed
// and lane i belongs to column i % M, which keeps out_features = 1 or 2 vectorised.
template <typename scalar_t, typename T>
void add_column_sums(const scalar_t* dz, int64_t rows, int64_t M, T* column_sums) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  if constexpr (std::is_same_v<T, scalar_t>) {
    if (V % M == 0) {
      const int64_t n = rows * M;
      Vec acc(T(0));
      int64_t i = 0;
      for (; i + V <= n; i += V) {
        acc = acc + Vec::loadu(dz + i);
      }
      T lanes[V];
      acc.store(lanes);
      for (int64_t lane = 0; lane < V; ++lane) {
        column_sums[lane % M] += lanes[lane];
      }
      // i is a multiple of M, so the tail starts on a row boundary.
      for (; i < n; ++i) {
        column_sums[i % M] += dz[i];
      }
      return;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t m = 0; m < M; ++m) {
      column_sums[m] += static_cast<T>(dz[r * M + m]);
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
    at::opmath_type<scalar_t>* column_sums) {
  const int64_t n = rows * M;
  if constexpr (std::is_same_v<at::opmath_type<scalar_t>, scalar_t>) {
    at::vec::map2(SigmoidGrad<scalar_t>(), dz, dy, y, n);
    if (column_sums != nullptr) {
      add_column_sums(dz, rows, M, column_sums);
    }
  } else {
    // The bias gradient is summed from dz in float, before dz is rounded to the half type for the GEMMs.
    using bVec = Vectorized<scalar_t>;
    using fVec = Vectorized<float>;
    std::vector<float> dz_float(column_sums != nullptr ? n : 0);
    for (int64_t i = 0; i < n; i += bVec::size()) {
      const int64_t count = std::min<int64_t>(bVec::size(), n - i);
      auto [dy0, dy1] = at::vec::convert_to_float<scalar_t>(bVec::loadu(dy + i, count));
      auto [y0, y1] = at::vec::convert_to_float<scalar_t>(bVec::loadu(y + i, count));
      const fVec g0 = SigmoidGrad<float>()(dy0, y0);
      const fVec g1 = SigmoidGrad<float>()(dy1, y1);
      at::vec::convert_from_float<scalar_t>(g0, g1).store(dz + i, count);
      if (column_sums != nullptr) {
        g0.store(dz_float.data() + i, std::min<int64_t>(count, fVec::size()));
        if (count > fVec::size()) {
          g1.store(dz_float.data() + i + fVec::size(), count - fVec::size());
        }
      }
    }
    if (column_sums != nullptr) {
      add_column_sums(dz_float.data(), rows, M, column_sums);
    }
  }
}

void sigmoid_backward_rows(
    c10::ScalarType dtype,
    const void* dy,
    const void* y,
    int64_t rows,
    int64_t M,
    void* dz,
    void* column_sums) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "sigmoid_backward_rows", [&] {
    sigmoid_backward_rows_typed(
        static_cast<const scalar_t*>(dy),
        static_cast<const scalar_t*>(y),
        rows,
        M,
        static_cast<scalar_t*>(dz),
        static_cast<at::opmath_type<scalar_t>*>(column_sums));
  });
}

} // namespace

extern const KernelTable kernel_table{
    linear_sigmoid_rows,
    sigmoid_inplace,
    sigmoid_backward_rows,
    C10_STRINGIZE(CPU_CAPABILITY),
};

} // namespace CPU_CAPABILITY
} // namespace fused_sigmoid::cpu
