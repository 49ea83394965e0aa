"""Builds fused_sigmoid._C: a CppExtension on a CPU-only torch, a CUDAExtension where torch and a CUDA toolkit
both have CUDA. Install with `pip install --no-build-isolation -e .` so the extension is built against the torch
you run."""

import copy
import glob
import importlib.util
import os
import platform

import torch
from setuptools import setup
from torch.utils import cpp_extension

# Each of these kernel files is compiled with its own instruction-set flags; csrc/cpu/kernel_dispatch.cpp picks
# one at run time by the capability ATen reports. Flags follow ATen's own for the same capabilities.
X86_CAPABILITIES = {
    "csrc/cpu/capability/default.cpp": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"],
    "csrc/cpu/capability/avx2.cpp": [
        "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c",
    ],
    "csrc/cpu/capability/avx512.cpp": [
        "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512",
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
    ],
}
OTHER_CAPABILITIES = {"csrc/cpu/capability/default.cpp": X86_CAPABILITIES["csrc/cpu/capability/default.cpp"]}


def capability_sources():
    if platform.machine() in ("x86_64", "AMD64"):
        return X86_CAPABILITIES
    return OTHER_CAPABILITIES


def cuda_sources():
    """The CUDA sources, or none when torch or the machine cannot build them."""
    if os.environ.get("FUSED_SIGMOID_FORCE_CPU") == "1":
        return []
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        return []
    return sorted(glob.glob("csrc/cuda/*.cu"))


def torch_version():
    return tuple(int(part) for part in torch.__version__.split(".")[:2])


def cutlass_include_dir():
    """CUTLASS's headers: CUTLASS_INCLUDE_DIR, else those of the nvidia-cutlass wheel (`pip install --no-deps
    nvidia-cutlass`: only its headers are used, so its Python dependencies are not needed); None without them,
    and the CUDA forward then runs every GEMM-sized shape on cuBLAS. The package is located, not imported."""
    path = os.environ.get("CUTLASS_INCLUDE_DIR")
    if not path:
        spec = importlib.util.find_spec("cutlass_library")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = os.path.join(spec.submodule_search_locations[0], "source", "include")
    return path if os.path.isfile(os.path.join(path, "cutlass", "cutlass.h")) else None


class BuildPerCapability(cpp_extension.BuildExtension):
    """BuildExtension that compiles each capability file in its own ninja run, with that capability's flags
    appended; every other source gets the common flags only."""

    def build_extension(self, ext):
        compile_all = self.compiler.compile
        per_file_flags = capability_sources()

        def compile_grouped(sources, *args, extra_postargs=None, **kwargs):
            common = [s for s in sources if os.path.relpath(s) not in per_file_flags]
            objects = compile_all(common, *args, extra_postargs=extra_postargs, **kwargs) if common else []
            for source in sources:
                flags = per_file_flags.get(os.path.relpath(source))
                if flags is None:
                    continue
                postargs = copy.deepcopy(extra_postargs)
                if isinstance(postargs, dict):
                    postargs["cxx"] = postargs["cxx"] + flags
                else:
                    postargs = postargs + flags
                objects += compile_all([source], *args, extra_postargs=postargs, **kwargs)
            return objects

        self.compiler.compile = compile_grouped
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_all


def extension():
    capabilities = capability_sources()
    cuda = cuda_sources()
    sources = (
        ["csrc/linear_sigmoid.cpp", "csrc/checks.cpp", "csrc/rows.cpp", "csrc/op_calls.cpp", "csrc/autograd.cpp",
         "csrc/autocast.cpp", "csrc/cpu/linear_sigmoid_cpu.cpp", "csrc/cpu/kernel_dispatch.cpp",
         "csrc/cpu/large_buffers.cpp", "csrc/cpu/half_through_float.cpp"]
        + list(capabilities)
        + cuda
    )
    define_macros = [("FUSED_SIGMOID_HAVE_AVX2", None), ("FUSED_SIGMOID_HAVE_AVX512", None)]
    if len(capabilities) == 1:
        define_macros = []
    # OpenMP makes at::parallel_for use every core; without it the loops silently run on one thread. The
    # extension then shares torch's own libgomp, already loaded by libtorch_cpu.
    cxx = ["-O3", "-fopenmp"]
    link = ["-fopenmp"]
    # tests/sanitize.sh builds with FUSED_SIGMOID_SANITIZE=address,undefined: a debug build whose every sanitizer
    # report is fatal, so the test run fails on it.
    sanitizers = os.environ.get("FUSED_SIGMOID_SANITIZE")
    if sanitizers:
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp"]
        cxx += [f"-fsanitize={sanitizers}", "-fno-sanitize-recover=all"]
        link += [f"-fsanitize={sanitizers}"]
    kwargs = dict(
        name="fused_sigmoid._C",
        sources=sources,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
        py_limited_api=False,
    )
    if cuda:
        # Hopper is built as sm_90a, whose wgmma instructions the Hopper CUTLASS kernels need. With no GPU to ask
        # (a build machine, CI), build for Ampere (sm_80, with its PTX for newer cards) and Hopper, instead of
        # torch's default of every architecture it knows; with GPUs, for theirs (torch's default) but Hopper's as
        # sm_90a. TORCH_CUDA_ARCH_LIST overrides this.
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            if not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0+PTX;9.0a"
            else:
                visible = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
                if (9, 0) in visible:
                    archs = ["9.0a" if cc == (9, 0) else f"{cc[0]}.{cc[1]}" for cc in visible]
                    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
        # NDEBUG as in the C++ flags: CUTLASS's device asserts would otherwise stay in its Hopper kernels, and a
        # call inside one makes ptxas serialize its wgmma instructions (its warning C7510).
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-DNDEBUG"]
        # The CUTLASS GEMM reads the TF32 setting through the float32 precision API of torch 2.10 and later.
        cutlass = cutlass_include_dir() if torch_version() >= (2, 10) else None
        if cutlass:
            kwargs["sources"] = sources + [
                "csrc/cuda/cutlass/gemm_sigmoid.cu",
                "csrc/cuda/cutlass/gemm_sigmoid_hopper.cu",
            ]
            kwargs["include_dirs"] = [cutlass]
            kwargs["define_macros"] = define_macros + [("FUSED_SIGMOID_HAVE_CUTLASS", None)]
        print(f"fused_sigmoid: CUDA kernels; CUTLASS GEMM epilogue {'from ' + cutlass if cutlass else 'not built'}")
        return cpp_extension.CUDAExtension(**kwargs)
    return cpp_extension.CppExtension(**kwargs)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildPerCapability},
)
