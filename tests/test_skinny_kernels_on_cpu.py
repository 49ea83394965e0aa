"""The skinny CUDA kernels (csrc/cuda/skinny_kernels.cuh) run on the CPU, where no GPU is: tests/cuda_on_cpu emulates
a block's threads (fibers run one at a time between barriers, in orders that change from one stretch to the next),
its shared memory and cp.async copies, and checks every output of the forward and the one-pass backward against a
float64 reference, over shapes, row counts, strided and misaligned tensors, grids of one to three blocks and both
orders in which the copies may land, under AddressSanitizer and UBSan where the compiler has them. On a GPU the CUDA
tests run the kernels themselves; this catches a wrong index, stage or barrier on every machine."""

import os
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

HERE = Path(__file__).parent
HARNESS = HERE / "cuda_on_cpu"
KERNELS = HERE.parent / "csrc" / "cuda" / "skinny_kernels.cuh"
COMPILER = os.environ.get("CXX", "c++")
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]

# The two lines of the header that only nvcc can take: cuda_runtime.h provides the pipeline primitives, and the
# dynamic shared memory becomes a pointer to each launch's block.
HOST_REWRITES = {
    "#include <cuda_pipeline_primitives.h>\n": "",
    "extern __shared__ __align__(16) unsigned char skinny_tile_bytes[];\n":
        "extern unsigned char* skinny_tile_bytes;\n",
}


def compiler_has_sanitizers(tmp_path):
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    result = subprocess.run([COMPILER, *SANITIZERS, str(probe), "-o", str(tmp_path / "probe")], capture_output=True)
    return result.returncode == 0


def build(tmp_path, kernels_source):
    """The check program over `kernels_source` (the header's text), in tmp_path."""
    header = kernels_source
    for line, replacement in HOST_REWRITES.items():
        assert line in header, f"skinny_kernels.cuh no longer has the line {line.strip()!r}: update HOST_REWRITES"
        header = header.replace(line, replacement)
    (tmp_path / "skinny_kernels_on_cpu.h").write_text(header)
    program = tmp_path / "skinny_kernels_check"
    includes = [f"-I{path}" for path in (tmp_path, HARNESS, *cpp_extension.include_paths())]
    sanitizers = SANITIZERS if compiler_has_sanitizers(tmp_path) else []
    # libc10 for the kernels' internal asserts.
    libraries = [f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()]
    libraries += [f"-L{path}" for path in cpp_extension.library_paths()] + ["-lc10"]
    # -O0: the build of 64 kernel instantiations, not their run, is most of the time (9 s against 30 s at -O1).
    command = [COMPILER, "-std=c++20", "-O0", "-g", *sanitizers, *includes,
               str(HARNESS / "skinny_kernels_check.cpp"), "-o", str(program), *libraries]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"
    return program


def run(program, dtype):
    return subprocess.run([str(program), dtype], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def check_program(tmp_path_factory):
    return build(tmp_path_factory.mktemp("skinny_kernels"), KERNELS.read_text())


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_skinny_kernels_match_float64_on_the_emulated_gpu(check_program, dtype):
    result = run(check_program, dtype)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip().endswith(" 0 failures"), result.stdout[-4000:]


def test_the_emulation_catches_a_copy_into_the_stage_being_read(tmp_path):
    # A forward that fetches the next tile into the stage it is computing from: on a GPU the copies race the reads
    # (and the next tile's stage stays stale), which the emulation turns into wrong outputs in either copy order.
    source = KERNELS.read_text()
    prefetch = "fetch(t + gridDim.x, stage(j + 1));"
    assert prefetch in source
    program = build(tmp_path, source.replace(prefetch, "fetch(t + gridDim.x, stage(j));"))
    result = run(program, "float32")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "FAIL" in result.stdout
