"""The CUDA forward's sigmoid is eager's, bit for bit, in each kernel that computes it: the skinny kernel and the
CUTLASS GEMMs' epilogues (the Ampere kernels', and the Hopper ones' where the device and the build can run them).
With an identity weight and no bias each output's pre-activation is its input exactly (the other products are
0 * x = 0; float32 inputs are TF32 values, which TF32 tensor cores multiply exactly), so the outputs are the kernel's
sigmoid of the inputs, and must equal torch.sigmoid's. The inputs are test_sigmoid_numerics' sweep: every exponent,
densely where the result rounds to 1 and where 1 + exp(-z) leaves the fast range of the kernels' reciprocal
(z < -87.3; csrc/cuda/eager_sigmoid.cuh). The CUTLASS variables are read once per process, so each of their settings
runs in a fresh one."""

from pathlib import Path

import pytest
import torch
from test_cuda_cutlass_bound import VARIABLES, WHICH_GEMM
from test_reduced_precision import round_to_tf32
from test_sigmoid_numerics import sweep

from conftest import CUDA_REASON, cuda_ready, run_python
from fused_sigmoid import linear_sigmoid

needs_cuda = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

DTYPES = ("float32", "bfloat16", "float16")


def identity_rows(dtype, width, tf32):
    """The sweep's finite values in dtype (float32's rounded to TF32 first where tf32), as rows of width on the GPU."""
    x = sweep()
    x = (round_to_tf32(x) if tf32 else x).to(dtype)
    x = x[x.isfinite()]
    return torch.cat([x, x.new_zeros(-x.numel() % width)]).view(-1, width).cuda()


def mismatches(ours, x):
    """How many of ours differ in their bits from torch.sigmoid(x), and the first of them."""
    eager = torch.sigmoid(x).view(-1)
    different = ours.view(-1) != eager
    if not different.any():
        return "0"
    first = different.nonzero()[0].item()
    return (f"{different.sum().item()} (first: sigmoid({x.view(-1)[first].item()!r}) gave "
            f"{ours.view(-1)[first].item()!r}, eager {eager[first].item()!r})")


# Runs in the child: each dtype through an identity of 64 features, within every CUTLASS kernel's bound. Prints, per
# dtype, which GEMM ran and how many outputs differ from eager's.
CHILD = WHICH_GEMM + r"""
import sys
sys.path.insert(0, sys.argv[1])
from fused_sigmoid import linear_sigmoid
from test_cuda_sigmoid_bits import DTYPES, identity_rows, mismatches
torch.backends.cuda.matmul.allow_tf32 = True
for name in DTYPES:
    dtype = getattr(torch, name)
    x = identity_rows(dtype, 64, tf32=dtype == torch.float32)
    ours, gemm = which_gemm(lambda: linear_sigmoid(x, torch.eye(64, device="cuda", dtype=dtype)))
    print(f"{name}: {gemm} GEMM, mismatches {mismatches(ours, x)}")
"""


@needs_cuda
@pytest.mark.parametrize("width", [1, 3, 8])  # the half types' forwards of a fixed K (1 to 4), and of a run-time one
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_skinny_kernel_sigmoid_is_eagers(dtype, width):
    x = identity_rows(dtype, width, tf32=False)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        ours = linear_sigmoid(x, torch.eye(width, device="cuda", dtype=dtype))
        torch.cuda.synchronize()
    kernels = [event.name for event in profile.events() if event.device_type.name == "CUDA"]
    assert any("linear_sigmoid_skinny_kernel" in name for name in kernels), kernels
    assert mismatches(ours, x) == "0"


@needs_cuda
@pytest.mark.parametrize("hopper", ["0", "1"], ids=["Ampere kernels", "Hopper kernels"])
def test_cutlass_epilogue_sigmoid_is_eagers(hopper):
    child = run_python(CHILD, str(Path(__file__).parent), settings={"FUSED_SIGMOID_CUTLASS_HOPPER": hopper},
                       unset=VARIABLES)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    available = torch.ops.fused_sigmoid.cutlass_kernels()
    # Where the Hopper kernels cannot run the Ampere ones take the shapes, and without CUTLASS cuBLAS does.
    preferred = ("hopper", "ampere") if hopper == "1" else ("ampere",)
    expected = next((kernel for kernel in preferred if kernel in available), "none")
    assert child.stdout.splitlines() == [f"{name}: {expected} GEMM, mismatches 0" for name in DTYPES], child.stdout
