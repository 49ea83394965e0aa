// Runs the skinny CUDA kernels (forward and one-pass backward) on the CPU through cuda_runtime.h and holds every
// output to a float64 reference computed here from the same inputs: outputs, grad_input, and the chunks' weight and
// bias partial sums added up. Built and run by tests/test_skinny_kernels_on_cpu.py, which includes a copy of
// csrc/cuda/skinny_kernels.cuh with its extern shared array made a pointer (skinny_kernels_on_cpu.h).
//
//   skinny_kernels_check float32|float64|bfloat16|float16
// prints one line per failing output (the first 20) and "<cases> cases, <failures> failures"; exits 1 on any.
#include "check_program.h"
#include "cuda_runtime.h"

#include "skinny_kernels_on_cpu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>

unsigned char* fused_sigmoid::cuda::skinny_tile_bytes = nullptr;

namespace {

using namespace fused_sigmoid::cuda;

using cuda_on_cpu::as_double;
using cuda_on_cpu::failures;

// Relative tolerance of one output: a few roundings in the type (the kernels sum in opmath, ::exp on the host may
// round differently from the device's), far below what a wrong row, weight or tile would cost.
template <typename T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) {
    return 1e-12;
  } else if constexpr (std::is_same_v<T, float>) {
    return 2e-5;
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    return 2e-3;
  } else {
    return 1e-2;
  }
}

void check(const std::string& where, const char* what, int64_t index, double got, double want, double tol) {
  if (!(std::fabs(got - want) <= tol * (1 + std::fabs(want))) && failures++ < 20) {
    std::printf("FAIL %s: %s[%ld] = %.9g, want %.9g\n", where.c_str(), what, static_cast<long>(index), got, want);
  }
}

struct Case {
  int64_t rows;
  int K;
  int M;
  int64_t ldx;       // row stride of x: K (contiguous) or more
  int offset;        // elements from a 16-byte boundary to x's first
  int grid;          // blocks launched, at most one per tile (forward) or chunk (backward)
  bool bias;
  std::array<bool, 3> mask;  // grad_input, grad_weight, grad_bias
  int backward_tile_rows;    // the backward's bound on a tile's rows: the default or the largest allowed
  double x_scale = 1.0;      // x's standard deviation; at 64 some rows have z < -88.7 (about 5% at 3 -> 2), where
                             // exp(-z) overflows and the sigmoid takes the division (eager_sigmoid.cuh)
};

template <typename T>
bool is_16_byte_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// `size` elements from `offset` elements past a 16-byte boundary (as the caching allocator's blocks start), in a
// heap block of exactly that much, so that AddressSanitizer sees an access past either end.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t size, int offset = 0)
      : storage_(static_cast<T*>(::operator new(sizeof(T) * (offset + size + (offset + size == 0)),
                                                std::align_val_t(16)))),
        data_(storage_ + offset),
        size_(size) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    ::operator delete(storage_, std::align_val_t(16));
  }
  T* data() const {
    return data_;
  }
  T& operator[](int64_t i) const {
    return data_[i];
  }
  T* begin() const {
    return data_;
  }
  T* end() const {
    return data_ + size_;
  }

 private:
  T* storage_;
  T* data_;
  int64_t size_;
};

