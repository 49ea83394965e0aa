"""The training example: a classifier with our output layer learns the breast-cancer data, and its loss curve is
its eager twin's (same weights, same batches) up to float32 rounding."""

import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from fused_sigmoid import FusedLinearSigmoid
from fused_sigmoid.__main__ import main
from fused_sigmoid.training import load_data, make_twins, train


@pytest.fixture(scope="module")
def result():
    return train(epochs=20, seed=0, progress=False)


def test_fused_classifier_reaches_95_percent_test_accuracy(result):
    assert result.accuracy >= 0.95
    assert isinstance(result.model.output, FusedLinearSigmoid)


def test_loss_curve_is_the_eager_twins(result):
    assert isinstance(result.eager_model.output, nn.Linear)
    assert len(result.fused_losses) == len(result.eager_losses) == 20
    # float32's default tolerances: the two runs differ only in how the output layer rounds.
    torch.testing.assert_close(torch.tensor(result.fused_losses), torch.tensor(result.eager_losses))
    assert result.fused_losses[-1] < result.fused_losses[0] / 5


def test_twins_start_from_the_same_weights():
    model, eager_model = make_twins(30, 16, seed=3)
    state, eager_state = model.state_dict(), eager_model.state_dict()
    assert list(state) == list(eager_state)
    assert all(torch.equal(state[name], eager_state[name]) for name in state)


def test_missing_extra_names_the_install_command(monkeypatch):
    # A None entry in sys.modules makes importing that name fail, whether or not it was imported before.
    for name in ["sklearn", *(name for name in list(sys.modules) if name.startswith("sklearn."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=re.escape("pip install --no-build-isolation -e '.[examples]'")):
        load_data()


def test_command_line_prints_accuracy_and_writes_the_plot(tmp_path):
    plot = tmp_path / "losses.png"
    command = [sys.executable, "-m", "fused_sigmoid", "train", "--no-progress", "--epochs", "5", "--plot", str(plot)]
    child = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    assert re.search(r"test accuracy: fused \d+\.\d\d%, eager twin \d+\.\d\d%", child.stdout), child.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_train_subcommand_passes_its_options_on(capsys):
    assert main(["train", "--no-progress", "--epochs", "1", "--seed", "1", "--hidden", "4"]) == 0
    printed = capsys.readouterr().out
    assert "FusedLinearSigmoid(4, 1)" in printed and "seed 1" in printed and "over 1 epochs" in printed
