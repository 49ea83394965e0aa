"""The op's float32 sigmoid on each CPU kernel path, against eager torch.sigmoid and a float64 reference, over a
sweep of inputs (benchmarks/sigmoid_ulp.py runs a denser one and reports the numbers): no larger error in ulps
than eager's, no NaN for a finite input, and outputs of exactly 0 and 1 exactly where eager's are.

With an identity weight and no bias the op's pre-activation is its input exactly (the other products are
0 * x = 0), so what is measured is its sigmoid alone."""

import pytest
import torch

from fused_sigmoid import linear_sigmoid

PATHS = {"direct": 1, "tiled": 32, "GEMM": 384}  # path: the identity's size (384^2 floats pass the tiled kernel's
# 512 KiB), and the row length of the input
FLOAT32_MAX = torch.finfo(torch.float32).max


def float32_range(low, high, stride=1):
    """Every stride-th float32 in [low, high] (low >= 0), in order of bit pattern."""
    bits = torch.tensor([low, high], dtype=torch.float32).view(torch.int32).tolist()
    return torch.arange(bits[0], bits[1] + 1, stride, dtype=torch.int32).view(torch.float32)


def ulps(values, exact):
    """|values - exact| in units of the float32 spacing at exact (2**-149 below the smallest normal)."""
    _, exponent = torch.frexp(exact)
    spacing = torch.ldexp(torch.ones_like(exact), (exponent - 1).clamp(min=-126) - 23)
    return (values.double() - exact).abs() / spacing


def sweep():
    """Every finite float32 magnitude sampled by bit pattern (0, subnormals and the largest included), and densely
    where the rounding is hardest: sigmoid near 1 (16 <= |x| <= 17.5) and where exp overflows while the exact
    result is a subnormal (87 <= |x| <= 104). Padded to whole rows of the widest identity."""
    magnitudes = torch.cat([float32_range(0.0, FLOAT32_MAX, 4099), torch.tensor([FLOAT32_MAX]),
                            float32_range(16.0, 17.5, 3), float32_range(87.0, 104.0, 5)])
    x = torch.cat([magnitudes, -magnitudes])
    return torch.cat([x, x.new_zeros(-x.numel() % max(PATHS.values()))])


X = sweep()
EXACT = torch.sigmoid(X.double())
EAGER = torch.sigmoid(X)


def ours(path):
    width = PATHS[path]
    with torch.no_grad():
        return linear_sigmoid(X.view(-1, width), torch.eye(width)).view(-1)


@pytest.mark.parametrize("path", PATHS)
def test_no_nan_for_finite_inputs(path):
    assert X.isfinite().all()
    assert not ours(path).isnan().any()


@pytest.mark.parametrize("path", PATHS)
def test_error_in_ulps_no_larger_than_eager(path):
    mine = ours(path)
    # Normal and subnormal results apart: where both flush a subnormal result to 0 (exp overflows first), the
    # error is millions of subnormal ulps and would hide anything that happens elsewhere.
    normal = EXACT >= torch.finfo(torch.float32).smallest_normal
    for name, where in (("normal results", normal), ("subnormal results", ~normal)):
        worst, eager_worst = ulps(mine, EXACT)[where].max().item(), ulps(EAGER, EXACT)[where].max().item()
        assert worst <= eager_worst, f"{path}, {name}: {worst:.3g} ulps, eager {eager_worst:.3g}"


@pytest.mark.parametrize("path", PATHS)
def test_saturates_exactly_where_eager_does(path):
    mine = ours(path)
    for value in (0.0, 1.0):
        assert torch.equal(mine == value, EAGER == value), f"{path}: outputs of exactly {value} differ from eager's"
