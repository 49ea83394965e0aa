"""torch.export: the tutorial's model exports to a program that calls the fused op, runs with the same results,
and survives save/load in a fresh process that imports fused_sigmoid."""

import json
import subprocess
import sys

import torch

from fused_sigmoid import SimpleNN, TutorialSimpleNN


def exported_simple_nn():
    torch.manual_seed(0)
    model = SimpleNN()
    example = torch.tensor([[0.5, -0.2, 3.0]])
    return model, torch.export.export(model, (example,))


def test_exported_program_calls_the_fused_op_and_matches_eager():
    model, program = exported_simple_nn()
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "fused_sigmoid.linear_sigmoid.default" in targets
    tutorial = TutorialSimpleNN()
    tutorial.load_state_dict(model.state_dict())
    x = torch.tensor([[0.5, -0.2, 3.0]])
    torch.testing.assert_close(program.module()(x), tutorial(x))


# The child loads the saved program with only fused_sigmoid imported (for its op registrations) and runs it.
CHILD = r"""
import json, sys, torch
import fused_sigmoid  # noqa: F401
program = torch.export.load(sys.argv[1])
print(json.dumps(program.module()(torch.tensor([[0.5, -0.2, 3.0]])).tolist()))
"""


def test_save_and_load_in_a_fresh_process(tmp_path):
    model, program = exported_simple_nn()
    path = tmp_path / "simple_nn.pt2"
    torch.export.save(program, path)
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    loaded = torch.tensor(json.loads(child.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(loaded, model(torch.tensor([[0.5, -0.2, 3.0]])).detach())
