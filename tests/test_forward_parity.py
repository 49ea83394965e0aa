"""Forward pass against eager torch.sigmoid(F.linear(...)) over shapes, layouts and dtypes."""

import pytest
import torch

from conftest import assert_close_to_reference, assert_forward_matches_eager
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

LEADING_SHAPES = [(), (1,), (7,), (2, 5), (2, 3, 4)]
# (in_features, out_features), odd sizes included, covering every kernel: direct with fixed shapes (K <= 8,
# M <= 4) and vectorised along K (M <= 8), tiled (M > 8, weight up to 512 KiB; one-vector tiles up to 16 float
# outputs on AVX-512), and BLAS GEMM (larger weights).
FEATURES = [(3, 2), (1, 1), (8, 3), (17, 1), (33, 5), (64, 8), (65, 2), (20, 12), (100, 16), (16, 33), (257, 3),
            (3, 257), (600, 300)]


def make(shape, dtype, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("leading", LEADING_SHAPES)
def test_matches_eager(leading, features, with_bias, dtype, device):
    in_features, out_features = features
    x = make((*leading, in_features), dtype, device, 1)
    w = make((out_features, in_features), dtype, device, 2)
    b = make((out_features,), dtype, device, 3) if with_bias else None
    out = linear_sigmoid(x, w, b)
    assert out.shape == (*leading, out_features)
    assert out.dtype == dtype and out.is_contiguous()
    assert_forward_matches_eager(out, x, w, b)


@pytest.mark.parametrize("rows", [1, 15, 1000, 5000, 70000])
@pytest.mark.parametrize("features", [(3, 2), (30, 1), (100, 10), (64, 64), (256, 17), (700, 200)])
def test_many_rows_cross_blocks_and_threads(rows, features, device):
    in_features, out_features = features
    x = make((rows, in_features), torch.float32, device, 1)
    w = make((out_features, in_features), torch.float32, device, 2)
    b = make((out_features,), torch.float32, device, 3)
    assert_forward_matches_eager(linear_sigmoid(x, w, b), x, w, b)


def strided_layouts(device):
    """(name, input, weight, bias) with non-contiguous tensors of each kind."""
    x = make((6, 10), torch.float64, device, 1)
    w = make((4, 5), torch.float64, device, 2)
    b = make((4,), torch.float64, device, 3)
    wide = make((6, 20), torch.float64, device, 4)
    return [
        ("transposed input", make((5, 6), torch.float64, device, 1).t(), w, b),
        ("sliced rows of input", x[::2, :5], w, b),
        ("input with column stride", wide[:, ::4], w, b),
        ("expanded input", make((1, 5), torch.float64, device, 1).expand(6, 5), w, b),
        ("3-D permuted input", make((5, 3, 2), torch.float64, device, 1).permute(2, 1, 0), w, b),
        ("transposed weight", x[:, :5], make((5, 4), torch.float64, device, 2).t(), b),
        ("strided bias", x[:, :5], w, make((8,), torch.float64, device, 3)[::2]),
        ("expanded bias", x[:, :5], w, make((1,), torch.float64, device, 3).expand(4)),
    ]


@pytest.mark.parametrize("case", range(8))
def test_non_contiguous_layouts(case, device):
    name, x, w, b = strided_layouts(device)[case]
    assert not (x.is_contiguous() and w.is_contiguous() and b.is_contiguous()), name
    assert_close_to_reference(linear_sigmoid(x, w, b), reference_linear_sigmoid(x, w, b), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("features", [(3, 2), (30, 1), (8, 3), (32, 8), (64, 8)])
def test_a_rows_output_does_not_depend_on_its_place_in_the_batch(features, dtype, device):
    # The skinny kernels sum each row over k in the same order wherever the row falls in their tiles, so slicing a
    # batch, or running one row alone, gives the same bits for the rows kept. Shifts by odd counts move every row to
    # another lane, tile and alignment; K = 32 and 64 take the padded 16-byte rows on a GPU.
    in_features, out_features = features
    x = make((5003, in_features), dtype, device, 1)
    w = make((out_features, in_features), dtype, device, 2)
    b = make((out_features,), dtype, device, 3)
    whole = linear_sigmoid(x, w, b)
    for start in (1, 3, 13, 5002):
        torch.testing.assert_close(linear_sigmoid(x[start:].clone(), w, b), whole[start:], rtol=0, atol=0)


@pytest.mark.parametrize("features", [(3, 2), (100, 100)])
def test_empty_batch(features, device):
    in_features, out_features = features
    x = torch.empty(0, 4, in_features, device=device)
    w = make((out_features, in_features), torch.float32, device)
    out = linear_sigmoid(x, w, make((out_features,), torch.float32, device))
    assert out.shape == (0, 4, out_features)


@pytest.mark.parametrize("out_features", [3, 12, 40])  # direct, one-vector tiled, two-vector tiled
@pytest.mark.parametrize("with_bias", [True, False])
def test_zero_in_features_gives_sigmoid_of_bias(with_bias, out_features, device):
    x = torch.empty(5, 0, device=device)
    w = torch.empty(out_features, 0, device=device)
    b = make((out_features,), torch.float32, device).requires_grad_() if with_bias else None
    out = linear_sigmoid(x, w, b)
    expected = reference_linear_sigmoid(x, w, b)
    assert_close_to_reference(out, expected, torch.float32)
    if with_bias:
        grad_output = make((5, out_features), torch.float32, device, 1)
        (ours,) = torch.autograd.grad(out, b, grad_output)
        (eager,) = torch.autograd.grad(expected, b, grad_output)
        assert_close_to_reference(ours, eager, torch.float32)


def test_zero_out_features(device):
    x = make((5, 3), torch.float32, device)
    out = linear_sigmoid(x, torch.empty(0, 3, device=device), torch.empty(0, device=device))
    assert out.shape == (5, 0)


def test_does_not_write_to_its_arguments(device):
    x, w, b = (make(s, torch.float32, device, i) for i, s in enumerate([(50, 7), (3, 7), (3,)]))
    copies = [t.clone() for t in (x, w, b)]
    linear_sigmoid(x, w, b)
    for before, after in zip(copies, (x, w, b)):
        assert torch.equal(before, after)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e4, -1e4, 90.0, -90.0])
@pytest.mark.parametrize("features", [(3, 2), (30, 1), (100, 100)])
def test_extreme_values_match_eager(value, features, device):
    in_features, out_features = features
    x = make((9, in_features), torch.float32, device)
    x[4, 1] = value
    w = make((out_features, in_features), torch.float32, device, 2)
    b = make((out_features,), torch.float32, device, 3)
    expected = reference_linear_sigmoid(x, w, b)
    out = linear_sigmoid(x, w, b)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
