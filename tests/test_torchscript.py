"""TorchScript: the module, the tutorial's model and code calling linear_sigmoid script and trace to programs that
call the fused op, give eager's values and gradients, and survive torch.jit.save/load in a fresh process."""

import json
import re
import subprocess
import sys
from typing import Optional

import pytest
import torch

from conftest import assert_layer_matches_eager, leaves
from fused_sigmoid import FusedLinearSigmoid, SimpleNN, TutorialSimpleNN, linear_sigmoid, reference_linear_sigmoid

OP = "fused_sigmoid::linear_sigmoid"
# PyTorch deprecates TorchScript in favour of torch.compile and torch.export (both tested elsewhere); models that
# use it still run.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def test_scripted_module_calls_the_op_with_eager_values_and_gradients(device):
    torch.manual_seed(0)
    layer = FusedLinearSigmoid(5, 4, dtype=torch.float64, device=device)
    scripted = torch.jit.script(layer)
    assert OP in str(scripted.graph)
    x = torch.randn(7, 3, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert_layer_matches_eager(scripted(x), x, layer)


def test_scripted_function_calling_linear_sigmoid(device):
    def head(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return linear_sigmoid(x, w, b) * 2

    # As Python takes it: bias by keyword, or left out.
    def heads_without_and_with_bias(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return linear_sigmoid(x, w) + linear_sigmoid(input=x, weight=w, bias=b)

    x, w, b = (t.detach() for t in leaves((6,), 3, 2, torch.float64, device))
    scripted = torch.jit.script(head)
    assert OP in str(scripted.graph)
    torch.testing.assert_close(scripted(x, w, b), reference_linear_sigmoid(x, w, b) * 2)
    torch.testing.assert_close(scripted(x, w, None), reference_linear_sigmoid(x, w, None) * 2)
    scripted = torch.jit.script(heads_without_and_with_bias)
    expected = reference_linear_sigmoid(x, w, None) + reference_linear_sigmoid(x, w, b)
    torch.testing.assert_close(scripted(x, w, b), expected)


def test_scripted_program_raises_the_ops_errors():
    scripted = torch.jit.script(FusedLinearSigmoid(3, 2))
    with pytest.raises(RuntimeError, match=re.escape("linear_sigmoid: weight has 3 columns but input has 5 features")):
        scripted(torch.randn(4, 5))


def test_traced_module_calls_the_op():
    torch.manual_seed(0)
    model = SimpleNN()
    example = torch.tensor([[0.5, -0.2, 3.0]])
    traced = torch.jit.trace(model, example)
    assert OP in str(traced.inlined_graph)
    tutorial = TutorialSimpleNN()
    tutorial.load_state_dict(model.state_dict())
    x = torch.randn(9, 3)
    torch.testing.assert_close(traced(x), tutorial(x))


# The child loads the saved program with only fused_sigmoid imported (for the op) and runs it.
CHILD = r"""
import json, sys, torch
import fused_sigmoid  # noqa: F401
program = torch.jit.load(sys.argv[1])
print(json.dumps(program(torch.tensor([[0.5, -0.2, 3.0]])).tolist()))
"""


def test_scripted_tutorial_model_saves_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = SimpleNN()
    path = tmp_path / "simple_nn.pt"
    torch.jit.save(torch.jit.script(model), path)
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    loaded = torch.tensor(json.loads(child.stdout.strip().splitlines()[-1]))
    tutorial = TutorialSimpleNN()
    tutorial.load_state_dict(model.state_dict())
    torch.testing.assert_close(loaded, tutorial(torch.tensor([[0.5, -0.2, 3.0]])).detach())
