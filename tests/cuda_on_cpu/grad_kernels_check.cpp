// Runs the backward's dz pass and chunk-sum kernels (csrc/cuda/grad_kernels.cuh) on the CPU through cuda_runtime.h.
// dz is held to the float64 formula on the same rounded y and dy; each chunk's column sums must equal, bit for bit,
// the order the kernel documents (each row lane's rows in order, then the lanes in order, in double from the opmath
// dz), and their total from sum_chunks_kernel the float64 sum of dz within a few roundings. Built and run by
// tests/test_grad_kernels_on_cpu.py, which includes a copy of the header (grad_kernels_on_cpu.h).
//
//   grad_kernels_check float32|float64|bfloat16|float16
// prints one line per failing output (the first 20) and "<cases> cases, <failures> failures"; exits 1 on any.
#include "check_program.h"
#include "cuda_runtime.h"

#include "grad_kernels_on_cpu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace fused_sigmoid::cuda;

using cuda_on_cpu::as_double;
using cuda_on_cpu::failures;

template <typename T>
using Opmath = at::opmath_type<T>;

// Relative tolerance of one dz: its rounding to the type, far below what a wrong row or column would cost.
template <typename T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) {
    return 1e-14;
  } else if constexpr (std::is_same_v<T, float>) {
    return 1e-6;
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    return 1e-3;
  } else {
    return 8e-3;
  }
}

void fail(const std::string& where, const char* what, int64_t index, double got, double want) {
  if (failures++ < 20) {
    std::printf("FAIL %s: %s[%ld] = %.17g, want %.17g\n", where.c_str(), what, static_cast<long>(index), got, want);
  }
}

template <typename T>
void run(int64_t rows, int64_t M, bool store_dz, cuda_on_cpu::BlockThreads& block, std::mt19937& generator) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::string where = std::to_string(rows) + " x " + std::to_string(M) + (store_dz ? "" : ", sums only");
  // Heap blocks of exactly their size, so that AddressSanitizer sees an access past either end.
  std::vector<T> dy(rows * M), y(rows * M);
  for (int64_t i = 0; i < rows * M; ++i) {
    dy[i] = static_cast<T>(static_cast<float>(normal(generator)));
    y[i] = static_cast<T>(static_cast<float>(uniform(generator)));
  }
  const GradLayout layout = grad_layout(M);
  const int64_t chunks = (rows + layout.chunk_rows - 1) / layout.chunk_rows;
  const int64_t column_blocks = (M + layout.columns - 1) / layout.columns;
  std::vector<T> dz(store_dz ? rows * M : 0);
  std::vector<double> partial_sums(chunks * M, NAN);
  unsigned char* no_dynamic_shared = nullptr;
  block.launch(static_cast<int>(chunks * column_blocks), 0, &no_dynamic_shared, [&] {
    sigmoid_grad_kernel<T>(dy.data(), y.data(), rows, M, store_dz ? dz.data() : nullptr, partial_sums.data());
  });

  // The kernel's dz in opmath, from which its sums are taken.
  const auto opmath_dz = [&](int64_t i) {
    const Opmath<T> out = static_cast<Opmath<T>>(y[i]);
    return static_cast<Opmath<T>>(dy[i]) * (Opmath<T>(1) - out) * out;
  };
  for (int64_t i = 0; store_dz && i < rows * M; ++i) {
    const double want = as_double(dy[i]) * (1.0 - as_double(y[i])) * as_double(y[i]);
    const double got = as_double(dz[i]);
    // float16's subnormals are 6e-8 apart: a dz that small rounds by up to half that, whatever its magnitude.
    const double floor = std::is_same_v<T, c10::Half> ? 3e-8 : 0.0;
    if (!(std::fabs(got - want) <= tolerance<T>() * std::fabs(want) + floor)) {
      fail(where, "dz", i, got, want);
    }
  }
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t column = 0; column < M; ++column) {
      const int64_t first_row = chunk * layout.chunk_rows;
      const int64_t last_row = std::min(rows, first_row + layout.chunk_rows);
      double total = 0.0;
      for (int lane = 0; lane < layout.row_lanes; ++lane) {
        double lane_sum = 0.0;
        for (int64_t row = first_row + lane; row < last_row; row += layout.row_lanes) {
          lane_sum += static_cast<double>(opmath_dz(row * M + column));
        }
        total += lane_sum;
      }
      const double got = partial_sums[chunk * M + column];
      if (std::memcmp(&got, &total, sizeof(double)) != 0) {
        fail(where, "partial_sums", chunk * M + column, got, total);
      }
    }
  }

  std::vector<T> totals(M);
  block.launch(static_cast<int>(M), 0, &no_dynamic_shared, [&] {
    sum_chunks_kernel<T>(partial_sums.data(), chunks, M, totals.data());
  });
  for (int64_t column = 0; column < M; ++column) {
    double want = 0.0, magnitude = 0.0;
    for (int64_t row = 0; row < rows; ++row) {
      const double term = as_double(dy[row * M + column]) * (1.0 - as_double(y[row * M + column])) *
          as_double(y[row * M + column]);
      want += term;
      magnitude += std::fabs(term);
    }
    // The total rounds once to the type; the terms' own opmath roundings add up to a few units of the magnitude.
    const double allowed = tolerance<T>() * std::fabs(want) + 1e-6 * magnitude;
    if (!(std::fabs(as_double(totals[column]) - want) <= allowed)) {
      fail(where, "total", column, as_double(totals[column]), want);
    }
  }
}

template <typename T>
int run_all() {
  std::mt19937 generator(0);
  cuda_on_cpu::BlockThreads block(kGradThreads);
  // Output counts under, at and past one block's 32 columns (and not a multiple of them); row counts under one row
  // lane's run of kGradRowsInFlight rows, at whole chunks, and with remainders in both the lanes and the chunks.
  const int64_t outputs[] = {1, 2, 9, 31, 32, 33, 70};
  const int64_t row_counts[] = {1, 7, 64, 129, 1000, 3001};
  int cases = 0;
  for (const int64_t M : outputs) {
    for (const int64_t rows : row_counts) {
      if (rows * M > 100000) {
        continue;  // the emulation runs a thread at a time
      }
      run<T>(rows, M, cases % 3 != 2, block, generator);
      ++cases;
      if (cuda_on_cpu::too_many_failures(cases)) {
        return 1;
      }
    }
  }
  return cuda_on_cpu::summary(cases);
}

} // namespace

int main(int argc, char** argv) {
  return cuda_on_cpu::run_for_dtype(argc, argv, [](auto type) { return run_all<decltype(type)>(); });
}
