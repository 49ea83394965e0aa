"""The tutorial's two examples, run with our layer, give eager PyTorch's numbers."""

import torch

from fused_sigmoid import SimpleNN, TutorialSimpleNN, linear_sigmoid
from fused_sigmoid.__main__ import main


def test_sigmoid_example():
    input_tensor = torch.tensor([1.0, 2.0, 3.0, 4.0])
    output_tensor = linear_sigmoid(input_tensor, torch.eye(4))
    torch.testing.assert_close(output_tensor, torch.sigmoid(input_tensor), rtol=0, atol=0)


def test_simple_nn_example():
    torch.manual_seed(0)
    tutorial_model = TutorialSimpleNN()
    torch.manual_seed(0)
    model = SimpleNN()
    assert list(model.state_dict()) == list(tutorial_model.state_dict()) == ["fc1.weight", "fc1.bias"]
    # Same seed, same initialisation: the drop-in draws the tutorial model's weights.
    assert torch.equal(model.fc1.weight, tutorial_model.fc1.weight)
    input_data = torch.tensor([[0.5, -0.2, 3.0]])
    torch.testing.assert_close(model(input_data), tutorial_model(input_data))


def test_state_dict_saved_from_the_tutorial_model_loads(tmp_path):
    tutorial_model = TutorialSimpleNN()
    torch.save(tutorial_model.state_dict(), tmp_path / "simple_nn.pt")
    model = SimpleNN()
    model.load_state_dict(torch.load(tmp_path / "simple_nn.pt"))
    x = torch.randn(10, 3)
    torch.testing.assert_close(model(x), tutorial_model(x))


def test_demo_prints_the_tutorial_numbers(capsys):
    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    assert "tensor([0.7311, 0.8808, 0.9526, 0.9820])" in printed
    assert "gradcheck of FusedLinearSigmoid(3, 2) in float64: passed" in printed
    assert "all match eager PyTorch" in printed
