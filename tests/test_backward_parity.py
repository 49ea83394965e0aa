"""Gradients against eager autograd through torch.sigmoid(F.linear(...)), including partial needs."""

import pytest
import torch

from conftest import assert_close_to_reference, assert_forward_matches_eager, assert_within_twice_eager_error, leaves
from fused_sigmoid import LinearSigmoidFunction, linear_sigmoid, reference_linear_sigmoid

CASES = [((), 3, 2), ((5,), 3, 2), ((4, 6), 17, 1), ((2, 3, 4), 33, 5), ((70,), 65, 2), ((30,), 20, 12), ((9,), 16, 33),
         ((3000,), 30, 1), ((2000,), 64, 64), ((40,), 257, 3), ((300,), 600, 300)]


def eager_gradients(fn, inputs, grad_output):
    out = fn(*inputs)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    return out, torch.autograd.grad(out, wanted, grad_output)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_eager(case, with_bias, dtype, device):
    leading, in_features, out_features = case
    inputs = leaves(leading, in_features, out_features, dtype, device, with_bias)
    grad_output = torch.randn((*leading, out_features), dtype=dtype).to(device)
    out, grads = eager_gradients(linear_sigmoid, inputs, grad_output)
    expected_out, expected_grads = eager_gradients(reference_linear_sigmoid, inputs, grad_output)
    assert_close_to_reference(out, expected_out, dtype)
    rows = max(1, out.numel() // max(out_features, 1))
    for ours, eager in zip(grads, expected_grads):
        assert_close_to_reference(ours, eager, dtype, scale=rows ** 0.5 * 4)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (True, True, False), (False, True, True)])
def test_only_requested_gradients_are_computed(needs, device):
    x, w, b = leaves((6,), 5, 3, torch.float64, device)
    for tensor, needed in zip((x, w, b), needs):
        tensor.requires_grad_(needed)
    out = LinearSigmoidFunction.apply(x, w, b)
    out.sum().backward()
    for tensor, needed in zip((x, w, b), needs):
        assert (tensor.grad is not None) == needed
    expected = reference_linear_sigmoid(x.detach(), w.detach(), b.detach())
    dz = expected * (1 - expected)
    if needs[0]:
        torch.testing.assert_close(x.grad, dz @ w.detach())
    if needs[1]:
        torch.testing.assert_close(w.grad, dz.t() @ x.detach())
    if needs[2]:
        torch.testing.assert_close(b.grad, dz.sum(0))


@pytest.mark.parametrize("dtype, shape", [(torch.bfloat16, (999, 100, 1)), (torch.float16, (333, 70, 3)),
                                          (torch.float16, (301, 5, 6)), (torch.float16, (4097, 3, 2))])
def test_half_backward_computes_each_gradient_alone_as_with_the_others(dtype, shape, device):
    # The CPU's half backward for few outputs, and the CUDA per-row backward (4097 x 3 -> 2, which copies no x
    # without the weight gradient), run each gradient's loop only when it is asked for: alone, each comes out bit for
    # bit as when all three are computed, and the others are None.
    assert_each_gradient_alone_as_with_the_others(dtype, shape, device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_backward_without_onednn_computes_each_gradient_alone_as_with_the_others(dtype):
    # Through float (oneDNN turned off; three blocks of rows): the bias gradient is summed apart from the float
    # kernels, which are asked only for the other two, or not called when the bias gradient is all that is asked.
    with torch.backends.mkldnn.flags(enabled=False):
        assert_each_gradient_alone_as_with_the_others(dtype, (9000, 64, 64), "cpu")


def assert_each_gradient_alone_as_with_the_others(dtype, shape, device):
    rows, in_features, out_features = shape
    x, w, _ = leaves((rows,), in_features, out_features, dtype, device)
    x, w = x.detach(), w.detach()
    y = reference_linear_sigmoid(x, w)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    op = torch.ops.fused_sigmoid.linear_sigmoid_backward
    everything = op(dy, y, x, w, [True, True, True])
    for index in range(3):
        mask = [index == i for i in range(3)]
        alone = op(dy, y, x, w, mask)
        assert all(alone[i] is None for i in range(3) if i != index)
        assert torch.equal(alone[index], everything[index])


def test_backward_op_honours_output_mask(device):
    x, w, _ = leaves((8,), 4, 3, torch.float64, device)
    y = reference_linear_sigmoid(x, w).detach()
    dy = torch.randn_like(y)
    op = torch.ops.fused_sigmoid.linear_sigmoid_backward
    grad_input, grad_weight, grad_bias = op(dy, y, x.detach(), w.detach(), [False, True, False])
    assert grad_input is None and grad_bias is None
    torch.testing.assert_close(grad_weight, (dy * y * (1 - y)).t() @ x.detach())


def test_empty_batch_gradients_are_zero(device):
    x, w, b = leaves((0,), 4, 3, torch.float32, device)
    linear_sigmoid(x, w, b).sum().backward()
    assert x.grad.shape == (0, 4)
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_zero_in_features_gradients(device):
    x, w, b = leaves((5,), 0, 3, torch.float64, device)
    out = linear_sigmoid(x, w, b)
    out.sum().backward()
    y = torch.sigmoid(b.detach()).expand(5, 3)
    torch.testing.assert_close(b.grad, (y * (1 - y)).sum(0))
    assert x.grad.shape == (5, 0) and w.grad.shape == (3, 0)


def test_non_contiguous_grad_output_and_input(device):
    x_full, w, b = leaves((8,), 10, 4, torch.float64, device)
    x = x_full[::2, ::2]
    grad_output = torch.randn(4, 8, dtype=torch.float64).to(device).t()[::2]
    ours = torch.autograd.grad(linear_sigmoid(x, w[:, :5], b), (x_full, w, b), grad_output)
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w[:, :5], b), (x_full, w, b), grad_output)
    for a, e in zip(ours, eager):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("entry", [linear_sigmoid, LinearSigmoidFunction.apply], ids=["op", "Function"])
