// CUDA kernels for the skinny shapes (out_features <= 8, in_features <= 64: logistic heads and gates), forward and
// backward. Both run a persistent grid whose blocks stream tiles of rows through shared memory two stages deep:
// while a block computes one tile, the asynchronous copies (cp.async) of its next tile are in flight. The copies hold
// no registers and go on through the block's compute, so the memory stays busy with the few blocks a multiprocessor
// holds; a thread per row reading global memory would instead read x with a stride of K elements. A stage holds the
// raw bytes of a contiguous span of rows, copied in 16-byte pieces (the tail, and rows that are strided or not
// 16-byte aligned, element by element). The forward sums a row per thread from shared memory, over k in order (so a
// row's result does not depend on where it sits in the batch), and stages the tile's outputs there too, to write
// them in 16-byte vectors. Included by linear_sigmoid_cuda.cu alone.
#pragma once

#include "eager_sigmoid.cuh"

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>
#include <cuda_pipeline_primitives.h>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace fused_sigmoid::cuda {

constexpr int kMaxSkinnyOutFeatures = 8;
constexpr int kMaxSkinnyInFeatures = 64;
constexpr int kThreads = 256;
// Bytes of one stage of inputs at most (x; and dy and y in the backward). With a full stage in flight per block and
// the four to six blocks a multiprocessor holds, 64 to 96 KiB of loads are in flight per multiprocessor: two to
// three times what an H200 needs to cover about a microsecond of loaded memory latency (4.2 TB/s over 132
// multiprocessors). The row bounds below leave smaller stages where a row's outputs outweigh its inputs (K = 1 to
// 4 with M = 8), whose time goes to the stores, or where K and M are both small in the backward.
constexpr int kSkinnyStageBytes = 16 * 1024;
// Bytes of the forward's staged outputs: with two full stages, within the 48 KiB a block may take unasked.
constexpr int kSkinnyOutputBytes = 8 * 1024;
// in_features up to which kernels are instantiated for each K (with_fixed_in_features): the half types' forward, where
// a row is at most 8 bytes of inputs and instructions rather than bytes bound it (linear_sigmoid_skinny_kernel;
// float32 rows of the same K are twice the bytes for the same instructions, and 3 -> 2 ran at 84% of the copy
// bandwidth on an H100 with K a run-time value, bfloat16 at 61%), and the per-row backward.
constexpr int kMaxFixedInFeatures = 4;
// The bytes of one thread's gradient sums in the backward of a fixed K that runs a thread per row
// (linear_sigmoid_skinny_per_row_backward_kernel): the K * M weight elements in float, the M bias elements in double,
// as the other backward sums every dz into the bias in double (so that the bias gradient is the rounded exact sum).
__host__ __device__ constexpr int per_row_sum_bytes(int K, int M) {
  return M * (K * static_cast<int>(sizeof(float)) + static_cast<int>(sizeof(double)));
}
// Up to this many a thread (3 -> 2 takes 40): at a chunk's end every thread's sums are copied to shared memory, and
// that copy (12 KiB) and two stages of 16 KiB stay within the 48 KiB a block may take unasked.
constexpr int kMaxPerRowSumBytes = 48;

// Whether the per-row backward takes K -> M in scalar_t: float32, bfloat16 and float16 (whose opmath is float), K
// known at compile time, and few enough gradient elements for every thread to keep its own sums of all of them in
// registers.
template <typename scalar_t>
__host__ __device__ constexpr bool per_row_backward(int K, int M) {
  return !std::is_same_v<scalar_t, double> && K >= 1 && K <= kMaxFixedInFeatures &&
      per_row_sum_bytes(K, M) <= kMaxPerRowSumBytes;
}

// Rows a tile may hold: the forward's bound keeps a few rows per thread; the backward's keeps a tile's weight
// gradient partial sums over few rows per thread (in the kernel whose threads own gradient elements; the per-row
// kernel takes the largest tiles). That bound is a launch argument, so that FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS
// (linear_sigmoid_cuda.cu) can time larger tiles from one build: at 256 rows that kernel ran 3 -> 2 at 43% (float32)
// and 22% (bfloat16) of its memory floor on an H100, in the same time for both dtypes (3 -> 2 has the per-row kernel
// since).
constexpr int kMaxSkinnyForwardTileRows = 2048;
constexpr int kDefaultSkinnyBackwardTileRows = 256;
constexpr int kMaxSkinnyBackwardTileRows = 1024;
// Bytes of the backward tile's dz (rows x M in opmath) at most: what 256 rows never passed, so that larger tiles of
// half-type rows with few inputs and many outputs still keep two stages, dz and the static arrays within 48 KiB.
constexpr int kSkinnyDzBytes = 8 * 1024;
// Tiles start at multiples of this many rows, so that each tile's x, dy and y start 16-byte aligned when the tensors
// do (16 bytes are 8 elements of the narrowest dtype).
constexpr int kTileRowMultiple = 8;
// Rows per chunk of the skinny backward: each chunk's weight and bias gradients are partial sums of their own,
// added in order afterwards, so the result is fixed by the shape.
constexpr int64_t kSkinnyBackwardChunkRows = 2048;
// Weight and bias gradient elements, M * K + M, and how many a thread may own.
constexpr int kMaxSkinnyGradients = kMaxSkinnyOutFeatures * kMaxSkinnyInFeatures + kMaxSkinnyOutFeatures;
constexpr int kMaxGradientsPerThread = (kMaxSkinnyGradients + kThreads - 1) / kThreads;

