// CUDA kernels for the skinny shapes (out_features <= 8, in_features <= 64: logistic heads and gates), forward and
// backward. Both stage tiles of rows in shared memory so that every global load of a warp is coalesced (a thread
// per row reading global memory would read x with a stride of K elements); the forward then sums a row per thread
// from shared memory and writes its M outputs, a warp's stores covering one contiguous span of y. Included by
// linear_sigmoid_cuda.cu alone.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

namespace fused_sigmoid::cuda {

constexpr int kMaxSkinnyOutFeatures = 8;
constexpr int kMaxSkinnyInFeatures = 64;
constexpr int kThreads = 256;
// Shared memory for a tile of rows of x, in opmath: the forward's, and the backward's, which also holds the
// tile's dz. Within 48 KiB a block, with the weight, for every dtype.
constexpr int kSkinnyForwardTileBytes = 32 * 1024;
constexpr int kSkinnyBackwardTileBytes = 16 * 1024;
// Rows a tile may hold: the forward's bound keeps a few rows per thread (tiles of small K stay large enough to keep
// many loads in flight); the backward's sizes its dz tile, which is static shared memory.
constexpr int kMaxSkinnyForwardTileRows = 1024;
constexpr int kMaxSkinnyBackwardTileRows = 256;
// Tiles start at multiples of this many rows, so that each tile's x, dy and y start 16-byte aligned when the tensors
// do (16 bytes are 8 elements of the narrowest dtype).
constexpr int kTileRowMultiple = 8;
// 16-byte loads each thread issues before it uses the first: enough independent loads in flight to cover the
// memory latency with the few blocks a multiprocessor holds.
constexpr int kLoadsInFlight = 4;
// Rows per chunk of the skinny backward: each chunk's weight and bias gradients are partial sums of their own,
// added in order afterwards, so the result is fixed by the shape.
constexpr int64_t kSkinnyBackwardChunkRows = 2048;
// Weight and bias gradient elements, M * K + M, and how many a thread may own.
constexpr int kMaxSkinnyGradients = kMaxSkinnyOutFeatures * kMaxSkinnyInFeatures + kMaxSkinnyOutFeatures;
constexpr int kMaxGradientsPerThread = (kMaxSkinnyGradients + kThreads - 1) / kThreads;

// Eager PyTorch's CUDA sigmoid, 1 / (1 + exp(-z)) in opmath.
template <typename T>
__device__ __forceinline__ T sigmoid(T z) {
  return T(1) / (T(1) + ::exp(-z));
}

// Rows of x per tile, the row pitch in opmath elements of the tile and of the weight in shared memory (odd, so
// that threads reading the same k of different rows hit different banks), and the tile's bytes (dynamic shared
// memory: small K leaves room for more blocks per multiprocessor).
struct SkinnyTile {
  int rows;
  int pitch;
  int bytes;
};

template <typename opmath_t>
__host__ __device__ inline SkinnyTile skinny_tile(int K, int tile_bytes, int max_rows) {
  const int pitch = K | 1;
  const int fitting_rows = static_cast<int>(tile_bytes / sizeof(opmath_t)) / pitch;
  const int rows = (fitting_rows < max_rows ? fitting_rows : max_rows) / kTileRowMultiple * kTileRowMultiple;
  return {rows, pitch, static_cast<int>(rows * pitch * sizeof(opmath_t))};
}

template <typename opmath_t>
__host__ __device__ inline SkinnyTile skinny_forward_tile(int K) {
  return skinny_tile<opmath_t>(K, kSkinnyForwardTileBytes, kMaxSkinnyForwardTileRows);
}

template <typename opmath_t>
__host__ __device__ inline SkinnyTile skinny_backward_tile(int K) {
  return skinny_tile<opmath_t>(K, kSkinnyBackwardTileBytes, kMaxSkinnyBackwardTileRows);
}

// 16 bytes of scalar_t, moved by one vector load.
template <typename scalar_t>
struct alignas(16) Vector16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t values[kSize];
};

