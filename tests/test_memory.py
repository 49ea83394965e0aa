"""The fused op never allocates the pre-activation tensor: its forward allocates the output and nothing else of
that size, where eager's allocates z and y."""

import pytest
import torch

from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid
from fused_sigmoid.profiling import memory_profiling_works, peak_allocated_bytes

pytestmark = pytest.mark.skipif(not memory_profiling_works(), reason="this torch's profiler has no memory timeline")


@pytest.mark.parametrize("shape", [(20000, 3, 2), (4096, 30, 1), (2048, 64, 64), (512, 300, 200)])
def test_forward_allocates_only_the_output(shape):
    rows, in_features, out_features = shape
    x, w, b = torch.randn(rows, in_features), torch.randn(out_features, in_features), torch.randn(out_features)
    output_bytes = rows * out_features * 4
    with torch.no_grad():
        ours = peak_allocated_bytes(lambda: linear_sigmoid(x, w, b))
        eager = peak_allocated_bytes(lambda: reference_linear_sigmoid(x, w, b))
    assert ours == output_bytes
    assert eager >= 2 * output_bytes  # the measurement does see a pre-activation where there is one


def test_training_step_peaks_no_higher_than_eager():
    x = torch.randn(8192, 64, requires_grad=True)
    w = torch.randn(32, 64, requires_grad=True)
    b = torch.randn(32, requires_grad=True)

    def step(fn):
        out = fn(x, w, b)
        torch.autograd.grad(out, (x, w, b), torch.ones_like(out))

    assert peak_allocated_bytes(lambda: step(linear_sigmoid)) <= peak_allocated_bytes(
        lambda: step(reference_linear_sigmoid))
