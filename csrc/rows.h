// The ops' tensors as matrices of rows, for every backend: input (*, K) is N rows of K features.
#pragma once

#include "op_calls.h"

#include <ATen/core/Tensor.h>

#include <array>
#include <vector>

namespace fused_sigmoid {

// The output's shape: input's leading dims, then out_features.
std::vector<int64_t> output_sizes(const at::Tensor& input, int64_t out_features);

// (N, K) view of input with unit column stride, copying only when the layout has no such view.
at::Tensor rows_of(const at::Tensor& input, int64_t features);

// The backward's operands: grad_output and output as contiguous (N, M), input as rows_of(input, K).
struct BackwardRows {
  at::Tensor dy;
  at::Tensor y;
  at::Tensor x;
};

BackwardRows backward_rows(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight);

// The gradients asked for by output_mask when there is nothing to sum over (no rows, or no outputs): zeros.
LinearSigmoidGradients zero_gradients(const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask);

} // namespace fused_sigmoid