template <typename T>
void run(const Case& c, cuda_on_cpu::BlockThreads& block, std::mt19937& generator) {
  std::normal_distribution<double> normal;
  const auto draw = [&](double scale) { return static_cast<T>(static_cast<float>(normal(generator) * scale)); };
  const std::string where = std::string("rows ") + std::to_string(c.rows) + ", " + std::to_string(c.K) + " -> " +
      std::to_string(c.M) + ", ldx " + std::to_string(c.ldx) + ", offset " + std::to_string(c.offset) + ", grid " +
      std::to_string(c.grid) + ", backward tiles of up to " + std::to_string(c.backward_tile_rows) + " rows" +
      ", x scale " + std::to_string(static_cast<int>(c.x_scale)) +
      (cuda_on_cpu::eager_copies ? ", copies at once" : ", copies at the wait");
  Buffer<T> x_rows(c.rows > 0 ? (c.rows - 1) * c.ldx + c.K : 0, c.offset);
  for (auto& v : x_rows) {
    v = draw(c.x_scale);
  }
  const T* x = x_rows.data();
  Buffer<T> w(c.M * c.K), b(c.M);
  for (auto& v : w) {
    v = draw(0.5);
  }
  for (auto& v : b) {
    v = draw(1.0);
  }

  // Outputs and output gradients at the inputs' offset too: a misaligned y or dy takes the element-wise paths.
  Buffer<T> y(c.rows * c.M, c.offset);
  with_out_features(c.M, [&](auto out_features) {
    with_fixed_in_features<has_fixed_forward<T>()>(c.K, [&](auto fixed_in_features) {
      constexpr int kOutFeatures = decltype(out_features)::value;
      const SkinnyForwardTile tile = skinny_forward_tile<T>(c.K, kOutFeatures);
      const int64_t tiles = (c.rows + tile.rows - 1) / tile.rows;
      block.launch(static_cast<int>(std::clamp<int64_t>(tiles, 1, c.grid)), tile.bytes, &skinny_tile_bytes, [&] {
        linear_sigmoid_skinny_kernel<T, kOutFeatures, decltype(fixed_in_features)::value>(
            x, c.ldx, w.data(), c.bias ? b.data() : nullptr, c.rows, c.K, c.ldx == c.K && is_16_byte_aligned(x),
            is_16_byte_aligned(y.data()), y.data());
      });
    });
  });
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int m = 0; m < c.M; ++m) {
      double z = c.bias ? as_double(b[m]) : 0.0;
      for (int k = 0; k < c.K; ++k) {
        z += as_double(x[r * c.ldx + k]) * as_double(w[m * c.K + k]);
      }
      const double want = 1.0 / (1.0 + std::exp(-z));
      check(where, "y", r * c.M + m, as_double(y[r * c.M + m]), want, tolerance<T>());
      // A subnormal sigmoid is within any tolerance of 0, which a reciprocal wrongly kept on its fast path gives
      // (eager_sigmoid.cuh). Above 2^-127, 1 + exp(-z) is finite in float, so eager's formula is not 0 there either
      // (below 2^-128 exp(-z) overflows and it is); float32 and bfloat16 hold such values, float16 rounds them to 0.
      if (!std::is_same_v<T, c10::Half> && want > 0x1p-127 && as_double(y[r * c.M + m]) == 0.0 && failures++ < 20) {
        std::printf("FAIL %s: y[%ld] = 0, want %.9g\n", where.c_str(), static_cast<long>(r * c.M + m), want);
      }
    }
  }

  // The backward of our own forward's output, as autograd calls it.
  Buffer<T> dy(c.rows * c.M, c.offset);
  for (auto& v : dy) {
    v = draw(1.0);
  }
  const int64_t chunks = (c.rows + kSkinnyBackwardChunkRows - 1) / kSkinnyBackwardChunkRows;
  Buffer<T> dx(c.mask[0] ? c.rows * c.K : 0);
  std::vector<double> weight_partials(c.mask[1] ? chunks * c.M * c.K : 0, NAN);
  std::vector<double> bias_partials(c.mask[2] ? chunks * c.M : 0, NAN);
  // The kernel linear_sigmoid_cuda.cu launches.
  const int blocks = static_cast<int>(std::clamp<int64_t>(chunks, 1, c.grid));
  const SkinnyBackwardArgs<T> args{dy.data(), y.data(), x, c.ldx, w.data(), c.rows,
                                   c.ldx == c.K && is_16_byte_aligned(x),
                                   is_16_byte_aligned(dy.data()) && is_16_byte_aligned(y.data()),
                                   c.mask[0] ? dx.data() : nullptr, c.mask[1] ? weight_partials.data() : nullptr,
                                   c.mask[2] ? bias_partials.data() : nullptr};
  with_out_features(c.M, [&](auto out_features) {
    constexpr int kOutFeatures = decltype(out_features)::value;
    with_per_row_in_features<T, kOutFeatures>(c.K, [&](auto per_row_in_features) {
      constexpr int kFixedK = decltype(per_row_in_features)::value;
      if constexpr (kFixedK > 0) {
        const SkinnyBackwardTile tile =
            skinny_backward_tile<T>(kFixedK, kOutFeatures, kMaxSkinnyBackwardTileRows, true);
        block.launch(blocks, tile.bytes, &skinny_tile_bytes,
                     [&] { linear_sigmoid_skinny_per_row_backward_kernel<T, kOutFeatures, kFixedK>(args); });
      } else {
        const SkinnyBackwardTile tile = skinny_backward_tile<T>(c.K, kOutFeatures, c.backward_tile_rows, false);
        block.launch(blocks, tile.bytes, &skinny_tile_bytes, [&] {
          linear_sigmoid_skinny_backward_kernel<T, kOutFeatures>(args, c.K, c.backward_tile_rows);
        });
      }
    });
  });
  // dz exactly, and as the kernels form it, in opmath: their bias gradient is that dz summed in double.
  using opmath_t = at::opmath_type<T>;
  std::vector<double> dz(c.rows * c.M), kernel_dz(c.rows * c.M);
  for (int64_t i = 0; i < c.rows * c.M; ++i) {
    const double out = as_double(y[i]);
    dz[i] = as_double(dy[i]) * (1.0 - out) * out;
    const opmath_t kernel_out = static_cast<opmath_t>(y[i]);
    kernel_dz[i] = static_cast<double>(static_cast<opmath_t>(dy[i]) * (opmath_t(1) - kernel_out) * kernel_out);
  }
  if (c.mask[0]) {
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int k = 0; k < c.K; ++k) {
        double sum = 0.0;
        for (int m = 0; m < c.M; ++m) {
          sum += dz[r * c.M + m] * as_double(w[m * c.K + k]);
        }
        check(where, "grad_input", r * c.K + k, as_double(dx[r * c.K + k]), sum, tolerance<T>());
      }
    }
  }
  // The sums over the rows are held relative to the sum of their terms' magnitudes (the bound of any order of
  // summation in opmath): float32 sums of 7001 terms, four chunks, cannot do better than that. The bias gradient is
  // held to the double sum of the kernels' own dz, to double's rounding: a sum in float anywhere would show.
  const double weight_tolerance = std::is_same_v<T, double> ? 1e-12 : 1e-5;
  const double bias_tolerance = 1e-12;
  for (int m = 0; m < c.M; ++m) {
    for (int k = -1; k < c.K; ++k) {
      // k == -1 is the bias.
      if ((k < 0 && !c.mask[2]) || (k >= 0 && !c.mask[1])) {
        continue;
      }
      double want = 0.0, magnitude = 0.0, got = 0.0;
      for (int64_t r = 0; r < c.rows; ++r) {
        const double term = k < 0 ? kernel_dz[r * c.M + m] : dz[r * c.M + m] * as_double(x[r * c.ldx + k]);
        want += term;
        magnitude += std::fabs(term);
      }
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        got += k < 0 ? bias_partials[chunk * c.M + m] : weight_partials[(chunk * c.M + m) * c.K + k];
      }
      check(where, k < 0 ? "grad_bias" : "grad_weight", k < 0 ? m : m * c.K + k, got / (1 + magnitude),
            want / (1 + magnitude), k < 0 ? bias_tolerance : weight_tolerance);
    }
  }
}

