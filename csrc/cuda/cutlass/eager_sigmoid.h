// The sigmoid the CUTLASS epilogues apply: eager PyTorch's CUDA sigmoid, 1 / (1 + exp(-z)) in float, so that the
// fused GEMMs round like torch.sigmoid; CUTLASS's own Sigmoid takes a faster, rougher exp.
#pragma once

#include <cutlass/array.h>
#include <cutlass/cutlass.h>

namespace fused_sigmoid::cuda {

template <typename T>
struct EagerSigmoid {
  CUTLASS_HOST_DEVICE T operator()(T const& z) const {
    return T(1) / (T(1) + ::expf(-z));
  }
};

// The epilogues apply it to fragments.
template <typename T, int N>
struct EagerSigmoid<cutlass::Array<T, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& z) const {
    cutlass::Array<T, N> y;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) {
      y[i] = EagerSigmoid<T>()(z[i]);
    }
    return y;
  }
};

} // namespace fused_sigmoid::cuda
