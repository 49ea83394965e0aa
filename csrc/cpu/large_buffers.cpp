#include "large_buffers.h"

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fused_sigmoid::cpu {
namespace {

// glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks from this size on are
// always mapped afresh, never kept on the heap.
constexpr int64_t kFreshMappingBytes = 32 * 1024 * 1024;
constexpr uintptr_t kHugePageBytes = 2 * 1024 * 1024;

// A hint for the 2 MiB-aligned part of [data, data + bytes), given before anything touches it, and only where its
// first page is not in memory yet. With glibc's defaults such a block is a fresh mapping, unmapped when the tensor
// is freed; a block that another allocator (jemalloc, tcmalloc) or a raised M_MMAP_THRESHOLD recycled is already
// backed, would not fault, and is left as it is. Its result is ignored: the buffer is valid either way.
void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) / kHugePageBytes *
      kHugePageBytes;
  unsigned char first_page_resident = 0;
  if (begin < end && mincore(reinterpret_cast<void*>(begin), 1, &first_page_resident) == 0 &&
      (first_page_resident & 1) == 0) {
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#else
  (void)data;
  (void)bytes;
#endif
}

} // namespace

at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor result = at::empty(sizes, options);
  const int64_t bytes = static_cast<int64_t>(result.nbytes());
  if (bytes >= kFreshMappingBytes) {
    advise_huge_pages(result.mutable_data_ptr(), bytes);
  }
  return result;
}

} // namespace fused_sigmoid::cpu
