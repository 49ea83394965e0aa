// The vectorised CPU kernels, compiled once per x86 capability (capability/*.cpp, flags in setup.py) and chosen
// at run time by the CPU capability ATen itself runs at, so one build is fast on an AVX-512 machine and still
// safe on one without it. They work on raw pointers of contiguous rows: everything that touches at::Tensor
// stays in linear_sigmoid_cpu.cpp, compiled for the baseline, so no Tensor code is built with wider
// instructions than the machine may have.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace fused_sigmoid::cpu {

// The direct kernels have loops specialised for every in_features <= 8 with out_features <= 4.
constexpr int64_t kMaxFixedInFeatures = 8;
constexpr int64_t kMaxFixedOutFeatures = 4;

// The error for a dtype a kernel has no version for (unreachable past the op's checks). Defined in
// kernel_dispatch.cpp, compiled for the baseline: the formatting and exception code behind an error is inline c10
// code, and were it instantiated in a capability file the linker could keep that file's AVX-512 copy for the whole
// library, to run on any machine that reaches an error.
[[noreturn]] void kernel_dtype_not_implemented(const char* kernel, c10::ScalarType dtype);

struct KernelTable {
  // y[r, m] = sigmoid(sum_k x[r, k] * w[m, k] + bias[m]) for r < rows: x has row stride ldx and unit column
  // stride, w is contiguous (M, K), bias is contiguous (M) or null, y is contiguous (rows, M). Accumulates and
  // applies the sigmoid in float for the half types, and writes each output once.
  void (*linear_sigmoid_rows)(
      c10::ScalarType dtype,
      const void* x,
      int64_t ldx,
      const void* w,
      const void* bias,
      int64_t rows,
      int64_t K,
      int64_t M,
      void* y);

  // The same product for float and double by register tiles: a small GEMM whose accumulators get the bias and the
  // sigmoid in registers before the single store. For weights that fit in L2 (transposed and padded per call).
  void (*linear_sigmoid_tiled_rows)(
      c10::ScalarType dtype,
      const void* x,
      int64_t ldx,
      const void* w,
      const void* bias,
      int64_t rows,
      int64_t K,
      int64_t M,
      void* y);

  // y[i] = sigmoid(y[i]) for i < n, in place: the epilogue of a block that a GEMM has just written.
  void (*sigmoid_inplace)(c10::ScalarType dtype, void* y, int64_t n);

  // dz = dy * y * (1 - y) for a contiguous (rows, M) block, and, when column_sums is not null, adds each
  // column of dz into column_sums[M], in double, in the same pass.
  void (*sigmoid_backward_rows)(
      c10::ScalarType dtype,
      const void* dy,
      const void* y,
      int64_t rows,
      int64_t M,
      void* dz,
      double* column_sums);

  // The whole backward of the direct kernel's shapes in one pass over contiguous (rows, M) blocks of dy and y and
  // rows of x (row stride ldx): dz = dy * y * (1 - y) stays in a block buffer in opmath and is never stored;
  // dx (contiguous (rows, K)) gets dz @ w when not null; weight_sums (M, K), in opmath, and bias_sums (M), in
  // double, get this block's dz^T @ x and column sums of dz added when not null.
  using BackwardRowsKernel = void (*)(
      c10::ScalarType dtype,
      const void* dy,
      const void* y,
      const void* x,
      int64_t ldx,
      const void* w,
      int64_t rows,
      int64_t K,
      int64_t M,
      void* dx,
      void* weight_sums,
      double* bias_sums);
  BackwardRowsKernel linear_sigmoid_backward_rows;

  // The same contract for the tiled kernel's shapes (float and double only), by register tiles: dz stays in a
  // block buffer, and dx and this chunk's weight_sums come from it by small GEMMs in registers.
  BackwardRowsKernel linear_sigmoid_backward_tiled_rows;

  // Which instruction set this table was compiled for, e.g. "AVX512".
  const char* capability;
};

namespace DEFAULT {
extern const KernelTable kernel_table;
}
#if defined(FUSED_SIGMOID_HAVE_AVX2)
namespace AVX2 {
extern const KernelTable kernel_table;
}
#endif
#if defined(FUSED_SIGMOID_HAVE_AVX512)
namespace AVX512 {
extern const KernelTable kernel_table;
}
#endif

// The table for the capability ATen runs at (which honours ATEN_CPU_CAPABILITY).
const KernelTable& kernels_for_this_cpu();

} // namespace fused_sigmoid::cpu