def test_modifying_the_output_in_place_before_backward_raises(entry, device):
    x, w, b = leaves((4,), 3, 2, torch.float32, device)
    out = entry(x, w, b)
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_bias_gradient_is_accurate_over_a_long_batch(device):
    # 1M rows of one output: a float32 running sum would drift; the reference sums in float64.
    x, w, b = leaves((1_000_000,), 3, 1, torch.float32, device)
    linear_sigmoid(x, w, b).sum().backward()
    y = reference_linear_sigmoid(x.double(), w.double(), b.double()).detach()
    expected = (y * (1 - y)).sum(0)
    torch.testing.assert_close(b.grad.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, features", [(3_000_001, (3, 2)), (1_500_001, (30, 1))])
def test_skinny_layers_over_more_rows_than_one_pass_of_the_grid(rows, features, dtype, device):
    # On a GPU the skinny kernels run as many blocks as the device holds at once, each streaming its tiles (and the
    # backward's chunks) through two shared-memory stages: these batches give every block several tiles and some
    # blocks more than one chunk, so each stage is refilled many times; the odd count ends on a short tile and a
    # short chunk. x and grad_output are positive, so that every dz is and the weight and bias gradients are sums
    # without cancellation: a tile of rows skipped or added twice moves them by far more than rounding does.
    in_features, out_features = features
    generator = torch.Generator().manual_seed(rows)
    x = torch.rand(rows, in_features, generator=generator).to(device, dtype).requires_grad_()
    w = torch.randn(out_features, in_features, generator=generator).to(device, dtype).requires_grad_()
    b = torch.randn(out_features, generator=generator).to(device, dtype).requires_grad_()
    grad_output = torch.rand(rows, out_features, generator=generator).to(device, dtype)
    out = linear_sigmoid(x, w, b)
    assert_forward_matches_eager(out, x, w, b)
    gradients = torch.autograd.grad(out, (x, w, b), grad_output)
    # The float64 gradients of our own rounded output: what the backward computes, before its roundings.
    y, dy, x64, w64 = out.detach().double(), grad_output.double(), x.detach().double(), w.detach().double()
    dz = dy * y * (1 - y)
    expected = (dz @ w64, dz.t() @ x64, dz.sum(0))
    magnitudes = (dz @ w64.abs(), dz.t() @ x64, dz.sum(0))
    eps = torch.finfo(dtype).eps
    for name, ours, exact, magnitude in zip(("grad_input", "grad_weight", "grad_bias"), gradients, expected,
                                            magnitudes):
        error = (ours.double() - exact).abs().max().item()
        allowed = (eps * exact.abs() + 1e-6 * magnitude).max().item()
        assert error <= allowed, f"{name}: error {error:.3g} beyond {allowed:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows", [4095, 4097, 20000])