// Calls visit(v, vector) for each of the `vectors` 16-byte vectors at src, with kLoadsInFlight loads issued by
// each thread before the first is visited.
template <typename scalar_t, typename Visit>
__device__ inline void for_each_vector(const scalar_t* __restrict__ src, int vectors, Visit visit) {
  const auto* const src_vectors = reinterpret_cast<const Vector16<scalar_t>*>(src);
  for (int first = threadIdx.x; first < vectors; first += kLoadsInFlight * blockDim.x) {
    Vector16<scalar_t> loaded[kLoadsInFlight];
#pragma unroll
    for (int j = 0; j < kLoadsInFlight; ++j) {
      const int v = first + j * blockDim.x;
      if (v < vectors) {
        loaded[j] = src_vectors[v];
      }
    }
#pragma unroll
    for (int j = 0; j < kLoadsInFlight; ++j) {
      const int v = first + j * blockDim.x;
      if (v < vectors) {
        visit(v, loaded[j]);
      }
    }
  }
}

// Dynamic shared memory, under one untyped name for every kernel and instantiation: extern shared arrays of
// different types under one name conflict.
extern __shared__ __align__(16) unsigned char skinny_tile_bytes[];

// w (M, K) into shared memory in opmath, rows `pitch` apart.
template <typename scalar_t, typename opmath_t>
__device__ inline void load_weight(const scalar_t* __restrict__ w, int K, int M, int pitch, opmath_t* w_shared) {
  for (int i = threadIdx.x; i < M * K; i += blockDim.x) {
    const int m = i / K;
    w_shared[m * pitch + i - m * K] = static_cast<opmath_t>(w[i]);
  }
}

// Rows [first_row, first_row + tile_rows) of x into x_tile in opmath. With vector_loads (rows contiguous, ldx == K,
// and x 16-byte aligned; first_row a multiple of kTileRowMultiple) the tile is one contiguous span read in 16-byte
// vectors, each scattered into its rows; otherwise consecutive threads load consecutive elements of a row, and of
// the next row where a row ends.
template <typename scalar_t, typename opmath_t>
__device__ inline void load_rows(const scalar_t* __restrict__ x, int64_t ldx, int K, int64_t first_row,
                                 int tile_rows, int pitch, bool vector_loads, opmath_t* x_tile) {
  int scalar_start = 0;
  if (vector_loads) {
    constexpr int kSize = Vector16<scalar_t>::kSize;
    const int vectors = tile_rows * K / kSize;
    for_each_vector(x + first_row * K, vectors, [&](int v, const Vector16<scalar_t>& vector) {
      // One division per vector; its elements step through the row and on into the next.
      int r = v * kSize / K;
      int k = v * kSize - r * K;
#pragma unroll
      for (int i = 0; i < kSize; ++i) {
        x_tile[r * pitch + k] = static_cast<opmath_t>(vector.values[i]);
        if (++k == K) {
          k = 0;
          ++r;
        }
      }
    });
    scalar_start = vectors * kSize;
  }
#pragma unroll 4
  for (int e = scalar_start + threadIdx.x; e < tile_rows * K; e += blockDim.x) {
    const int r = e / K;
    const int k = e - r * K;
    x_tile[r * pitch + k] = static_cast<opmath_t>(x[(first_row + r) * ldx + k]);
  }
}

