// CPU implementation of the fused_sigmoid ops: shapes, layouts, threading and the choice of kernel. The
// arithmetic is in kernels_impl.h.
#include "../checks.h"
#include "../rows.h"
#include "half_through_float.h"
#include "kernels.h"
#include "large_buffers.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <tuple>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

namespace fused_sigmoid::cpu {
namespace {

// The choice of kernel, by shape (measured on a 2-core AVX-512 machine; see README, "How the fused kernel works"):
// - direct: few outputs per row. Each row is read once and its handful of dot products formed in place; a
//   GEMM would pad or transpose for nothing, and BLAS runs such skinny products far below memory speed. The
//   half types take it where oneDNN runs them slowly in their type (use_direct_forward, use_direct_backward).
// - tiled: float and double with more outputs than that, while the transposed weight fits in half of a core's L2
//   (it is re-read for every tile of rows): a register-tiled GEMM that applies bias and sigmoid to its
//   accumulators (1.5-2x BLAS plus a sigmoid pass at 30001 x 100 -> 10, one thread).
// - GEMM: everything else (large weights, and the half types where oneDNN has kernels for them): BLAS, then the
//   sigmoid; gemm_block_rows says when the forward cuts the rows into blocks whose sigmoid runs while they are in L2
//   and when it makes one call.
// - through float: the half types' other shapes on CPUs where ATen has no fast GEMM for them (half_through_float.h):
//   blocks of rows widened to float take the float kernels by these same rules.
constexpr int64_t kMaxDirectOutFeatures = 8;
constexpr int64_t kMinTiledOutFeatures = kMaxDirectOutFeatures + 1;

// The tiled kernel's weight bound: half of a core's L2, which holds the transposed weight while tiles of rows stream
// past. 512 KiB of a Zen 4's 1 MiB; 256 KiB of a Zen 3's 512 KiB, where weights of 384-512 KiB ran a training step
// at 0.66-0.77x eager on the tiled kernel and 0.97-1.09x on the GEMM path (8192 x 384 -> 256, 4096 x 512 -> 256,
// 2048 x 1024 -> 100, one thread). Read once from the C library; 512 KiB where it does not say.
int64_t tiled_weight_bytes() {
  static const int64_t bytes = [] {
    long l2_bytes = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2_bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return l2_bytes > 0 ? static_cast<int64_t>(l2_bytes) / 2 : int64_t{512 * 1024};
  }();
  return bytes;
}

bool is_fixed_shape(int64_t in_features, int64_t out_features) {
  return in_features <= kMaxFixedInFeatures && out_features <= kMaxFixedOutFeatures;
}

// The forward's dot products read half rows in place, widening them in registers, and beat oneDNN on narrow
// products where its kernel for the type is slow (one thread, against eager). bfloat16 with up to 4 outputs, once
// the rows are long enough to outweigh each dot product's final sum across a vector: 8192 x 4096 -> 1 1.7x,
// 65536 x 128 -> 4 1.6x, 65536 x 64 -> 2 1.5x, but 8 outputs 0.5-1.2x. With one or two outputs, shorter rows too,
// since four rows' sums are reduced together: 65536 x 32 -> 2 1.5x (1.6x at two threads), 131072 x 24 -> 2 1.2x,
// 262144 x 30 -> 1 1.1x (oneDNN's 0.97-0.99x); three or four outputs on rows under 64 values stay with oneDNN
// (65536 x 16 -> 4 0.73x, 65536 x 48 -> 3 0.95x, 65536 x 60 -> 4 0.90-0.96x on this kernel). float16 on short
// rows, where oneDNN's float16 kernel is slower still: 262144 x 30 -> 1 4.8x, 65536 x 64 -> 8 4.4x,
// 65536 x 128 -> 4 3.4x, 1048576 x 128 -> 1 1.8x, 65536 x 192 -> 1 1.2x; from 256 inputs on it ran 1.2-1.8x faster
// than ours (rows of 512 bytes and more, read four at a time, stream from memory at half speed here in either type).
constexpr int64_t kMaxDirectBFloat16OutFeatures = 4;
constexpr int64_t kMinDirectBFloat16InFeatures = 64;
constexpr int64_t kMaxDirectBFloat16ShortRowOutFeatures = 2;
constexpr int64_t kMinDirectBFloat16ShortRowInFeatures = 16;
constexpr int64_t kMaxDirectFloat16InFeatures = 192;

bool use_direct_forward(int64_t in_features, int64_t out_features, at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16:
      return is_fixed_shape(in_features, out_features) ||
          (out_features <= kMaxDirectBFloat16OutFeatures && in_features >= kMinDirectBFloat16InFeatures) ||
          (out_features <= kMaxDirectBFloat16ShortRowOutFeatures &&
           in_features >= kMinDirectBFloat16ShortRowInFeatures);
    case at::kHalf:
      return is_fixed_shape(in_features, out_features) ||
          (out_features <= kMaxDirectOutFeatures && in_features <= kMaxDirectFloat16InFeatures);
    default:
      return out_features <= kMaxDirectOutFeatures;
  }
}

// The direct backward reads and writes half rows in place, in float in registers. bfloat16 takes it beyond the fixed
// shapes for one output, where oneDNN's bfloat16 GEMMs (an outer product and a matrix-vector product) are slow: a
// training step at 8192 x 4096 -> 1 ran 2.6x eager with it against 1.8x, 65536 x 192 -> 1 1.6x against 1.1x,
// 262144 x 30 -> 1 1.4x against 1.0x. With two outputs, even widening each vector of x once for both, neither won
// throughout (this kernel against oneDNN: 262144 x 30 -> 2 1.45-2.8x against 1.1x, 8192 x 4096 -> 2 2.3x against
// 1.9x, 65536 x 64 -> 2 1.3-1.55x against 1.3x, but 16384 x 1024 -> 2 1.45x against 1.8x), so two outputs stay with
// oneDNN for now. oneDNN's float16 GEMMs are far slower here: a float16 training step ran 5-13x eager with it
// (8192 x 4096 -> 1 12.7x, 65536 x 192 -> 1 10.7x, 16384 x 1024 -> 2 9.5x, 262144 x 30 -> 1 7x, one thread).
constexpr int64_t kMaxDirectBFloat16BackwardOutFeatures = 1;

bool use_direct_backward(int64_t in_features, int64_t out_features, at::ScalarType dtype) {
  if (dtype == at::kBFloat16) {
    return is_fixed_shape(in_features, out_features) || out_features <= kMaxDirectBFloat16BackwardOutFeatures;
  }
  return out_features <= kMaxDirectOutFeatures;
}

bool is_half_type(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

bool use_tiled_kernel(int64_t in_features, int64_t out_features, at::ScalarType dtype) {
  const bool single_or_double = dtype == at::kFloat || dtype == at::kDouble;
  return single_or_double && out_features >= kMinTiledOutFeatures &&
      in_features * out_features * static_cast<int64_t>(c10::elementSize(dtype)) <= tiled_weight_bytes();
}

// The half types' shapes that neither direct kernel takes, where ATen has no oneDNN kernels for the type.
bool use_through_float(at::ScalarType dtype) {
  return is_half_type(dtype) && !has_native_half_gemm(dtype);
}

// Output block of the GEMM path: it must still be in the core's L2 when the sigmoid runs over it.
constexpr int64_t kGemmBlockBytes = 512 * 1024;
// Below this many multiply-adds a GEMM is not cut up for the threads.
constexpr int64_t kMinSplitGemmMultiplyAdds = 1 << 22;
// Blocks a large GEMM is cut into: four per thread up to four threads. A constant, not a multiple of the thread
// count, because BLAS rounds a row differently depending on how many rows its call has: blocks that followed the
// thread count made float64 outputs change between one and two threads.
constexpr int64_t kGemmSplit = 16;

// Rows per block of the backward pass. It is fixed by the shape alone, never by the thread count, so the bias
// gradient is summed in the same order however many threads run.
int64_t backward_block_rows(int64_t out_features) {
  return std::max<int64_t>(16, 16384 / std::max<int64_t>(out_features, 1));
}

const char* byte_ptr(const at::Tensor& t) {
  return static_cast<const char*>(t.const_data_ptr());
}
char* mutable_byte_ptr(const at::Tensor& t) {
  return static_cast<char*>(t.mutable_data_ptr());
}

// The direct and tiled kernels: threads take disjoint ranges of rows, each range one kernel call.
void forward_by_rows(
    decltype(KernelTable::linear_sigmoid_rows) kernel,
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& bias,
    const at::Tensor& y) {
  const int64_t N = x.size(0);
  const int64_t K = w.size(1);
  const int64_t M = w.size(0);
  const int64_t element_size = x.element_size();
  const int64_t ldx = x.stride(0);
  // Below about GRAIN_SIZE multiply-adds a thread costs more than it saves (the tutorial's one-row call).
  const int64_t grain_rows = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, K * M));
  const void* b = bias.has_value() ? bias->const_data_ptr() : nullptr;
  at::parallel_for(0, N, grain_rows, [&](int64_t begin, int64_t end) {
    kernel(
        x.scalar_type(),
        byte_ptr(x) + begin * ldx * element_size,
        ldx,
        w.const_data_ptr(),
        b,
        end - begin,
        K,
        M,
        mutable_byte_ptr(y) + begin * M * element_size);
  });
}