__host__ __device__ constexpr int round_up_to_16(int bytes) {
  return (bytes + 15) / 16 * 16;
}

// The most rows of `bytes_per_row` bytes within `bytes`, at most max_rows, in multiples of kTileRowMultiple.
__host__ __device__ constexpr int rows_within(int bytes, int bytes_per_row, int max_rows) {
  const int fitting = bytes / bytes_per_row;
  return (fitting < max_rows ? fitting : max_rows) / kTileRowMultiple * kTileRowMultiple;
}

// The forward's tile: its rows; the elements from one staged row of x to the next (pitch); whether the rows are
// whole 16-byte pieces (vector_rows), read as such; one stage's bytes; and the dynamic shared memory of two stages
// and the staged outputs (rows x M), every part 16-byte aligned.
//
// A thread sums a row over k in order, so a warp's lanes read rows `pitch` elements apart at once. Rows of whole
// 16-byte pieces (K = 32 or 64 in float32 would otherwise put every lane's row in one bank) are read a piece at a
// time, and their pitch is an odd number of pieces: the 8 lanes that share a shared-memory cycle then read 8
// different 4-bank groups. Other rows stay packed (pitch K), where lanes collide at most two to a bank.
struct SkinnyForwardTile {
  int rows;
  int pitch;
  bool vector_rows;
  int stage_bytes;
  int bytes;
};

template <typename scalar_t>
__host__ __device__ constexpr SkinnyForwardTile skinny_forward_tile(int K, int M) {
  constexpr int kElement = sizeof(scalar_t);
  const int row_bytes = K * kElement;
  const bool vector_rows = K > 0 && row_bytes % 16 == 0;
  const int pitch_bytes = vector_rows && row_bytes / 16 % 2 == 0 ? row_bytes + 16 : row_bytes;
  const int by_inputs = rows_within(kSkinnyStageBytes, pitch_bytes > 0 ? pitch_bytes : 1, kMaxSkinnyForwardTileRows);
  const int by_outputs = rows_within(kSkinnyOutputBytes, M * kElement, kMaxSkinnyForwardTileRows);
  const int rows = by_inputs < by_outputs ? by_inputs : by_outputs;
  const int stage_bytes = round_up_to_16(rows * pitch_bytes);
  const int output_bytes = round_up_to_16(rows * M * kElement);
  return {rows, pitch_bytes / kElement, vector_rows, stage_bytes, 2 * stage_bytes + output_bytes};
}

// The backward's tile, of at most max_rows rows: its rows, where dy and y start in a stage (x first), one stage's
// bytes, and the dynamic shared memory of two stages and, after them, the tile's dz (rows x M in opmath) or, with
// thread_sums (the per-row kernel), every thread's gradient sums (per_row_sum_bytes).
struct SkinnyBackwardTile {
  int rows;
  int dy_offset;
  int y_offset;
  int stage_bytes;
  int bytes;
};

template <typename scalar_t>
__host__ __device__ constexpr SkinnyBackwardTile skinny_backward_tile(int K, int M, int max_rows, bool thread_sums) {
  constexpr int kElement = sizeof(scalar_t);
  constexpr int kOpmath = sizeof(at::opmath_type<scalar_t>);
  const int by_inputs = rows_within(kSkinnyStageBytes, (K + 2 * M) * kElement, max_rows);
  const int by_dz = thread_sums ? by_inputs : rows_within(kSkinnyDzBytes, M * kOpmath, max_rows);
  const int rows = by_inputs < by_dz ? by_inputs : by_dz;
  const int dy_offset = round_up_to_16(rows * K * kElement);
  const int y_offset = dy_offset + round_up_to_16(rows * M * kElement);
  const int stage_bytes = y_offset + round_up_to_16(rows * M * kElement);
  const int after_stages = thread_sums ? per_row_sum_bytes(K, M) * kThreads : rows * M * kOpmath;
  return {rows, dy_offset, y_offset, stage_bytes, 2 * stage_bytes + after_stages};
}

// The kernels' static shared memory for M outputs (the arrays they declare): the forward's weight and bias, the
// backward's weight in opmath and its threads' group sums in double.
template <typename scalar_t>
constexpr int skinny_forward_static_bytes(int M) {
  return (M * kMaxSkinnyInFeatures + M) * static_cast<int>(sizeof(at::opmath_type<scalar_t>));
}
template <typename scalar_t>
constexpr int skinny_backward_static_bytes(int M) {
  return M * kMaxSkinnyInFeatures * static_cast<int>(sizeof(at::opmath_type<scalar_t>)) +
      kThreads * static_cast<int>(sizeof(double));
}

