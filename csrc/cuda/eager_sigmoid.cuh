// Eager PyTorch's CUDA sigmoid, 1 / (1 + exp(-z)) in opmath, for the fused kernels (skinny_kernels.cuh and the
// CUTLASS epilogues), with the same bits, computed for a group of values at once.
//
// Why a group: nvcc compiles the float reciprocal 1.0f / d as a range check on d that branches either to three
// fused multiply-adds refining the hardware's approximate reciprocal or to a full-range subroutine. That branch
// stands between one value's sigmoid and the next, so a thread computes its values one after another, each a chain
// of about sixteen dependent instructions (sm_90a and sm_80 SASS of nvcc 13.0). Where few warps share a
// multiprocessor that chain's latency, not the memory, can set the time: the Hopper GEMM's epilogue (eight warps, 16
// values a thread at a time) took about as long in bfloat16 as in TF32 for half the bytes on an H100 (0.060 and 0.070
// ms at 65536 x 256 -> 256). Here every value of the group takes the fast path's instructions unconditionally, so
// that the values' chains overlap, and one branch for the whole group redoes with the division the rare groups
// holding a denominator outside the fast path's range (d >= 2^126, where z < -87.3; infinity; NaN). Both ways give
// the division's bits: ptxas even merges the fast path here with the one inside a division of the same d.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fused_sigmoid::cuda {

// Whether nvcc's 1.0f / d takes its fast path: d's biased exponent is in [1, 252] (|d| normal and below 2^126). The
// same unsigned test nvcc emits for it on sm_80 and sm_90a: ((bits + (3 << 23)) & exponent bits) > (4 << 23) - 1.
__host__ __device__ __forceinline__ bool in_reciprocal_fast_range(float d) {
  std::uint32_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  return ((bits + 0x1800000u) & 0x7f800000u) > 0x1ffffffu;
}

// 1.0f / d where in_reciprocal_fast_range(d): nvcc's fast path itself, the hardware's approximate reciprocal refined
// by one Newton step whose fused multiply-adds round the result correctly on that range.
__host__ __device__ __forceinline__ float reciprocal_in_fast_range(float d) {
#ifdef __CUDA_ARCH__
  float approximate;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(approximate) : "f"(d));
  return fmaf(approximate, -fmaf(d, approximate, -1.0f), approximate);
#else
  // The CPU emulation of the kernels (tests/cuda_on_cpu) models the instruction as the rounded reciprocal flushed to
  // zero where subnormal, as .ftz does: in the fast range the step keeps it; past that range it fails as the
  // hardware's does (NaN for an infinite d, 0 where 1 / d is subnormal), so that a group sent down the fast path
  // wrongly shows there too.
  float approximate = 1.0f / d;
  if (std::fpclassify(approximate) == FP_SUBNORMAL) {
    approximate = 0.0f;
  }
  return std::fma(approximate, -std::fma(d, approximate, -1.0f), approximate);
#endif
}

// values[i] = sigmoid(values[i]) for each i, as eager computes it in opmath (float, or double for double).
template <typename T, int N>
__host__ __device__ __forceinline__ void eager_sigmoids(T (&values)[N]) {
  if constexpr (std::is_same_v<T, float>) {
    float denominators[N];
    bool all_in_fast_range = true;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      denominators[i] = 1.0f + ::exp(-values[i]);
      values[i] = reciprocal_in_fast_range(denominators[i]);
      all_in_fast_range &= in_reciprocal_fast_range(denominators[i]);
    }
    if (!all_in_fast_range) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        values[i] = 1.0f / denominators[i];
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      values[i] = T(1) / (T(1) + ::exp(-values[i]));
    }
  }
}

} // namespace fused_sigmoid::cuda
