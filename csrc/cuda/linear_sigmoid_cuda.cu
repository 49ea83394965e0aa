// CUDA implementation of the fused_sigmoid ops.
//
// Forward: shapes with few outputs (out_features <= 8, in_features <= 64: logistic heads and gates) run one kernel
// that keeps the weight in shared memory, stages tiles of rows of x there with coalesced loads, and writes each
// tile's outputs once (skinny_kernels.cuh). Larger shapes run, where the build has CUTLASS and the shape and dtype
// suit tensor cores, one CUTLASS GEMM with the bias and sigmoid in its epilogue (cutlass/gemm_sigmoid.cu);
// otherwise cuBLAS (through ATen's addmm, whose cuBLASLt path adds the bias in its epilogue) into the output, then
// ATen's in-place sigmoid: cuBLASLt has no sigmoid epilogue.
// Backward: the skinny shapes run one pass over the rows (skinny_kernels.cuh) that forms dz (in registers for the
// smallest shapes, in shared memory for the others), writes grad_input and sums the weight and bias gradients per
// chunk of rows. Other shapes run one kernel for dz and its per-chunk column sums (grad_kernels.cuh), then cuBLAS
// GEMMs for grad_input and grad_weight. Chunk sums are in double and added by a second kernel in a fixed order
// without atomics, so gradients repeat bit for bit and the bias gradient is rounded once, as on the CPU. Everything
// runs on the current stream of the input's device, with int64 indexing.
#include "../checks.h"
#include "../rows.h"
#include "alignment.h"
#include "gemm_sigmoid.h"
#include "grad_kernels.cuh"
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
  sum_chunks_kernel<scalar_t><<<static_cast<unsigned int>(columns), kGradThreads, 0, stream>>>(
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
        with_fixed_in_features<has_fixed_forward<scalar_t>()>(static_cast<int>(K), [&](auto fixed_in_features) {
          constexpr int kOutFeatures = decltype(out_features)::value;
          const SkinnyForwardTile tile = skinny_forward_tile<scalar_t>(static_cast<int>(K), kOutFeatures);
          const auto kernel = linear_sigmoid_skinny_kernel<scalar_t, kOutFeatures, decltype(fixed_in_features)::value>;
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

// The bound on a tile's rows of the skinny backward whose threads own gradient elements (the per-row kernel's tiles
// take a stage's largest row count): kDefaultSkinnyBackwardTileRows, or
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

// The skinny shapes' backward: one pass of linear_sigmoid_skinny_per_row_backward_kernel (per_row_backward shapes) or
// of linear_sigmoid_skinny_backward_kernel, then the chunks' weight and bias gradient sums added up.
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
    const SkinnyBackwardArgs<scalar_t> args{
        dy.const_data_ptr<scalar_t>(),
        y.const_data_ptr<scalar_t>(),
        x.const_data_ptr<scalar_t>(),
        x.stride(0),
        w.const_data_ptr<scalar_t>(),
        N,
        x.stride(0) == K && is_16_byte_aligned(x),
        is_16_byte_aligned(dy) && is_16_byte_aligned(y),
        output_mask[0] ? grad_input.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[1] ? weight_partials.mutable_data_ptr<double>() : nullptr,
        output_mask[2] ? bias_partials.mutable_data_ptr<double>() : nullptr};
    with_out_features(static_cast<int>(M), [&](auto out_features) {
      constexpr int kOutFeatures = decltype(out_features)::value;
      with_per_row_in_features<scalar_t, kOutFeatures>(static_cast<int>(K), [&](auto per_row_in_features) {
        constexpr int kFixedK = decltype(per_row_in_features)::value;
        if constexpr (kFixedK > 0) {
          const SkinnyBackwardTile tile =
              skinny_backward_tile<scalar_t>(kFixedK, kOutFeatures, kMaxSkinnyBackwardTileRows, true);
          const auto kernel = linear_sigmoid_skinny_per_row_backward_kernel<scalar_t, kOutFeatures, kFixedK>;
          const int blocks = resident_blocks(reinterpret_cast<const void*>(kernel), tile.bytes, num_chunks);
          kernel<<<blocks, kThreads, tile.bytes, stream>>>(args);
        } else {
          const SkinnyBackwardTile tile =
              skinny_backward_tile<scalar_t>(static_cast<int>(K), kOutFeatures, tile_rows, false);
          const auto kernel = linear_sigmoid_skinny_backward_kernel<scalar_t, kOutFeatures>;
          const int blocks = resident_blocks(reinterpret_cast<const void*>(kernel), tile.bytes, num_chunks);
          kernel<<<blocks, kThreads, tile.bytes, stream>>>(args, static_cast<int>(K), tile_rows);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
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
    sigmoid_grad_kernel<scalar_t>
        <<<static_cast<unsigned int>(num_chunks * column_blocks), kGradThreads, 0, stream>>>(
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
