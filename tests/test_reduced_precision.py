"""bfloat16 and float16: error against a float64 reference at most twice eager PyTorch's own in that dtype."""

import pytest
import torch

from conftest import assert_within_twice_eager_error
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

SHAPES = [(1, 3, 2), (4096, 3, 2), (2048, 30, 1), (512, 64, 64), (256, 256, 17), (64, 1024, 3)]


def inputs(rows, in_features, out_features, dtype, device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=generator).to(device, dtype)
    w = (torch.randn(out_features, in_features, generator=generator) / in_features**0.5).to(device, dtype)
    b = torch.randn(out_features, generator=generator).to(device, dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_within_twice_eager_error(shape, dtype, device):
    x, w, b = inputs(*shape, dtype, device)
    exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
    out = linear_sigmoid(x, w, b)
    assert out.dtype == dtype
    assert_within_twice_eager_error(out, reference_linear_sigmoid(x, w, b), exact, f"forward {shape}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_within_twice_eager_error(shape, dtype, device):
    x, w, b = (t.requires_grad_() for t in inputs(*shape, dtype, device))
    grad_output = torch.randn(shape[0], shape[2]).to(device, dtype)
    ours = torch.autograd.grad(linear_sigmoid(x, w, b), (x, w, b), grad_output)
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w, b), (x, w, b), grad_output)
    doubles = [t.detach().double().requires_grad_() for t in (x, w, b)]
    exact = torch.autograd.grad(reference_linear_sigmoid(*doubles), doubles, grad_output.double())
    for name, a, e, r in zip(("grad_input", "grad_weight", "grad_bias"), ours, eager, exact):
        assert a.dtype == dtype
        assert_within_twice_eager_error(a, e, r, f"{name} {shape}")
