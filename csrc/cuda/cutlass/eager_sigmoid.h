// The sigmoid the CUTLASS epilogues apply: eager PyTorch's CUDA sigmoid, 1 / (1 + exp(-z)) in float, so that the
// fused GEMMs round like torch.sigmoid; CUTLASS's own Sigmoid takes a faster, rougher exp.
#pragma once

#include "../eager_sigmoid.cuh"

#include <cutlass/array.h>
#include <cutlass/cutlass.h>

namespace fused_sigmoid::cuda {

template <typename T>
struct EagerSigmoid {
  CUTLASS_HOST_DEVICE T operator()(T const& z) const {
    T values[1] = {z};
    eager_sigmoids(values);
    return values[0];
  }
};

// The epilogues apply it to fragments (16 values a thread in the Hopper kernels, 4 or 8 in the Ampere ones), whose
// sigmoids eager_sigmoids overlaps.
template <typename T, int N>
struct EagerSigmoid<cutlass::Array<T, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& z) const {
    T values[N];
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) {
      values[i] = z[i];
    }
    eager_sigmoids(values);
    cutlass::Array<T, N> y;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) {
      y[i] = values[i];
    }
    return y;
  }
};

} // namespace fused_sigmoid::cuda
