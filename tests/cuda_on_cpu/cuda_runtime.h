// Just enough of CUDA, on the CPU, to run csrc/cuda/skinny_kernels.cuh's kernels here, where no GPU is. Each thread of
// a block is a fiber (ucontext) on one OS thread, so they run one at a time: between two __syncthreads every thread
// runs alone, in an order that changes from one stretch to the next (ascending thread index, descending, then
// shuffled), so a read that a missing barrier leaves unordered after another thread's write sees the stale value in
// one of the orders, deterministically. The dynamic shared memory is a heap block of exactly the launch's size (so
// that AddressSanitizer catches an access past it) filled with garbage, and a cp.async copy is a deferred memcpy
// that lands only when a __pipeline_wait_prior covers its commit group (or, in eager mode, at once: a stage then
// changes under any thread that reads it later). Blocks run one after another. Static __shared__ arrays are function
// statics, zeroed once, not garbage: a read before the block writes them goes unseen. Kernels that use warp-level
// primitives would need more than this.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <vector>

#include <ATen/OpMathType.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
// The running thread's indices: only one runs at a time, and the scheduler sets them before it switches to it.
inline dim3 threadIdx;
inline dim3 blockIdx;
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

inline bool eager_copies = false;

struct Copy {
  void* dst;
  const void* src;
  size_t bytes;
};

// A thread's cp.async copies: committed groups, oldest first, and the group still open.
struct Copies {
  std::vector<std::vector<Copy>> committed;
  std::vector<Copy> open;

  bool pending() const {
    return !open.empty() ||
        std::any_of(committed.begin(), committed.end(), [](const auto& group) { return !group.empty(); });
  }
};
inline std::vector<Copies> thread_copies;

inline Copies& running_thread_copies() {
  return thread_copies[threadIdx.x];
}

// A stack, as AddressSanitizer is told of it.
struct Stack {
  const void* bottom = nullptr;
  size_t size = 0;
};

// Switches from the running context to `target`, whose stack is target_stack, telling AddressSanitizer which stack
// is live (without that, it takes a thread's stack for a corrupted one); `leaving` when the running context never
// resumes. Once back, notes in *origin (if not null) the stack it came back from.
inline void switch_context(ucontext_t* from, const ucontext_t* target, Stack target_stack, bool leaving,
                           Stack* origin) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(leaving ? nullptr : &fake_stack, target_stack.bottom, target_stack.size);
  swapcontext(from, target);
  __sanitizer_finish_switch_fiber(fake_stack, origin ? &origin->bottom : nullptr, origin ? &origin->size : nullptr);
#else
  (void)target_stack;
  (void)leaving;
  (void)origin;
  swapcontext(from, target);
#endif
}

// The threads of a block and the turns they take.
class BlockThreads {
 public:
  explicit BlockThreads(int threads) : threads_(threads) {
    for (auto& thread : threads_) {
      thread.stack = std::make_unique<char[]>(kStackBytes);
    }
    thread_copies.assign(threads, Copies{});
    running_ = this;
  }
  BlockThreads(const BlockThreads&) = delete;
  BlockThreads& operator=(const BlockThreads&) = delete;
  ~BlockThreads() {
    running_ = nullptr;
  }

