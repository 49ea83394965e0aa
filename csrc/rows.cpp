#include "rows.h"

#include <ATen/ops/zeros.h>
#include <c10/util/accumulate.h>

namespace fused_sigmoid {

std::vector<int64_t> output_sizes(const at::Tensor& input, int64_t out_features) {
  std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end());
  sizes.back() = out_features;
  return sizes;
}

at::Tensor rows_of(const at::Tensor& input, int64_t features) {
  // N spelled out: reshape cannot infer it when in_features is 0.
  const int64_t N = c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
  at::Tensor rows = input.reshape({N, features});
  return rows.stride(1) == 1 ? rows : rows.contiguous();
}

BackwardRows backward_rows(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight) {
  const int64_t M = weight.size(0);
  const at::Tensor x = rows_of(input, weight.size(1));
  return {grad_output.reshape({x.size(0), M}).contiguous(), output.reshape({x.size(0), M}).contiguous(), x};
}

LinearSigmoidGradients zero_gradients(
    const at::Tensor& input,
    const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  LinearSigmoidGradients gradients;
  if (output_mask[0]) {
    std::get<0>(gradients) = at::zeros(input.sizes(), input.options());
  }
  if (output_mask[1]) {
    std::get<1>(gradients) = at::zeros(weight.sizes(), weight.options());
  }
  if (output_mask[2]) {
    std::get<2>(gradients) = at::zeros({weight.size(0)}, weight.options());
  }
  return gradients;
}

} // namespace fused_sigmoid
