"""torch.compile(fullgraph=True): the module and the functional form trace without graph breaks and agree with
eager PyTorch in forward and gradients."""

import pytest
import torch

from conftest import assert_layer_matches_eager
from fused_sigmoid import FusedLinearSigmoid, LinearSigmoidFunction, linear_sigmoid, reference_linear_sigmoid


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_module_matches_eager(backend, dynamic, device):
    torch.manual_seed(0)
    layer = FusedLinearSigmoid(7, 5).to(device)
    compiled = torch.compile(layer, fullgraph=True, backend=backend, dynamic=dynamic)
    for rows in (4, 9):
        x = torch.randn(rows, 7, device=device, requires_grad=True)
        assert_layer_matches_eager(compiled(x), x, layer)


def test_compiled_functional_in_a_larger_function(device):
    def head(x, w, b):
        return linear_sigmoid(torch.relu(x), w, b).sum(-1)

    x, w, b = torch.randn(8, 4, device=device), torch.randn(3, 4, device=device), torch.randn(3, device=device)
    compiled = torch.compile(head, fullgraph=True)
    torch.testing.assert_close(compiled(x, w, b), reference_linear_sigmoid(torch.relu(x), w, b).sum(-1))


def test_compiled_python_function_traces_forward_and_backward(device):
    # LinearSigmoidFunction, the Python entry point: Dynamo traces its forward and backward into one graph.
    x = torch.randn(6, 4, device=device, requires_grad=True)
    w = torch.randn(3, 4, device=device, requires_grad=True)
    b = torch.randn(3, device=device, requires_grad=True)
    compiled = torch.compile(lambda x, w, b: LinearSigmoidFunction.apply(x, w, b).square().sum(), fullgraph=True,
                             backend="aot_eager")
    ours = torch.autograd.grad(compiled(x, w, b), (x, w, b))
    eager = torch.autograd.grad(reference_linear_sigmoid(x, w, b).square().sum(), (x, w, b))
    for a, e in zip(ours, eager):
        torch.testing.assert_close(a, e)
