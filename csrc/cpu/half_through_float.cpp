#include "half_through_float.h"

#include "kernels.h"
#include "large_buffers.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <vector>

namespace fused_sigmoid::cpu {
namespace {

// Float values of the blocks widened at once (inputs and outputs of a block together), so that the extra memory
// stays a few MiB whatever the batch; but never fewer rows than the float GEMM path's 16 blocks of 64 rows, so that
// a block of a wide layer still splits among 16 threads. Fixed by the shape alone, never by the thread count: BLAS
// rounds a row differently with the number of rows in its call.
constexpr int64_t kBlockFloats = 1 << 20;
constexpr int64_t kMinBlockRows = 1024;

int64_t block_rows(int64_t floats_per_row) {
  return std::max(kMinBlockRows, kBlockFloats / std::max<int64_t>(1, floats_per_row));
}

// ATen's answer, asked through the op torch.ops.mkldnn registers for it; a build without oneDNN has no such op, and
// no oneDNN kernels either.
bool onednn_reports(const char* op_name) {
  const auto op = c10::Dispatcher::singleton().findSchema({op_name, ""});
  return op.has_value() && op->typed<bool()>().call();
}

} // namespace

bool has_native_half_gemm(at::ScalarType dtype) {
  static const bool bfloat16 = onednn_reports("mkldnn::_is_mkldnn_bf16_supported");
  static const bool float16 = onednn_reports("mkldnn::_is_mkldnn_fp16_supported");
  return at::globalContext().userEnabledMkldnn() && (dtype == at::kBFloat16 ? bfloat16 : float16);
}

void linear_sigmoid_through_float(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& b,
    const at::Tensor& y) {
  // The float calls below are this kernel's own work, never recorded by autograd.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const at::Tensor w_float = w.to(at::kFloat);
  const std::optional<at::Tensor> b_float = b.has_value() ? std::optional(b->to(at::kFloat)) : std::nullopt;
  const int64_t N = x.size(0);
  const int64_t rows = block_rows(w.size(1) + w.size(0));
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    y.narrow(0, r0, n).copy_(call_linear_sigmoid(x.narrow(0, r0, n).to(at::kFloat), w_float, b_float));
  }
}

LinearSigmoidGradients linear_sigmoid_backward_through_float(
    const at::Tensor& dy,
    const at::Tensor& y,
    const at::Tensor& x,
    const at::Tensor& w,
    const at::Tensor& input,
    std::array<bool, 3> output_mask) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t N = x.size(0);
  const int64_t K = w.size(1);
  const int64_t M = w.size(0);
  const at::Tensor w_float = w.to(at::kFloat);
  at::Tensor grad_input = output_mask[0] ? empty_large({N, K}, x.options()) : at::Tensor();
  // The blocks' weight gradients are added in double, in order, and rounded once at the end.
  at::Tensor weight_sums = output_mask[1] ? at::zeros({M, K}, x.options().dtype(at::kDouble)) : at::Tensor();
  // The bias gradient is summed here, every row's dz into one sum in double, as on the other paths: a block's own
  // would come back already rounded to float.
  std::vector<double> bias_sums(output_mask[2] ? M : 0, 0.0);
  const std::array<bool, 3> float_mask = {output_mask[0], output_mask[1], false};
  // dy, y, x and grad_input in float.
  const int64_t rows = block_rows(2 * (K + M));
  at::Tensor dz = output_mask[2] ? at::empty({std::min(rows, N), M}, x.options().dtype(at::kFloat)) : at::Tensor();
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    const auto widened = [&](const at::Tensor& t) { return t.narrow(0, r0, n).to(at::kFloat); };
    const at::Tensor dy_rows = widened(dy);
    const at::Tensor y_rows = widened(y);
    if (output_mask[2]) {
      kernels_for_this_cpu().sigmoid_backward_rows(
          at::kFloat, dy_rows.const_data_ptr(), y_rows.const_data_ptr(), n, M, dz.mutable_data_ptr(),
          bias_sums.data());
    }
    if (!output_mask[0] && !output_mask[1]) {
      continue;
    }
    const LinearSigmoidGradients block = call_linear_sigmoid_backward(dy_rows, y_rows, widened(x), w_float, float_mask);
    if (output_mask[0]) {
      grad_input.narrow(0, r0, n).copy_(*std::get<0>(block));
    }
    if (output_mask[1]) {
      weight_sums.add_(*std::get<1>(block));
    }
  }
  LinearSigmoidGradients gradients;
  if (output_mask[0]) {
    std::get<0>(gradients) = grad_input.view(input.sizes());
  }
  if (output_mask[1]) {
    std::get<1>(gradients) = weight_sums.to(w.scalar_type());
  }
  if (output_mask[2]) {
    std::get<2>(gradients) = at::tensor(bias_sums, x.options().dtype(at::kDouble)).to(w.scalar_type());
  }
  return gradients;
}

} // namespace fused_sigmoid::cpu
