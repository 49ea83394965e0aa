// Schemas of the fused_sigmoid ops. Kernels live in one file per backend (cpu/, cuda/); Python reaches the ops
// through torch.ops.fused_sigmoid, which torch.compile, torch.export and opcheck can all see.
#ifdef FUSED_SIGMOID_HAVE_CUTLASS
#include "cuda/gemm_sigmoid.h"
#endif

#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

// The extension module exists only so that `import fused_sigmoid._C` loads this library and runs the
// registrations below; it exports no functions of its own.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fused_sigmoid, m) {
  m.def("linear_sigmoid(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor");
  // output_mask selects which of (grad_input, grad_weight, grad_bias) to compute; the others come back as None.
  m.def(
      "linear_sigmoid_backward(Tensor grad_output, Tensor output, Tensor input, Tensor weight, bool[3] output_mask)"
      " -> (Tensor?, Tensor?, Tensor?)");
  // The instruction set the CPU kernels were picked for on this machine ("AVX512", "AVX2" or "DEFAULT").
  m.def("cpu_capability() -> str");
  // The CUTLASS GEMMs of the CUDA forward that this build can run on the current CUDA device: "ampere" and
  // "hopper" (sm_90a code on a compute capability 9.0 device); none without CUTLASS or a device.
  m.def("cutlass_kernels() -> str[]");
}

namespace {

std::vector<std::string> cutlass_kernels() {
#ifdef FUSED_SIGMOID_HAVE_CUTLASS
  return fused_sigmoid::cuda::cutlass_kernels_for_current_device();
#else
  return {};
#endif
}

} // namespace

// No tensor arguments to dispatch on, so it is registered for every backend at once.
TORCH_LIBRARY_IMPL(fused_sigmoid, CompositeExplicitAutograd, m) {
  m.impl("cutlass_kernels", &cutlass_kernels);
}
