// What the check programs share: values in double, the tally of failing outputs, the closing line that
// tests/emulated_gpu.py reads, and main's choice of dtype, named by the program's one argument.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdio>
#include <string>

namespace cuda_on_cpu {

// A value of the kernels' types in double, through their opmath type, as the kernels compute with it.
template <typename T>
double as_double(T value) {
  return static_cast<double>(static_cast<at::opmath_type<T>>(value));
}

// Failing outputs so far; each program prints the first 20.
inline int failures = 0;

// After a case: whether to stop, past 20 failures, which the rest would only repeat.
inline bool too_many_failures(int cases) {
  if (failures <= 20) {
    return false;
  }
  std::printf("stopped after %d cases\n", cases);
  return true;
}

// The closing line, "<cases> cases, <failures> failures", and the exit status: 1 on any failure.
inline int summary(int cases) {
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}

// run_all(T{}) for the dtype argv[1] names (float32, float64, bfloat16 or float16), or 2 with a usage line.
template <typename RunAll>
int run_for_dtype(int argc, char** argv, RunAll run_all) {
  const std::string dtype = argc > 1 ? argv[1] : "";
  if (dtype == "float32") {
    return run_all(float{});
  } else if (dtype == "float64") {
    return run_all(double{});
  } else if (dtype == "bfloat16") {
    return run_all(c10::BFloat16{});
  } else if (dtype == "float16") {
    return run_all(c10::Half{});
  }
  std::fprintf(stderr, "usage: %s float32|float64|bfloat16|float16\n", argc > 0 ? argv[0] : "check");
  return 2;
}

} // namespace cuda_on_cpu