// Whether every skinny shape's shared memory, static and dynamic, stays within the 48 KiB a block may take without
// opting in to more: beyond it the launch would fail (float64's backward at K = 0, M = 8 comes within 2 KiB).
template <typename scalar_t>
constexpr bool skinny_shared_memory_fits() {
  constexpr int kBlockBytes = 48 * 1024;
  for (int K = 0; K <= kMaxSkinnyInFeatures; ++K) {
    for (int M = 1; M <= kMaxSkinnyOutFeatures; ++M) {
      // The per-row backward declares no shared arrays.
      const bool per_row = per_row_backward<scalar_t>(K, M);
      if (skinny_forward_tile<scalar_t>(K, M).bytes + skinny_forward_static_bytes<scalar_t>(M) > kBlockBytes ||
          skinny_backward_tile<scalar_t>(K, M, kMaxSkinnyBackwardTileRows, per_row).bytes +
                  (per_row ? 0 : skinny_backward_static_bytes<scalar_t>(M)) >
              kBlockBytes) {
        return false;
      }
    }
  }
  return true;
}
static_assert(skinny_shared_memory_fits<float>() && skinny_shared_memory_fits<double>() &&
                  skinny_shared_memory_fits<c10::Half>() && skinny_shared_memory_fits<c10::BFloat16>(),
              "a skinny shape's shared memory passes 48 KiB");

// Dynamic shared memory, under one untyped name for every kernel and instantiation: extern shared arrays of
// different types under one name conflict.
extern __shared__ __align__(16) unsigned char skinny_tile_bytes[];

// `count` contiguous elements of src (global memory) into dst (shared memory). With `async` (src and dst 16-byte
// aligned) as cp.async copies of 16 bytes, which land once a __pipeline_wait_prior covers the group they are
// committed in, and the tail of fewer than 16 bytes element by element; otherwise every element by a plain load.
template <typename scalar_t>
__device__ inline void stage_span(const scalar_t* __restrict__ src, int count, bool async, scalar_t* dst) {
  int synchronous_start = 0;
  if (async) {
    constexpr int kPieceElements = 16 / sizeof(scalar_t);
    const int pieces = count / kPieceElements;
    for (int p = threadIdx.x; p < pieces; p += blockDim.x) {
      __pipeline_memcpy_async(dst + p * kPieceElements, src + p * kPieceElements, 16);
    }
    synchronous_start = pieces * kPieceElements;
  }
  for (int e = synchronous_start + threadIdx.x; e < count; e += blockDim.x) {
    dst[e] = src[e];
  }
}

// Rows [first_row, first_row + tile_rows) of x, whose rows are ldx elements apart, into dst with rows `pitch`
// elements apart (pitch >= K). With `async` (ldx == K, x 16-byte aligned, and rows of whole 16-byte pieces where
// pitch > K) by cp.async as stage_span does; otherwise element by element.
template <typename scalar_t>
__device__ inline void stage_rows(const scalar_t* __restrict__ x, int64_t ldx, int K, int64_t first_row,
                                  int tile_rows, int pitch, bool async, scalar_t* dst) {
  if (pitch == K && ldx == K) {
    stage_span(x + first_row * K, tile_rows * K, async, dst);
    return;
  }
  if (async) {
    // Each piece to its row's place; a thread's piece index steps by blockDim.x, so its row and place in the row
    // step by these, without a division per piece.
    constexpr int kPieceElements = 16 / sizeof(scalar_t);
    const int row_pieces = K / kPieceElements;
    const int row_step = static_cast<int>(blockDim.x) / row_pieces;
    const int piece_step = static_cast<int>(blockDim.x) % row_pieces;
    int r = threadIdx.x / row_pieces;
    int piece = threadIdx.x - r * row_pieces;
    for (int i = threadIdx.x; i < tile_rows * row_pieces; i += blockDim.x) {
      __pipeline_memcpy_async(dst + r * pitch + piece * kPieceElements,
                              x + (first_row + r) * K + piece * kPieceElements, 16);
      r += row_step;
      piece += piece_step;
      if (piece >= row_pieces) {
        piece -= row_pieces;
        ++r;
      }
    }
    return;
  }
  for (int e = threadIdx.x; e < tile_rows * K; e += blockDim.x) {
    const int r = e / K;
    dst[r * pitch + e - r * K] = x[(first_row + r) * ldx + e - r * K];
  }
}

// `count` contiguous elements of src (shared memory) to dst (global memory), in 16-byte vectors where `vector` says
// dst is 16-byte aligned (src is), the tail element by element.
template <typename scalar_t>
__device__ inline void store_span(const scalar_t* src, int count, bool vector, scalar_t* __restrict__ dst) {
  int scalar_start = 0;
  if (vector) {
    constexpr int kVectorElements = sizeof(uint4) / sizeof(scalar_t);
    const int vectors = count / kVectorElements;
    for (int v = threadIdx.x; v < vectors; v += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[v] = reinterpret_cast<const uint4*>(src)[v];
    }
    scalar_start = vectors * kVectorElements;
  }
  for (int e = scalar_start + threadIdx.x; e < count; e += blockDim.x) {
    dst[e] = src[e];
  }
}

// w (M, K) into shared memory in opmath.
template <typename scalar_t, typename opmath_t>
__device__ inline void load_weight(const scalar_t* __restrict__ w, int K, int M, opmath_t* w_shared) {
  for (int i = threadIdx.x; i < M * K; i += blockDim.x) {
    w_shared[i] = static_cast<opmath_t>(w[i]);
  }
}

// 16 bytes of scalar_t, read from shared memory by one instruction.
template <typename scalar_t>
struct alignas(16) Vector16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t values[kSize];
};

