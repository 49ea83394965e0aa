"""torch.autograd.gradcheck and gradgradcheck in float64, through both public entry points."""

import pytest
import torch

from fused_sigmoid import LinearSigmoidFunction, linear_sigmoid

SHAPES = [((4,), 3, 2), ((2, 3), 5, 4), ((), 3, 2), ((6,), 20, 1), ((3,), 9, 12)]


def double_inputs(leading, in_features, out_features, device, with_bias):
    generator = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device).requires_grad_()

    return leaf(*leading, in_features), leaf(out_features, in_features), leaf(out_features) if with_bias else None


ENTRY_POINTS = {"linear_sigmoid": linear_sigmoid, "LinearSigmoidFunction.apply": LinearSigmoidFunction.apply}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck(shape, with_bias, entry, device):
    inputs = double_inputs(*shape, device, with_bias)
    assert torch.autograd.gradcheck(ENTRY_POINTS[entry], inputs)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_gradgradcheck(shape, with_bias, entry, device):
    inputs = double_inputs(*shape, device, with_bias)
    assert torch.autograd.gradgradcheck(ENTRY_POINTS[entry], inputs)

