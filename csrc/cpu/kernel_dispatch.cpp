#include "kernels.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <string>

namespace fused_sigmoid::cpu {

void kernel_dtype_not_implemented(const char* kernel, c10::ScalarType dtype) {
  // AT_DISPATCH's own message.
  TORCH_CHECK_NOT_IMPLEMENTED(false, '"', kernel, "\" not implemented for '", c10::toString(dtype), "'");
}

const KernelTable& kernels_for_this_cpu() {
  // Following ATen's own choice keeps us consistent with its kernels and lets ATEN_CPU_CAPABILITY force a
  // narrower path for testing.
  static const KernelTable& table = []() -> const KernelTable& {
    const std::string capability = at::get_cpu_capability();
#if defined(FUSED_SIGMOID_HAVE_AVX512)
    if (capability == "AVX512") {
      return AVX512::kernel_table;
    }
#endif
#if defined(FUSED_SIGMOID_HAVE_AVX2)
    if (capability == "AVX512" || capability == "AVX2") {
      return AVX2::kernel_table;
    }
#endif
    return DEFAULT::kernel_table;
  }();
  return table;
}

} // namespace fused_sigmoid::cpu