// The forward, for out_features M known at compile time, so that a row's M sums stay in registers and a step of k
// costs M multiply-adds: with M a run-time bound every step issued all kMaxSkinnyOutFeatures, idle ones predicated
// off, which made the narrowest heads compute-bound (README). with_out_features picks the instantiation.
// kFixedK, where it is not 0, is in_features known at compile time too (with_fixed_in_features): the row's loop over k
// unrolls and the weight sits in registers. Rows of a few inputs are a few bytes (bfloat16 3 -> 2 is 10 bytes read
// and written per row), and there the loop's control and a shared-memory load of the weight for every multiply-add
// were most of the instructions a row costs, more than the memory system's time for it: sm_90a SASS of bfloat16
// 3 -> 2 issued about 95 instructions per row with K a run-time value and 64 with K fixed, 53 now that the two
// sigmoids overlap (eager_sigmoids).
// async_loads: x's rows are contiguous (ldx == K) and x is 16-byte aligned; vector_stores: y is 16-byte aligned.
template <typename scalar_t, int M, int kFixedK = 0>
__global__ void __launch_bounds__(kThreads) linear_sigmoid_skinny_kernel(
    const scalar_t* __restrict__ x,
    int64_t ldx,
    const scalar_t* __restrict__ w,
    const scalar_t* __restrict__ bias,
    int64_t rows,
    int in_features,
    bool async_loads,
    bool vector_stores,
    scalar_t* __restrict__ y) {
  static_assert(M >= 1 && M <= kMaxSkinnyOutFeatures, "out_features of the skinny forward");
  static_assert(kFixedK >= 0 && kFixedK <= kMaxFixedInFeatures, "in_features of the skinny forward");
  using opmath_t = at::opmath_type<scalar_t>;
  const int K = kFixedK > 0 ? kFixedK : in_features;
  __shared__ opmath_t w_shared[M * kMaxSkinnyInFeatures];
  __shared__ opmath_t b_shared[M];
  // Every thread reads the same few weights, once: the loads are broadcasts from L1.
  opmath_t w_registers[kFixedK > 0 ? M * kFixedK : 1];
  if constexpr (kFixedK > 0) {
#pragma unroll
    for (int i = 0; i < M * kFixedK; ++i) {
      w_registers[i] = static_cast<opmath_t>(w[i]);
    }
  }
  const auto weight = [&](int m, int k) {
    if constexpr (kFixedK > 0) {
      return w_registers[m * kFixedK + k];
    } else {
      return w_shared[m * K + k];
    }
  };
  const SkinnyForwardTile tile = skinny_forward_tile<scalar_t>(K, M);
  const auto stage = [&](int64_t j) {
    return reinterpret_cast<scalar_t*>(skinny_tile_bytes + (j & 1) * tile.stage_bytes);
  };
  auto* const y_tile = reinterpret_cast<scalar_t*>(skinny_tile_bytes + 2 * tile.stage_bytes);
  if constexpr (kFixedK == 0) {
    load_weight(w, K, M, w_shared);
  }
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    b_shared[i] = bias != nullptr ? static_cast<opmath_t>(bias[i]) : opmath_t(0);
  }
  const int64_t num_tiles = (rows + tile.rows - 1) / tile.rows;
  const auto rows_in = [&](int64_t t) {
    return static_cast<int>(rows - t * tile.rows < tile.rows ? rows - t * tile.rows : tile.rows);
  };
  // Starts the copy of tile t (if there is one) into `dst`, as one commit group, empty or not, so that each
  // iteration's wait below leaves exactly the next tile's group in flight.
  const auto fetch = [&](int64_t t, scalar_t* dst) {
    if (t < num_tiles) {
      stage_rows(x, ldx, K, t * tile.rows, rows_in(t), tile.pitch, async_loads, dst);
    }
    __pipeline_commit();
  };
  fetch(blockIdx.x, stage(0));
  int64_t j = 0;
  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x, ++j) {
    // The stage being filled was last read while computing tile j - 1, before that iteration's second barrier.
    fetch(t + gridDim.x, stage(j + 1));
    __pipeline_wait_prior(1);
    __syncthreads();
    const scalar_t* const x_tile = stage(j);
    const int tile_rows = rows_in(t);
    // A thread per row, its M sums in registers, k in order; every lane reads the same weight element (a broadcast).
    for (int r = threadIdx.x; r < tile_rows; r += blockDim.x) {
      const scalar_t* const xr = x_tile + r * tile.pitch;
      opmath_t acc[M] = {};
      const auto add = [&](int k, scalar_t x_k) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          acc[m] += static_cast<opmath_t>(x_k) * weight(m, k);
        }
      };
      if constexpr (kFixedK > 0) {
        static_assert(kFixedK * sizeof(scalar_t) < 16, "a fixed row is less than a 16-byte piece: never read as one");
#pragma unroll
        for (int k = 0; k < kFixedK; ++k) {
          add(k, xr[k]);
        }
      } else if (tile.vector_rows) {
        constexpr int kSize = Vector16<scalar_t>::kSize;
        for (int v = 0; v < K / kSize; ++v) {
          const Vector16<scalar_t> piece = reinterpret_cast<const Vector16<scalar_t>*>(xr)[v];
#pragma unroll
          for (int i = 0; i < kSize; ++i) {
            add(v * kSize + i, piece.values[i]);
          }
        }
      } else {
        for (int k = 0; k < K; ++k) {
          add(k, xr[k]);
        }
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        acc[m] += b_shared[m];
      }
      eager_sigmoids(acc);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        y_tile[r * M + m] = static_cast<scalar_t>(acc[m]);
      }
    }
    // The tile's outputs are all staged; the next iteration's barrier keeps them until they are written.
    __syncthreads();
    store_span(y_tile, tile_rows * M, vector_stores, y + t * tile.rows * M);
  }
}