// dz = dy * (1 - y) * y in opmath into dz_tile for `count` contiguous elements of dy and y, in 16-byte vectors
// where vector_loads says both are 16-byte aligned.
template <typename scalar_t, typename opmath_t>
__device__ inline void sigmoid_grad_tile(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y, int count,
                                         bool vector_loads, opmath_t* dz_tile) {
  const auto grad = [](scalar_t g, scalar_t out) {
    const opmath_t o = static_cast<opmath_t>(out);
    return static_cast<opmath_t>(g) * (opmath_t(1) - o) * o;
  };
  int scalar_start = 0;
  if (vector_loads) {
    constexpr int kSize = Vector16<scalar_t>::kSize;
    const int vectors = count / kSize;
    const auto* const y_vectors = reinterpret_cast<const Vector16<scalar_t>*>(y);
    for_each_vector(dy, vectors, [&](int v, const Vector16<scalar_t>& dy_vector) {
      const Vector16<scalar_t> y_vector = y_vectors[v];
#pragma unroll
      for (int i = 0; i < kSize; ++i) {
        dz_tile[v * kSize + i] = grad(dy_vector.values[i], y_vector.values[i]);
      }
    });
    scalar_start = vectors * kSize;
  }
  for (int o = scalar_start + threadIdx.x; o < count; o += blockDim.x) {
    dz_tile[o] = grad(dy[o], y[o]);
  }
}

// vector_loads: x's rows are contiguous (ldx == K) and x is 16-byte aligned.
template <typename scalar_t>
__global__ void linear_sigmoid_skinny_kernel(
    const scalar_t* __restrict__ x,
    int64_t ldx,
    const scalar_t* __restrict__ w,
    const scalar_t* __restrict__ bias,
    int64_t rows,
    int K,
    int M,
    bool vector_loads,
    scalar_t* __restrict__ y) {
  using opmath_t = at::opmath_type<scalar_t>;
  auto* const x_tile = reinterpret_cast<opmath_t*>(skinny_tile_bytes);
  __shared__ opmath_t w_shared[kMaxSkinnyOutFeatures * (kMaxSkinnyInFeatures | 1)];
  __shared__ opmath_t b_shared[kMaxSkinnyOutFeatures];
  const SkinnyTile tile = skinny_forward_tile<opmath_t>(K);
  load_weight(w, K, M, tile.pitch, w_shared);
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    b_shared[i] = bias != nullptr ? static_cast<opmath_t>(bias[i]) : opmath_t(0);
  }
  const int64_t num_tiles = (rows + tile.rows - 1) / tile.rows;
  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const int64_t first_row = t * tile.rows;
    const int tile_rows = static_cast<int>(rows - first_row < tile.rows ? rows - first_row : tile.rows);
    load_rows(x, ldx, K, first_row, tile_rows, tile.pitch, vector_loads, x_tile);
    __syncthreads();
    // A thread per row, its M sums in registers: the row is read from shared memory once (rows an odd pitch
    // apart, so a warp's reads hit distinct banks) and the weight's elements are broadcast.
    for (int r = threadIdx.x; r < tile_rows; r += blockDim.x) {
      const opmath_t* xr = x_tile + r * tile.pitch;
      opmath_t acc[kMaxSkinnyOutFeatures] = {};
      for (int k = 0; k < K; ++k) {
        const opmath_t xk = xr[k];
#pragma unroll
        for (int m = 0; m < kMaxSkinnyOutFeatures; ++m) {
          if (m < M) {
            acc[m] += xk * w_shared[m * tile.pitch + k];
          }
        }
      }
      scalar_t* const yr = y + (first_row + r) * M;
#pragma unroll
      for (int m = 0; m < kMaxSkinnyOutFeatures; ++m) {
        if (m < M) {
          yr[m] = static_cast<scalar_t>(sigmoid(acc[m] + b_shared[m]));
        }
      }
    }
    // The next tile overwrites x_tile.
    __syncthreads();
  }
}

