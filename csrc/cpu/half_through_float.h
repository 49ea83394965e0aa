// bfloat16 and float16 on CPUs where ATen has no fast GEMM for them.
#pragma once

#include "../op_calls.h"

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>

namespace fused_sigmoid::cpu {

// Whether ATen's GEMMs in this dtype run oneDNN's kernels for it here, as ATen itself decides: a CPU with the
// instructions oneDNN needs for the type (AVX-512 for bfloat16; AVX-512-FP16 or AMX for float16) and oneDNN not
// turned off (torch.backends.mkldnn). Elsewhere ATen's own loop runs them, on an AVX2 Zen 3 8-27x slower than float
// BLAS for the benchmark's layers.
bool has_native_half_gemm(at::ScalarType dtype);

// y = sigmoid(x @ w^T + b) for half x, w, b: blocks of rows of x widened to float run the float kernels, by the float
// routing, and each output is rounded once into y ((N, M), contiguous).
void linear_sigmoid_through_float(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y);

// The backward the same way: dy, y and x (N rows each; dy and y contiguous) widened to float a block of rows at a
// time, gradients rounded once. grad_input comes back shaped like input.
LinearSigmoidGradients linear_sigmoid_backward_through_float(
    const at::Tensor& dy,
    const at::Tensor& y,
    const at::Tensor& x,
    const at::Tensor& w,
    const at::Tensor& input,
    std::array<bool, 3> output_mask);

} // namespace fused_sigmoid::cpu