// f(std::integral_constant<int, value>{}) for a run-time value in [kFirst, kLast]: one instantiation of f per value.
template <int kFirst, int kLast, typename F>
decltype(auto) with_constant(int value, F&& f) {
  if constexpr (kFirst == kLast) {
    return f(std::integral_constant<int, kFirst>{});
  } else {
    if (value == kFirst) {
      return f(std::integral_constant<int, kFirst>{});
    }
    return with_constant<kFirst + 1, kLast>(value, std::forward<F>(f));
  }
}

// f(std::integral_constant<int, M>{}) for M = out_features in [1, kMaxSkinnyOutFeatures]: the skinny kernels'
// instantiation for a run-time M.
template <typename F>
decltype(auto) with_out_features(int out_features, F&& f) {
  // Callers take the skinny path only for 1 <= out_features <= kMaxSkinnyOutFeatures.
  TORCH_INTERNAL_ASSERT(out_features >= 1 && out_features <= kMaxSkinnyOutFeatures,
                        "linear_sigmoid: no skinny kernel for ", out_features, " outputs");
  return with_constant<1, kMaxSkinnyOutFeatures>(out_features, std::forward<F>(f));
}

// f(std::integral_constant<int, K>{}) for in_features K from 1 to kMaxFixedInFeatures where kEnabled, else
// f(std::integral_constant<int, 0>{}) (K at run time).
template <bool kEnabled, typename F>
decltype(auto) with_fixed_in_features(int in_features, F&& f) {
  if constexpr (kEnabled) {
    if (in_features >= 1 && in_features <= kMaxFixedInFeatures) {
      return with_constant<1, kMaxFixedInFeatures>(in_features, std::forward<F>(f));
    }
  }
  return f(std::integral_constant<int, 0>{});
}

// Whether the forward of scalar_t has kernels of a fixed K (the half types; see kMaxFixedInFeatures).
template <typename scalar_t>
constexpr bool has_fixed_forward() {
  return std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;
}

// f(std::integral_constant<int, K>{}) where the per-row backward takes K -> M in scalar_t, else
// f(std::integral_constant<int, 0>{}) (the backward kernel whose threads own gradient elements).
template <typename scalar_t, int M, typename F>
decltype(auto) with_per_row_in_features(int in_features, F&& f) {
  return with_fixed_in_features<!std::is_same_v<scalar_t, double>>(in_features, [&](auto fixed_in_features) {
    if constexpr (per_row_backward<scalar_t>(decltype(fixed_in_features)::value, M)) {
      return f(fixed_in_features);
    } else {
      return f(std::integral_constant<int, 0>{});
    }
  });
}

// What both skinny backward kernels take: dy, y (rows x M) and x (rows of K, ldx apart) and the weight (M x K); where
// they may be copied by cp.async (x_async: x's rows contiguous and 16-byte aligned; grad_async: dy and y 16-byte
// aligned); and the outputs, null when not asked for: grad_input (rows x K) and the chunks' partial sums of the
// weight and bias gradients, (chunks, M * K) and (chunks, M).
template <typename scalar_t>
struct SkinnyBackwardArgs {
  const scalar_t* __restrict__ dy;
  const scalar_t* __restrict__ y;
  const scalar_t* __restrict__ x;
  int64_t ldx;
  const scalar_t* __restrict__ w;
  int64_t rows;
  bool x_async;
  bool grad_async;
  scalar_t* __restrict__ dx;
  double* __restrict__ weight_partials;
  double* __restrict__ bias_partials;
};

