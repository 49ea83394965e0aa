// Just enough of CUDA, on the CPU, to run csrc/cuda/skinny_kernels.cuh's kernels here, where no GPU is: each
// thread of a block is a std::thread, __syncthreads a barrier among them, the dynamic shared memory a heap block of
// exactly the launch's size (so that AddressSanitizer catches an access past it) filled with garbage, and a
// cp.async copy a deferred memcpy that lands only when a __pipeline_wait_prior covers its commit group (or, in
// eager mode, at once: a stage then changes under any thread still reading it). Blocks run one after another.
// Kernels that use warp-level primitives would need more than this.
#pragma once

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <thread>
#include <vector>

#include <ATen/OpMathType.h>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A kernel's static shared arrays become function statics: one per instantiation, seen by all the block's threads.
#define __shared__ static

namespace cuda_on_cpu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "emulated CUDA: %s\n", what);
  std::abort();
}

inline thread_local std::barrier<>* block_barrier = nullptr;
inline bool eager_copies = false;

struct Copy {
  void* dst;
  const void* src;
  size_t bytes;
};
// This thread's copies: committed groups, oldest first, and the group still open.
inline thread_local std::vector<std::vector<Copy>> committed_groups;
inline thread_local std::vector<Copy> open_group;

inline bool copies_pending() {
  for (const auto& group : committed_groups) {
    if (!group.empty()) {
      return true;
    }
  }
  return !open_group.empty();
}

} // namespace cuda_on_cpu

inline void __syncthreads() {
  cuda_on_cpu::block_barrier->arrive_and_wait();
}

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || reinterpret_cast<uintptr_t>(src) % bytes != 0) {
    cuda_on_cpu::fail("cp.async of a misaligned address");
  }
  if (cuda_on_cpu::eager_copies) {
    std::memcpy(dst, src, bytes);
  } else {
    cuda_on_cpu::open_group.push_back({dst, src, bytes});
  }
}

inline void __pipeline_commit() {
  cuda_on_cpu::committed_groups.push_back(std::move(cuda_on_cpu::open_group));
  cuda_on_cpu::open_group.clear();
}

inline void __pipeline_wait_prior(size_t groups_left_in_flight) {
  auto& groups = cuda_on_cpu::committed_groups;
  while (groups.size() > groups_left_in_flight) {
    for (const auto& copy : groups.front()) {
      std::memcpy(copy.dst, copy.src, copy.bytes);
    }
    groups.erase(groups.begin());
  }
}

namespace cuda_on_cpu {

// The threads of a block, started once and reused by every launch (starting 256 threads per block made thread
// creation most of the run time).
class BlockThreads {
 public:
  explicit BlockThreads(int threads) : start_(threads + 1), done_(threads + 1), block_(threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] { work(t); });
    }
  }
  BlockThreads(const BlockThreads&) = delete;
  BlockThreads& operator=(const BlockThreads&) = delete;
  ~BlockThreads() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& thread : threads_) {
      thread.join();
    }
  }

  // Runs kernel() as `grid` blocks with `shared_bytes` of dynamic shared memory, which *dynamic_shared (the
  // kernels' extern array, made a pointer) points to during the launch.
  void launch(int grid, int shared_bytes, unsigned char** dynamic_shared, const std::function<void()>& kernel) {
    gridDim = {static_cast<unsigned>(grid)};
    blockDim = {static_cast<unsigned>(threads_.size())};
    shared_bytes_ = shared_bytes > 0 ? static_cast<size_t>(shared_bytes) : 16;
    dynamic_shared_ = dynamic_shared;
    kernel_ = &kernel;
    start_.arrive_and_wait();
    done_.arrive_and_wait();
  }

 private:
  void work(int t) {
    threadIdx = {static_cast<unsigned>(t)};
    block_barrier = &block_;
    while (true) {
      start_.arrive_and_wait();
      if (stop_) {
        return;
      }
      for (unsigned block = 0; block < gridDim.x; ++block) {
        blockIdx = {block};
        // Each block gets fresh garbage for shared memory, in a heap block of exactly the launch's size.
        if (t == 0) {
          *dynamic_shared_ = static_cast<unsigned char*>(::operator new(shared_bytes_, std::align_val_t(16)));
          std::memset(*dynamic_shared_, 0xff, shared_bytes_);
        }
        committed_groups.clear();
        open_group.clear();
        block_.arrive_and_wait();
        (*kernel_)();
        // A copy still in flight when its thread exits was issued for nothing, or for data never read.
        if (copies_pending()) {
          fail("a thread exited with cp.async copies in flight");
        }
        block_.arrive_and_wait();
        if (t == 0) {
          ::operator delete(*dynamic_shared_, std::align_val_t(16));
        }
      }
      done_.arrive_and_wait();
    }
  }

  std::barrier<> start_;
  std::barrier<> done_;
  std::barrier<> block_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
  size_t shared_bytes_ = 0;
  unsigned char** dynamic_shared_ = nullptr;
  const std::function<void()>* kernel_ = nullptr;
};

} // namespace cuda_on_cpu
