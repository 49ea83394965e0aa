"""The CUDA forward's CUTLASS path, steered by two variables read once per process: FUSED_SIGMOID_CUTLASS_MAX_FEATURES
bounds K and M of the shapes it takes, and FUSED_SIGMOID_CUTLASS_HOPPER says whether Hopper's own kernels (1) or the
Ampere ones (0) take them, where the device and the build allow (torch.ops.fused_sigmoid.cutlass_kernels() says
which kernels can run). Unset, the half types' bound is 64 and float32 as TF32 goes to the Hopper kernels up to 512
where they can run: so of the shapes here (K, M >= 256) only float32's smaller one takes a CUTLASS GEMM, and only
there. At 0 none does; at 8192 with FUSED_SIGMOID_CUTLASS_HOPPER=0 the Ampere kernels run on the smaller and the
larger one alike (in a build with CUTLASS; cuBLAS without), and with 1 the Hopper kernels do, where they can run.
Either way the forward stays within twice eager's error against float64. Values that are not what each variable
takes are errors naming it. Each setting runs in a fresh process."""

from pathlib import Path

import pytest
import torch

from conftest import CUDA_REASON, cuda_ready, run_python

needs_cuda = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

# Our CUTLASS GEMMs are the kernels whose names hold their epilogue's functor, EagerSigmoid (cuBLAS's own kernels
# may be CUTLASS instances too); the Hopper ones' names also hold their Sm90 mainloop.
WHICH_GEMM = r"""
import torch

def which_gemm(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        out = fn()
        torch.cuda.synchronize()
    ours = [event.name for event in profile.events()
            if event.device_type.name == "CUDA" and "EagerSigmoid" in event.name]
    if not ours:
        return out, "none"
    return out, "hopper" if all("Sm90" in name for name in ours) else "ampere"
"""

# Runs in the child: bfloat16 and TF32 float32, on a shape with K = M = 256 and a larger one. Prints, per case,
# which GEMM ran.
CHILD = WHICH_GEMM + r"""
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
        out, gemm = which_gemm(lambda: linear_sigmoid(x, w, b))
        print(f"our GEMM: {gemm}")
        exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
        yardstick = reference_linear_sigmoid(x, w, b)
        if dtype == torch.float32:
            # As in test_reduced_precision: cuBLAS may keep full float32, so TF32-rounded inputs multiplied exactly
            # are also a yardstick, and the one that errs more is used.
            tf32 = reference_linear_sigmoid(round_to_tf32(x).double(), round_to_tf32(w).double(), b.double()).float()
            yardstick = max(yardstick, tf32, key=lambda t: (t.double() - exact).abs().max().item())
        assert_within_twice_eager_error(out, yardstick, exact, f"{dtype} {rows}x{k}->{m}")
"""

# Runs in the child: a bfloat16 shape inside the default bound, which a build with CUTLASS sends to it (and so reads
# both variables), were a bad value read as a good one.
INVALID_CHILD = WHICH_GEMM + r"""
from fused_sigmoid import linear_sigmoid
x, w = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for shape in ((256, 64), (64, 64)))
try:
    _, gemm = which_gemm(lambda: linear_sigmoid(x, w))
except RuntimeError as error:
    print(error)
else:
    print(f"no error; our GEMM: {gemm}")
"""

VARIABLES = ("FUSED_SIGMOID_CUTLASS_MAX_FEATURES", "FUSED_SIGMOID_CUTLASS_HOPPER")


def run_child(code, settings, *args):
    """Runs code in a fresh Python with the variables in settings set, and the other ones unset."""
    child = run_python(code, *args, settings=settings, unset=VARIABLES)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    return child.stdout


def gemms_that_ran(settings):
    printed = run_child(CHILD, settings, str(Path(__file__).parent))
    gemms = [line.split(": ")[1] for line in printed.splitlines() if line.startswith("our GEMM: ")]
    assert len(gemms) == 4, printed
    return gemms


@needs_cuda
def test_default_routes_only_tf32_on_hopper_beyond_64_features():
    gemms = gemms_that_ran({})
    # In the child's order: bfloat16 at 256 and 2048 -> 1536, then float32 at both.
    tf32_at_256 = "hopper" if "hopper" in torch.ops.fused_sigmoid.cutlass_kernels() else "none"
    assert gemms == ["none", "none", tf32_at_256, "none"], gemms


@needs_cuda
@pytest.mark.parametrize("settings", [{"FUSED_SIGMOID_CUTLASS_MAX_FEATURES": "0"},
                                      {"FUSED_SIGMOID_CUTLASS_MAX_FEATURES": "0", "FUSED_SIGMOID_CUTLASS_HOPPER": "1"}],
                         ids=["bound 0", "bound 0 with Hopper"])
def test_no_cutlass_gemm_outside_the_bound(settings):
    assert gemms_that_ran(settings) == ["none"] * 4


@needs_cuda
def test_the_bound_routes_every_shape_to_the_ampere_kernels():
    gemms = gemms_that_ran({"FUSED_SIGMOID_CUTLASS_MAX_FEATURES": "8192", "FUSED_SIGMOID_CUTLASS_HOPPER": "0"})
    # A build without CUTLASS runs cuBLAS throughout.
    expected = "ampere" if "ampere" in torch.ops.fused_sigmoid.cutlass_kernels() else "none"
    assert gemms == [expected] * 4, gemms


@needs_cuda
def test_hopper_kernels_run_where_device_and_build_allow():
    gemms = gemms_that_ran({"FUSED_SIGMOID_CUTLASS_MAX_FEATURES": "8192", "FUSED_SIGMOID_CUTLASS_HOPPER": "1"})
    # Elsewhere than on sm_90a code on a compute capability 9.0 device, the Ampere kernels (or cuBLAS) take them.
    available = torch.ops.fused_sigmoid.cutlass_kernels()
    expected = next((kernel for kernel in ("hopper", "ampere") if kernel in available), "none")
    assert gemms == [expected] * 4, (available, gemms)


def test_cutlass_kernels_reports_what_the_device_can_run():
    # Also on a machine without CUDA, where it reports none.
    available = torch.ops.fused_sigmoid.cutlass_kernels()
    assert set(available) <= {"ampere", "hopper"}, available
    if not cuda_ready or torch.cuda.get_device_capability()[0] < 8:
        assert available == [], available
    elif torch.cuda.get_device_capability() != (9, 0):
        assert "hopper" not in available, available


@needs_cuda
@pytest.mark.parametrize("name, value, message", [
    ("FUSED_SIGMOID_CUTLASS_MAX_FEATURES", "1024abc",
     "FUSED_SIGMOID_CUTLASS_MAX_FEATURES must be a non-negative integer, got '1024abc'"),
    ("FUSED_SIGMOID_CUTLASS_HOPPER", "yes", "FUSED_SIGMOID_CUTLASS_HOPPER must be 0 or 1, got 'yes'"),
])
def test_invalid_setting_is_an_error_naming_the_variable(name, value, message):
    printed = run_child(INVALID_CHILD, {name: value})
    # A build without CUTLASS (or a device it cannot run on) never reads the variables, and runs no GEMM of ours.
    if torch.ops.fused_sigmoid.cutlass_kernels():
        assert message in printed, printed
    else:
        assert "no error; our GEMM: none" in printed, printed