// Streams a block's tiles of the skinny backward through the two stages: tile t of chunk c (rows from c *
// kSkinnyBackwardChunkRows + t * tile.rows) for the chunks blockIdx.x, blockIdx.x + gridDim.x, ..., its x (where
// the weight gradient needs it), dy and y copied in while the tile before it is computed. Every thread calls
// tile_work(first_row, tile_rows, stage) between two barriers for each tile (a chunk's trailing tiles may be empty, so
// that every chunk has the same tiles), and chunk_end(chunk, free_stage) after a chunk's last tile, where free_stage
// is the stage just computed from, unused until chunk_end returns. The chunk and tile are counted, not divided out
// of a tile count: a 64-bit division is a subroutine call on the GPU.
template <typename scalar_t, int M, typename TileWork, typename ChunkEnd>
__device__ inline void for_each_backward_tile(const SkinnyBackwardTile& tile, const SkinnyBackwardArgs<scalar_t>& args,
                                              int K, TileWork&& tile_work, ChunkEnd&& chunk_end) {
  const scalar_t* __restrict__ const dy = args.dy;
  const scalar_t* __restrict__ const y = args.y;
  const scalar_t* __restrict__ const x = args.x;
  const int64_t rows = args.rows;
  // The weight gradient alone needs x.
  const bool stage_x = args.weight_partials != nullptr;
  const int64_t num_chunks = (rows + kSkinnyBackwardChunkRows - 1) / kSkinnyBackwardChunkRows;
  const int tiles_per_chunk = static_cast<int>((kSkinnyBackwardChunkRows + tile.rows - 1) / tile.rows);
  const auto stage = [&](int parity) { return skinny_tile_bytes + parity * tile.stage_bytes; };
  const auto first_row_of = [&](int64_t chunk, int t) { return chunk * kSkinnyBackwardChunkRows + t * tile.rows; };
  const auto rows_in = [&](int64_t chunk, int t) {
    const int64_t chunk_end_row = (chunk + 1) * kSkinnyBackwardChunkRows;
    const int64_t left = (rows < chunk_end_row ? rows : chunk_end_row) - first_row_of(chunk, t);
    return static_cast<int>(left < 0 ? 0 : left < tile.rows ? left : tile.rows);
  };
  // Starts the copies of a tile into `dst` as one commit group, empty or not (see the forward).
  const auto fetch = [&](int64_t chunk, int t, unsigned char* dst) {
    const int tile_rows = chunk < num_chunks ? rows_in(chunk, t) : 0;
    if (tile_rows > 0) {
      const int64_t first_row = first_row_of(chunk, t);
      if (stage_x) {
        stage_rows(x, args.ldx, K, first_row, tile_rows, K, args.x_async, reinterpret_cast<scalar_t*>(dst));
      }
      stage_span(dy + first_row * M, tile_rows * M, args.grad_async,
                 reinterpret_cast<scalar_t*>(dst + tile.dy_offset));
      stage_span(y + first_row * M, tile_rows * M, args.grad_async, reinterpret_cast<scalar_t*>(dst + tile.y_offset));
    }
    __pipeline_commit();
  };
  int64_t chunk = blockIdx.x;
  int t = 0;
  int parity = 0;
  fetch(chunk, t, stage(parity));
  while (chunk < num_chunks) {
    const bool last_of_chunk = t == tiles_per_chunk - 1;
    const int64_t next_chunk = last_of_chunk ? chunk + gridDim.x : chunk;
    const int next_t = last_of_chunk ? 0 : t + 1;
    // The stage being filled was last read in the tile before this one, before its last barrier.
    fetch(next_chunk, next_t, stage(parity ^ 1));
    __pipeline_wait_prior(1);
    __syncthreads();
    tile_work(first_row_of(chunk, t), rows_in(chunk, t), stage(parity));
    // The stage just read is filled again by the next iteration's fetch.
    __syncthreads();
    if (last_of_chunk) {
      chunk_end(chunk, stage(parity));
    }
    chunk = next_chunk;
    t = next_t;
    parity ^= 1;
  }
}