@pytest.mark.parametrize("features", [(3, 2), (30, 1), (7, 8), (64, 3), (37, 12), (37, 45), (64, 64)])
def test_row_strided_input_across_chunks(rows, features, dtype, device):
    # Rows of a wider tensor: the kernels read them in place through the row stride. (37, 12) takes the one-vector
    # tiles in float32 on AVX-512.
    in_features, out_features = features
    generator = torch.Generator().manual_seed(rows * in_features + out_features)

    def leaf(*shape):
        return torch.randn(shape, generator=generator, dtype=dtype).to(device).requires_grad_()

    wide, w, b = leaf(rows, in_features + 5), leaf(out_features, in_features), leaf(out_features)
    x = wide[:, 2:2 + in_features]
    grad_output = torch.randn(rows, out_features, generator=generator, dtype=dtype).to(device)
    out = linear_sigmoid(x, w, b)
    assert_close_to_reference(out, reference_linear_sigmoid(x, w, b), dtype)
    ours = torch.autograd.grad(out, (wide, w, b), grad_output)
    # The gradients of the same values in float64: eager's own float32 sums over 20000 rows err by about as much as
    # the tolerance allows, so against them the test would pass or fail by luck.
    leaves64 = [t.detach().double().requires_grad_() for t in (wide, w, b)]
    expected = reference_linear_sigmoid(leaves64[0][:, 2:2 + in_features], leaves64[1], leaves64[2])
    exact = torch.autograd.grad(expected, leaves64, grad_output.double())
    for a, e in zip(ours, exact):
        # Gradients sum over the rows: float32's absolute tolerance grows with their count.
        assert_close_to_reference(a, e.to(dtype), dtype, scale=rows**0.5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1001, 4097])
@pytest.mark.parametrize("features", [(3, 2), (30, 1), (7, 8), (64, 3)])
def test_contiguous_rows_at_an_odd_offset(rows, features, dtype, device):
    # Tensors one element into their storage: rows still contiguous, but no longer 16-byte aligned, so the CUDA
    # skinny kernels must take their element-wise loads. The result must match eager's, and be the one the same
    # values give from an aligned copy.
    in_features, out_features = features
    generator = torch.Generator().manual_seed(rows)

    def at_odd_offset(*shape):
        flat = torch.randn(1 + shape[0] * shape[1], generator=generator).to(device, dtype)
        return flat[1:].view(shape)

    x = at_odd_offset(rows, in_features).requires_grad_()
    w = torch.randn(out_features, in_features, generator=generator).to(device, dtype).requires_grad_()
    b = torch.randn(out_features, generator=generator).to(device, dtype).requires_grad_()
    grad_output = at_odd_offset(rows, out_features)
    out = linear_sigmoid(x, w, b)
    ours = torch.autograd.grad(out, (x, w, b), grad_output)
    expected = reference_linear_sigmoid(x, w, b)
    eager = torch.autograd.grad(expected, (x, w, b), grad_output)
    if dtype == torch.bfloat16:
        exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
        assert_within_twice_eager_error(out, expected, exact, f"{rows}x{in_features}->{out_features}")
    else:
        assert_close_to_reference(out, expected, dtype)
        for a, e in zip(ours, eager):
            assert_close_to_reference(a, e, dtype, scale=rows**0.5)
    aligned = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    aligned_out = linear_sigmoid(*aligned)
    torch.testing.assert_close(out, aligned_out, rtol=0, atol=0)
    for a, e in zip(ours, torch.autograd.grad(aligned_out, aligned, grad_output.clone())):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("entry", [linear_sigmoid, LinearSigmoidFunction.apply], ids=["op", "Function"])
@pytest.mark.parametrize("features", [(0, 3), (4, 0)])
def test_double_backward_with_zero_features(features, entry, device):
    # create_graph=True takes the differentiable backward, whose reshapes must not infer a dimension from 0.
    x, w, b = leaves((5,), *features, torch.float64, device)
    ours = torch.autograd.grad(entry(x, w, b).sum(), (x, w, b), create_graph=True)
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w, b).sum(), (x, w, b), create_graph=True)
    for a, e in zip(ours, eager):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize(
    "shape", [(2000, 64, 64), (1500, 37, 45), (700, 257, 40), (3000, 30, 1), (3000, 100, 10), (600, 300, 700)]
)
def test_float32_gradients_within_twice_eagers_error(shape, device):
    # Every backward path sums over the rows in its own order (register tiles, chunk partials); each gradient is
    # held to the float64 result within twice eager's own float32 error. The output gradient is fixed data: with
    # one or a few outputs the bias gradient is a handful of numbers, and eager's error on them swings by 10x with
    # the data (its float rounding can cancel the float dz's own), so unseeded data made this test a coin toss.
    rows, in_features, out_features = shape
    x, w, b = leaves((rows,), in_features, out_features, torch.float32, device)
    with torch.no_grad():
        w /= in_features**0.5
    grad_output = torch.randn(rows, out_features, generator=torch.Generator().manual_seed(1)).to(device)
    _, ours = eager_gradients(linear_sigmoid, (x, w, b), grad_output)
    _, eager = eager_gradients(reference_linear_sigmoid, (x, w, b), grad_output)
    exact_inputs = [t.detach().double().requires_grad_() for t in (x, w, b)]
    _, exact = eager_gradients(reference_linear_sigmoid, exact_inputs, grad_output.double())
    for name, a, e, x64 in zip(("grad_input", "grad_weight", "grad_bias"), ours, eager, exact):
        assert_within_twice_eager_error(a, e, x64, f"{name} {shape}")


