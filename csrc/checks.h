// Argument checks shared by every backend. Each failure names the op, the argument, what was expected and what
// came; fused_sigmoid/_fake.py mirrors them word for word so that traced and eager calls fail alike.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace fused_sigmoid {

void check_linear_sigmoid_args(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias);

void check_linear_sigmoid_backward_args(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight);

} // namespace fused_sigmoid
