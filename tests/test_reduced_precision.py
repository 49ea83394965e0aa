"""bfloat16, float16, and float32 with TF32 matmuls on a GPU: error against a float64 reference at most twice eager
PyTorch's own in the same setting."""

import pytest
import torch

from conftest import CUDA_REASON, assert_within_twice_eager_error, cuda_ready
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

# (1000, 96, 40): partial tiles of rows and of outputs in the CUDA tensor-core GEMM.
SHAPES = [(1, 3, 2), (4096, 3, 2), (2048, 30, 1), (512, 64, 64), (1000, 96, 40), (256, 256, 17), (64, 1024, 3)]


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


@pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", [(512, 64, 64), (1000, 96, 40), (300, 256, 256)])
def test_cuda_float32_with_tf32_within_twice_eager_error(shape, with_bias, monkeypatch):
    # With TF32 allowed, eager's cuBLAS matmul rounds its inputs to TF32 and so does our tensor-core GEMM.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    x, w, b = inputs(*shape, torch.float32, "cuda")
    b = b if with_bias else None
    exact = reference_linear_sigmoid(x.double(), w.double(), None if b is None else b.double())
    out = linear_sigmoid(x, w, b)
    assert_within_twice_eager_error(out, reference_linear_sigmoid(x, w, b), exact, f"forward {shape}")