@pytest.mark.parametrize("dtype, in_features", [(torch.float32, 1025), (torch.float64, 1024)])
def test_wide_grad_input_written_around_the_cache(dtype, in_features, device):
    # The direct kernel writes a chunk's grad_input of 16 MiB or more with non-temporal stores, where rows are
    # aligned for them (1025 float features: only some are), and ordinary stores elsewhere; two chunks of rows.
    x, w, b = leaves((4100,), in_features, 2, dtype, device)
    grad_output = torch.randn(4100, 2, dtype=dtype).to(device)
    _, ours = eager_gradients(linear_sigmoid, (x, w, b), grad_output)
    _, eager = eager_gradients(reference_linear_sigmoid, (x, w, b), grad_output)
    for a, e in zip(ours, eager):
        assert_close_to_reference(a, e, dtype, scale=4100**0.5)


@pytest.mark.parametrize("dtype, case", [
    (torch.float32, (3000, 3, 2)),      # direct, exact shape
    (torch.float32, (5000, 30, 1)),     # direct, vectorised, two chunks
    (torch.float32, (2000, 100, 12)),   # tiled, one vector wide on AVX-512
    (torch.float32, (2000, 64, 64)),    # tiled
    (torch.float32, (500, 600, 300)),   # GEMM
    (torch.bfloat16, (500, 20, 12)),    # GEMM, half type
    (torch.bfloat16, (9000, 64, 64)),   # through float where oneDNN has no bfloat16 kernels: blocks of rows
])
def test_bias_gradient_is_the_rounded_exact_sum_of_dz(dtype, case, device):
    # Every path sums a float or half bias gradient in double and rounds once: it is the exact column sum of
    # dz = dy * (1 - y) * y (formed in float for the half types, as the kernels do), rounded to the dtype.
    rows, in_features, out_features = case
    x, w, b = leaves((rows,), in_features, out_features, dtype, device)
    out = linear_sigmoid(x, w, b)
    grad_output = torch.randn(rows, out_features, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    (grad_bias,) = torch.autograd.grad(out, b, grad_output)
    y, dy = out.detach().float(), grad_output.float()
    dz = dy * (1 - y) * y
    expected = dz.double().sum(0)
    # One rounding to the dtype (for bfloat16 through float, as the total is stored) is at most one ulp of the result.
    ulp = torch.finfo(dtype).eps * expected.abs()
    assert ((grad_bias.double() - expected).abs() <= ulp).all(), (grad_bias.double() - expected).abs().max()


# Shapes whose output or grad_input is 32 MiB or more in float64, one per CPU kernel: such buffers are allocated with
# a request for 2 MiB pages (csrc/cpu/large_buffers.cpp), and the GEMM path writes its gradients into them itself.
# On a GPU the same shapes go through the CUDA kernels.
LARGE_OUTPUT_SHAPES = {"direct": (4_194_304, 3, 1), "tiled": (65_536, 64, 64), "GEMM": (16_384, 300, 300)}


@pytest.mark.parametrize("shape", LARGE_OUTPUT_SHAPES.values(), ids=LARGE_OUTPUT_SHAPES.keys())
def test_gradients_match_eager_with_outputs_of_32_mib_and_more(shape, device):
    rows, in_features, out_features = shape
    inputs = leaves((rows,), in_features, out_features, torch.float64, device)
    assert max(rows * in_features, rows * out_features) * 8 >= 32 << 20
    grad_output = torch.randn(rows, out_features, dtype=torch.float64).to(device)
    out, grads = eager_gradients(linear_sigmoid, inputs, grad_output)
    expected_out, expected_grads = eager_gradients(reference_linear_sigmoid, inputs, grad_output)
    assert_close_to_reference(out, expected_out, torch.float64)
    for ours, eager in zip(grads, expected_grads):
        assert_close_to_reference(ours, eager, torch.float64, scale=rows**0.5)
