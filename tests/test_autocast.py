"""Under torch.autocast the op runs in the autocast dtype, as F.linear followed by torch.sigmoid does."""

import pytest
import torch

from conftest import assert_within_twice_eager_error
from fused_sigmoid import FusedLinearSigmoid, linear_sigmoid, reference_linear_sigmoid

AUTOCAST_DTYPES = {"cpu": [torch.bfloat16], "cuda": [torch.float16, torch.bfloat16]}


@pytest.mark.parametrize("dtype_index", [0, 1])
@pytest.mark.parametrize("shape", [(64, 3, 2), (512, 64, 64), (128, 300, 700)])
def test_autocast_matches_eager_dtype_and_error(shape, dtype_index, device):
    if dtype_index >= len(AUTOCAST_DTYPES[device]):
        pytest.skip(f"{device} autocast is tested in {AUTOCAST_DTYPES[device]} only")
    dtype = AUTOCAST_DTYPES[device][dtype_index]
    rows, in_features, out_features = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=generator).to(device)
    w = (torch.randn(out_features, in_features, generator=generator) / in_features**0.5).to(device)
    b = torch.randn(out_features, generator=generator).to(device)
    with torch.autocast(device, dtype=dtype):
        ours = linear_sigmoid(x, w, b)
        eager = reference_linear_sigmoid(x, w, b)
    assert ours.dtype == eager.dtype == dtype
    exact = reference_linear_sigmoid(x.to(dtype).double(), w.to(dtype).double(), b.to(dtype).double())
    assert_within_twice_eager_error(ours, eager, exact, f"autocast {dtype} {shape}")


def test_autocast_module_trains_in_the_autocast_dtype(device):
    dtype = AUTOCAST_DTYPES[device][0]
    layer = FusedLinearSigmoid(16, 4).to(device)
    x = torch.randn(32, 16, device=device)
    with torch.autocast(device, dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    out.float().sum().backward()
    # Parameters stay float32 and get float32 gradients, as with nn.Linear under autocast.
    assert layer.weight.grad.dtype == torch.float32 and layer.bias.grad.dtype == torch.float32


def test_outside_autocast_nothing_is_cast(device):
    x = torch.randn(8, 3, device=device)
    assert linear_sigmoid(x, torch.randn(2, 3, device=device)).dtype == torch.float32
