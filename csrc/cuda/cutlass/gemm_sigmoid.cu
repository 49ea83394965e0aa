// The GEMM-sized forward as one CUTLASS GEMM on tensor cores whose epilogue adds the bias and applies the sigmoid to
// the float accumulators before y is written once. cuBLASLt has no sigmoid epilogue, so the cuBLAS path writes y,
// reads it back and writes it again; on shapes whose time is mostly memory traffic (K and M in the hundreds) that
// second pass is up to half the work.
//
// Tensor cores only: float16 and bfloat16, and float32 where PyTorch allows TF32 for matmuls (as eager's cuBLAS
// call then uses it); float32 without TF32 and float64 stay on cuBLAS. The kernels here are CUTLASS's Ampere
// (sm_80) GEMMs, which also run on Hopper; gemm_sigmoid_hopper.cu holds Hopper's own, which take float32 (TF32) on
// Hopper by default, and any dtype where FUSED_SIGMOID_CUTLASS_HOPPER=1 asks for them.
#include "../alignment.h"
#include "../gemm_sigmoid.h"
#include "eager_sigmoid.h"
#include "gemm_sigmoid_hopper.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>

#include <cutlass/bfloat16.h>
#include <cutlass/epilogue/thread/linear_combination_generic.h>
#include <cutlass/gemm/device/gemm.h>
#include <cutlass/half.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace fused_sigmoid::cuda {
namespace {

// The shapes this path takes by default, timed against cuBLAS followed by ATen's sigmoid, one process per path, each
// path's speed-up over the eager run in its own process (benchmarks/results/cuda-h100-gemm-bound-*.csv,
// cuda-h200-gemm-bound-*.csv):
// - The Ampere tensor-core kernels (mma.sync), on every device from compute capability 8.0, for K and M up to 64:
//   1.12-1.18x faster than cuBLAS at K = M = 64 on an H200; 1.61x eager against cuBLAS's 0.95x in bfloat16 and 1.28x
//   against 0.96x in TF32 on an H100. From 256 to 4096 they ran 0.40-0.76x as fast as cuBLAS on the H200, 0.44-0.98x
//   on the H100 (a draw only in TF32 at 256): there the pass over y that the epilogue saves costs less than the
//   Hopper instructions they give up.
// - Hopper's own (wgmma, TMA), for float32 as TF32 on compute capability 9.0 with sm_90a code, for K and M up to 512:
//   on an H100 1.52x eager at 128, 1.57x at 256 and 1.35x at 512, where cuBLAS ran 1.10x, 0.99x and 1.00x; 1.26x at
//   64, a draw with the Ampere kernels; 0.83x at 4096 against cuBLAS's 0.94x. In bfloat16 they beat cuBLAS at 128
//   only (1.16x against 1.07x) and lost at 256 and 512 (0.98x and 0.87x against 1.07x and 1.05x), so the half types
//   keep the Ampere kernels' bound.
constexpr int64_t kDefaultMaxFeatures = 64;
constexpr int64_t kDefaultHopperMaxFeatures = 512;

// Whether the Hopper kernels take float32 (as TF32) by default: on a device and build that can run them. The answer
// for a device is probed once, outside CUDA graph capture: a graph captured before the first call outside one (no
// warm-up) records the other kernels for its TF32 shapes, which later eager calls then give to Hopper's.
bool hopper_kernels_by_default(at::ScalarType dtype) {
  return dtype == at::kFloat && current_device_runs_sm90a_code();
}

// FUSED_SIGMOID_CUTLASS_MAX_FEATURES, read once, where it is set: it replaces both kernels' default bounds, so
// that benchmarks/gpu_check.sh can time every path on the same shapes from one build; 0 sends every shape this path
// could take to cuBLAS (the skinny shapes keep their own kernel). Set but empty, out of range or not a whole
// non-negative number is an error, raised on every call, rather than a silent default.
std::optional<int64_t> max_features_setting() {
  static const std::optional<int64_t> bound = []() -> std::optional<int64_t> {
    const char* text = std::getenv("FUSED_SIGMOID_CUTLASS_MAX_FEATURES");
    if (text == nullptr) {
      return std::nullopt;
    }
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(text, &end, 10);
    TORCH_CHECK(
        end != text && *end == '\0' && errno != ERANGE && value >= 0,
        "linear_sigmoid: FUSED_SIGMOID_CUTLASS_MAX_FEATURES must be a non-negative integer, got '", text, "'");
    return static_cast<int64_t>(value);
  }();
  return bound;
}

// FUSED_SIGMOID_CUTLASS_HOPPER, read once, where it is set: 1 gives every dtype's shapes within the Hopper kernels'
// bound to them where the device and build can run them, 0 none; any other value is an error.
std::optional<bool> hopper_setting() {
  static const std::optional<bool> chosen = []() -> std::optional<bool> {
    const char* text = std::getenv("FUSED_SIGMOID_CUTLASS_HOPPER");
    if (text == nullptr) {
      return std::nullopt;
    }
    const std::string value(text);
    TORCH_CHECK(value == "0" || value == "1", "linear_sigmoid: FUSED_SIGMOID_CUTLASS_HOPPER must be 0 or 1, got '",
                value, "'");
    return value == "1";
  }();
  return chosen;
}

// D = sigmoid(alpha * accumulator + beta * C) in float, rounded once to Element: C is the bias, read with a row
// stride of 0 so that every row of the tile gets the same bias row (beta 0 without a bias).
template <typename Element>
using BiasSigmoidEpilogue = cutlass::epilogue::thread::LinearCombinationGeneric<
    EagerSigmoid,
    Element,
    128 / cutlass::sizeof_bits<Element>::value,
    float,
    float,
    cutlass::epilogue::thread::ScaleType::Default,
    cutlass::FloatRoundStyle::round_to_nearest,
    true>;

// A = x (rows, K) row-major; B = w^T, i.e. w (M, K) row-major read as a column-major (K, M); C, D (rows, M)
// row-major. Threadblock tiles of 128 rows x 64 outputs, four warps.
template <typename Element, int TileK, typename InstructionShape, int Stages>
using GemmSigmoid = cutlass::gemm::device::Gemm<
    Element,
    cutlass::layout::RowMajor,
    Element,
    cutlass::layout::ColumnMajor,
    Element,
    cutlass::layout::RowMajor,
    float,
    cutlass::arch::OpClassTensorOp,
    cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<128, 64, TileK>,
    cutlass::gemm::GemmShape<64, 32, TileK>,
    InstructionShape,
    BiasSigmoidEpilogue<Element>,
    // Consecutive blocks take the output tiles of one tile of rows, so that tile of x is read from memory once
    // and from L2 for the other output tiles (with the plain order, each output tile streamed all of x again).
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>,
    Stages>;

using GemmSigmoidHalf = GemmSigmoid<cutlass::half_t, 32, cutlass::gemm::GemmShape<16, 8, 16>, 4>;
using GemmSigmoidBFloat16 = GemmSigmoid<cutlass::bfloat16_t, 32, cutlass::gemm::GemmShape<16, 8, 16>, 4>;
using GemmSigmoidTF32 = GemmSigmoid<float, 16, cutlass::gemm::GemmShape<16, 8, 8>, 4>;

// 128-bit accesses: every pointer on 16 bytes and every leading dimension a multiple of the elements in 16 bytes.
bool aligned_for_vectors(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                         const at::Tensor& y) {
  const int64_t per_vector = 16 / x.element_size();
  return x.stride(0) % per_vector == 0 && w.size(1) % per_vector == 0 && y.size(1) % per_vector == 0 &&
      is_16_byte_aligned(x) && is_16_byte_aligned(w) && is_16_byte_aligned(y) &&
      (!b.has_value() || is_16_byte_aligned(*b));
}

// Whether eager's float32 matmul on CUDA may use TF32 here: the setting ATen's cuBLAS calls read (torch 2.10's
// float32 precision API, which both torch.backends.cuda.matmul.allow_tf32 and .fp32_precision set; the legacy
// allowTF32CuBLAS() raises when the two APIs were mixed), and not under a NoTF32Guard.
bool tf32_matmuls_allowed() {
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
      at::Float32Precision::TF32 &&
      !at::NoTF32Guard::should_disable_tf32();
}

template <typename Gemm>
bool run_gemm_sigmoid(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                      const at::Tensor& y) {
  using Element = typename Gemm::ElementA;
  const auto rows = static_cast<int>(x.size(0));
  const auto K = static_cast<int>(w.size(1));
  const auto M = static_cast<int>(w.size(0));
  auto* const output = reinterpret_cast<Element*>(y.mutable_data_ptr());
  const Element* const source = b.has_value() ? reinterpret_cast<const Element*>(b->const_data_ptr()) : output;
  typename Gemm::Arguments arguments(
      {rows, M, K},
      {reinterpret_cast<const Element*>(x.const_data_ptr()), x.stride(0)},
      {reinterpret_cast<const Element*>(w.const_data_ptr()), K},
      {source, b.has_value() ? 0 : M},
      {output, M},
      {1.0f, b.has_value() ? 1.0f : 0.0f});
  Gemm gemm;
  if (gemm.can_implement(arguments) != cutlass::Status::kSuccess) {
    return false;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cutlass::Status status = gemm.initialize(arguments, nullptr, stream);
  TORCH_CHECK(status == cutlass::Status::kSuccess, "linear_sigmoid: CUTLASS GEMM setup failed: ",
              cutlass::cutlassGetStatusString(status));
  // The launch raises the kernel's shared-memory limit where its stages need more than 48 KiB, and reads (and so
  // clears) the launch error itself: its status is the check.
  status = gemm(stream);
  TORCH_CHECK(status == cutlass::Status::kSuccess, "linear_sigmoid: CUTLASS GEMM launch failed: ",
              cutlass::cutlassGetStatusString(status), " (rerun with CUDA_LAUNCH_BLOCKING=1 for the CUDA error)");
  return true;
}

} // namespace

bool gemm_sigmoid_on_tensor_cores(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y) {
  // A device without these kernels reads neither variable, as cutlass_kernels_for_current_device reports none.
  if (at::cuda::getCurrentDeviceProperties()->major < 8) {
    return false;
  }
  const at::ScalarType dtype = x.scalar_type();
  if (dtype != at::kHalf && dtype != at::kBFloat16 && !(dtype == at::kFloat && tf32_matmuls_allowed())) {
    return false;
  }
  const int64_t K = w.size(1);
  const int64_t M = w.size(0);
  // CUTLASS holds row coordinates in 32 bits, and adds up to a tile's height to them in the last tile.
  const int64_t max_rows = std::numeric_limits<int>::max() - 256;
  if (K == 0 || x.size(0) > max_rows || !aligned_for_vectors(x, w, b, y)) {
    return false;
  }
  // Each kernel family within its own default bound, or within the one the variable sets for both.
  const std::optional<int64_t> bound_setting = max_features_setting();
  const auto within = [&](int64_t default_bound) {
    const int64_t bound = bound_setting.value_or(default_bound);
    return K <= bound && M <= bound;
  };
  // Past the larger bound nothing here runs, and the device is not probed.
  static_assert(kDefaultHopperMaxFeatures >= kDefaultMaxFeatures);
  if (!within(kDefaultHopperMaxFeatures)) {
    return false;
  }
  // Hopper's where chosen and where CUTLASS takes the shape; the Ampere kernels, within their bound, otherwise. A
  // setting decides alone: FUSED_SIGMOID_CUTLASS_HOPPER=0 must not probe the device either.
  const std::optional<bool> hopper_chosen = hopper_setting();
  const bool try_hopper = hopper_chosen.has_value() ? *hopper_chosen : hopper_kernels_by_default(dtype);
  if (try_hopper && gemm_sigmoid_hopper(x, w, b, y)) {
    return true;
  }
  if (!within(kDefaultMaxFeatures)) {
    return false;
  }
  switch (dtype) {
    case at::kHalf:
      return run_gemm_sigmoid<GemmSigmoidHalf>(x, w, b, y);
    case at::kBFloat16:
      return run_gemm_sigmoid<GemmSigmoidBFloat16>(x, w, b, y);
    default:
      return run_gemm_sigmoid<GemmSigmoidTF32>(x, w, b, y);
  }
}

std::vector<std::string> cutlass_kernels_for_current_device() {
  if (!at::cuda::is_available()) {
    return {};
  }
  std::vector<std::string> kernels;
  if (at::cuda::getCurrentDeviceProperties()->major >= 8) {
    kernels.emplace_back("ampere");
  }
  if (current_device_runs_sm90a_code()) {
    kernels.emplace_back("hopper");
  }
  return kernels;
}

} // namespace fused_sigmoid::cuda
