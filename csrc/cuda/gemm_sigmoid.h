// The GEMM-sized CUDA forward fused on tensor cores: csrc/cuda/cutlass/gemm_sigmoid.cu, built where CUTLASS's
// headers are found (setup.py defines FUSED_SIGMOID_HAVE_CUTLASS then).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace fused_sigmoid::cuda {

// y = sigmoid(x @ w^T + b) as one CUTLASS GEMM whose epilogue adds the bias and applies the sigmoid before y is
// written. x is (rows, K) with unit column stride, w (M, K) and b (M) contiguous, y (rows, M) contiguous. Returns
// false, with y untouched, where the shape, dtype, alignment, device or TF32 setting rule the kernel out.
bool gemm_sigmoid_on_tensor_cores(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y);

// The CUTLASS kernel families gemm_sigmoid_on_tensor_cores can run on the current device ("ampere", "hopper"),
// whatever the variables that choose between them say; none where no CUDA device is present.
std::vector<std::string> cutlass_kernels_for_current_device();

} // namespace fused_sigmoid::cuda
