// Output buffers of the CPU ops, allocated so that writing a very large one is not mostly page faults.
#pragma once

#include <ATen/core/Tensor.h>

namespace fused_sigmoid::cpu {

// at::empty(sizes, options), with the pages of a buffer of 32 MiB or more backed by 2 MiB pages where Linux allows
// it. glibc returns a block that large to the system when it is freed and maps a fresh one on the next call, so
// every call faults in every page of it: 32768 faults for a 128 MiB grad_input, 53 ms of a 72 ms training step at
// 8192 x 4096 -> 1 (one thread, here), against 12 ms with 2 MiB pages. Smaller blocks are reused from glibc's heap
// and fault only once. Nothing changes where transparent huge pages are off or the request is refused. Where the
// kernel's THP defrag setting is "madvise" (a common default), a fault in such a buffer may compact memory first
// to find a 2 MiB page: once, here, the first 128 MiB took 280 ms instead of 12.
at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options);

} // namespace fused_sigmoid::cpu