// The whole backward of a skinny layer in one pass over the rows, chunk by chunk and tile by tile: per tile,
// dz = dy * (1 - y) * y in opmath into shared memory, grad_input = dz @ w written with consecutive threads on
// consecutive elements, and the tile's sums of dz^T x and of dz (the weight and bias gradients) added to the
// chunk's, in double. dz is never stored in global memory, and no GEMM runs on these degenerate shapes. The
// E = M * K + M gradient elements are owned by threads: with E <= kThreads, kThreads / E groups of threads each
// take every group-th row and the groups' sums are added in order at the end of the chunk; otherwise each thread
// owns up to kMaxGradientsPerThread elements over all rows. A weight element's sum over a tile's rows is kept in
// opmath and added to the chunk's in double (a float to double conversion per row would cost more than the sum);
// the bias sums every dz in double, so that the bias gradient is the rounded exact sum. M is a template argument, as
// in the forward: grad_input's sum over m and the dz indexing unroll. max_tile_rows bounds a tile's rows
// (kDefaultSkinnyBackwardTileRows, up to kMaxSkinnyBackwardTileRows). Asking for six blocks a multiprocessor holds
// the registers to 40 a thread (64 otherwise: four blocks); on H100 and H200 shared memory then admits six for most
// shapes, 30 -> 1 in float32 among them. Nothing spills on sm_90, and 12 bytes of float64's on sm_80. Shapes that the
// per-row kernel below takes (per_row_backward, outside float64) do not come here.
template <typename scalar_t, int M>
__global__ void __launch_bounds__(kThreads, 6)
    linear_sigmoid_skinny_backward_kernel(SkinnyBackwardArgs<scalar_t> args, int K, int max_tile_rows) {
  static_assert(M >= 1 && M <= kMaxSkinnyOutFeatures, "out_features of the skinny backward");
  const scalar_t* __restrict__ const w = args.w;
  scalar_t* __restrict__ const dx = args.dx;
  double* __restrict__ const weight_partials = args.weight_partials;
  double* __restrict__ const bias_partials = args.bias_partials;
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ opmath_t w_shared[M * kMaxSkinnyInFeatures];
  __shared__ double group_sums[kThreads];
  const SkinnyBackwardTile tile = skinny_backward_tile<scalar_t>(K, M, max_tile_rows, false);
  auto* const dz_tile = reinterpret_cast<opmath_t*>(skinny_tile_bytes + 2 * tile.stage_bytes);
  load_weight(w, K, M, w_shared);
  const int weights = M * K;
  const int gradients = weights + M;
  const int groups = gradients <= kThreads ? kThreads / gradients : 1;
  const int group = gradients <= kThreads ? threadIdx.x / gradients : 0;
  const int first_element = gradients <= kThreads ? threadIdx.x % gradients : threadIdx.x;
  // visit(slot, e) for each gradient element e this thread owns, slot indexing its sums (unrolled, so that the
  // sums stay in registers).
  const auto for_each_gradient = [&](auto visit) {
#pragma unroll
    for (int slot = 0; slot < kMaxGradientsPerThread; ++slot) {
      const int e = first_element + slot * kThreads;
      if (e < gradients) {
        visit(slot, e);
      }
    }
  };
  // grad_input's element o = r * K + k of a tile: each thread steps o by blockDim.x, so r and k step by these.
  const int dx_row_step = K > 0 ? static_cast<int>(blockDim.x) / K : 0;
  const int dx_column_step = K > 0 ? static_cast<int>(blockDim.x) % K : 0;
  double sums[kMaxGradientsPerThread] = {};
  const auto tile_work = [&](int64_t first_row, int tile_rows, const unsigned char* stage) {
    const auto* const x_tile = reinterpret_cast<const scalar_t*>(stage);
    const auto* const dy_tile = reinterpret_cast<const scalar_t*>(stage + tile.dy_offset);
    const auto* const y_tile = reinterpret_cast<const scalar_t*>(stage + tile.y_offset);
    for (int o = threadIdx.x; o < tile_rows * M; o += blockDim.x) {
      const opmath_t out = static_cast<opmath_t>(y_tile[o]);
      dz_tile[o] = static_cast<opmath_t>(dy_tile[o]) * (opmath_t(1) - out) * out;
    }
    __syncthreads();
    if (dx != nullptr && K > 0) {
      int r = threadIdx.x / K;
      int k = threadIdx.x - r * K;
      for (int o = threadIdx.x; o < tile_rows * K; o += blockDim.x) {
        opmath_t acc = opmath_t(0);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          acc += dz_tile[r * M + m] * w_shared[m * K + k];
        }
        dx[first_row * K + o] = static_cast<scalar_t>(acc);
        r += dx_row_step;
        k += dx_column_step;
        if (k >= K) {
          k -= K;
          ++r;
        }
      }
    }
    if (group < groups) {
      for_each_gradient([&](int slot, int e) {
        if (e < weights) {
          if (weight_partials != nullptr) {
            const int m = e / K;
            const int k = e - m * K;
            opmath_t tile_sum = opmath_t(0);
            for (int r = group; r < tile_rows; r += groups) {
              tile_sum += dz_tile[r * M + m] * static_cast<opmath_t>(x_tile[r * K + k]);
            }
            sums[slot] += static_cast<double>(tile_sum);
          }
        } else if (bias_partials != nullptr) {
          for (int r = group; r < tile_rows; r += groups) {
            sums[slot] += static_cast<double>(dz_tile[r * M + e - weights]);
          }
        }
      });
    }
    // for_each_backward_tile's barrier follows: the next tile overwrites dz_tile.
  };
  const auto chunk_end = [&](int64_t chunk, unsigned char*) {
    if (weight_partials == nullptr && bias_partials == nullptr) {
      return;
    }
    if (groups > 1) {
      group_sums[threadIdx.x] = sums[0];
      __syncthreads();
      if (threadIdx.x < gradients) {
        double total = 0.0;
        for (int g = 0; g < groups; ++g) {
          total += group_sums[g * gradients + threadIdx.x];
        }
        sums[0] = total;
      }
      // group_sums is rewritten at the next chunk's end.
      __syncthreads();
    }
    if (group == 0) {
      for_each_gradient([&](int slot, int e) {
        if (e < weights) {
          if (weight_partials != nullptr) {
            weight_partials[chunk * weights + e] = sums[slot];
          }
        } else if (bias_partials != nullptr) {
          bias_partials[chunk * M + e - weights] = sums[slot];
        }
      });
    }
    for (double& sum : sums) {
      sum = 0.0;
    }
  };
  for_each_backward_tile<scalar_t, M>(tile, args, K, tile_work, chunk_end);
}

