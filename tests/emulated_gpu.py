"""Builds and runs the check programs of tests/cuda_on_cpu, which run CUDA kernels on the CPU: a program that includes
cuda_runtime.h and a copy of one kernel header, whose text a test passes (so that it can plant a fault in it), built
under AddressSanitizer and UBSan where the compiler has them."""

import os
import subprocess
from pathlib import Path

from torch.utils import cpp_extension

HARNESS = Path(__file__).parent / "cuda_on_cpu"
KERNELS = Path(__file__).parent.parent / "csrc" / "cuda"
COMPILER = os.environ.get("CXX", "c++")
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def compiler_has_sanitizers(tmp_path):
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    result = subprocess.run([COMPILER, *SANITIZERS, str(probe), "-o", str(tmp_path / "probe")], capture_output=True)
    return result.returncode == 0


def build(tmp_path, program_source, header_name, header_text, other_headers=None):
    """The check program tests/cuda_on_cpu/<program_source>, including header_text as <header_name>, in tmp_path.
    other_headers ({name: text}) replace the kernel headers of those names that header_text includes."""
    for name, text in {header_name: header_text, **(other_headers or {})}.items():
        (tmp_path / name).write_text(text)
    program = tmp_path / Path(program_source).stem
    # The copy in tmp_path includes the kernels' other headers (eager_sigmoid.cuh) from tmp_path where other_headers
    # put them there, else from csrc/cuda.
    includes = [f"-I{path}" for path in (tmp_path, HARNESS, KERNELS, *cpp_extension.include_paths())]
    sanitizers = SANITIZERS if compiler_has_sanitizers(tmp_path) else []
    # libc10 for the kernels' internal asserts.
    libraries = [f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()]
    libraries += [f"-L{path}" for path in cpp_extension.library_paths()] + ["-lc10"]
    # -O0: the build of the kernels' instantiations, not their run, is most of the time (9 s against 30 s at -O1
    # for the skinny kernels' 64).
    command = [COMPILER, "-std=c++20", "-O0", "-g", *sanitizers, *includes, str(HARNESS / program_source),
               "-o", str(program), *libraries]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"
    return program


def run(program, dtype):
    return subprocess.run([str(program), dtype], capture_output=True, text=True, timeout=600)


def assert_all_passed(result):
    """The check program ran every case and every output held."""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip().endswith(" 0 failures"), result.stdout[-4000:]


def assert_caught(result):
    """The check program, over a kernel with a planted fault, reported failing outputs (rather than crashing)."""
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "FAIL" in result.stdout