// Rows per block of the GEMM path; N for one call.
// - Blocks small enough to stay in L2 for the sigmoid and, for products worth splitting, enough that no thread waits
//   long on another's last block (with one block, BLAS runs multi-threaded and the sigmoid is split after it).
// - Small products stay one call: each BLAS call has a fixed cost.
// - So do products too deep for their blocks: a block must hold at least half as many rows as the product has
//   inputs (K), because each call's cost grows with the weight it takes in (K x M) while what the block saves is one
//   pass over its own rows x M outputs. One call against blocks, against eager (this Zen 3, float32, one thread
//   unless said; medians of 15 paired runs, two runs each): 4096 x 1024 -> 1024 (128-row blocks) 0.99-1.07x against
//   0.94-0.99x, at two threads 1.09-1.13x against 1.01-1.02x; 2048 x 2048 -> 2048 at two threads 1.04-1.08x against
//   0.81-0.95x; float64 4096 x 1024 -> 1024 (64 rows) 1.16x against 0.96-0.97x. At half depth blocks still won:
//   8192 x 1024 -> 256 (512 rows) 1.06-1.09x against 1.00x, 5003 x 515 -> 129 (313 rows) 1.10-1.25x against
//   0.99-1.11x.
// - The half types go to oneDNN in one call: its bfloat16/float16 kernels lost more, run per block on one thread
//   each, than the in-cache sigmoid saved (0.9x eager at 5000x300->300 bfloat16).
int64_t gemm_block_rows(int64_t N, int64_t K, int64_t M, at::ScalarType dtype) {
  if (is_half_type(dtype)) {
    return N;
  }
  const int64_t split = N * K * M >= kMinSplitGemmMultiplyAdds ? kGemmSplit : 1;
  const int64_t rows = std::max<int64_t>(
      64, std::min<int64_t>(kGemmBlockBytes / (M * c10::elementSize(dtype)), (N + split - 1) / split));
  return 2 * rows >= K ? std::min(rows, N) : N;
}

