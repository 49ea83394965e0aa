"""FusedLinearSigmoid as a drop-in for nn.Linear + torch.sigmoid."""

import pytest
import torch
from torch import nn

from fused_sigmoid import FusedLinearSigmoid


@pytest.mark.parametrize("bias", [True, False])
def test_same_initialisation_as_nn_linear_under_the_same_seed(bias):
    torch.manual_seed(123)
    linear = nn.Linear(17, 5, bias=bias)
    torch.manual_seed(123)
    fused = FusedLinearSigmoid(17, 5, bias=bias)
    assert torch.equal(fused.weight, linear.weight)
    assert (fused.bias is None) == (linear.bias is None)
    if bias:
        assert torch.equal(fused.bias, linear.bias)


def test_state_dict_round_trips_both_ways():
    linear, fused = nn.Linear(4, 3), FusedLinearSigmoid(4, 3)
    assert list(fused.state_dict()) == list(linear.state_dict()) == ["weight", "bias"]
    fused.load_state_dict(linear.state_dict())
    assert torch.equal(fused.weight, linear.weight) and torch.equal(fused.bias, linear.bias)
    other = nn.Linear(4, 3)
    other.load_state_dict(fused.state_dict())
    x = torch.randn(6, 4)
    torch.testing.assert_close(fused(x), torch.sigmoid(other(x)))


def test_without_bias():
    fused = FusedLinearSigmoid(4, 3, bias=False)
    assert fused.bias is None and list(fused.state_dict()) == ["weight"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(fused(x), torch.sigmoid(x @ fused.weight.t()))


def test_from_linear_shares_parameters_and_computes_sigmoid_of_linear():
    linear = nn.Linear(6, 2)
    fused = FusedLinearSigmoid.from_linear(linear)
    assert fused.weight is linear.weight and fused.bias is linear.bias
    x = torch.randn(3, 6)
    torch.testing.assert_close(fused(x), torch.sigmoid(linear(x)))
    unbiased = FusedLinearSigmoid.from_linear(nn.Linear(6, 2, bias=False))
    assert unbiased.bias is None


def test_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match="from_linear: expected an nn.Linear, but got Conv1d"):
        FusedLinearSigmoid.from_linear(nn.Conv1d(1, 1, 1))


def test_device_and_dtype_keywords(device):
    fused = FusedLinearSigmoid(3, 2, device=device, dtype=torch.float64)
    assert fused.weight.dtype == fused.bias.dtype == torch.float64
    assert fused.weight.device.type == device
    out = fused(torch.randn(5, 3, dtype=torch.float64, device=device))
    assert out.dtype == torch.float64 and out.device.type == device


def test_is_not_an_nn_linear():
    # Tools that replace every nn.Linear by type must not silently drop the sigmoid.
    assert not isinstance(FusedLinearSigmoid(3, 2), nn.Linear)


def test_repr_like_nn_linear():
    assert repr(FusedLinearSigmoid(3, 2)) == "FusedLinearSigmoid(in_features=3, out_features=2, bias=True)"
    assert repr(FusedLinearSigmoid(3, 2, bias=False)).endswith("bias=False)")


def test_trains_like_the_eager_pair():
    torch.manual_seed(0)
    linear = nn.Linear(5, 1)
    fused = FusedLinearSigmoid(5, 1)
    fused.load_state_dict(linear.state_dict())
    x, target = torch.randn(64, 5), torch.randint(0, 2, (64, 1)).float()
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (linear, fused)]
    for _ in range(20):
        for forward, optimiser in zip((lambda v: torch.sigmoid(linear(v)), fused), optimisers):
            optimiser.zero_grad()
            nn.functional.binary_cross_entropy(forward(x), target).backward()
            optimiser.step()
    torch.testing.assert_close(fused.weight, linear.weight)
    torch.testing.assert_close(fused.bias, linear.bias)
