"""torch.autograd.gradcheck and gradgradcheck in float64, through both public entry points."""

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

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


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.enable_grad], ids=["no_grad", "enable_grad"])
def test_forward_mode_tangents_are_never_dropped(grad_mode, device):
    # Forward-mode AD runs under no_grad too. The op has no jvp: it may refuse a dual tensor, but an output without
    # its tangent (a silent zero derivative) would be wrong.
    x, w, b = (t.detach() for t in double_inputs((4,), 3, 2, device, True))
    tangent = torch.ones_like(x)
    with grad_mode(), forward_ad.dual_level():
        try:
            out = linear_sigmoid(forward_ad.make_dual(x, tangent), w, b)
        except RuntimeError as error:
            assert "jvp" in str(error)
            return
        ours = forward_ad.unpack_dual(out).tangent
    y = torch.sigmoid(torch.nn.functional.linear(x, w, b))
    assert ours is not None, "the output lost its tangent"
    torch.testing.assert_close(ours, (tangent @ w.t()) * y * (1 - y))