void forward_gemm(
    const at::Tensor& x,
    const at::Tensor& w,
    const std::optional<at::Tensor>& bias,
    const at::Tensor& y) {
  const KernelTable& kernels = kernels_for_this_cpu();
  const int64_t N = x.size(0);
  const int64_t M = w.size(0);
  const int64_t block_rows = gemm_block_rows(N, w.size(1), M, y.scalar_type());
  const int64_t num_blocks = (N + block_rows - 1) / block_rows;
  const at::Tensor w_t = w.t();
  const auto gemm_rows = [&](int64_t r0, int64_t rows) {
    at::Tensor y_block = y.narrow(0, r0, rows);
    const at::Tensor x_block = x.narrow(0, r0, rows);
    if (bias.has_value()) {
      at::addmm_out(y_block, *bias, x_block, w_t);
    } else {
      at::mm_out(y_block, x_block, w_t);
    }
  };
  const int64_t element_size = y.element_size();
  if (num_blocks == 1) {
    // One BLAS call on every thread, then the sigmoid split among the threads. The GEMMs are plain kernels of
    // ours, never recorded by autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    gemm_rows(0, N);
    at::parallel_for(0, N * M, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      kernels.sigmoid_inplace(y.scalar_type(), mutable_byte_ptr(y) + begin * element_size, end - begin);
    });
    return;
  }
  // Blocks spread over the threads, each block's GEMM on one thread and its sigmoid right after, in cache.
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    // Dispatch guards are per thread, so each worker sets its own.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t block = first; block < last; ++block) {
      const int64_t r0 = block * block_rows;
      const int64_t rows = std::min(block_rows, N - r0);
      gemm_rows(r0, rows);
      kernels.sigmoid_inplace(y.scalar_type(), mutable_byte_ptr(y) + r0 * M * element_size, rows * M);
    }
  });
}

