// CUDA implementation of the fused_sigmoid ops.
//
// Forward: shapes with few outputs (out_features <= 8, in_features <= 64: logistic heads and gates) run one kernel
// that keeps the weight in shared memory, stages tiles of rows of x there with coalesced loads, and writes each
// tile's outputs once (skinny_kernels.cuh). Larger shapes run, where the build has CUTLASS and the shape and dtype
// suit tensor cores, one CUTLASS GEMM with the bias and sigmoid in its epilogue (cutlass/gemm_sigmoid.cu);
// otherwise cuBLAS (through ATen's addmm, whose cuBLASLt path adds the bias in its epilogue) into the output, then
// ATen's in-place sigmoid: cuBLASLt has no sigmoid epilogue.
// Backward: the skinny shapes run one pass over the rows (skinny_kernels.cuh) that forms dz in shared memory,
// writes grad_input and sums the weight and bias gradients per chunk of rows. Other shapes run one kernel for dz and
// its per-chunk column sums, then cuBLAS GEMMs for grad_input and grad_weight. Chunk sums are in double and added by
// a second kernel in a fixed order without atomics, so gradients repeat bit for bit and the bias gradient is
// rounded once, as on the CPU. Everything runs on the current stream of the input's device, with int64 indexing.
#include "../checks.h"
#include "../rows.h"
#include "alignment.h"
#include "gemm_sigmoid.h"
#include "skinny_kernels.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sigmoid.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace fused_sigmoid::cuda {
namespace {

// The backward's dz pass gives each thread this many rows of a chunk: enough work to cover its loads' latency,
// few enough that even 65536 x 256 makes thousands of blocks.
constexpr int kGradRowsPerThread = 16;
constexpr int kMaxGradColumnsPerBlock = 32;

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
  const int row_lanes = kThreads / columns;
  return {columns, row_lanes, static_cast<int64_t>(row_lanes) * kGradRowsPerThread};
}

// dz = dy * (1 - y) * y (when dz is not null) and, when partial_sums is not null, each chunk's column sums of the
// opmath dz (before it is rounded) in double, reduced over the row lanes in a fixed order.
template <typename scalar_t>
__global__ void sigmoid_grad_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ y,
    int64_t rows,
    int64_t M,
    scalar_t* __restrict__ dz,
    double* __restrict__ partial_sums) {
  using opmath_t = at::opmath_type<scalar_t>;
  __shared__ double lane_sums[kThreads];
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
  double sum = 0.0;
  if (row_lane < layout.row_lanes && column < M) {
    for (int64_t row = first_row + row_lane; row < last_row; row += layout.row_lanes) {
      const int64_t i = row * M + column;
      const opmath_t out = static_cast<opmath_t>(y[i]);
      const opmath_t g = static_cast<opmath_t>(dy[i]) * (opmath_t(1) - out) * out;
      if (dz != nullptr) {
        dz[i] = static_cast<scalar_t>(g);
      }
      sum += static_cast<double>(g);
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

// totals[c] = the sum over chunks of partial_sums[chunk, c], one block per column: each thread adds every
// kThreads-th chunk in order, then a tree of fixed shape adds the threads' totals, so the result repeats bit for bit.
template <typename scalar_t>
__global__ void sum_chunks_kernel(
    const double* __restrict__ partial_sums,
    int64_t num_chunks,
    int64_t columns,
    scalar_t* __restrict__ totals) {
  static_assert((kThreads & (kThreads - 1)) == 0, "the tree halves kThreads");
  __shared__ double thread_sums[kThreads];
  const int64_t column = blockIdx.x;
  double total = 0.0;
  for (int64_t chunk = threadIdx.x; chunk < num_chunks; chunk += kThreads) {
    total += partial_sums[chunk * columns + column];
  }
  thread_sums[threadIdx.x] = total;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
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

// A tensor of the partial sums' column count, in the dtype of `like`, holding their sums over the chunks.
template <typename scalar_t>
at::Tensor sum_chunks(const at::Tensor& partial_sums, at::IntArrayRef shape, const at::Tensor& like,
                      cudaStream_t stream) {
  at::Tensor totals = at::empty(shape, like.options());
  const int64_t columns = partial_sums.size(1);
  if (columns == 0) {
    return totals;
  }
  TORCH_CHECK(columns <= std::numeric_limits<int32_t>::max(), "linear_sigmoid_backward: ", columns,
              " gradient elements exceed one CUDA launch");
  sum_chunks_kernel<scalar_t><<<static_cast<unsigned int>(columns), kThreads, 0, stream>>>(
      partial_sums.const_data_ptr<double>(), partial_sums.size(0), columns, totals.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return totals;
}

// Blocks of a persistent grid: as many blocks of `kernel` as the device holds at once, no more than `wanted`. The
// occupancy query costs host time on every call and its answer depends only on the device, the kernel and its
// shared memory, so each answer is kept.
int resident_blocks(const void* kernel, int shared_bytes, int64_t wanted) {
  static std::mutex mutex;
  static std::map<std::tuple<c10::DeviceIndex, const void*, int>, int> blocks_per_multiprocessor;
  const std::tuple key{c10::cuda::current_device(), kernel, shared_bytes};
  int per_multiprocessor = 0;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto known = blocks_per_multiprocessor.find(key);
    if (known != blocks_per_multiprocessor.end()) {
      per_multiprocessor = known->second;
    } else {
      C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, kernel, kThreads,
                                                                   shared_bytes));
      blocks_per_multiprocessor.emplace(key, per_multiprocessor);
    }
  }
  const int64_t resident = static_cast<int64_t>(std::max(per_multiprocessor, 1)) *
      at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, resident)));
}

