"""Shared test helpers: the devices to run on, seeded leaves, tolerances, the reduced-precision error rule, and the
`slow` marker (those tests run only with --run-slow)."""

import os
import subprocess
import sys

import pytest
import torch

import fused_sigmoid
from fused_sigmoid import reference_linear_sigmoid

CUDA_REASON = "needs a CUDA device and a fused_sigmoid build with CUDA kernels"
cuda_ready = torch.cuda.is_available() and fused_sigmoid.has_cuda_kernels()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON))])
def device(request):
    return request.param


def leaves(leading, in_features, out_features, dtype, device, with_bias=True, seed=0):
    """Seeded (input, weight, bias) leaves that require grad: input (*leading, in_features); bias None without it."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(shape, generator=generator, dtype=dtype).to(device).requires_grad_()

    x = leaf(*leading, in_features)
    w = leaf(out_features, in_features)
    b = leaf(out_features) if with_bias else None
    return x, w, b


# Tolerances for comparing against eager PyTorch in the same dtype: our accumulation order differs from BLAS's.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}


def assert_close_to_reference(actual, expected, dtype, scale=1.0):
    """Compares in the dtype's tolerance; `scale` widens atol for sums over many terms (gradients)."""
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale)


def half_gemm_runs_onednn(dtype):
    """Whether ATen's CPU GEMMs in bfloat16 or float16 run oneDNN's kernels for the type here, as ATen decides (the
    CPU's instructions, and torch.backends.mkldnn); the op's GEMM path then runs them too."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    supported = {torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported,
                 torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported}[dtype]
    return bool(supported())


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


def assert_layer_matches_eager(out, x, layer):
    """A layer's output for x, and the gradients of one random grad_output through it to x, weight and bias, against
    eager PyTorch's sigmoid(F.linear(...)) on the same tensors."""
    expected = reference_linear_sigmoid(x, layer.weight, layer.bias)
    torch.testing.assert_close(out, expected)
    grad_output = torch.randn_like(out)
    wrt = (x, layer.weight, layer.bias)
    for ours, eager in zip(torch.autograd.grad(out, wrt, grad_output), torch.autograd.grad(expected, wrt, grad_output)):
        torch.testing.assert_close(ours, eager)


def assert_forward_matches_eager(out, x, w, b):
    """Forward parity. float64 must equal eager to a few ulps. In float32 the kernels sum the K products in another
    order than BLAS does, so neither result is the reference: each output is held to the float64 result, within
    twice eager's largest error or within the standard error bound of a float32 dot product (sqrt(K) units of
    rounding on sum_k |x_k w_k|, carried through the sigmoid's slope, plus half an ulp of the output), whichever is
    larger. With a few dozen outputs eager's error alone is too small a sample to be the yardstick."""
    expected = reference_linear_sigmoid(x, w, b)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    if out.dtype == torch.float64:
        assert_close_to_reference(out, expected, torch.float64)
        return
    x64, w64 = x.double(), w.double()
    exact = reference_linear_sigmoid(x64, w64, None if b is None else b.double())
    torch.testing.assert_close(out.isnan(), expected.isnan())
    finite = ~exact.isnan()
    magnitude = x64.abs() @ w64.abs().t() + (0 if b is None else b.double().abs())
    eps = torch.finfo(out.dtype).eps
    dot_bound = (x.shape[-1] + 1) ** 0.5 * eps * magnitude * exact * (1 - exact) + eps / 2 * exact.abs()
    eager_error = (expected.double() - exact)[finite].abs().max().item() if finite.any() else 0.0
    allowed = torch.maximum(dot_bound, torch.full_like(dot_bound, 2 * eager_error))
    error = (out.double() - exact).abs()
    assert bool((error[finite] <= allowed[finite]).all()), (
        f"forward: error {error[finite].max().item():.3g} beyond the bound (eager's error {eager_error:.3g})")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (tests/test_large_tensors.py: about 13 GB of memory)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs minutes or many GB of memory; runs only with --run-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow (about 13 GB of memory): run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_python(code, *args, settings=None, unset=()):
    """code run by a fresh Python (with args), its environment this one's less the variables in unset and with those
    in settings: for variables the extension reads once per process."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment.update(settings or {})
    return subprocess.run([sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True,
                          timeout=300)
