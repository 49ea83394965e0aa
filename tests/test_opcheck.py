"""torch.library.opcheck: schemas, fake kernels, and AOT dispatch of both ops."""

import pytest
import torch

import fused_sigmoid  # noqa: F401

SAMPLES = [((4, 3), 2, True), ((2, 5, 7), 4, False), ((3,), 1, True), ((0, 3), 2, True), ((6, 0), 3, True),
           ((300, 70), 90, True)]


def sample(shape, out_features, with_bias, dtype, device, requires_grad=False):
    generator = torch.Generator().manual_seed(0)

    def make(*s):
        return torch.randn(s, generator=generator, dtype=dtype).to(device).requires_grad_(requires_grad)

    return make(*shape), make(out_features, shape[-1]), make(out_features) if with_bias else None


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", SAMPLES)
def test_opcheck_forward(case, dtype, requires_grad, device):
    # With inputs that require grad, opcheck also checks the op's autograd registration and traces its backward.
    torch.library.opcheck(torch.ops.fused_sigmoid.linear_sigmoid.default,
                          sample(*case, dtype, device, requires_grad))


@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]])
@pytest.mark.parametrize("case", SAMPLES)
def test_opcheck_backward(case, mask, device):
    x, w, b = sample(*case, torch.float64, device)
    y = torch.ops.fused_sigmoid.linear_sigmoid(x, w, b)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.fused_sigmoid.linear_sigmoid_backward.default, (dy, y, x, w, mask))