  // Runs kernel() as `grid` blocks with `shared_bytes` of dynamic shared memory, which *dynamic_shared (the
  // kernels' extern array, made a pointer) points to during the launch.
  void launch(int grid, int shared_bytes, unsigned char** dynamic_shared, const std::function<void()>& kernel) {
    gridDim = {static_cast<unsigned>(grid)};
    blockDim = {static_cast<unsigned>(threads_.size())};
    kernel_ = &kernel;
    const size_t bytes = shared_bytes > 0 ? static_cast<size_t>(shared_bytes) : 16;
    for (int block = 0; block < grid; ++block) {
      blockIdx = {static_cast<unsigned>(block)};
      // Each block gets fresh garbage for shared memory.
      *dynamic_shared = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t(16)));
      std::memset(*dynamic_shared, 0xff, bytes);
      run_block();
      ::operator delete(*dynamic_shared, std::align_val_t(16));
    }
  }

  // __syncthreads of the running thread: back to the scheduler until the thread's turn in the next stretch.
  static void synchronize() {
    Thread& thread = running_->threads_[threadIdx.x];
    thread.at_barrier = true;
    running_->to_scheduler(thread, /*leaving=*/false);
  }

 private:
  static constexpr size_t kStackBytes = 256 * 1024;

  struct Thread {
    std::unique_ptr<char[]> stack;
    ucontext_t context;
    bool at_barrier = false;
  };

  void run_block() {
    std::vector<int> order(threads_.size());
    std::iota(order.begin(), order.end(), 0);
    for (size_t t = 0; t < threads_.size(); ++t) {
      Thread& thread = threads_[t];
      getcontext(&thread.context);
      thread.context.uc_stack = {thread.stack.get(), 0, kStackBytes};
      thread.context.uc_link = nullptr;
      makecontext(&thread.context, &BlockThreads::thread_main, 0);
      thread_copies[t] = Copies{};
    }
    for (int stretch = 0; !order.empty(); ++stretch) {
      switch (stretch % 3) {
        case 1:
          std::reverse(order.begin(), order.end());
          break;
        case 2:
          std::shuffle(order.begin(), order.end(), std::mt19937(stretch));
          break;
        default:
          break;
      }
      std::vector<int> at_barrier;
      for (const int t : order) {
        Thread& thread = threads_[t];
        thread.at_barrier = false;
        threadIdx = {static_cast<unsigned>(t)};
        switch_context(&scheduler_, &thread.context, {thread.stack.get(), kStackBytes}, /*leaving=*/false, nullptr);
        // Back at a barrier, or done with the kernel (those take no part in later stretches).
        if (thread.at_barrier) {
          at_barrier.push_back(t);
        }
      }
      order.swap(at_barrier);
      std::sort(order.begin(), order.end());
    }
  }

  static void thread_main() {
    BlockThreads& block = *running_;
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &block.scheduler_stack_.bottom, &block.scheduler_stack_.size);
#endif
    (*block.kernel_)();
    // A copy still in flight when its thread exits was issued for nothing, or for data never read.
    if (running_thread_copies().pending()) {
      fail("a thread exited with cp.async copies in flight");
    }
    Thread& thread = block.threads_[threadIdx.x];
    thread.at_barrier = false;
    block.to_scheduler(thread, /*leaving=*/true);
  }

  void to_scheduler(Thread& thread, bool leaving) {
    switch_context(&thread.context, &scheduler_, scheduler_stack_, leaving, nullptr);
  }

  // The block whose threads run: the fibers' entry point takes no arguments.
  static inline BlockThreads* running_ = nullptr;

  std::vector<Thread> threads_;
  ucontext_t scheduler_;
  // The scheduler's stack, as the threads switch back to it.
  Stack scheduler_stack_;
  const std::function<void()>* kernel_ = nullptr;
};

} // namespace cuda_on_cpu

inline void __syncthreads() {
  cuda_on_cpu::BlockThreads::synchronize();
}

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || reinterpret_cast<uintptr_t>(src) % bytes != 0) {
    cuda_on_cpu::fail("cp.async of a misaligned address");
  }
  if (cuda_on_cpu::eager_copies) {
    std::memcpy(dst, src, bytes);
  } else {
    cuda_on_cpu::running_thread_copies().open.push_back({dst, src, bytes});
  }
}

inline void __pipeline_commit() {
  auto& copies = cuda_on_cpu::running_thread_copies();
  copies.committed.push_back(std::move(copies.open));
  copies.open.clear();
}

inline void __pipeline_wait_prior(size_t groups_left_in_flight) {
  auto& groups = cuda_on_cpu::running_thread_copies().committed;
  while (groups.size() > groups_left_in_flight) {
    for (const auto& copy : groups.front()) {
      std::memcpy(copy.dst, copy.src, copy.bytes);
    }
    groups.erase(groups.begin());
  }
}
