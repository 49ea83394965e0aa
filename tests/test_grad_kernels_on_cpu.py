"""The backward's dz pass and chunk-sum kernels for shapes past the skinny ones (csrc/cuda/grad_kernels.cuh) run on the
CPU, where no GPU is, through tests/cuda_on_cpu's emulated blocks: dz against float64, each chunk's column sums bit
for bit in the order the kernel documents (so that the gradients repeat bit for bit, and the loads issued ahead
change nothing), and their total against float64, over 1 to 70 outputs and 1 to 3001 rows, under AddressSanitizer and
UBSan where the compiler has them. On a GPU the CUDA tests run the kernels themselves."""

import pytest

from emulated_gpu import KERNELS, assert_all_passed, assert_caught, build, run

GRAD_KERNELS = KERNELS / "grad_kernels.cuh"


def build_grad(tmp_path, kernels_source):
    return build(tmp_path, "grad_kernels_check.cpp", "grad_kernels_on_cpu.h", kernels_source)


@pytest.fixture(scope="module")
def check_program(tmp_path_factory):
    return build_grad(tmp_path_factory.mktemp("grad_kernels"), GRAD_KERNELS.read_text())


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_grad_kernels_match_float64_on_the_emulated_gpu(check_program, dtype):
    result = run(check_program, dtype)
    assert_all_passed(result)


@pytest.mark.parametrize("fault, planted", [
    # The rows after the last whole run of loads issued ahead, dropped.
    ("    for (; row < last_row; row += row_step) {", "    for (; false;) {"),
    # A run's rows taken one apart instead of one row lane apart: rows counted twice, others never.
    ("take(row + r * row_step, outs[r], grads[r]);", "take(row + r, outs[r], grads[r]);"),
    # The lanes' sums added before every lane has written its own.
    ("  lane_sums[threadIdx.x] = sum;\n  __syncthreads();\n", "  lane_sums[threadIdx.x] = sum;\n"),
], ids=["dropped remainder", "wrong row step", "missing barrier"])
def test_the_emulation_catches_a_planted_fault(tmp_path, fault, planted):
    source = GRAD_KERNELS.read_text()
    assert fault in source
    result = run(build_grad(tmp_path, source.replace(fault, planted)), "float32")
    assert_caught(result)
