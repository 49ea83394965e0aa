#!/usr/bin/env bash
# Compiles, links and imports the CUDA build of the extension on a machine without a GPU: a second virtual
# environment with a CUDA build of torch and CUTLASS's headers, the extension built from this checkout into
# build/cuda/ (the CPU build
# in fused_sigmoid/ is left alone), and the library loaded with LD_BIND_NOW=1 so that an unresolved symbol fails
# here rather than on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv-cuda
.venv-cuda/bin/pip install --quiet torch==2.14.1 ninja setuptools wheel
# CUTLASS's headers, for the tensor-core GEMM with the sigmoid in its epilogue; its Python dependencies are not used.
.venv-cuda/bin/pip install --quiet --no-deps nvidia-cutlass==4.2.0.0

site_packages=$(.venv-cuda/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# The nvcc on PATH is a wrapper, so torch's own guess of the toolkit is wrong; cuBLAS and friends' headers come
# with the CUDA wheels of torch, not with the toolkit here.
export CUDA_HOME=/usr/local/cuda
export CUDA_INC_PATH="$site_packages/nvidia/cu13/include"
export TORCH_CUDA_ARCH_LIST="8.0+PTX;9.0a"
export MAX_JOBS="${MAX_JOBS:-2}"

# A fresh build, so that ptxas's warnings (checked below) are those of this checkout's kernels.
rm -rf build/cuda
mkdir -p build/cuda
.venv-cuda/bin/python setup.py --quiet build_ext --build-temp build/cuda/temp --build-lib build/cuda/lib 2>&1 \
  | tee build/cuda/build.log

for gemm in gemm_sigmoid gemm_sigmoid_hopper; do
  test -f "build/cuda/temp/csrc/cuda/cutlass/$gemm.o" || { echo "the CUTLASS GEMM $gemm was not built"; exit 1; }
done
# The Hopper kernels are only real in sm_90a code: the machine code of each of them (float16, bfloat16, TF32) must
# hold wgmma (HGMMA) instructions. The disassembler comes with the CUDA build of torch's Triton.
cuobjdump="$site_packages/triton/backends/nvidia/bin/cuobjdump"
test -x "$cuobjdump" || { echo "no cuobjdump at $cuobjdump to check the Hopper kernels with"; exit 1; }
"$cuobjdump" -sass build/cuda/temp/csrc/cuda/cutlass/gemm_sigmoid_hopper.o >build/cuda/hopper.sass
hopper_kernels=$(python3 - build/cuda/hopper.sass <<'PY'
import re, sys
# SASS lists each function under a "Function : name" line; count the GEMM kernels with wgmma in their code.
functions = re.split(r"Function : ", open(sys.argv[1]).read())[1:]
print(sum(1 for f in functions if f.startswith("_ZN7cutlass13device_kernel") and "HGMMA" in f))
PY
)
if [ "$hopper_kernels" -lt 3 ]; then
  echo "$hopper_kernels of the 3 Hopper CUTLASS kernels hold wgmma instructions"
  exit 1
fi
# ptxas warns (C7510) where a call inside a kernel, such as a device assert, makes it serialize the wgmma
# instructions: the Hopper kernels would run, slowly.
if grep -q C7510 build/cuda/build.log; then
  echo "ptxas serialized wgmma instructions in a Hopper kernel (C7510)"
  exit 1
fi
library=$(ls build/cuda/lib/fused_sigmoid/_C*.so)
LD_BIND_NOW=1 .venv-cuda/bin/python - "$library" <<'PY'
import importlib.util
import sys

import torch

spec = importlib.util.spec_from_file_location("fused_sigmoid._C", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
for op in ("linear_sigmoid", "linear_sigmoid_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_sigmoid::{op}", key), (op, key)
print(f"CUDA build of fused_sigmoid links and loads against torch {torch.__version__} (CUDA {torch.version.cuda}), "
      "built for TORCH_CUDA_ARCH_LIST=8.0+PTX;9.0a with the CUTLASS GEMMs (Hopper's with wgmma): CPU and CUDA kernels "
      "registered for both ops")
PY
