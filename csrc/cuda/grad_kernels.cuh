// The backward's kernels for shapes past the skinny ones (linear_sigmoid_cuda.cu runs them before its two cuBLAS
// GEMMs): dz = dy * (1 - y) * y with each chunk's column sums of dz in double, and the fixed-order sum of such chunk
// sums that also totals the skinny backward's partials. Free of ATen's launch machinery, so that
// tests/test_grad_kernels_on_cpu.py can run them on the CPU (tests/cuda_on_cpu).
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

namespace fused_sigmoid::cuda {

constexpr int kGradThreads = 256;
// The dz pass gives each thread this many rows of a chunk: enough work to cover its loads' latency, few enough that
// even 65536 x 256 makes thousands of blocks.
constexpr int kGradRowsPerThread = 16;
constexpr int kMaxGradColumnsPerBlock = 32;
// Rows whose loads a thread of the dz pass issues before it uses any of them. One row at a time (sm_90 code: one
// pair of 2- to 8-byte loads in flight per thread, the loop not unrolled by the compiler) made the pass latency-bound:
// on an H100 it took about 0.059 ms at 65536 x 256 in bfloat16 (our backward's 0.121 less its two GEMMs timed alone)
// where ATen's vectorized sigmoid_backward took 0.037 for dz alone (benchmarks/results/cuda-h100-alternatives.csv).
// With 8, sm_90 code issues 16 loads before the first use, at 40 registers a thread instead of 31-32: six blocks a
// multiprocessor instead of eight. Not yet timed on a GPU.
constexpr int kGradRowsInFlight = 8;

// How the dz pass lays its blocks over (rows, M): a block covers `columns` adjacent columns (all of them when
// M < 32) of `chunk_rows` rows, its threads `columns` wide and `row_lanes` tall, so a warp reads consecutive
// elements of y and dy. The layout depends on M alone, so the bias gradient's summation order is fixed by the shape.
struct GradLayout {
  int columns;
  int row_lanes;
  int64_t chunk_rows;
};

__host__ __device__ inline GradLayout grad_layout(int64_t M) {
  const int columns = M < kMaxGradColumnsPerBlock ? static_cast<int>(M) : kMaxGradColumnsPerBlock;
  const int row_lanes = kGradThreads / columns;
  return {columns, row_lanes, static_cast<int64_t>(row_lanes) * kGradRowsPerThread};
}

// dz = dy * (1 - y) * y (when dz is not null) and, when partial_sums is not null, each chunk's column sums of the
// opmath dz (before it is rounded) in double: each thread adds its rows in order, then the row lanes' sums are added
// in order. Launched as (chunks x column blocks) blocks of kGradThreads threads.
template <typename scalar_t>
__global__ void sigmoid_grad_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ y,
    int64_t rows,
    int64_t M,
    scalar_t* __restrict__ dz,
    double* __restrict__ partial_sums) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ double lane_sums[kGradThreads];
  const GradLayout layout = grad_layout(M);
  // One flat grid over (chunk, column block) pairs: x reaches 2^31 - 1 blocks, where y would stop at 65535 and
  // limit either the rows or the outputs.
  const int64_t column_blocks = (M + layout.columns - 1) / layout.columns;
  const int64_t chunk = blockIdx.x / column_blocks;
  const int lane_column = threadIdx.x % layout.columns;
  const int row_lane = threadIdx.x / layout.columns;
  const int64_t column = (blockIdx.x % column_blocks) * layout.columns + lane_column;
  const int64_t first_row = chunk * layout.chunk_rows;
  const int64_t last_row = rows < first_row + layout.chunk_rows ? rows : first_row + layout.chunk_rows;
  const int64_t row_step = layout.row_lanes;
  double sum = 0.0;
  // dz of row `row` from its loaded y and dy, stored and added to the thread's sum.
  const auto take = [&](int64_t row, opmath_t out, opmath_t grad) {
    const opmath_t g = grad * (opmath_t(1) - out) * out;
    if (dz != nullptr) {
      dz[row * M + column] = static_cast<scalar_t>(g);
    }
    sum += static_cast<double>(g);
  };
  if (row_lane < layout.row_lanes && column < M) {
    int64_t row = first_row + row_lane;
    for (; row + (kGradRowsInFlight - 1) * row_step < last_row; row += kGradRowsInFlight * row_step) {
      opmath_t outs[kGradRowsInFlight];
      opmath_t grads[kGradRowsInFlight];
#pragma unroll
      for (int r = 0; r < kGradRowsInFlight; ++r) {
        const int64_t i = (row + r * row_step) * M + column;
        outs[r] = static_cast<opmath_t>(y[i]);
        grads[r] = static_cast<opmath_t>(dy[i]);
      }
#pragma unroll
      for (int r = 0; r < kGradRowsInFlight; ++r) {
        take(row + r * row_step, outs[r], grads[r]);
      }
    }
    for (; row < last_row; row += row_step) {
      const int64_t i = row * M + column;
      take(row, static_cast<opmath_t>(y[i]), static_cast<opmath_t>(dy[i]));
    }
  }
  if (partial_sums == nullptr) {
    return;
  }
  lane_sums[threadIdx.x] = sum;
  __syncthreads();
  if (row_lane == 0 && column < M) {
    double total = 0.0;
    for (int lane = 0; lane < layout.row_lanes; ++lane) {
      total += lane_sums[lane * layout.columns + lane_column];
    }
    partial_sums[chunk * M + column] = total;
  }
}

// totals[c] = the sum over chunks of partial_sums[chunk, c], one block of kGradThreads threads per column: each
// thread adds every kGradThreads-th chunk in order, then a tree of fixed shape adds the threads' totals, so the result
// repeats bit for bit.
template <typename scalar_t>
__global__ void sum_chunks_kernel(
    const double* __restrict__ partial_sums,
    int64_t num_chunks,
    int64_t columns,
    scalar_t* __restrict__ totals) {
  static_assert((kGradThreads & (kGradThreads - 1)) == 0, "the tree halves kGradThreads");
  __shared__ double thread_sums[kGradThreads];
  const int64_t column = blockIdx.x;
  double total = 0.0;
  for (int64_t chunk = threadIdx.x; chunk < num_chunks; chunk += kGradThreads) {
    total += partial_sums[chunk * columns + column];
  }
  thread_sums[threadIdx.x] = total;
  __syncthreads();
  for (int width = kGradThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) {
      thread_sums[threadIdx.x] += thread_sums[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    // As on the CPU: the double total rounds to float first for the half types.
    totals[column] = static_cast<scalar_t>(thread_sums[0]);
  }
}

} // namespace fused_sigmoid::cuda
