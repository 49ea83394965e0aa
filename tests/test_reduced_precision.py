"""bfloat16 and float16: error against a float64 reference at most twice eager PyTorch's own in that dtype."""

import pytest
import torch

from conftest import assert_within_twice_eager_error
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

SHAPES = [(1, 3, 2), (4096, 3, 2), (2048, 30, 1), (512, 64, 64), (256, 256, 17), (64, 1024, 3)]


def inputs(rows, in_features, out_features, dtype, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
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


def gradients(shape, dtype, device, seed):
    """(ours, eager's, float64) gradients for one draw of inputs."""
    x, w, b = (t.requires_grad_() for t in inputs(*shape, dtype, device, seed))
    generator = torch.Generator().manual_seed(1000 + seed)
    grad_output = torch.randn(shape[0], shape[2], generator=generator).to(device, dtype)
    ours = torch.autograd.grad(linear_sigmoid(x, w, b), (x, w, b), grad_output)
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w, b), (x, w, b), grad_output)
    doubles = [t.detach().double().requires_grad_() for t in (x, w, b)]
    exact = torch.autograd.grad(reference_linear_sigmoid(*doubles), doubles, grad_output.double())
    return ours, eager, exact


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_within_twice_eager_error(shape, dtype, device):
    # A gradient with few elements (the bias of one output) is a sum of thousands of rounded terms: its error in
    # one draw is mostly luck, for eager as for us, so the rule is applied over several draws together.
    draws = [gradients(shape, dtype, device, seed) for seed in range(4)]
    for index, name in enumerate(("grad_input", "grad_weight", "grad_bias")):
        ours, eager, exact = (torch.cat([draw[kind][index].flatten() for draw in draws]) for kind in range(3))
        assert ours.dtype == dtype
        assert_within_twice_eager_error(ours, eager, exact, f"{name} {shape}")
