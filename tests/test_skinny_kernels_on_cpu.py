"""The skinny CUDA kernels (csrc/cuda/skinny_kernels.cuh) run on the CPU, where no GPU is: tests/cuda_on_cpu emulates
a block's threads (fibers run one at a time between barriers, in orders that change from one stretch to the next),
its shared memory and cp.async copies, and checks every output of the forward and the one-pass backward against a
float64 reference, over shapes, row counts, strided and misaligned tensors, inputs large enough that some sigmoids
take the division (csrc/cuda/eager_sigmoid.cuh), grids of one to three blocks and both orders in which the copies may
land, under AddressSanitizer and UBSan where the compiler has them. On a GPU the CUDA tests run the kernels
themselves; this catches a wrong index, stage or barrier on every machine."""

import pytest

from emulated_gpu import KERNELS, assert_all_passed, assert_caught, build, run

SKINNY_KERNELS = KERNELS / "skinny_kernels.cuh"
EAGER_SIGMOID = KERNELS / "eager_sigmoid.cuh"

# The two lines of the header that only nvcc can take: cuda_runtime.h provides the pipeline primitives, and the
# dynamic shared memory becomes a pointer to each launch's block.
HOST_REWRITES = {
    "#include <cuda_pipeline_primitives.h>\n": "",
    "extern __shared__ __align__(16) unsigned char skinny_tile_bytes[];\n":
        "extern unsigned char* skinny_tile_bytes;\n",
}


def build_skinny(tmp_path, kernels_source, sigmoid_source=None):
    """The check program over `kernels_source` (the header's text) and, where given, `sigmoid_source` for
    eager_sigmoid.cuh, in tmp_path."""
    header = kernels_source
    for line, replacement in HOST_REWRITES.items():
        assert line in header, f"skinny_kernels.cuh no longer has the line {line.strip()!r}: update HOST_REWRITES"
        header = header.replace(line, replacement)
    other_headers = {EAGER_SIGMOID.name: sigmoid_source} if sigmoid_source is not None else None
    return build(tmp_path, "skinny_kernels_check.cpp", "skinny_kernels_on_cpu.h", header, other_headers)


@pytest.fixture(scope="module")
def check_program(tmp_path_factory):
    return build_skinny(tmp_path_factory.mktemp("skinny_kernels"), SKINNY_KERNELS.read_text())


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_skinny_kernels_match_float64_on_the_emulated_gpu(check_program, dtype):
    result = run(check_program, dtype)
    assert_all_passed(result)


@pytest.mark.parametrize("header, fault, planted", [
    # A forward that fetches the next tile into the stage it is computing from: on a GPU the copies race the reads
    # (and the next tile's stage stays stale), which the emulation turns into wrong outputs in either copy order.
    (SKINNY_KERNELS, "fetch(t + gridDim.x, stage(j + 1));", "fetch(t + gridDim.x, stage(j));"),
    # The per-row backward adds a chunk's sums in the stage it has just computed from; without the barrier after that,
    # threads done with the sums start the next tile's copies into that stage while others still read it.
    (SKINNY_KERNELS,
     "    // free_stage is filled again once this returns, and the threads' sums rewritten at the next chunk's end.\n"
     "    __syncthreads();\n", ""),
    # A sigmoid that never leaves the reciprocal's fast path: where exp(-z) overflows, 1 / infinity comes out NaN.
    (EAGER_SIGMOID, "all_in_fast_range &= in_reciprocal_fast_range(denominators[i]);", ""),
    # A range test that lets the two exponents below infinity's through (2^126 <= d < 2^128, z in (-88.7, -87.3]):
    # the reciprocal is subnormal there, which the fast path flushes to 0.
    (EAGER_SIGMOID, "return ((bits + 0x1800000u)", "return ((bits + 0x800000u)"),
], ids=["copy into the stage being read", "per-row chunk end without its last barrier", "sigmoid without its division",
        "sigmoid's range two exponents too wide"])
def test_the_emulation_catches_a_planted_fault(tmp_path, header, fault, planted):
    sources = {path: path.read_text() for path in (SKINNY_KERNELS, EAGER_SIGMOID)}
    assert fault in sources[header]
    sources[header] = sources[header].replace(fault, planted)
    result = run(build_skinny(tmp_path, sources[SKINNY_KERNELS], sources[EAGER_SIGMOID]), "float32")
    assert_caught(result)
