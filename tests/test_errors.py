"""Every invalid call raises a Python exception naming the op, the argument, what was expected and what came,
in eager mode and (through the fake kernels) under torch.compile alike; after any of them the op still works."""

import dataclasses
import re

import pytest
import torch

from conftest import CUDA_REASON, cuda_ready
from fused_sigmoid import FusedLinearSigmoid, linear_sigmoid, reference_linear_sigmoid

x, w, b = torch.randn(4, 5), torch.randn(2, 5), torch.randn(2)
# The backward's saved output and an incoming gradient, from eager: these tests are about the checks only.
y = reference_linear_sigmoid(x, w, b)
dy = torch.randn(4, 2)
ALL = [True, True, True]

SUPPORTED = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
UNSUPPORTED = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64,
               torch.complex128, torch.float8_e5m2)
EXPECTED_INPUT_DTYPE = ("expected input to be a floating-point tensor (torch.float32, torch.float64, torch.bfloat16 "
                        "or torch.float16), but got ")


@dataclasses.dataclass
class Case:
    name: str
    op: str  # "linear_sigmoid" or "linear_sigmoid_backward"
    args: tuple
    error: type
    message: str  # the whole message, after "<op>: "

    def call(self):
        if self.op == "linear_sigmoid":
            return linear_sigmoid(*self.args)
        return torch.ops.fused_sigmoid.linear_sigmoid_backward(*self.args)

    @property
    def expected(self):
        return re.escape(f"{self.op}: {self.message}")


def forward_dtype_cases():
    for name, index in (("weight", 1), ("bias", 2)):
        for input_dtype in SUPPORTED:
            for other in SUPPORTED:
                if other != input_dtype:
                    args = [x.to(input_dtype), w.to(input_dtype), b.to(input_dtype)]
                    args[index] = args[index].to(other)
                    yield Case(f"{other} {name} with {input_dtype} input", "linear_sigmoid", tuple(args), TypeError,
                               f"expected {name} to have the same dtype as input ({input_dtype}), but got {other}")
    for dtype in UNSUPPORTED:
        yield Case(f"{dtype} input", "linear_sigmoid", (x.to(dtype), w.to(dtype), b.to(dtype)), TypeError,
                   EXPECTED_INPUT_DTYPE + str(dtype))
        yield Case(f"{dtype} weight", "linear_sigmoid", (x, w.to(dtype), b), TypeError,
                   f"expected weight to have the same dtype as input (torch.float32), but got {dtype}")
        yield Case(f"{dtype} bias", "linear_sigmoid", (x, w, b.to(dtype)), TypeError,
                   f"expected bias to have the same dtype as input (torch.float32), but got {dtype}")


def backward_dtype_cases():
    tensors = {"grad_output": dy, "output": y, "input": x, "weight": w}
    for name in ("grad_output", "output", "weight"):
        for input_dtype in SUPPORTED:
            for other in SUPPORTED:
                if other != input_dtype:
                    args = {key: value.to(other if key == name else input_dtype) for key, value in tensors.items()}
                    yield Case(f"backward: {other} {name} with {input_dtype} input", "linear_sigmoid_backward",
                               (*args.values(), ALL), TypeError,
                               f"expected {name} to have the same dtype as input ({input_dtype}), but got {other}")
    for dtype in UNSUPPORTED:
        yield Case(f"backward: {dtype} input", "linear_sigmoid_backward",
                   (*(t.to(dtype) for t in tensors.values()), ALL), TypeError, EXPECTED_INPUT_DTYPE + str(dtype))
        for name in ("grad_output", "output", "weight"):
            args = {key: value.to(dtype) if key == name else value for key, value in tensors.items()}
            yield Case(f"backward: {dtype} {name}", "linear_sigmoid_backward", (*args.values(), ALL), TypeError,
                       f"expected {name} to have the same dtype as input (torch.float32), but got {dtype}")


WEIGHT_NOT_2D = "expected weight to be 2-D (out_features, in_features), but got a "

