// Autograd for torch.ops.fused_sigmoid.linear_sigmoid, in C++ so that a differentiable call costs no Python: the
// tutorial's one-row layer must train as fast as eager's. fused_sigmoid.LinearSigmoidFunction is the same
// backward as a Python autograd.Function; tests check both.
#include "op_calls.h"
#include "rows.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>

namespace fused_sigmoid {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearSigmoid : public torch::autograd::Function<LinearSigmoid> {
 public:
  static at::Tensor forward(
      AutogradContext* ctx,
      const at::Tensor& input,
      const at::Tensor& weight,
      const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor output = call_linear_sigmoid(input, weight, bias);
    // The output, not the pre-activation: dz = dy * y * (1 - y) needs nothing else. Saving it as an output also
    // makes an in-place change of it before backward an error, as in eager.
    ctx->save_for_backward({input, weight, output});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& output = saved[2];
    const at::Tensor& grad_output = grad_outputs[0];
    // A missing bias is no input edge of this node, so it has no needs_input_grad entry.
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> needs = {
        ctx->needs_input_grad(0), ctx->needs_input_grad(1), has_bias && ctx->needs_input_grad(2)};
    // create_graph=True needs differentiable ops, through which double backward reaches the fused op again. A
    // batched gradient (autograd.grad's is_grads_batched, which vectorised Jacobians and gradcheck's batched checks
    // use) takes them too: they all have batching rules, where the backward op's optional outputs leave legacy
    // vmap no fallback.
    if (at::GradMode::is_enabled() || grad_outputs[0].key_set().has(c10::DispatchKey::Batched)) {
      const at::Tensor grad_z = grad_output * (1 - output) * output;
      // The row count comes from rows_of: reshape(-1, ...) cannot infer it when a feature count is 0.
      const at::Tensor x_rows = rows_of(input, weight.size(1));
      const at::Tensor grad_z_rows = grad_z.reshape({x_rows.size(0), weight.size(0)});
      return {
          needs[0] ? at::matmul(grad_z, weight) : at::Tensor(),
          needs[1] ? grad_z_rows.t().mm(x_rows) : at::Tensor(),
          needs[2] ? grad_z_rows.sum(0) : at::Tensor(),
      };
    }
    auto [grad_input, grad_weight, grad_bias] = call_linear_sigmoid_backward(grad_output, output, input, weight, needs);
    return {
        grad_input.value_or(at::Tensor()),
        grad_weight.value_or(at::Tensor()),
        grad_bias.value_or(at::Tensor()),
    };
  }
};

at::Tensor linear_sigmoid_autograd(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  // With nothing to differentiate (inference, or no argument that needs a gradient, and no forward-mode tangent,
  // which no_grad does not turn off) no node is recorded, so none is built: Function::apply would make one, and its
  // context, on every call, a good part of a one-row call's time.
  const auto differentiated = [](const at::Tensor& t) {
    return (at::GradMode::is_enabled() && t.requires_grad()) || t._fw_grad(/*level=*/0).defined();
  };
  const bool bias_differentiated = bias.has_value() && bias->defined() && differentiated(*bias);
  if (!differentiated(input) && !differentiated(weight) && !bias_differentiated) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_sigmoid(input, weight, bias);
  }
  // Function::apply would compute the forward before finding it has no jvp; refuse first.
  const auto has_tangent = [](const at::Tensor& t) { return t._fw_grad(/*level=*/0).defined(); };
  TORCH_CHECK_NOT_IMPLEMENTED(
      !has_tangent(input) && !has_tangent(weight) && !(bias.has_value() && bias->defined() && has_tangent(*bias)),
      "linear_sigmoid: this op has no forward-mode derivative of its own; call fused_sigmoid.linear_sigmoid, which "
      "serves forward-mode AD and torch.func transforms");
  return LinearSigmoid::apply(input, weight, bias);
}

} // namespace

TORCH_LIBRARY_IMPL(fused_sigmoid, Autograd, m) {
  m.impl("linear_sigmoid", &linear_sigmoid_autograd);
}

} // namespace fused_sigmoid
