"""bfloat16, float16, and float32 with TF32 matmuls on a GPU: error against a float64 reference at most twice eager
PyTorch's own in the same setting."""

import pytest
import torch

from conftest import assert_within_twice_eager_error
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

# (1000, 48, 40): partial tiles of rows and of outputs in the CUDA tensor-core GEMM, within its default bound of
# K, M <= 64; (1000, 96, 40), the same beyond it, on cuBLAS. (1001, 100, 3) and (64, 1024, 3): the CPU's bfloat16
# dot products that read the rows in place, with and without a partial vector at the row's end; (999, 100, 1) and
# (2048, 30, 1) its half backward that reads and writes rows in place (an odd row count, a partial vector), and
# (301, 12, 1) and (301, 5, 6) the same on rows shorter than one float vector. (4097, 4, 8) and (301, 1, 5): the CUDA
# forward's half-type kernels of a fixed in_features (1 to 4; 3 -> 2 above too), their weight in registers, over
# several tiles and a partial one.
SHAPES = [(1, 3, 2), (4096, 3, 2), (2048, 30, 1), (512, 64, 64), (1000, 48, 40), (1000, 96, 40), (256, 256, 17),
          (64, 1024, 3), (1001, 100, 3), (999, 100, 1), (301, 12, 1), (301, 5, 6), (4097, 4, 8), (301, 1, 5)]


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


def gradients(shape, dtype, device, seed, layout="contiguous"):
    """(ours, eager's, float64) gradients for one draw of inputs, x laid out as laid_out makes it."""
    x, w, b = inputs(*shape, dtype, device, seed)
    x = laid_out(x, b, layout)[0]
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    generator = torch.Generator().manual_seed(1000 + seed)
    grad_output = torch.randn(shape[0], shape[2], generator=generator).to(device, dtype)
    ours = torch.autograd.grad(linear_sigmoid(x, w, b), (x, w, b), grad_output)
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w, b), (x, w, b), grad_output)
    doubles = [t.detach().double().requires_grad_() for t in (x, w, b)]
    exact = torch.autograd.grad(reference_linear_sigmoid(*doubles), doubles, grad_output.double())
    return ours, eager, exact


@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_within_twice_eager_error(shape, dtype, layout, device):
    # A gradient with few elements (the bias of one output) is a sum of thousands of rounded terms: its error in
    # one draw is mostly luck, for eager as for us, so the rule is applied over several draws together. "sliced"
    # puts the rows further apart than K: the CPU's half backward reads them in place through the stride.
    draws = [gradients(shape, dtype, device, seed, layout) for seed in range(8)]
    for index, name in enumerate(("grad_input", "grad_weight", "grad_bias")):
        ours, eager, exact = (torch.cat([draw[kind][index].flatten() for draw in draws]) for kind in range(3))
        assert ours.dtype == dtype
        assert_within_twice_eager_error(ours, eager, exact, f"{name} {shape}")


def round_to_tf32(t):
    """float32 values rounded to TF32's 10 fraction bits, to nearest even, as Hopper's tensor cores take them."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x0FFF + ((bits >> 13) & 1)) & -0x2000).view(torch.float32)


def laid_out(x, b, layout):
    if layout == "sliced":  # rows 8 elements further apart than K
        return torch.cat([x, x[:, :8]], 1)[:, :x.shape[1]], b
    if layout == "expanded":  # one row repeated: a row stride of 0
        return x[:1].expand(x.shape), b
    if layout == "no-bias":
        return x, None
    return x, b


@pytest.mark.parametrize("layout", ["contiguous", "sliced", "expanded", "no-bias"])
@pytest.mark.parametrize("shape", [(777, 40, 56), (777, 40, 72), (130, 8, 16), (300, 200, 24), (512, 64, 64),
                                   (333, 100, 3)],
                         ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("precision", ["bfloat16", "float16", "tf32"])
def test_layouts_within_twice_eager_error(precision, shape, layout, device, monkeypatch):
    # The CUDA tensor-core GEMM's cases (K and M multiples of 8, within the Ampere kernels' default bound of 64 but
    # for (777, 40, 72) and (300, 200, 24), which cuBLAS takes; in TF32 on Hopper, Hopper's kernels take all of them,
    # within their bound of 512, but the expanded rows): K not a multiple of its tile depth or below it, partial
    # tiles of rows and outputs, rows further apart than K or not apart at all, no bias; and float32 with TF32
    # allowed, where eager's cuBLAS matmul may round its inputs to TF32 and our GEMM does. (333, 100, 3): the
    # CPU's bfloat16 dot products reading the rows in place through their stride.
    if precision == "tf32":
        if device == "cpu":
            pytest.skip("TF32 is a CUDA matmul mode")
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    dtype = torch.float32 if precision == "tf32" else getattr(torch, precision)
    x, w, b = inputs(*shape, dtype, device)
    x, b = laid_out(x, b, layout)
    b64 = None if b is None else b.double()
    exact = reference_linear_sigmoid(x.double(), w.double(), b64)
    out = linear_sigmoid(x, w, b)
    yardstick = reference_linear_sigmoid(x, w, b)
    if precision == "tf32":
        # cuBLAS may keep full float32 for some shapes. Inputs rounded to TF32 and multiplied exactly are the best
        # a TF32 product does: the yardstick is whichever of the two errs more.
        tf32 = reference_linear_sigmoid(round_to_tf32(x).double(), round_to_tf32(w).double(), b64).float()
        yardstick = max(yardstick, tf32, key=lambda t: (t.double() - exact).abs().max().item())
    assert_within_twice_eager_error(out, yardstick, exact, f"{precision} {layout} {shape}")


# bfloat16 and float16 where ATen has no oneDNN kernels for the type (any CPU with oneDNN turned off; bfloat16 on
# CPUs without AVX-512, float16 on most): eager runs ATen's own loop for its GEMMs, and the op instead widens blocks
# of rows to float for its float kernels. (3001, 30, 2): bfloat16's backward there on the float direct kernel;
# (1000, 96, 40) the tiled kernel; (300, 1200, 300) a weight past the tiled kernel's (up to half of L2), on float
# BLAS; (9000, 64, 64) several blocks of rows.
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
@pytest.mark.parametrize("shape", [(3001, 30, 2), (1000, 96, 40), (300, 1200, 300), (9000, 64, 64)],
                         ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_without_onednn_within_twice_eager_error(dtype, shape, layout):
    with torch.backends.mkldnn.flags(enabled=False):
        x, w, b = inputs(*shape, dtype, "cpu")
        x = laid_out(x, b, layout)[0]
        exact = reference_linear_sigmoid(x.double(), w.double(), b.double())
        assert_within_twice_eager_error(linear_sigmoid(x, w, b), reference_linear_sigmoid(x, w, b), exact,
                                        f"forward {shape}")
        draws = [gradients(shape, dtype, "cpu", seed, layout) for seed in range(4)]
    for index, name in enumerate(("grad_input", "grad_weight", "grad_bias")):
        ours, eager, exact = (torch.cat([draw[kind][index].flatten() for draw in draws]) for kind in range(3))
        assert ours.dtype == dtype
        assert_within_twice_eager_error(ours, eager, exact, f"{name} {shape}")