SHAPE_CASES = [
    Case("0-d input", "linear_sigmoid", (torch.tensor(1.0), w, b), RuntimeError,
         "expected input to have at least 1 dimension (*, in_features), but got a 0-d tensor"),
    Case("0-d weight", "linear_sigmoid", (x, torch.tensor(1.0), b), RuntimeError,
         WEIGHT_NOT_2D + "0-D tensor of shape []"),
    Case("1-D weight", "linear_sigmoid", (x, torch.randn(5), b), RuntimeError,
         WEIGHT_NOT_2D + "1-D tensor of shape [5]"),
    Case("3-D weight", "linear_sigmoid", (x, torch.randn(2, 5, 1), b), RuntimeError,
         WEIGHT_NOT_2D + "3-D tensor of shape [2, 5, 1]"),
    Case("mismatched in_features", "linear_sigmoid", (x, torch.randn(2, 3), b), RuntimeError,
         "weight has 3 columns but input has 5 features (input shape [4, 5], weight shape [2, 3])"),
    Case("1-D input with mismatched features", "linear_sigmoid", (torch.randn(4), w, b), RuntimeError,
         "weight has 5 columns but input has 4 features (input shape [4], weight shape [2, 5])"),
    Case("bias of the wrong length", "linear_sigmoid", (x, w, torch.randn(3)), RuntimeError,
         "expected bias of shape [2] (out_features), but got shape [3]"),
    Case("0-d bias", "linear_sigmoid", (x, w, torch.tensor(1.0)), RuntimeError,
         "expected bias of shape [2] (out_features), but got shape []"),
    Case("2-D bias", "linear_sigmoid", (x, w, torch.randn(1, 2)), RuntimeError,
         "expected bias of shape [2] (out_features), but got shape [1, 2]"),
    Case("meta weight with cpu input", "linear_sigmoid", (x, w.to("meta"), b), RuntimeError,
         "expected weight to be on the same device as input (cpu), but got meta"),
    Case("meta bias with cpu input", "linear_sigmoid", (x, w, b.to("meta")), RuntimeError,
         "expected bias to be on the same device as input (cpu), but got meta"),
    Case("meta input with cpu weight", "linear_sigmoid", (x.to("meta"), w, b), RuntimeError,
         "expected weight to be on the same device as input (meta), but got cpu"),
    Case("backward: 0-d input", "linear_sigmoid_backward", (dy, y, torch.tensor(1.0), w, ALL), RuntimeError,
         "expected input to have at least 1 dimension (*, in_features), but got a 0-d tensor"),
    Case("backward: 1-D weight", "linear_sigmoid_backward", (dy, y, x, torch.randn(5), ALL), RuntimeError,
         WEIGHT_NOT_2D + "1-D tensor of shape [5]"),
    Case("backward: 3-D weight", "linear_sigmoid_backward", (dy, y, x, torch.randn(2, 5, 1), ALL), RuntimeError,
         WEIGHT_NOT_2D + "3-D tensor of shape [2, 5, 1]"),
    Case("backward: mismatched in_features", "linear_sigmoid_backward", (dy, y, x, torch.randn(2, 3), ALL),
         RuntimeError, "weight has 3 columns but input has 5 features (input shape [4, 5], weight shape [2, 3])"),
    Case("backward: output of another shape", "linear_sigmoid_backward", (dy, y[:3], x, w, ALL), RuntimeError,
         "expected output of shape [4, 2] (input's leading dims, out_features), but got [3, 2]"),
    Case("backward: flattened output", "linear_sigmoid_backward", (dy, y.flatten(), x, w, ALL), RuntimeError,
         "expected output of shape [4, 2] (input's leading dims, out_features), but got [8]"),
    Case("backward: grad_output of another shape", "linear_sigmoid_backward", (torch.randn(4, 3), y, x, w, ALL),
         RuntimeError, "expected grad_output of the output's shape [4, 2], but got [4, 3]"),
    Case("backward: meta grad_output", "linear_sigmoid_backward", (dy.to("meta"), y, x, w, ALL), RuntimeError,
         "expected grad_output to be on the same device as input (cpu), but got meta"),
    Case("backward: meta weight", "linear_sigmoid_backward", (dy, y, x, w.to("meta"), ALL), RuntimeError,
         "expected weight to be on the same device as input (cpu), but got meta"),
]

CASES = SHAPE_CASES + list(forward_dtype_cases()) + list(backward_dtype_cases())

def assert_op_still_works():
    """A forward and backward on valid arguments, against eager."""
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ours = linear_sigmoid(*leaves)
    eager = reference_linear_sigmoid(*leaves)
    torch.testing.assert_close(ours, eager)
    for mine, theirs in zip(torch.autograd.grad(ours, leaves, dy), torch.autograd.grad(eager, leaves, dy)):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_error_names_op_and_argument(case):
    with pytest.raises(case.error, match=case.expected):
        case.call()
    assert_op_still_works()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_fake_kernel_raises_the_same_error(case):
    fake = torch._subclasses.fake_tensor.FakeTensorMode()
    with fake:
        fake_args = [fake.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in case.args]
        with pytest.raises(case.error, match=case.expected):
            getattr(torch.ops.fused_sigmoid, case.op)(*fake_args)