// The backward of the smallest shapes (per_row_backward), with in_features K fixed at compile time: a thread takes
// whole rows, as the forward does. Per row it forms dz = dy * (1 - y) * y in opmath in registers, grad_input =
// dz @ w with the weight in registers (the same sums, in the same order, as the kernel above), and adds dz x^T to its
// own sums of the weight gradient (in float) and dz to its sums of the bias gradient (in double, as above). The kernel
// above spends several hundred instructions a row on such shapes, most of them per tile (barriers, index arithmetic,
// one gradient element per thread), and ran 3 -> 2 at 22-43% of its memory floor on an H100 in the same time in
// bfloat16 and float32. Tiles take the stage's largest row count, kMaxSkinnyBackwardTileRows at most, so that those
// per-tile costs are shared by up to four rows a thread. At a chunk's end the block's sums are added up in a fixed
// order: each thread's sums go to shared memory, eight threads per element add every eighth of its kThreads sums in
// double, in order, and one adds their eight; a row's thread and place in those sums depend only on the shape, so the
// gradients do too. Four blocks a multiprocessor leave 64 registers a thread.
template <typename scalar_t, int M, int K>
__global__ void __launch_bounds__(kThreads, 4)
    linear_sigmoid_skinny_per_row_backward_kernel(SkinnyBackwardArgs<scalar_t> args) {
  static_assert(M >= 1 && per_row_backward<scalar_t>(K, M), "a shape of the per-row skinny backward");
  using opmath_t = at::opmath_type<scalar_t>;
  static_assert(std::is_same_v<opmath_t, float>, "per_row_sum_bytes counts float weight sums");
  const scalar_t* __restrict__ const w = args.w;
  scalar_t* __restrict__ const dx = args.dx;
  double* __restrict__ const weight_partials = args.weight_partials;
  double* __restrict__ const bias_partials = args.bias_partials;
  constexpr int kWeights = M * K;
  constexpr int kGradients = kWeights + M;
  constexpr int kSplits = 8;
  constexpr SkinnyBackwardTile tile = skinny_backward_tile<scalar_t>(K, M, kMaxSkinnyBackwardTileRows, true);
  static_assert(kGradients * kSplits <= kThreads && kGradients * kSplits * sizeof(double) <= tile.stage_bytes,
                "a thread and a stage's room for each split sum at a chunk's end");
  // Every thread's sums at a chunk's end, element by element: the bias's in double after the weight's in float.
  auto* const thread_weight_sums = reinterpret_cast<float*>(skinny_tile_bytes + 2 * tile.stage_bytes);
  auto* const thread_bias_sums = reinterpret_cast<double*>(thread_weight_sums + kWeights * kThreads);
  opmath_t w_registers[kWeights];
#pragma unroll
  for (int i = 0; i < kWeights; ++i) {
    w_registers[i] = static_cast<opmath_t>(w[i]);
  }
  float weight_sums[kWeights] = {};
  double bias_sums[M] = {};
  const auto tile_work = [&](int64_t first_row, int tile_rows, const unsigned char* stage) {
    const auto* const x_tile = reinterpret_cast<const scalar_t*>(stage);
    const auto* const dy_tile = reinterpret_cast<const scalar_t*>(stage + tile.dy_offset);
    const auto* const y_tile = reinterpret_cast<const scalar_t*>(stage + tile.y_offset);
    for (int r = threadIdx.x; r < tile_rows; r += blockDim.x) {
      opmath_t dz[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const opmath_t out = static_cast<opmath_t>(y_tile[r * M + m]);
        dz[m] = static_cast<opmath_t>(dy_tile[r * M + m]) * (opmath_t(1) - out) * out;
      }
      if (dx != nullptr) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          opmath_t acc = opmath_t(0);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            acc += dz[m] * w_registers[m * K + k];
          }
          dx[(first_row + r) * K + k] = static_cast<scalar_t>(acc);
        }
      }
      if (weight_partials != nullptr) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const opmath_t x_k = static_cast<opmath_t>(x_tile[r * K + k]);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            weight_sums[m * K + k] += dz[m] * x_k;
          }
        }
      }
      if (bias_partials != nullptr) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          bias_sums[m] += static_cast<double>(dz[m]);
        }
      }
    }
  };
  // Element e's sum over the block's threads: every eighth of them added in double by each of its eight threads.
  const auto split_sum = [&](int e, int split) {
    double sum = 0.0;
    for (int i = 0; i < kThreads / kSplits; ++i) {
      const int t = i * kSplits + split;
      sum += e < kWeights ? static_cast<double>(thread_weight_sums[e * kThreads + t])
                          : thread_bias_sums[(e - kWeights) * kThreads + t];
    }
    return sum;
  };
  const auto chunk_end = [&](int64_t chunk, unsigned char* free_stage) {
    if (weight_partials == nullptr && bias_partials == nullptr) {
      return;
    }
#pragma unroll
    for (int e = 0; e < kWeights; ++e) {
      thread_weight_sums[e * kThreads + threadIdx.x] = weight_sums[e];
      weight_sums[e] = 0.0f;
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      thread_bias_sums[m * kThreads + threadIdx.x] = bias_sums[m];
      bias_sums[m] = 0.0;
    }
    __syncthreads();
    auto* const split_sums = reinterpret_cast<double*>(free_stage);
    if (threadIdx.x < kGradients * kSplits) {
      split_sums[threadIdx.x] = split_sum(threadIdx.x / kSplits, threadIdx.x % kSplits);
    }
    __syncthreads();
    if (threadIdx.x < kGradients) {
      double total = 0.0;
      for (int split = 0; split < kSplits; ++split) {
        total += split_sums[threadIdx.x * kSplits + split];
      }
      if (threadIdx.x < kWeights) {
        if (weight_partials != nullptr) {
          weight_partials[chunk * kWeights + threadIdx.x] = total;
        }
      } else if (bias_partials != nullptr) {
        bias_partials[chunk * M + threadIdx.x - kWeights] = total;
      }
    }
    // free_stage is filled again once this returns, and the threads' sums rewritten at the next chunk's end.
    __syncthreads();
  };
  for_each_backward_tile<scalar_t, M>(tile, args, K, tile_work, chunk_end);
}

} // namespace fused_sigmoid::cuda
