"""fuse(model): every nn.Linear whose only use is a sigmoid becomes a FusedLinearSigmoid, and nothing else changes.
The reference is always the original eager model."""

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from fused_sigmoid import FusedLinearSigmoid, Replacement, TutorialSimpleNN, fuse


def assert_same_function(fused, original, in_features, dtype=torch.float64):
    """Outputs and the gradients of the input and of every parameter equal the original model's (float64)."""
    fused, original = fused.to(dtype), original.to(dtype)
    x = torch.randn(5, in_features, dtype=dtype)
    x_fused, x_original = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fused, out_original = fused(x_fused), original(x_original)
    torch.testing.assert_close(out_fused, out_original)
    grad = torch.randn_like(out_original)
    original_params = dict(original.named_parameters())
    fused_params = dict(fused.named_parameters())  # shared parameters appear once, under their original name
    assert fused_params.keys() == original_params.keys()
    names = list(original_params)
    fused_grads = torch.autograd.grad(out_fused, [x_fused, *(fused_params[n] for n in names)], grad)
    original_grads = torch.autograd.grad(out_original, [x_original, *(original_params[n] for n in names)], grad)
    torch.testing.assert_close(fused_grads, original_grads)


def count_fused(model):
    return sum(isinstance(module, FusedLinearSigmoid) for module in model.modules())


def test_tutorial_model_as_written_is_fused():
    torch.manual_seed(0)
    original = TutorialSimpleNN()
    fused, replaced = fuse(original, report=True)
    assert replaced == [Replacement("fc1", "torch.sigmoid")]
    assert isinstance(fused.fc1, FusedLinearSigmoid)
    assert list(fused.state_dict()) == list(original.state_dict())
    assert isinstance(original.fc1, nn.Linear), "inplace=False must leave the original model alone"
    assert fused.fc1.weight is not original.fc1.weight
    assert_same_function(fused, original, in_features=3)
    # The tutorial's example input, in its own dtype.
    x = torch.tensor([[0.5, -0.2, 3.0]])
    torch.testing.assert_close(fused.float()(x), original.float()(x))


def test_inplace_shares_the_parameters():
    original = TutorialSimpleNN()
    fused = fuse(original, inplace=True)
    assert fused.fc1.weight is original.fc1.weight and fused.fc1.bias is original.fc1.bias


class EverySigmoidSpelling(nn.Module):
    def __init__(self):
        super().__init__()
        self.by_function = nn.Linear(4, 3)
        self.by_functional = nn.Linear(4, 3)
        self.by_method = nn.Linear(4, 3)
        self.by_module = nn.Linear(4, 3)
        self.by_expit = nn.Linear(4, 3)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return (
            torch.sigmoid(self.by_function(x))
            + F.sigmoid(self.by_functional(x))
            + self.by_method(x).sigmoid()
            + self.sigmoid(self.by_module(x))
            + torch.special.expit(self.by_expit(x))
        )


def test_every_spelling_of_sigmoid_is_recognised():
    original = EverySigmoidSpelling()
    fused, replaced = fuse(original, report=True)
    assert {r.linear for r in replaced} == {"by_function", "by_functional", "by_method", "by_module", "by_expit"}
    assert count_fused(fused) == 5
    assert not any(isinstance(module, nn.Sigmoid) for module in fused.modules())
    assert_same_function(fused, original, in_features=4)