def test_error_under_torch_compile():
    compiled = torch.compile(linear_sigmoid, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=re.escape("linear_sigmoid: weight has 3 columns but input has 5 features")):
        compiled(x, torch.randn(2, 3), b)


def test_module_reports_feature_mismatch():
    layer = FusedLinearSigmoid(3, 2)
    with pytest.raises(RuntimeError, match=re.escape("weight has 3 columns but input has 4 features")):
        layer(torch.randn(7, 4))
    torch.testing.assert_close(layer(torch.ones(7, 3)), reference_linear_sigmoid(torch.ones(7, 3), layer.weight,
                                                                                 layer.bias))


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


@pytest.mark.parametrize("dtype", SUPPORTED)
@pytest.mark.parametrize("leading", [(), (0,), (3, 4)])
def test_meta_tensors_give_shapes(leading, dtype):
    # Meta tensors run the fake kernels: they must give what a real call would, without computing anything.
    input, weight, bias = (torch.empty(shape, device="meta", dtype=dtype) for shape in ((*leading, 5), (2, 5), (2,)))
    out = torch.ops.fused_sigmoid.linear_sigmoid(input, weight, bias)
    assert (out.shape, out.dtype, out.device.type) == ((*leading, 2), dtype, "meta")
    grads = torch.ops.fused_sigmoid.linear_sigmoid_backward(out, out, input, weight, [True, False, True])
    assert grads[1] is None
    for grad, like in ((grads[0], input), (grads[2], bias)):
        assert (grad.shape, grad.dtype, grad.device.type) == (like.shape, dtype, "meta")


CUDA_DEVICE_CASES = [
    ("cpu weight with cuda input", "expected weight to be on the same device as input (cuda:0), but got cpu",
     lambda: linear_sigmoid(x.cuda(), w, b.cuda())),
    ("cpu bias with cuda input", "expected bias to be on the same device as input (cuda:0), but got cpu",
     lambda: linear_sigmoid(x.cuda(), w.cuda(), b)),
    ("cuda weight with cpu input", "expected weight to be on the same device as input (cpu), but got cuda:0",
     lambda: linear_sigmoid(x, w.cuda(), b)),
    ("backward: cpu output with cuda input",
     "expected output to be on the same device as input (cuda:0), but got cpu",
     lambda: torch.ops.fused_sigmoid.linear_sigmoid_backward(dy.cuda(), y, x.cuda(), w.cuda(), ALL)),
]


@pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)
@pytest.mark.parametrize("name, message, call", CUDA_DEVICE_CASES, ids=[case[0] for case in CUDA_DEVICE_CASES])
def test_mixed_cuda_and_cpu(name, message, call):
    op = "linear_sigmoid_backward" if name.startswith("backward") else "linear_sigmoid"
    with pytest.raises(RuntimeError, match=re.escape(f"{op}: {message}")):
        call()
    assert_op_still_works()


@pytest.mark.parametrize("position, name", [(0, "input"), (1, "weight"), (2, "bias")])
def test_sparse_argument_is_named(position, name):
    args = [x, w, b]
    args[position] = args[position].to_sparse()
    with pytest.raises(RuntimeError, match=re.escape(f"linear_sigmoid: expected {name} to be a dense (strided) "
                                                     "tensor, but got torch.sparse_coo")):
        linear_sigmoid(*args)
    # The raw op has dense kernels only: the dispatcher refuses the sparse backend, naming the op.
    with pytest.raises(NotImplementedError, match=r"fused_sigmoid::linear_sigmoid.*'Sparse"):
        torch.ops.fused_sigmoid.linear_sigmoid(*args)
    assert_op_still_works()


def test_module_names_a_sparse_input():
    with pytest.raises(RuntimeError, match=re.escape("linear_sigmoid: expected input to be a dense (strided) tensor")):
        FusedLinearSigmoid(5, 2)(x.to_sparse())


def test_output_mask_of_another_length_is_refused_by_the_schema():
    # output_mask is bool[3] in the schema, as in ATen's own backward ops: the dispatcher refuses any other length
    # before our code runs, with its own words, which name neither op nor argument (a known limit).
    for mask in ([True, True], [True, True, True, True]):
        with pytest.raises(RuntimeError, match="fixed-size array of size 3"):
            torch.ops.fused_sigmoid.linear_sigmoid_backward(dy, y, x, w, mask)
    assert_op_still_works()
