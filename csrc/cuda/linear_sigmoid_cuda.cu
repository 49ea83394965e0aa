// CUDA implementation of the fused_sigmoid ops.
//
// Forward: shapes with few outputs (out_features <= 8, in_features <= 64: logistic heads and gates) run one
// kernel that keeps the weight in shared memory, reads each row of x once and writes each output once. Larger
// shapes run cuBLAS (through ATen's addmm, whose cuBLASLt path adds the bias in its epilogue) into the output,
// then one in-place sigmoid pass: cuBLASLt has no sigmoid epilogue.
// Backward: one kernel computes dz = dy * (1 - y) * y and fixed per-chunk column sums of it (the bias gradient,
// summed in a fixed order, without atomics, so results repeat bit for bit); cuBLAS GEMMs give grad_input and
// grad_weight. Everything runs on the current stream of the input's device, with int64 indexing.
#include "../checks.h"
#include "../rows.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace fused_sigmoid::cuda {
namespace {

constexpr int kMaxSkinnyOutFeatures = 8;
constexpr int kMaxSkinnyInFeatures = 64;
constexpr int kThreads = 256;
// Rows per chunk of the bias-gradient reduction: fixed, so the summation order never depends on the launch.
constexpr int64_t kChunkRows = 4096;
constexpr int kColumnsPerBlock = 32;
constexpr int kRowLanes = 8;

// Eager PyTorch's CUDA sigmoid, 1 / (1 + exp(-z)) in opmath.
template <typename T>
__device__ __forceinline__ T sigmoid(T z) {
  return T(1) / (T(1) + ::exp(-z));
}

template <typename scalar_t>
__global__ void linear_sigmoid_skinny_kernel(
    const scalar_t* __restrict__ x,
    int64_t ldx,
    const scalar_t* __restrict__ w,
    const scalar_t* __restrict__ bias,
    int64_t rows,
    int K,
    int M,
    scalar_t* __restrict__ y) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ opmath_t w_shared[kMaxSkinnyOutFeatures * kMaxSkinnyInFeatures];
  __shared__ opmath_t b_shared[kMaxSkinnyOutFeatures];
  for (int i = threadIdx.x; i < M * K; i += blockDim.x) {
    w_shared[i] = static_cast<opmath_t>(w[i]);
  }
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    b_shared[i] = bias != nullptr ? static_cast<opmath_t>(bias[i]) : opmath_t(0);
  }
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows; row += stride) {
    const scalar_t* xr = x + row * ldx;
    opmath_t acc[kMaxSkinnyOutFeatures];
#pragma unroll
    for (int m = 0; m < kMaxSkinnyOutFeatures; ++m) {
      acc[m] = opmath_t(0);
    }
    for (int k = 0; k < K; ++k) {
      const opmath_t xk = static_cast<opmath_t>(xr[k]);
#pragma unroll
      for (int m = 0; m < kMaxSkinnyOutFeatures; ++m) {
        if (m < M) {
          acc[m] += xk * w_shared[m * K + k];
        }
      }
    }
#pragma unroll
    for (int m = 0; m < kMaxSkinnyOutFeatures; ++m) {
      if (m < M) {
        y[row * M + m] = static_cast<scalar_t>(sigmoid(acc[m] + b_shared[m]));
      }
    }
  }
}

template <typename scalar_t>
__global__ void sigmoid_inplace_kernel(scalar_t* __restrict__ y, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = static_cast<scalar_t>(sigmoid(static_cast<opmath_t>(y[i])));
  }
}

// dz = dy * (1 - y) * y for a (kChunkRows x kColumnsPerBlock) tile per block, and when partial_sums is not null
// the tile's column sums in opmath (before dz is rounded), reduced over the row lanes in a fixed order.
template <typename scalar_t>
__global__ void sigmoid_grad_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ y,
    int64_t rows,
    int64_t M,
    scalar_t* __restrict__ dz,
    at::opmath_type<scalar_t>* __restrict__ partial_sums) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ opmath_t lane_sums[kRowLanes][kColumnsPerBlock];
  // One flat grid over (chunk, column block) pairs: x reaches 2^31 - 1 blocks, where y would stop at 65535 and
  // limit either the rows or the outputs.
  const int64_t column_blocks = (M + kColumnsPerBlock - 1) / kColumnsPerBlock;
  const int64_t chunk = blockIdx.x / column_blocks;
  const int64_t column = (blockIdx.x % column_blocks) * kColumnsPerBlock + threadIdx.x;
  const int64_t first_row = chunk * kChunkRows;
  const int64_t last_row = rows < first_row + kChunkRows ? rows : first_row + kChunkRows;
  opmath_t sum = opmath_t(0);
  if (column < M) {
    for (int64_t row = first_row + threadIdx.y; row < last_row; row += kRowLanes) {
      const int64_t i = row * M + column;
      const opmath_t out = static_cast<opmath_t>(y[i]);
      const opmath_t g = static_cast<opmath_t>(dy[i]) * (opmath_t(1) - out) * out;
      dz[i] = static_cast<scalar_t>(g);
      sum += g;
    }
  }
  if (partial_sums == nullptr) {
    return;
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && column < M) {
    opmath_t total = opmath_t(0);
    for (int lane = 0; lane < kRowLanes; ++lane) {
      total += lane_sums[lane][threadIdx.x];
    }
    partial_sums[chunk * M + column] = total;
  }
}

