#include "checks.h"

#include "rows.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>

namespace fused_sigmoid {
namespace {

// Python's spelling ("torch.float32"), which is what a user wrote.
std::string dtype_name(at::ScalarType type) {
  return "torch." + std::string(c10::getDtypeNames(type).first);
}

bool is_supported_dtype(at::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kBFloat16 || type == at::kHalf;
}

void check_like_input(const char* op, const char* name, const at::Tensor& tensor, const at::Tensor& input) {
  TORCH_CHECK_TYPE(
      tensor.scalar_type() == input.scalar_type(),
      op, ": expected ", name, " to have the same dtype as input (", dtype_name(input.scalar_type()),
      "), but got ", dtype_name(tensor.scalar_type()));
  TORCH_CHECK(
      tensor.device() == input.device(),
      op, ": expected ", name, " to be on the same device as input (", input.device(), "), but got ",
      tensor.device());
}

void check_input_dtype(const char* op, const at::Tensor& input) {
  TORCH_CHECK_TYPE(
      is_supported_dtype(input.scalar_type()),
      op, ": expected input to be a floating-point tensor (torch.float32, torch.float64, torch.bfloat16 or "
      "torch.float16), but got ", dtype_name(input.scalar_type()));
}

void check_weight_and_features(const char* op, const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK(
      input.dim() >= 1,
      op, ": expected input to have at least 1 dimension (*, in_features), but got a 0-d tensor");
  TORCH_CHECK(
      weight.dim() == 2,
      op, ": expected weight to be 2-D (out_features, in_features), but got a ", weight.dim(),
      "-D tensor of shape ", weight.sizes());
  TORCH_CHECK(
      weight.size(1) == input.size(-1),
      op, ": weight has ", weight.size(1), " columns but input has ", input.size(-1), " features (input shape ",
      input.sizes(), ", weight shape ", weight.sizes(), ")");
}

} // namespace

void check_linear_sigmoid_args(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear_sigmoid";
  check_input_dtype(op, input);
  check_like_input(op, "weight", weight, input);
  if (bias.has_value()) {
    check_like_input(op, "bias", *bias, input);
  }
  check_weight_and_features(op, input, weight);
  if (bias.has_value()) {
    TORCH_CHECK(
        bias->dim() == 1 && bias->size(0) == weight.size(0),
        op, ": expected bias of shape [", weight.size(0), "] (out_features), but got shape ", bias->sizes());
  }
}

void check_linear_sigmoid_backward_args(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight) {
  constexpr const char* op = "linear_sigmoid_backward";
  check_input_dtype(op, input);
  check_like_input(op, "weight", weight, input);
  check_like_input(op, "output", output, input);
  check_like_input(op, "grad_output", grad_output, input);
  check_weight_and_features(op, input, weight);
  const std::vector<int64_t> expected = output_sizes(input, weight.size(0));
  TORCH_CHECK(
      output.sizes() == at::IntArrayRef(expected),
      op, ": expected output of shape ", at::IntArrayRef(expected), " (input's leading dims, out_features), but got ",
      output.sizes());
  TORCH_CHECK(
      grad_output.sizes() == output.sizes(),
      op, ": expected grad_output of the output's shape ", output.sizes(), ", but got ", grad_output.sizes());
}

} // namespace fused_sigmoid
