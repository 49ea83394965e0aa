"""Tensors past 32-bit offsets: a forward from an input of 2**30 + 1024 rows (over 4 GiB) to an output of more than
2**31 elements, and the backward op over as many rows in bfloat16 (an output of more than 2**31 elements again).
Values are checked at the far end, around the 2**31-element and 2**31-byte marks, and at sampled rows, against
eager PyTorch on those rows; the weight and bias gradients, sums over every row, against float64 sums. On a GPU
(benchmarks/gpu_check.sh) the same tests run on the CUDA kernels.

Each test needs about 13 GB of memory: marked slow, they run only with --run-slow."""

import pytest
import torch

from conftest import assert_forward_matches_eager, assert_within_twice_eager_error
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid

ROWS = 2**30 + 1024
CHUNK = 2**24  # rows filled or summed at a time, so that no temporary is large
W = [[1.5], [-0.75]]
B = [0.25, -0.5]


def patterned(shape, dtype, low, high, period, device):
    """Values that repeat only every `period` rows (a prime), so that a read from a wrapped offset, 2**31 or
    2**32 bytes away, finds a different value; column c holds (c + 1) times column 0. Filled a chunk at a time."""
    rows = torch.arange(CHUNK + period, device=device) % period
    columns = torch.arange(1, shape[1] + 1, device=device)
    pattern = ((low + (high - low) * rows.double() / period).unsqueeze(1) * columns).to(dtype)
    tensor = torch.empty(shape, dtype=dtype, device=device)
    for start in range(0, shape[0], CHUNK):
        chunk = tensor[start:start + CHUNK]
        chunk.copy_(pattern[start % period:][:len(chunk)])
    return tensor


def checked_rows(device):
    """The last rows; those around row 2**30 (output element 2**31) and 2**29 (input byte 2**31 in float32); and
    4096 rows drawn anywhere."""
    sampled = torch.randint(0, ROWS, (4096,), generator=torch.Generator().manual_seed(0)).to(device)
    return [slice(ROWS - 4096, ROWS), slice(2**30 - 2048, 2**30 + 1024), slice(2**29 - 1024, 2**29 + 1024), sampled]


@pytest.mark.slow
def test_forward_to_more_than_two_to_the_31_outputs(device):
    x = patterned((ROWS, 1), torch.float32, -8.0, 8.0, 10007, device)
    w, b = torch.tensor(W, device=device), torch.tensor(B, device=device)
    with torch.no_grad():
        out = linear_sigmoid(x, w, b)
    assert out.shape == (ROWS, 2) and out.numel() > 2**31
    for rows in checked_rows(device):
        assert_forward_matches_eager(out[rows], x[rows], w, b)


@pytest.mark.slow
def test_backward_over_more_than_two_to_the_30_rows(device):
    dtype = torch.bfloat16
    x = patterned((ROWS, 1), dtype, -8.0, 8.0, 10007, device)
    w, b = torch.tensor(W, dtype=dtype, device=device), torch.tensor(B, dtype=dtype, device=device)
    with torch.no_grad():
        y = linear_sigmoid(x, w, b)
    assert y.numel() > 2**31
    # Positive, so that the bias gradient is a sum without cancellation.
    grad_output = patterned((ROWS, 2), dtype, 0.5, 1.5, 997, device)
    grad_input, grad_weight, grad_bias = torch.ops.fused_sigmoid.linear_sigmoid_backward(
        grad_output, y, x, w, [True, True, True])
    eps = torch.finfo(dtype).eps

    for rows in checked_rows(device):
        exact = reference_linear_sigmoid(x[rows].double(), w.double(), b.double())
        assert_within_twice_eager_error(y[rows], reference_linear_sigmoid(x[rows], w, b), exact, "forward")
        # The backward is given the op's own output: eager's formula on the same rows, in float64, from it.
        y_rows = y[rows].double()
        dz = grad_output[rows].double() * y_rows * (1 - y_rows)
        # One rounding to bfloat16 of a sum of two products (the float arithmetic before it is far finer).
        error = (grad_input[rows].double() - dz @ w.double()).abs()
        assert (error <= eps * (dz.abs() @ w.double().abs())).all()
    del grad_input

    exact_weight = torch.zeros(2, 1, dtype=torch.float64, device=device)
    exact_bias = torch.zeros(2, dtype=torch.float64, device=device)
    magnitude = torch.zeros(2, 1, dtype=torch.float64, device=device)
    for start in range(0, ROWS, CHUNK):
        y_chunk = y[start:start + CHUNK].double()
        dz = grad_output[start:start + CHUNK].double().mul_(y_chunk).mul_(1 - y_chunk)
        x_chunk = x[start:start + CHUNK].double()
        exact_weight += dz.t() @ x_chunk
        exact_bias += dz.sum(0)
        magnitude += dz.t() @ x_chunk.abs()  # dz > 0
    # The bias gradient is summed in double and rounded to bfloat16 once on both devices (on the CPU after float
    # sums of 4096-row chunks: twice sqrt(4096) units of float rounding on the sum of magnitudes; dz > 0 here, so
    # the bias gradient is its own magnitude).
    float_error = 2 * 64 * torch.finfo(torch.float32).eps
    assert ((grad_bias.double() - exact_bias).abs() <= (eps + float_error) * exact_bias).all()
    if device == "cpu":
        # The CPU op sums the weight gradient like the bias gradient, in float chunks added in double.
        weight_error = (grad_weight.double() - exact_weight).abs()
        assert (weight_error <= eps * exact_weight.abs() + float_error * magnitude).all()
    else:
        # On the GPU eager's F.linear backward forms dz^T x over the 2**30 rows with cuBLAS; ours sums it per chunk
        # of rows (csrc/cuda/skinny_kernels.cuh) and is held to twice eager's error, the yardstick.
        eager_grad_weight = torch.ops.aten.sigmoid_backward(grad_output, y).t() @ x
        assert_within_twice_eager_error(grad_weight, eager_grad_weight, exact_weight, "weight gradient")