at::Tensor linear_sigmoid_cpu(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias) {
  check_linear_sigmoid_args(input, weight, bias);
  const int64_t K = weight.size(1);
  const int64_t M = weight.size(0);
  at::Tensor output = empty_large(output_sizes(input, M), input.options());
  if (output.numel() == 0) {
    return output;
  }
  const at::Tensor x = rows_of(input, K);
  const at::Tensor w = weight.contiguous();
  const std::optional<at::Tensor> b = bias.has_value() ? std::optional(bias->contiguous()) : std::nullopt;
  const at::Tensor y = output.view({x.size(0), M});
  const KernelTable& kernels = kernels_for_this_cpu();
  if (use_direct_forward(K, M, x.scalar_type())) {
    forward_by_rows(kernels.linear_sigmoid_rows, x, w, b, y);
  } else if (use_tiled_kernel(K, M, x.scalar_type())) {
    forward_by_rows(kernels.linear_sigmoid_tiled_rows, x, w, b, y);
  } else if (use_through_float(x.scalar_type())) {
    linear_sigmoid_through_float(x, w, b, y);
  } else {
    forward_gemm(x, w, b, y);
  }
  return output;
}

// Per-block partial sums that the kernels add into, and their total. They are held in double when accumulate_type
// is double (bias sums always; weight sums of double inputs), in float otherwise. Blocks are fixed by the shape and
// added in order, in double, so the total does not depend on the thread count.
class BlockSums {
 public:
  BlockSums(at::ScalarType accumulate_type, int64_t num_blocks, int64_t count)
      : in_double_(accumulate_type == at::kDouble),
        num_blocks_(num_blocks),
        count_(count),
        storage_(num_blocks * count * element_size(), 0) {}

  void* block(int64_t index) {
    return storage_.data() + index * count_ * element_size();
  }

  at::Tensor total(at::IntArrayRef shape, const at::TensorOptions& options) const {
    std::vector<double> sums(count_, 0.0);
    // Threads take disjoint ranges of the sums; each sum still adds its blocks in order.
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, num_blocks_));
    at::parallel_for(0, count_, grain, [&](int64_t begin, int64_t end) {
      for (int64_t index = 0; index < num_blocks_; ++index) {
        for (int64_t i = begin; i < end; ++i) {
          sums[i] += in_double_ ? reinterpret_cast<const double*>(storage_.data())[index * count_ + i]
                                : reinterpret_cast<const float*>(storage_.data())[index * count_ + i];
        }
      }
    });
    at::Tensor result = at::empty(shape, options);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, result.scalar_type(), "block_sums_total", [&] {
      std::copy(sums.begin(), sums.end(), result.mutable_data_ptr<scalar_t>());
    });
    return result;
  }

 private:
  int64_t element_size() const {
    return in_double_ ? sizeof(double) : sizeof(float);
  }

  bool in_double_;
  int64_t num_blocks_;
  int64_t count_;
  std::vector<char> storage_;
};

