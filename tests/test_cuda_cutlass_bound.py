"""FUSED_SIGMOID_CUTLASS_MAX_FEATURES, the bound on K and M of the CUDA forward's CUTLASS path, read once per process.
Unset (the default bound, 64) and at 0 no CUTLASS GEMM runs on the shapes here (K, M >= 256); with CUTLASS taking
every shape up to 8192 it runs on the smaller and the larger one alike (in a build with CUTLASS; on neither without);
either way the forward stays within twice eager's error against float64. A value that is not a
non-negative integer is an error naming the variable. Each setting runs in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CUDA_REASON, cuda_ready

pytestmark = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

# Our CUTLASS GEMM is the one kernel whose name holds its epilogue's functor, EagerSigmoid (cuBLAS's own kernels
# may be CUTLASS instances too). Prints, per case, whether it ran.
USES_OUR_GEMM = r"""
import torch

def uses_our_gemm(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        out = fn()
        torch.cuda.synchronize()
    names = [event.name for event in profile.events() if event.device_type.name == "CUDA"]
    return out, any("EagerSigmoid" in name for name in names)
"""

# Runs in the child: bfloat16 and TF32 float32 on a shape inside (256) and one beyond (2048) the default bound.
CHILD = USES_OUR_GEMM + r"""
import sys
sys.path.insert(0, sys.argv[1])
from conftest import assert_within_twice_eager_error
from test_reduced_precision import round_to_tf32
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid
torch.backends.cuda.matmul.allow_tf32 = True
generator = torch.Generator().manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, k, m in [(1000, 256, 256), (1000, 2048, 1536)]:
        x = torch.randn(rows, k, generator=generator).to("cuda", dtype)
        w = (torch.randn(m, k, generator=generator) / k**0.5).to("cuda", dtype)
        b = torch.randn(m, generator=generator).to("cuda", dtype)
        out, ran = uses_our_gemm(lambda: linear_sigmoid(x, w, b))
        print(f"our GEMM ran: {ran}")
        exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
        yardstick = reference_linear_sigmoid(x, w, b)
        if dtype == torch.float32:
            # As in test_reduced_precision: cuBLAS may keep full float32, so TF32-rounded inputs multiplied exactly
            # are also a yardstick, and the one that errs more is used.
            tf32 = reference_linear_sigmoid(round_to_tf32(x).double(), round_to_tf32(w).double(), b.double()).float()
            yardstick = max(yardstick, tf32, key=lambda t: (t.double() - exact).abs().max().item())
        assert_within_twice_eager_error(out, yardstick, exact, f"{dtype} {rows}x{k}->{m}")
"""

# Runs in the child: a bfloat16 shape that a build with CUTLASS sends to it, were "1024" read alone from the value.
INVALID_CHILD = USES_OUR_GEMM + r"""
from fused_sigmoid import linear_sigmoid
x, w = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for shape in ((256, 64), (64, 64)))
try:
    _, ran = uses_our_gemm(lambda: linear_sigmoid(x, w))
except RuntimeError as error:
    print(error)
else:
    print(f"no error; our GEMM ran: {ran}")
"""


def run_child(code, bound, *args):
    """Runs code in a fresh Python with the bound set to `bound`, or unset where it is None."""
    environment = {name: value for name, value in os.environ.items() if name != "FUSED_SIGMOID_CUTLASS_MAX_FEATURES"}
    if bound is not None:
        environment["FUSED_SIGMOID_CUTLASS_MAX_FEATURES"] = bound
    child = subprocess.run([sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    return child.stdout


@pytest.mark.parametrize("bound", [None, "0", "8192"])
def test_bound_routes_the_forward_and_both_paths_are_accurate(bound):
    ran = [line.endswith("True") for line in run_child(CHILD, bound, str(Path(__file__).parent)).splitlines()
           if line.startswith("our GEMM ran:")]
    assert len(ran) == 4
    if bound in (None, "0"):
        assert not any(ran), f"the CUTLASS GEMM ran with its bound {bound or 'unset'}"
    else:
        assert all(ran) or not any(ran), f"the CUTLASS GEMM ran on some shapes only, with its bound at 8192: {ran}"


def test_invalid_bound_is_an_error_naming_the_variable():
    printed = run_child(INVALID_CHILD, "1024abc")
    # A build without CUTLASS never reads the variable: then its GEMM cannot have run either.
    if "no error" in printed:
        assert "our GEMM ran: False" in printed, printed
    else:
        assert "FUSED_SIGMOID_CUTLASS_MAX_FEATURES must be a non-negative integer, got '1024abc'" in printed, printed
