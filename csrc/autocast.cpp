// Autocast for torch.ops.fused_sigmoid.linear_sigmoid: inside torch.autocast the op runs in the autocast dtype,
// as F.linear does (the "lower precision" policy), so a fused layer in a mixed-precision model behaves like the
// nn.Linear + torch.sigmoid it replaces. Registered with the dispatcher, so compile and export see it too.
#include "op_calls.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace fused_sigmoid {
namespace {

template <c10::DeviceType device_type>
at::Tensor linear_sigmoid_autocast(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  return call_linear_sigmoid(
      at::autocast::cached_cast(dtype, input, device_type),
      at::autocast::cached_cast(dtype, weight, device_type),
      at::autocast::cached_cast(dtype, bias, device_type));
}

} // namespace

TORCH_LIBRARY_IMPL(fused_sigmoid, AutocastCPU, m) {
  m.impl("linear_sigmoid", &linear_sigmoid_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fused_sigmoid, AutocastCUDA, m) {
  m.impl("linear_sigmoid", &linear_sigmoid_autocast<c10::DeviceType::CUDA>);
}

} // namespace fused_sigmoid
