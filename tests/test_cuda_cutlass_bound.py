"""FUSED_SIGMOID_CUTLASS_MAX_FEATURES, the bound on K and M of the CUDA forward's CUTLASS path, read once per process:
with every shape sent to cuBLAS (0) and with CUTLASS taking shapes far beyond its default bound (8192), the forward
stays within twice eager's error against float64; a value that is not a non-negative integer is an error naming the
variable. Each setting runs in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CUDA_REASON, cuda_ready

pytestmark = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

# Runs in the child: bfloat16 and TF32 float32 on shapes inside (256) and beyond (2048) the default bound of 1024.
CHILD = r"""
import sys, torch
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
        exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
        yardstick = reference_linear_sigmoid(x, w, b)
        if dtype == torch.float32:
            # As in test_reduced_precision: cuBLAS may keep full float32, so TF32-rounded inputs multiplied exactly
            # are also a yardstick, and the one that errs more is used.
            tf32 = reference_linear_sigmoid(round_to_tf32(x).double(), round_to_tf32(w).double(), b.double()).float()
            yardstick = max(yardstick, tf32, key=lambda t: (t.double() - exact).abs().max().item())
        assert_within_twice_eager_error(linear_sigmoid(x, w, b), yardstick, exact, f"{dtype} {rows}x{k}->{m}")
"""

# Runs in the child: a bfloat16 GEMM shape inside the default bound, which a build with CUTLASS sends to it.
INVALID_CHILD = r"""
import torch
from fused_sigmoid import linear_sigmoid
x, w = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for shape in ((256, 64), (64, 64)))
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
    try:
        linear_sigmoid(x, w)
        torch.cuda.synchronize()
    except RuntimeError as error:
        print(error)
        raise SystemExit(0)
kernels = [event.name for event in profile.events() if event.device_type.name == "CUDA"]
print("no error; kernels:", kernels)
raise SystemExit(0 if not any("cutlass" in name.lower() for name in kernels) else 1)
"""


def run_child(code, bound, *args):
    environment = dict(os.environ, FUSED_SIGMOID_CUTLASS_MAX_FEATURES=bound)
    return subprocess.run([sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("bound", ["0", "8192"])
def test_forward_within_twice_eager_error_on_either_side_of_the_bound(bound):
    child = run_child(CHILD, bound, str(Path(__file__).parent))
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]


def test_invalid_bound_is_an_error_naming_the_variable():
    child = run_child(INVALID_CHILD, "12abc")
    # A build without CUTLASS never reads the variable: then no CUTLASS kernel may have run either.
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    if "no error" not in child.stdout:
        assert "FUSED_SIGMOID_CUTLASS_MAX_FEATURES must be a non-negative integer, got '12abc'" in child.stdout
