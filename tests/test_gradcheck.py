"""torch.autograd.gradcheck and gradgradcheck in float64, through both public entry points, with their batched and
forward-mode checks."""

import pytest
import torch

from conftest import leaves
from fused_sigmoid import LinearSigmoidFunction, linear_sigmoid

SHAPES = [((4,), 3, 2), ((2, 3), 5, 4), ((), 3, 2), ((6,), 20, 1), ((3,), 9, 12)]


ENTRY_POINTS = {"linear_sigmoid": linear_sigmoid, "LinearSigmoidFunction.apply": LinearSigmoidFunction.apply}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck(shape, with_bias, entry, device):
    # Reverse mode, also with a batch of gradients (vmap over the backward); forward mode (with a batch of tangents)
    # is linear_sigmoid's: LinearSigmoidFunction keeps no jvp, so that torch.compile can trace it.
    inputs = leaves(*shape, torch.float64, device, with_bias)
    forward_mode = entry == "linear_sigmoid"
    assert torch.autograd.gradcheck(ENTRY_POINTS[entry], inputs, check_batched_grad=True,
                                    check_forward_ad=forward_mode, check_batched_forward_grad=forward_mode)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_gradgradcheck(shape, with_bias, entry, device):
    inputs = leaves(*shape, torch.float64, device, with_bias)
    assert torch.autograd.gradgradcheck(ENTRY_POINTS[entry], inputs, check_batched_grad=True,
                                        check_fwd_over_rev=entry == "linear_sigmoid")

