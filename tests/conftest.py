"""Shared test helpers: the devices to run on, tolerances, and the reduced-precision error rule."""

import pytest
import torch

import fused_sigmoid

CUDA_REASON = "needs a CUDA device and a fused_sigmoid build with CUDA kernels"
cuda_ready = torch.cuda.is_available() and fused_sigmoid.has_cuda_kernels()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON))])
def device(request):
    return request.param


# Tolerances for comparing against eager PyTorch in the same dtype: our accumulation order differs from BLAS's.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}


def assert_close_to_reference(actual, expected, dtype, scale=1.0):
    """Compares in the dtype's tolerance; `scale` widens atol for sums over many terms (gradients)."""
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale)


def assert_within_twice_eager_error(ours, eager, exact, what):
    """The reduced-precision rule: our error against a float64 reference is at most twice eager PyTorch's own
    error in the same dtype. Rounding the exact value to the dtype already costs up to half an ulp, which no
    implementation can beat, so that much is always allowed: it matters where eager happens to round a
    single-element result (a bias gradient of one output) almost exactly."""
    ours_error = (ours.double() - exact).abs().max().item()
    eager_error = (eager.double() - exact).abs().max().item()
    half_ulp = torch.finfo(ours.dtype).eps / 2 * exact.abs().max().item()
    bound = max(2 * eager_error, half_ulp)
    assert ours_error <= bound, f"{what}: our error {ours_error:.3g} exceeds twice eager's {eager_error:.3g}"
