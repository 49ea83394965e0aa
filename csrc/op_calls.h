// Calls of the fused_sigmoid ops through the dispatcher, for the kernels that wrap them (autograd, autocast):
// each call goes on to the next dispatch key, as a direct C++ call would not.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace fused_sigmoid {

using LinearSigmoidGradients =
    std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>;

at::Tensor call_linear_sigmoid(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias);

LinearSigmoidGradients call_linear_sigmoid_backward(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight,
    std::array<bool, 3> output_mask);

} // namespace fused_sigmoid