at::Tensor linear_sigmoid_cuda(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  check_linear_sigmoid_args(input, weight, bias);
  const c10::cuda::CUDAGuard device_guard(input.device());
  // The GEMM and its sigmoid are one kernel of ours; autograd must not record the ATen calls inside it.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
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
      with_out_features(static_cast<int>(M), [&](auto out_features) {
        constexpr int kOutFeatures = decltype(out_features)::value;
        const SkinnyForwardTile tile = skinny_forward_tile<scalar_t>(static_cast<int>(K), kOutFeatures);
        const auto kernel = linear_sigmoid_skinny_kernel<scalar_t, kOutFeatures>;
        const int blocks =
            resident_blocks(reinterpret_cast<const void*>(kernel), tile.bytes, (N + tile.rows - 1) / tile.rows);
        kernel<<<blocks, kThreads, tile.bytes, stream>>>(
            x.const_data_ptr<scalar_t>(),
            x.stride(0),
            w.const_data_ptr<scalar_t>(),
            b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr,
            N,
            static_cast<int>(K),
            x.stride(0) == K && is_16_byte_aligned(x),
            is_16_byte_aligned(y),
            y.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    return output;
  }
#ifdef FUSED_SIGMOID_HAVE_CUTLASS
  if (gemm_sigmoid_on_tensor_cores(x, w, b, y)) {
    return output;
  }
#endif
  if (b.has_value()) {
    at::addmm_out(y, *b, x, w.t());
  } else {
    at::mm_out(y, x, w.t());
  }
  // ATen's own sigmoid kernel, as eager runs it after its addmm: the same vectorized pass, the same rounding.
  at::sigmoid_(y);
  return output;
}

// The skinny backward's bound on a tile's rows: kDefaultSkinnyBackwardTileRows, or
// FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS where it is set (read once), so that benchmarks/gpu_check.sh can time larger
// tiles from one build. 256, 512 or 1024; any other value is an error, raised on every call, rather than a silent
// default.
int skinny_backward_tile_rows() {
  static const int rows = [] {
    const char* text = std::getenv("FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS");
    if (text == nullptr) {
      return kDefaultSkinnyBackwardTileRows;
    }
    const std::string value(text);
    TORCH_CHECK(value == "256" || value == "512" || value == "1024",
                "linear_sigmoid_backward: FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS must be 256, 512 or 1024, got '",
                value, "'");
    return std::stoi(value);
  }();
  return rows;
}

// The skinny shapes' backward: one pass of linear_sigmoid_skinny_backward_kernel, then the chunks' weight and bias
// gradient sums added up.
LinearSigmoidGradients skinny_backward(
    const at::Tensor& dy,
    const at::Tensor& y,
    const at::Tensor& x,
    const at::Tensor& w,
    const at::Tensor& input,
    std::array<bool, 3> output_mask) {
  const int64_t N = x.size(0);
  const int64_t K = w.size(1);
  const int64_t M = w.size(0);
  const int64_t num_chunks = (N + kSkinnyBackwardChunkRows - 1) / kSkinnyBackwardChunkRows;
  const at::TensorOptions sums = x.options().dtype(at::kDouble);
  const at::Tensor grad_input = output_mask[0] ? at::empty({N, K}, x.options()) : at::Tensor();
  const at::Tensor weight_partials = output_mask[1] ? at::empty({num_chunks, M * K}, sums) : at::Tensor();
  const at::Tensor bias_partials = output_mask[2] ? at::empty({num_chunks, M}, sums) : at::Tensor();
  LinearSigmoidGradients gradients;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int tile_rows = skinny_backward_tile_rows();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "linear_sigmoid_skinny_backward", [&] {
    with_out_features(static_cast<int>(M), [&](auto out_features) {
      constexpr int kOutFeatures = decltype(out_features)::value;
      const SkinnyBackwardTile tile = skinny_backward_tile<scalar_t>(static_cast<int>(K), kOutFeatures, tile_rows);
      const auto kernel = linear_sigmoid_skinny_backward_kernel<scalar_t, kOutFeatures>;
      const int blocks = resident_blocks(reinterpret_cast<const void*>(kernel), tile.bytes, num_chunks);
      kernel<<<blocks, kThreads, tile.bytes, stream>>>(
          dy.const_data_ptr<scalar_t>(),
          y.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(),
          x.stride(0),
          w.const_data_ptr<scalar_t>(),
          N,
          static_cast<int>(K),
          tile_rows,
          x.stride(0) == K && is_16_byte_aligned(x),
          is_16_byte_aligned(dy) && is_16_byte_aligned(y),
          output_mask[0] ? grad_input.mutable_data_ptr<scalar_t>() : nullptr,
          output_mask[1] ? weight_partials.mutable_data_ptr<double>() : nullptr,
          output_mask[2] ? bias_partials.mutable_data_ptr<double>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (output_mask[0]) {
      std::get<0>(gradients) = grad_input.view(input.sizes());
    }
    if (output_mask[1]) {
      std::get<1>(gradients) = sum_chunks<scalar_t>(weight_partials, {M, K}, w, stream);
    }
    if (output_mask[2]) {
      std::get<2>(gradients) = sum_chunks<scalar_t>(bias_partials, {M}, w, stream);
    }
  });
  return gradients;
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
  // The GEMMs are part of this kernel; autograd must not record them.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t M = weight.size(0);
  const BackwardRows rows = backward_rows(grad_output, output, input, weight);
  const at::Tensor& dy = rows.dy;
  const at::Tensor& y = rows.y;
  const at::Tensor& x = rows.x;
  const int64_t N = x.size(0);
  if (N == 0 || M == 0) {
    return zero_gradients(input, weight, output_mask);
  }
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) {
    return {};
  }
  if (M <= kMaxSkinnyOutFeatures && weight.size(1) <= kMaxSkinnyInFeatures) {
    return skinny_backward(dy, y, x, weight.contiguous(), input, output_mask);
  }

  std::optional<at::Tensor> grad_input;
  std::optional<at::Tensor> grad_weight;
  std::optional<at::Tensor> grad_bias;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // dz is stored only for the GEMMs; the bias gradient alone needs just its sums.
  const bool store_dz = output_mask[0] || output_mask[1];
  at::Tensor dz = store_dz ? at::empty({N, M}, y.options()) : at::Tensor();
  const GradLayout layout = grad_layout(M);
  const int64_t num_chunks = (N + layout.chunk_rows - 1) / layout.chunk_rows;
  const int64_t column_blocks = (M + layout.columns - 1) / layout.columns;
  TORCH_CHECK(
      num_chunks * column_blocks <= std::numeric_limits<int32_t>::max() &&
          M <= std::numeric_limits<int32_t>::max(),
      "linear_sigmoid_backward: ", N, " rows of ", M, " outputs exceed one CUDA launch");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "linear_sigmoid_backward", [&] {
    // The chunk sums live in this scope only: freed before the GEMMs allocate their outputs, they never add to the
    // backward's peak memory, which stays eager's (dz and the gradients).
    const at::Tensor partial_sums = output_mask[2] ? at::empty({num_chunks, M}, y.options().dtype(at::kDouble))
                                                   : at::Tensor();
    sigmoid_grad_kernel<scalar_t><<<static_cast<unsigned int>(num_chunks * column_blocks), kThreads, 0, stream>>>(
        dy.const_data_ptr<scalar_t>(),
        y.const_data_ptr<scalar_t>(),
        N,
        M,
        store_dz ? dz.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[2] ? partial_sums.mutable_data_ptr<double>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (output_mask[2]) {
      grad_bias = sum_chunks<scalar_t>(partial_sums, {M}, weight, stream);
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