// The whole backward of a skinny layer in one pass over the rows, chunk by chunk: per tile of rows, dz = dy * (1 -
// y) * y in opmath into shared memory, grad_input = dz @ w written with consecutive threads on consecutive
// elements, and the chunk's sums of dz^T x and of dz (the weight and bias gradients) accumulated in double. dz is
// never stored in global memory, and no GEMM runs on these degenerate shapes. The E = M * K + M gradient elements
// are owned by threads: with E <= kThreads, kThreads / E groups of threads each take every group-th row and the
// groups' sums are added in order at the end of the chunk; otherwise each thread owns up to
// kMaxGradientsPerThread elements over all rows. dx, weight_partials and bias_partials are null when not asked for;
// the partials are (chunks, M * K) and (chunks, M). vector_loads: x's rows are contiguous and x, dy and y are
// 16-byte aligned.
template <typename scalar_t>
__global__ void linear_sigmoid_skinny_backward_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ y,
    const scalar_t* __restrict__ x,
    int64_t ldx,
    const scalar_t* __restrict__ w,
    int64_t rows,
    int K,
    int M,
    bool vector_loads,
    scalar_t* __restrict__ dx,
    double* __restrict__ weight_partials,
    double* __restrict__ bias_partials) {
  using opmath_t = at::opmath_type<scalar_t>;
  auto* const x_tile = reinterpret_cast<opmath_t*>(skinny_tile_bytes);
  __shared__ opmath_t w_shared[kMaxSkinnyOutFeatures * (kMaxSkinnyInFeatures | 1)];
  __shared__ opmath_t dz_tile[kMaxSkinnyBackwardTileRows * kMaxSkinnyOutFeatures];
  __shared__ double group_sums[kThreads];
  const SkinnyTile tile = skinny_backward_tile<opmath_t>(K);
  load_weight(w, K, M, tile.pitch, w_shared);
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
  const int64_t num_chunks = (rows + kSkinnyBackwardChunkRows - 1) / kSkinnyBackwardChunkRows;
  for (int64_t chunk = blockIdx.x; chunk < num_chunks; chunk += gridDim.x) {
    const int64_t chunk_first = chunk * kSkinnyBackwardChunkRows;
    const int64_t chunk_end = rows < chunk_first + kSkinnyBackwardChunkRows ? rows : chunk_first +
        kSkinnyBackwardChunkRows;
    double sums[kMaxGradientsPerThread] = {};
    for (int64_t first_row = chunk_first; first_row < chunk_end; first_row += tile.rows) {
      const int tile_rows = static_cast<int>(chunk_end - first_row < tile.rows ? chunk_end - first_row : tile.rows);
      if (weight_partials != nullptr) {
        load_rows(x, ldx, K, first_row, tile_rows, tile.pitch, vector_loads, x_tile);
      }
      sigmoid_grad_tile(dy + first_row * M, y + first_row * M, tile_rows * M, vector_loads, dz_tile);
      __syncthreads();
      if (dx != nullptr) {
        for (int o = threadIdx.x; o < tile_rows * K; o += blockDim.x) {
          const int r = o / K;
          const int k = o - r * K;
          opmath_t acc = opmath_t(0);
          for (int m = 0; m < M; ++m) {
            acc += dz_tile[r * M + m] * w_shared[m * tile.pitch + k];
          }
          dx[first_row * K + o] = static_cast<scalar_t>(acc);
        }
      }
      if (group < groups) {
        for_each_gradient([&](int slot, int e) {
          if (e < weights) {
            if (weight_partials != nullptr) {
              const int m = e / K;
              const int k = e - m * K;
              for (int r = group; r < tile_rows; r += groups) {
                sums[slot] += static_cast<double>(dz_tile[r * M + m]) * static_cast<double>(x_tile[r * tile.pitch + k]);
              }
            }
          } else if (bias_partials != nullptr) {
            for (int r = group; r < tile_rows; r += groups) {
              sums[slot] += static_cast<double>(dz_tile[r * M + e - weights]);
            }
          }
        });
      }
      // The next tile overwrites the tiles.
      __syncthreads();
    }
    if (weight_partials == nullptr && bias_partials == nullptr) {
      continue;
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
      // group_sums is rewritten for the next chunk.
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
  }
}

} // namespace fused_sigmoid::cuda
