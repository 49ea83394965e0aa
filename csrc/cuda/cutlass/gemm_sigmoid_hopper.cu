// Hopper kernels for the GEMM-sized forward: CUTLASS 3's warp-specialized GEMM (TMA loads into a multistage
// shared-memory pipeline, wgmma on two consumer warpgroups) with a fused epilogue that adds the bias per output
// feature and applies eager's sigmoid to the float accumulators before TMA stores y. The Ampere kernels of
// gemm_sigmoid.cu run on Hopper too, but without these instructions cuBLAS outruns them beyond K = M = 64.
//
// wgmma exists only in sm_90a code; compiled for any other target, CUTLASS leaves these kernels' bodies empty, and
// one launched would write nothing. So a one-thread probe compiled alongside reports whether the device's code
// holds the sm_90a bodies, and only then do these kernels run.
#include "gemm_sigmoid_hopper.h"
#include "eager_sigmoid.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>

#include <cute/tensor.hpp>
#include <cutlass/bfloat16.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/half.h>
#include <cutlass/kernel_hardware_info.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace fused_sigmoid::cuda {
namespace {

__global__ void report_sm90a_code(bool* has_sm90a_code) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *has_sm90a_code = true;
#else
  *has_sm90a_code = false;
#endif
}

} // namespace

// Probed once per device, with a synchronizing read; while the stream is being captured into a CUDA graph, where
// that read cannot run, a device not yet probed answers false (the Ampere kernels or cuBLAS take the call).
bool current_device_runs_sm90a_code() {
  const cudaDeviceProp* const properties = at::cuda::getCurrentDeviceProperties();
  if (properties->major != 9 || properties->minor != 0) {
    return false;
  }
  static std::mutex mutex;
  static std::unordered_map<int, bool> probed;
  const int device = at::cuda::current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = probed.find(device);
  if (found != probed.end()) {
    return found->second;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    return false;
  }
  const at::Tensor flag = at::empty({1}, at::TensorOptions().dtype(at::kBool).device(at::kCUDA, device));
  report_sm90a_code<<<1, 1, 0, stream>>>(flag.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const bool has_code = flag.item<bool>();
  probed.emplace(device, has_code);
  return has_code;
}

namespace {

// A = x (rows, K) row-major and B = w (M, K) row-major, both K-major as TF32 wgmma requires; D = y (rows, M)
// row-major; no C. Output tiles of 128 rows x 128 features, TileK elements deep (128 bytes of A or B per row).
template <typename Element, int TileK>
struct HopperGemmSigmoid {
  static constexpr int kAlignment = 128 / cutlass::sizeof_bits<Element>::value;
  using TileShape = cute::Shape<cute::_128, cute::_128, cute::Int<TileK>>;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  // D = sigmoid(acc + bias[feature]) in float, rounded once to Element. The source (C) element is void as C is:
  // with any other, the epilogue would scale C's registers, never loaded, by beta = 0, and garbage times 0 can be NaN.
  using Fusion =
      cutlass::epilogue::fusion::LinCombPerColBiasEltAct<EagerSigmoid, Element, float, Element, void, float>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, cutlass::layout::RowMajor, kAlignment,
      Element, cutlass::layout::RowMajor, kAlignment,
      cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Element, cutlass::layout::RowMajor, kAlignment,
      Element, cutlass::layout::ColumnMajor, kAlignment,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

template <typename Element, int TileK>
bool run_hopper_gemm_sigmoid(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                             const at::Tensor& y) {
  using Gemm = typename HopperGemmSigmoid<Element, TileK>::Gemm;
  using Kernel = typename Gemm::GemmKernel;
  const auto rows = static_cast<int>(x.size(0));
  const auto K = static_cast<int>(w.size(1));
  const auto M = static_cast<int>(w.size(0));
  // Strides as (row, column, batch): x through its row stride (which a single row may have as 0, and TMA takes
  // only multiples of 16 bytes), w and y contiguous.
  const int64_t x_row_stride = rows == 1 ? int64_t{K} : x.stride(0);
  const typename Kernel::StrideA stride_x = cute::make_stride(x_row_stride, cute::Int<1>{}, int64_t{0});
  const typename Kernel::StrideB stride_w = cute::make_stride(int64_t{K}, cute::Int<1>{}, int64_t{0});
  const typename Kernel::StrideD stride_y = cute::make_stride(int64_t{M}, cute::Int<1>{}, int64_t{0});
  cutlass::KernelHardwareInfo hardware;
  hardware.device_id = at::cuda::current_device();
  hardware.sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  typename Gemm::Arguments arguments{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {rows, M, K, 1},
      {reinterpret_cast<const Element*>(x.const_data_ptr()), stride_x,
       reinterpret_cast<const Element*>(w.const_data_ptr()), stride_w},
      {{}, nullptr, {}, reinterpret_cast<Element*>(y.mutable_data_ptr()), stride_y},
      hardware};
  // Without a bias the broadcast reads its default of zero.
  arguments.epilogue.thread.bias_ptr = b.has_value() ? reinterpret_cast<const Element*>(b->const_data_ptr()) : nullptr;
  Gemm gemm;
  if (gemm.can_implement(arguments) != cutlass::Status::kSuccess) {
    return false;
  }
  const size_t workspace_bytes = Gemm::get_workspace_size(arguments);
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(workspace_bytes)}, x.options().dtype(at::kByte));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // A setup CUTLASS refuses (a TMA descriptor it cannot build) leaves y to the other paths, as can_implement does.
  if (gemm.initialize(arguments, workspace.mutable_data_ptr(), stream) != cutlass::Status::kSuccess) {
    return false;
  }
  const cutlass::Status status = gemm.run(stream);
  TORCH_CHECK(status == cutlass::Status::kSuccess, "linear_sigmoid: CUTLASS Hopper GEMM launch failed: ",
              cutlass::cutlassGetStatusString(status), " (rerun with CUDA_LAUNCH_BLOCKING=1 for the CUDA error)");
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

} // namespace

bool gemm_sigmoid_hopper(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y) {
  if (!current_device_runs_sm90a_code()) {
    return false;
  }
  // Rows that overlap (an expanded input's row stride of 0, say) are left to the other paths: the Ampere kernels read
  // them through plain pointers, and no TMA descriptor of such strides has run here.
  if (x.size(0) > 1 && x.stride(0) < w.size(1)) {
    return false;
  }
  switch (x.scalar_type()) {
    case at::kHalf:
      return run_hopper_gemm_sigmoid<cutlass::half_t, 64>(x, w, b, y);
    case at::kBFloat16:
      return run_hopper_gemm_sigmoid<cutlass::bfloat16_t, 64>(x, w, b, y);
    case at::kFloat:
      return run_hopper_gemm_sigmoid<float, 32>(x, w, b, y);
    default:
      return false;
  }
}

} // namespace fused_sigmoid::cuda
