#include "op_calls.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace fused_sigmoid {

at::Tensor call_linear_sigmoid(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_sigmoid::linear_sigmoid", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias);
}

LinearSigmoidGradients call_linear_sigmoid_backward(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fused_sigmoid::linear_sigmoid_backward", "")
                             .typed<LinearSigmoidGradients(
                                 const at::Tensor&,
                                 const at::Tensor&,
                                 const at::Tensor&,
                                 const at::Tensor&,
                                 std::array<bool, 3>)>();
  return op.call(grad_output, output, input, weight, output_mask);
}

} // namespace fused_sigmoid