class LinearWithOtherUses(nn.Module):
    """Only `gate`, and the first call of `twice`, are fusable: `shared`'s output is also added, `scaled` feeds a
    sigmoid of something else, `subclass` is not a plain nn.Linear, and `twice` is called once under a sigmoid and
    once not."""

    class ScaledLinear(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(4, 4)
        self.shared = nn.Linear(4, 4)
        self.scaled = nn.Linear(4, 4)
        self.subclass = self.ScaledLinear(4, 4)
        self.twice = nn.Linear(4, 4)

    def forward(self, x):
        z = self.shared(x)
        y = torch.sigmoid(z) + z
        y = y + torch.sigmoid(self.scaled(x) * 2)
        y = y + torch.sigmoid(self.subclass(x))
        y = y + torch.sigmoid(self.twice(x)) + self.twice(x)
        return self.gate(y).sigmoid()


def test_linear_with_any_other_use_is_left_alone():
    original = LinearWithOtherUses()
    fused, replaced = fuse(original, report=True)
    assert [r.linear for r in replaced] == ["twice", "gate"]
    assert type(fused.shared) is nn.Linear and type(fused.scaled) is nn.Linear
    # `twice` keeps its module for the unfused call; the fused call reads the same parameters, adding no state.
    assert type(fused.twice) is nn.Linear
    assert isinstance(fused.gate, FusedLinearSigmoid)
    assert sorted(fused.state_dict()) == sorted(original.state_dict())
    fused.load_state_dict(original.state_dict())
    assert_same_function(fused, original, in_features=4)


def test_input_changed_in_place_after_the_linear():
    # The fused call must run where the Linear ran, before the in-place change, not where the sigmoid was.
    class ChangesItsInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            x = x.clone()
            h = self.fc(x)
            x.mul_(2)
            return torch.sigmoid(h) + x.sum(-1, keepdim=True)

    original = ChangesItsInput()
    fused, replaced = fuse(original, report=True)
    assert [r.linear for r in replaced] == ["fc"]
    x = torch.randn(5, 3)
    with torch.no_grad():  # the in-place change of a saved input would stop eager's backward as well
        torch.testing.assert_close(fused(x), original(x))


def test_subclasses_and_hooked_layers_are_left_alone():
    class DoubledSigmoid(nn.Sigmoid):
        def forward(self, x):
            return 2 * torch.sigmoid(x)

    hooked = nn.Linear(3, 2)
    hooked.register_forward_hook(lambda module, inputs, output: output * 0)
    parametrized = torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    for original in (nn.Sequential(nn.Linear(3, 2), DoubledSigmoid()), nn.Sequential(hooked, nn.Sigmoid()),
                     nn.Sequential(parametrized, nn.Sigmoid())):
        fused, replaced = fuse(original, report=True)
        assert replaced == [] and count_fused(fused) == 0
        assert_same_function(fused, original, in_features=3)
    # The older weight_norm recomputes the weight in a forward pre-hook (and cannot be deep-copied: inplace=True).
    with pytest.warns(FutureWarning):
        normed = nn.Sequential(torch.nn.utils.weight_norm(nn.Linear(3, 2)), nn.Sigmoid())
    fused, replaced = fuse(normed, inplace=True, report=True)
    assert replaced == [] and isinstance(fused[1], nn.Sigmoid)


def test_sequential_subclass_with_its_own_forward_is_traced():
    class LogitsToo(nn.Sequential):
        def forward(self, x):
            h = self[0](x)
            return self[1](h) + h

    original = LogitsToo(nn.Linear(3, 2), nn.Sigmoid())
    fused, replaced = fuse(original, report=True)
    assert replaced == [], "the Linear's output is also returned: not fusable"
    assert_same_function(fused, original, in_features=3)


def test_modules_inside_a_sequential_are_fused_too():
    original = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), TutorialSimpleNN())
    fused, replaced = fuse(original, report=True)
    assert replaced == [Replacement("2.fc1", "torch.sigmoid")]
    assert type(fused) is nn.Sequential and isinstance(fused[2].fc1, FusedLinearSigmoid)
    assert list(fused.state_dict()) == list(original.state_dict())
    assert_same_function(fused, original, in_features=3)


def test_sequential_is_rewritten_without_tracing():
    original = nn.Sequential(
        nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 3), nn.Sigmoid())
    )
    fused, replaced = fuse(original, report=True)
    assert type(fused) is nn.Sequential, "a Sequential must stay a Sequential (no fx.GraphModule)"
    assert [r.linear for r in replaced] == ["0", "4.0"]
    assert isinstance(fused[0], FusedLinearSigmoid) and isinstance(fused[1], nn.Identity)
    assert type(fused[2]) is nn.Linear
    assert isinstance(fused[4][0], FusedLinearSigmoid)
    assert list(fused.state_dict()) == list(original.state_dict())
    assert_same_function(fused, original, in_features=6)


def test_sequential_inplace_changes_the_model_itself():
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid())
    linear = model[0]
    assert fuse(model, inplace=True) is model
    assert isinstance(model[0], FusedLinearSigmoid) and model[0].weight is linear.weight


def test_nested_modules_keep_their_names():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    original = nn.ModuleDict({"body": nn.Linear(8, 8), "head": Head()})

    class Model(nn.Module):
        def __init__(self, parts):
            super().__init__()
            self.parts = parts

        def forward(self, x):
            return self.parts["head"](torch.relu(self.parts["body"](x)))

    model = Model(original)
    fused, replaced = fuse(model, report=True)
    assert replaced == [Replacement("parts.head.fc", "torch.sigmoid")]
    assert list(fused.state_dict()) == list(model.state_dict())
    assert_same_function(fused, model, in_features=8)


def test_a_model_fx_cannot_trace_gets_an_error_naming_it():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > 0:
                return torch.sigmoid(self.fc(x))
            return self.fc(x)

    with pytest.raises(RuntimeError, match=r"fuse: torch\.fx cannot trace DataDependent"):
        fuse(DataDependent())


def test_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match="fuse: expected model to be an nn.Module, but got function"):
        fuse(lambda x: x)


def test_nothing_to_fuse_returns_an_equivalent_model():
    original = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    fused, replaced = fuse(original, report=True)
    assert replaced == [] and count_fused(fused) == 0
    assert_same_function(fused, original, in_features=3)


def test_traced_result_is_a_graph_module_that_trains():
    original = TutorialSimpleNN()
    fused = fuse(original)
    assert isinstance(fused, fx.GraphModule)
    optimizer = torch.optim.SGD(fused.parameters(), lr=0.1)
    loss = fused(torch.randn(4, 3)).sum()
    loss.backward()
    before = fused.fc1.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, fused.fc1.weight)