// grad_bias[m] = sum over chunks, in order, of partial_sums[chunk, m].
template <typename scalar_t>
__global__ void sum_chunks_kernel(
    const at::opmath_type<scalar_t>* __restrict__ partial_sums,
    int64_t num_chunks,
    int64_t M,
    scalar_t* __restrict__ grad_bias) {
  const int64_t column = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (column >= M) {
    return;
  }
  at::opmath_type<scalar_t> total = 0;
  for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    total += partial_sums[chunk * M + column];
  }
  grad_bias[column] = static_cast<scalar_t>(total);
}

int blocks_for(int64_t work) {
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  // Enough blocks to fill the device several times over; grid-stride loops cover the rest.
  const int64_t cap = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

at::Tensor linear_sigmoid_cuda(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  check_linear_sigmoid_args(input, weight, bias);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t K = weight.size(1);
  const int64_t M = weight.size(0);
  at::Tensor output = at::empty(output_sizes(input, M), input.options());
  if (output.numel() == 0) {
    return output;
  }
  const at::Tensor x = rows_of(input, K);
  const int64_t N = x.size(0);
  const at::Tensor w = weight.contiguous();
  const std::optional<at::Tensor> b = bias.has_value() ? std::optional(bias->contiguous()) : std::nullopt;
  at::Tensor y = output.view({N, M});
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (M <= kMaxSkinnyOutFeatures && K <= kMaxSkinnyInFeatures) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "linear_sigmoid_skinny", [&] {
      linear_sigmoid_skinny_kernel<scalar_t><<<blocks_for(N), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(),
          x.stride(0),
          w.const_data_ptr<scalar_t>(),
          b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr,
          N,
          static_cast<int>(K),
          static_cast<int>(M),
          y.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return output;
  }
  if (b.has_value()) {
    at::addmm_out(y, *b, x, w.t());
  } else {
    at::mm_out(y, x, w.t());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sigmoid_inplace", [&] {
    sigmoid_inplace_kernel<scalar_t><<<blocks_for(N * M), kThreads, 0, stream>>>(y.mutable_data_ptr<scalar_t>(), N * M);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_sigmoid_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_linear_sigmoid_backward_args(grad_output, output, input, weight);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t M = weight.size(0);
  const BackwardRows rows = backward_rows(grad_output, output, input, weight);
  const at::Tensor& dy = rows.dy;
  const at::Tensor& y = rows.y;
  const at::Tensor& x = rows.x;
  const int64_t N = x.size(0);
  if (N == 0 || M == 0) {
    return zero_gradients(input, weight, output_mask);
  }

  std::optional<at::Tensor> grad_input;
  std::optional<at::Tensor> grad_weight;
  std::optional<at::Tensor> grad_bias;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor dz = at::empty({N, M}, y.options());
  const int64_t num_chunks = (N + kChunkRows - 1) / kChunkRows;
  const at::ScalarType sum_type = y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial_sums;
  if (output_mask[2]) {
    partial_sums = at::empty({num_chunks, M}, y.options().dtype(sum_type));
    grad_bias = at::empty({M}, weight.options());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "linear_sigmoid_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const int64_t column_blocks = (M + kColumnsPerBlock - 1) / kColumnsPerBlock;
    TORCH_CHECK(
        num_chunks * column_blocks <= std::numeric_limits<int32_t>::max(),
        "linear_sigmoid_backward: ", N, " rows of ", M, " outputs exceed one CUDA launch");
    const dim3 block(kColumnsPerBlock, kRowLanes);
    sigmoid_grad_kernel<scalar_t><<<static_cast<unsigned int>(num_chunks * column_blocks), block, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(),
        y.const_data_ptr<scalar_t>(),
        N,
        M,
        dz.mutable_data_ptr<scalar_t>(),
        output_mask[2] ? partial_sums.mutable_data_ptr<opmath_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (output_mask[2]) {
      sum_chunks_kernel<scalar_t><<<(M + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          partial_sums.const_data_ptr<opmath_t>(), num_chunks, M, grad_bias->mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  if (output_mask[0]) {
    grad_input = at::mm(dz, weight).view(input.sizes());
  }
  if (output_mask[1]) {
    grad_weight = at::mm(dz.t(), x);
  }
  return {grad_input, grad_weight, grad_bias};
}

} // namespace

TORCH_LIBRARY_IMPL(fused_sigmoid, CUDA, m) {
  m.impl("linear_sigmoid", &linear_sigmoid_cuda);
  m.impl("linear_sigmoid_backward", &linear_sigmoid_backward_cuda);
}

} // namespace fused_sigmoid::cuda