template <typename T>
int run_all() {
  std::mt19937 generator(0);
  cuda_on_cpu::BlockThreads block(kThreads);
  // (K, M): the heads, rows of whole 16-byte pieces (32, 64: odd-pitch staging in float32), one input, no
  // inputs, odd sizes whose rows straddle pieces, the half types' forwards of a fixed K (1 to 4) with one to eight
  // outputs (float32's K = 4 rows are one piece), and the per-row backward's shapes (3 -> 2, 1 -> 1, and 1 -> 4,
  // 2 -> 3 and 4 -> 2 at its bound of a thread's sums; 2 -> 5 and 4 -> 8 are past it).
  const int features[][2] = {{3, 2}, {30, 1}, {32, 8}, {64, 8}, {1, 1}, {0, 3}, {17, 5}, {64, 1}, {8, 3}, {5, 7},
                             {4, 8}, {2, 5}, {1, 4}, {2, 3}, {4, 2}};
  // One row; a partial tile; several tiles (at large K); more backward chunks (2048 rows each) than three blocks.
  const int64_t row_counts[] = {1, 9, 1000, 7001};
  int cases = 0;
  for (const auto& [K, M] : features) {
    for (const int64_t rows : row_counts) {
      // Contiguous and aligned (cp.async), strided rows, and an odd offset (element by element).
      for (int layout = 0; layout < 3; ++layout) {
        if (rows == 7001 && layout != 0 && K > 8) {
          continue;  // the element-by-element paths are the same code at every size
        }
        Case c{rows, K, M, layout == 1 ? K + 3 : K, layout == 2 ? 1 : 0, 1 + cases % 3, cases % 4 != 1,
               {true, true, true}, cases % 7 < 4 ? kDefaultSkinnyBackwardTileRows : kMaxSkinnyBackwardTileRows};
        // Each gradient alone and in pairs too: the kernels skip what is not asked for (x is not even copied
        // without the weight gradient).
        const std::array<bool, 3> masks[] = {{true, false, false}, {false, true, true}, {false, false, true},
                                             {false, true, false}, {true, false, true}};
        if (cases % 9 >= 4) {
          c.mask = masks[cases % 9 - 4];
        }
        // Only where few products add up, so that float's rounding of z stays within the outputs' tolerance.
        if (cases % 5 == 3 && K <= 8) {
          c.x_scale = 64.0;
        }
        cuda_on_cpu::eager_copies = cases % 2 == 1;
        run<T>(c, block, generator);
        ++cases;
        if (cuda_on_cpu::too_many_failures(cases)) {
          return 1;
        }
      }
    }
  }
  return cuda_on_cpu::summary(cases);
}

} // namespace

int main(int argc, char** argv) {
  return cuda_on_cpu::run_for_dtype(argc, argv, [](auto type) { return run_all<decltype(type)>(); });
}
