// The GEMM-sized forward on Hopper's own tensor-core instructions (wgmma, with TMA loads and stores): the same
// bias-and-sigmoid epilogue as the Ampere kernels of gemm_sigmoid.cu, for compute capability 9.0 in a build that
// targets sm_90a.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace fused_sigmoid::cuda {

// y = sigmoid(x @ w^T + b) as one CUTLASS 3 GEMM, for float16, bfloat16 and float32 (run as TF32: the caller checks
// that PyTorch allows it), with the operands gemm_sigmoid_on_tensor_cores checked. Returns false, with y untouched,
// where the device is not compute capability 9.0, the build holds no sm_90a code, or CUTLASS cannot run the shape.
bool gemm_sigmoid_hopper(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y);

// Whether the current device runs this build's sm_90a code: a compute capability 9.0 device, and a build whose
// targets included sm_90a.
bool current_device_runs_sm90a_code();

} // namespace fused_sigmoid::cuda