// dz = dy * y * (1 - y) and, when asked for, its column sums (the bias gradient) in one pass over blocks of rows.
at::Tensor sigmoid_grad_and_bias_grad(const at::Tensor& dy, const at::Tensor& y, std::optional<at::Tensor>* grad_bias) {
  const KernelTable& kernels = kernels_for_this_cpu();
  const int64_t N = y.size(0);
  const int64_t M = y.size(1);
  at::Tensor dz = empty_large(y.sizes(), y.options());
  const int64_t block_rows = backward_block_rows(M);
  const int64_t num_blocks = (N + block_rows - 1) / block_rows;
  BlockSums bias_sums(at::kDouble, grad_bias != nullptr ? num_blocks : 0, M);
  const int64_t element_size = y.element_size();
  const int64_t grain_blocks = std::max<int64_t>(1, at::internal::GRAIN_SIZE / (block_rows * M));
  at::parallel_for(0, num_blocks, grain_blocks, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t offset = block * block_rows * M * element_size;
      kernels.sigmoid_backward_rows(
          y.scalar_type(),
          byte_ptr(dy) + offset,
          byte_ptr(y) + offset,
          std::min(block_rows, N - block * block_rows),
          M,
          mutable_byte_ptr(dz) + offset,
          grad_bias != nullptr ? static_cast<double*>(bias_sums.block(block)) : nullptr);
    }
  });
  if (grad_bias != nullptr) {
    *grad_bias = bias_sums.total({M}, y.options());
  }
  return dz;
}

// Rows per chunk of the one-pass backward. Each chunk adds into its own partial sums of the weight and bias
// gradients, later added in order, so chunks are fixed by the shape alone and the result does not depend on the
// thread count. The direct kernel's 4096 rows keep those partials small (M * K <= 8 * K values per chunk) and give
// each thread many chunks on large batches. The tiled kernel's partials are a whole weight each, so it takes at
// most 64 chunks, fewer when their partials would pass 32 MiB (large weights under deterministic mode), and at
// least 512 rows each so that a chunk's GEMMs are worth a thread.
constexpr int64_t kDirectBackwardChunkRows = 4096;
constexpr int64_t kTiledBackwardMinChunkRows = 512;
constexpr int64_t kTiledBackwardMaxChunks = 64;
constexpr int64_t kTiledBackwardPartialBytes = 32 * 1024 * 1024;

int64_t tiled_backward_chunk_rows(int64_t N, int64_t weight_bytes) {
  const int64_t max_chunks =
      std::clamp<int64_t>(kTiledBackwardPartialBytes / std::max<int64_t>(1, weight_bytes), 1, kTiledBackwardMaxChunks);
  const int64_t rows = (N + max_chunks - 1) / max_chunks;
  return std::max(kTiledBackwardMinChunkRows, (rows + 63) / 64 * 64);
}

