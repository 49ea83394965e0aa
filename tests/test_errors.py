"""Every invalid call raises a Python exception naming the op, the argument, what was expected and what came,
in eager mode and (through the fake kernels) under torch.compile alike."""

import re

import pytest
import torch

import fused_sigmoid  # noqa: F401
from fused_sigmoid import FusedLinearSigmoid, linear_sigmoid

x, w, b = torch.randn(4, 5), torch.randn(2, 5), torch.randn(2)

FORWARD_ERRORS = [
    ("0-d input", (torch.tensor(1.0), w, b), RuntimeError,
     "linear_sigmoid: expected input to have at least 1 dimension (*, in_features), but got a 0-d tensor"),
    ("3-D weight", (x, torch.randn(2, 5, 1), b), RuntimeError,
     "linear_sigmoid: expected weight to be 2-D (out_features, in_features), but got a 3-D tensor of shape "
     "[2, 5, 1]"),
    ("mismatched in_features", (x, torch.randn(2, 3), b), RuntimeError,
     "linear_sigmoid: weight has 3 columns but input has 5 features (input shape [4, 5], weight shape [2, 3])"),
    ("bias of the wrong length", (x, w, torch.randn(3)), RuntimeError,
     "linear_sigmoid: expected bias of shape [2] (out_features), but got shape [3]"),
    ("2-D bias", (x, w, torch.randn(1, 2)), RuntimeError,
     "linear_sigmoid: expected bias of shape [2] (out_features), but got shape [1, 2]"),
    ("float64 weight with float32 input", (x, w.double(), b), TypeError,
     "linear_sigmoid: expected weight to have the same dtype as input (torch.float32), but got torch.float64"),
    ("bfloat16 bias with float32 input", (x, w, b.bfloat16()), TypeError,
     "linear_sigmoid: expected bias to have the same dtype as input (torch.float32), but got torch.bfloat16"),
    ("integer input", (x.long(), w.long(), b.long()), TypeError,
     "linear_sigmoid: expected input to be a floating-point tensor (torch.float32, torch.float64, "
     "torch.bfloat16 or torch.float16), but got torch.int64"),
    ("bool input", (x.bool(), w.bool(), None), TypeError,
     "linear_sigmoid: expected input to be a floating-point tensor (torch.float32, torch.float64, "
     "torch.bfloat16 or torch.float16), but got torch.bool"),
    ("complex input", (x.cfloat(), w.cfloat(), None), TypeError,
     "linear_sigmoid: expected input to be a floating-point tensor (torch.float32, torch.float64, "
     "torch.bfloat16 or torch.float16), but got torch.complex64"),
]


@pytest.mark.parametrize("case", FORWARD_ERRORS, ids=[c[0] for c in FORWARD_ERRORS])
def test_forward_error(case):
    _, args, error, message = case
    with pytest.raises(error, match=re.escape(message)):
        linear_sigmoid(*args)
    # The layer still works after the error.
    torch.testing.assert_close(linear_sigmoid(x, w, b), torch.sigmoid(x @ w.t() + b))


@pytest.mark.parametrize("case", FORWARD_ERRORS, ids=[c[0] for c in FORWARD_ERRORS])
def test_fake_kernel_raises_the_same_error(case):
    _, args, error, message = case
    fake = torch._subclasses.fake_tensor.FakeTensorMode()
    with fake:
        fake_args = [None if a is None else fake.from_tensor(a) for a in args]
        with pytest.raises(error, match=re.escape(message)):
            torch.ops.fused_sigmoid.linear_sigmoid(*fake_args)


def test_error_under_torch_compile():
    compiled = torch.compile(linear_sigmoid, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=re.escape("linear_sigmoid: weight has 3 columns but input has 5 features")):
        compiled(x, torch.randn(2, 3), b)


def test_module_reports_feature_mismatch():
    layer = FusedLinearSigmoid(3, 2)
    with pytest.raises(RuntimeError, match=re.escape("weight has 3 columns but input has 4 features")):
        layer(torch.randn(7, 4))


@pytest.mark.parametrize("position, name", [(0, "input"), (1, "weight"), (2, "bias")])
def test_non_tensor_argument(position, name):
    args = [x, w, b]
    args[position] = [1.0, 2.0]
    expected = "a Tensor or None" if name == "bias" else "a Tensor"
    with pytest.raises(TypeError, match=re.escape(f"linear_sigmoid: expected {name} to be {expected}, but got list")):
        linear_sigmoid(*args)
    # The raw op is checked by the dispatcher against its schema.
    with pytest.raises(RuntimeError, match=rf"fused_sigmoid::linear_sigmoid\(\) Expected a value of type .* '{name}'"):
        torch.ops.fused_sigmoid.linear_sigmoid(*args)


def test_mixed_devices():
    with pytest.raises(RuntimeError, match=re.escape(
            "linear_sigmoid: expected weight to be on the same device as input (cpu), but got meta")):
        torch.ops.fused_sigmoid.linear_sigmoid(x, w.to("meta"), b)


BACKWARD_ERRORS = [
    ("grad_output of another shape", lambda y: (torch.randn(4, 3), y, x, w), RuntimeError,
     "linear_sigmoid_backward: expected grad_output of the output's shape [4, 2], but got [4, 3]"),
    ("output of another shape", lambda y: (y, y[:3], x, w), RuntimeError,
     "linear_sigmoid_backward: expected output of shape [4, 2] (input's leading dims, out_features), but got "
     "[3, 2]"),
    ("float64 grad_output", lambda y: (y.double(), y, x, w), TypeError,
     "linear_sigmoid_backward: expected grad_output to have the same dtype as input (torch.float32), but got "
     "torch.float64"),
]


@pytest.mark.parametrize("case", BACKWARD_ERRORS, ids=[c[0] for c in BACKWARD_ERRORS])
def test_backward_op_errors(case):
    _, make_args, error, message = case
    y = linear_sigmoid(x, w, b)
    with pytest.raises(error, match=re.escape(message)):
        torch.ops.fused_sigmoid.linear_sigmoid_backward(*make_args(y), [True, True, True])
