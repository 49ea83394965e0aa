// Where 16-byte vector loads, stores and copies of a tensor's data may start: shared by the skinny kernels' launches
// and the CUTLASS GEMMs' operand checks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fused_sigmoid::cuda {

inline bool is_16_byte_aligned(const at::Tensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

} // namespace fused_sigmoid::cuda
