#include "kernels.h"

#include <ATen/Version.h>

#include <string>

namespace fused_sigmoid::cpu {

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