// The backward of the direct and tiled kernels' shapes: one pass over the rows computes dz, grad_input, and the
// chunk partial sums of grad_weight and grad_bias; dz is never stored.
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> backward_one_pass(
    KernelTable::BackwardRowsKernel kernel,
    int64_t chunk_rows,
    const at::Tensor& dy,
    const at::Tensor& y,
    const at::Tensor& x,
    const at::Tensor& w,
    const at::Tensor& input,
    std::array<bool, 3> output_mask) {
  const int64_t N = x.size(0);
  const int64_t K = w.size(1);
  const int64_t M = w.size(0);
  const int64_t num_chunks = (N + chunk_rows - 1) / chunk_rows;
  at::Tensor grad_input = output_mask[0] ? empty_large({N, K}, x.options()) : at::Tensor();
  BlockSums weight_sums(y.scalar_type(), output_mask[1] ? num_chunks : 0, M * K);
  BlockSums bias_sums(at::kDouble, output_mask[2] ? num_chunks : 0, M);
  const int64_t element_size = x.element_size();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const int64_t r0 = chunk * chunk_rows;
      kernel(
          y.scalar_type(),
          byte_ptr(dy) + r0 * M * element_size,
          byte_ptr(y) + r0 * M * element_size,
          byte_ptr(x) + r0 * ldx * element_size,
          ldx,
          w.const_data_ptr(),
          std::min(chunk_rows, N - r0),
          K,
          M,
          output_mask[0] ? mutable_byte_ptr(grad_input) + r0 * K * element_size : nullptr,
          output_mask[1] ? weight_sums.block(chunk) : nullptr,
          output_mask[2] ? static_cast<double*>(bias_sums.block(chunk)) : nullptr);
    }
  });
  std::optional<at::Tensor> grad_weight;
  std::optional<at::Tensor> grad_bias;
  if (output_mask[1]) {
    grad_weight = weight_sums.total({M, K}, y.options());
  }
  if (output_mask[2]) {
    grad_bias = bias_sums.total({M}, y.options());
  }
  std::optional<at::Tensor> grad_input_shaped;
  if (output_mask[0]) {
    grad_input_shaped = grad_input.view(input.sizes());
  }
  return {grad_input_shaped, grad_weight, grad_bias};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_sigmoid_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_linear_sigmoid_backward_args(grad_output, output, input, weight);
  // The GEMMs are part of this kernel; autograd must not record them.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t K = weight.size(1);
  const int64_t M = weight.size(0);
  const BackwardRows rows = backward_rows(grad_output, output, input, weight);
  const at::Tensor& dy = rows.dy;
  const at::Tensor& y = rows.y;
  const at::Tensor& x = rows.x;
  const int64_t N = x.size(0);
  if (N == 0 || M == 0) {
    return zero_gradients(input, weight, output_mask);
  }

  const KernelTable& kernels = kernels_for_this_cpu();
  if (use_direct_backward(K, M, y.scalar_type())) {
    return backward_one_pass(
        kernels.linear_sigmoid_backward_rows, kDirectBackwardChunkRows, dy, y, x, weight.contiguous(), input,
        output_mask);
  }
  if (use_through_float(y.scalar_type())) {
    return linear_sigmoid_backward_through_float(dy, y, x, weight.contiguous(), input, output_mask);
  }
  // Under torch.use_deterministic_algorithms(True) float and double take the one-pass tiled backward whatever the
  // weight's size: BLAS splits the weight gradient's long sum over the rows among its threads, so its result
  // changes with the thread count, while ours is summed in chunks fixed by the shape.
  const bool single_or_double = y.scalar_type() == at::kFloat || y.scalar_type() == at::kDouble;
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  if (use_tiled_kernel(K, M, y.scalar_type()) || (deterministic && single_or_double)) {
    return backward_one_pass(
        kernels.linear_sigmoid_backward_tiled_rows, tiled_backward_chunk_rows(N, weight.numel() * y.element_size()),
        dy, y, x, weight.contiguous(), input, output_mask);
  }
  std::optional<at::Tensor> grad_input;
  std::optional<at::Tensor> grad_weight;
  std::optional<at::Tensor> grad_bias;
  const at::Tensor dz = sigmoid_grad_and_bias_grad(dy, y, output_mask[2] ? &grad_bias : nullptr);
  if (output_mask[0]) {
    at::Tensor grad_rows = empty_large({N, K}, x.options());
    at::mm_out(grad_rows, dz, weight);
    grad_input = grad_rows.view(input.sizes());
  }
  if (output_mask[1]) {
    // The half types' weight gradient is BLAS's, whose sum over the rows depends on the thread count.
    at::globalContext().alertNotDeterministic("linear_sigmoid_backward (CPU, bfloat16/float16 weight gradient)");
    // dz^T is a transposed view: BLAS takes it as is, without a copy.
    at::Tensor sums = empty_large({M, K}, x.options());
    at::mm_out(sums, dz.t(), x);
    grad_weight = sums;
  }
  return {grad_input, grad_weight, grad_bias};
}

std::string cpu_capability() {
  return kernels_for_this_cpu().capability;
}

} // namespace

TORCH_LIBRARY_IMPL(fused_sigmoid, CPU, m) {
  m.impl("linear_sigmoid", &linear_sigmoid_cpu);
  m.impl("linear_sigmoid_backward", &linear_sigmoid_backward_cpu);
}

// No tensor arguments to dispatch on, so it is registered for every backend at once.
TORCH_LIBRARY_IMPL(fused_sigmoid, CompositeExplicitAutograd, m) {
  m.impl("cpu_capability", &cpu_capability);
}

} // namespace fused_sigmoid::cpu
