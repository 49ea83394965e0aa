"""torch.func transforms (grad, jacrev, jacfwd, hessian, jvp, vmap, per-sample gradients) and forward-mode AD
through linear_sigmoid and the module, against the same transforms of eager PyTorch, in float64."""

import re
from contextlib import contextmanager

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

from conftest import leaves
from fused_sigmoid import FusedLinearSigmoid, LinearSigmoidFunction, linear_sigmoid, reference_linear_sigmoid


def operands(device, leading=(5,), in_features=3, out_features=2):
    """Seeded float64 (input, weight, bias) that need no gradient: the transforms take their own."""
    return [t.detach() for t in leaves(leading, in_features, out_features, torch.float64, device)]


@contextmanager
def without_vmap_fallback():
    """functorch's fallback for ops without a batching rule (one call per element, with a warning) switched off:
    such an op raises instead, so what runs inside is batched throughout."""
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(True)


TRANSFORMS = {
    "grad wrt weight": lambda f, x, w, b: grad(lambda w: f(x, w, b).sum())(w),
    "grad wrt all": lambda f, x, w, b: grad(lambda x, w, b: f(x, w, b).pow(2).sum(), argnums=(0, 1, 2))(x, w, b),
    "jacrev wrt input": lambda f, x, w, b: jacrev(lambda x: f(x, w, b))(x),
    "jacfwd wrt weight": lambda f, x, w, b: jacfwd(lambda w: f(x, w, b))(w),
    "hessian wrt one row": lambda f, x, w, b: hessian(lambda row: f(row, w, b).sum())(x[0]),
    "jvp": lambda f, x, w, b: jvp(f, (x, w, b), (torch.ones_like(x), torch.ones_like(w), torch.ones_like(b)))[1],
    "per-sample grads": lambda f, x, w, b: vmap(grad(lambda w, b, row: f(row, w, b).sum(), argnums=(0, 1)),
                                                in_dims=(None, None, 0))(w, b, x),
    "grad of vmap": lambda f, x, w, b: grad(lambda w: vmap(lambda row: f(row, w, b))(x).pow(2).sum())(w),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transforms_agree_with_eager(transform, device):
    # jacrev, hessian and per-sample gradients vmap over the backward: it too must run batched.
    x, w, b = operands(device)
    with without_vmap_fallback():
        ours = TRANSFORMS[transform](linear_sigmoid, x, w, b)
    eager = TRANSFORMS[transform](reference_linear_sigmoid, x, w, b)
    torch.testing.assert_close(ours, eager)


# (input, weight, bias) vmapped dimensions: a batch of inputs for one layer (at either end), and batches of layers.
IN_DIMS = [(0, None, None), (1, None, None), (None, 0, None), (None, None, 0), (0, 0, 0), (1, 0, None)]


def test_vmap_of_the_op_called_without_bias(device):
    # The schema's default: a call that leaves bias out reaches the batching rule without it.
    x, w, _ = operands(device, leading=(4, 5))
    ensemble_weights = torch.stack([w, 2 * w])
    with without_vmap_fallback():
        batch_of_inputs = vmap(lambda rows: torch.ops.fused_sigmoid.linear_sigmoid(rows, w))(x)
        ensemble = vmap(lambda w: torch.ops.fused_sigmoid.linear_sigmoid(x, w))(ensemble_weights)
    torch.testing.assert_close(batch_of_inputs, reference_linear_sigmoid(x, w))
    torch.testing.assert_close(ensemble, torch.stack([reference_linear_sigmoid(x, v) for v in ensemble_weights]))


@pytest.mark.parametrize("in_dims", IN_DIMS, ids=str)
def test_vmap_has_a_batching_rule(in_dims, device):
    # Without a rule vmap would run the op once per element; with the fallback off this passes only through the rule,
    # which must give eager's results.
    x, w, b = operands(device, leading=(4,))
    batch = 6
    batched = [torch.stack([t * (1 + i / batch) for i in range(batch)], dim) if dim is not None else t
               for t, dim in zip((x, w, b), in_dims)]
    with without_vmap_fallback():
        ours = vmap(linear_sigmoid, in_dims=in_dims)(*batched)
    torch.testing.assert_close(ours, vmap(reference_linear_sigmoid, in_dims=in_dims)(*batched))


def test_per_sample_gradients_of_the_module(device):
    # The functorch recipe for per-sample gradients (as in differential privacy) over the drop-in layer.
    layer = FusedLinearSigmoid(3, 2).double().to(device)
    linear = torch.nn.Linear(3, 2).double().to(device)
    linear.load_state_dict(layer.state_dict())
    x = operands(device, leading=(7,))[0]

    def per_sample(module, forward):
        params = {name: p.detach() for name, p in module.named_parameters()}
        loss = lambda params, row: forward(functional_call(module, params, (row,))).sum()  # noqa: E731
        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    with without_vmap_fallback():
        ours = per_sample(layer, lambda out: out)
    eager = per_sample(linear, torch.sigmoid)
    for name in ("weight", "bias"):
        assert ours[name].shape == (7, *getattr(layer, name).shape)
        torch.testing.assert_close(ours[name], eager[name])


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.enable_grad], ids=["no_grad", "enable_grad"])
def test_forward_mode_ad_carries_tangents(grad_mode, device):
    # Forward-mode AD runs under no_grad too: an output without its tangent would be a silent zero derivative.
    x, w, b = operands(device)
    tangents = [torch.randn_like(t) for t in (x, w, b)]
    results = []
    for f in (linear_sigmoid, reference_linear_sigmoid):
        with grad_mode(), forward_ad.dual_level():
            out = f(*(forward_ad.make_dual(t, dt) for t, dt in zip((x, w, b), tangents)))
            results.append(forward_ad.unpack_dual(out).tangent)
    assert results[0] is not None, "the output lost its tangent"
    torch.testing.assert_close(results[0], results[1])


def test_batched_gradients_agree_with_eager(device):
    # autograd.grad(is_grads_batched=True) and the vectorised Jacobian and Hessian vmap over the backward with
    # PyTorch's older vmap, whose fallback cannot batch an op with optional outputs.
    x, w, b = (t.requires_grad_() for t in operands(device))

    def batched(f):
        out = f(x, w, b)
        cotangents = torch.stack([torch.full_like(out, i + 1.0) for i in range(3)])
        grads = torch.autograd.grad(out, (x, w, b), cotangents, is_grads_batched=True)
        jacobian = torch.autograd.functional.jacobian(lambda x: f(x, w, b), x, vectorize=True)
        hessian_ = torch.autograd.functional.hessian(lambda row: f(row, w, b).sum(), x[0], vectorize=True)
        return (*grads, jacobian, hessian_)

    for ours, eager in zip(batched(linear_sigmoid), batched(reference_linear_sigmoid)):
        torch.testing.assert_close(ours, eager)


def test_vmap_over_autograd_grad_batches_the_backward_op(device):
    # torch.func.vmap over a plain autograd.grad: the backward op receives batched gradients and needs its own rule.
    x, w, b = (t.requires_grad_() for t in operands(device))
    cotangents = torch.randn(4, 5, 2, dtype=torch.float64, device=device)

    def vmapped_grad(f):
        out = f(x, w, b)
        with without_vmap_fallback():
            return vmap(lambda g: torch.autograd.grad(out, (x, w, b), g, retain_graph=True))(cotangents)

    for ours, eager in zip(vmapped_grad(linear_sigmoid), vmapped_grad(reference_linear_sigmoid)):
        torch.testing.assert_close(ours, eager)


BAD_ENSEMBLES = {
    "bias of one element": lambda x, w, b: (x, w, b[:1]),
    "2-D bias": lambda x, w, b: (x, w, b[None]),
    "float64 bias": lambda x, w, b: (x, w, b.double()),
    "integer input": lambda x, w, b: (x.long(), w.long(), None),
    "features mismatch": lambda x, w, b: (x[:, :2], w, b),
}


@pytest.mark.parametrize("case", list(BAD_ENSEMBLES))
def test_vmap_over_weights_refuses_what_the_op_refuses(case, device):
    # The rule for a batch of weights runs batched products, not the op: it must still check like the op, with its
    # message, rather than broadcast or promote.
    x, w, b = (t.float() for t in operands(device))
    x, w, b = BAD_ENSEMBLES[case](x, w, b)
    with pytest.raises((RuntimeError, TypeError)) as direct:
        linear_sigmoid(x, w, b)
    with pytest.raises(type(direct.value), match=re.escape(str(direct.value).split("\n")[0])):
        vmap(linear_sigmoid, in_dims=(None, 0, None))(x, torch.stack([w, w]), b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_vmap_over_weights_rounds_once_in_reduced_precision(dtype, device):
    # Products, bias and sigmoid in float, one rounding at the end, as the fused kernels do: the float64 result
    # rounded to the dtype, but where float's own error moves a value across a rounding boundary (rare). Rounding
    # the products to the dtype first, as a plain einsum in the dtype does, matched in about two cases of three.
    x, w, b = (t.to(dtype) for t in operands(device, leading=(64,), in_features=32, out_features=4))
    weights = torch.stack([w, -w, w / 2])
    ours = vmap(linear_sigmoid, in_dims=(None, 0, None))(x, weights, b)
    exact = torch.stack([reference_linear_sigmoid(x.double(), weight.double(), b.double()) for weight in weights])
    assert ours.dtype == dtype
    assert (ours == exact.to(dtype)).float().mean().item() >= 0.99


def test_vmap_under_autocast_runs_in_the_autocast_dtype(device):
    # Every branch of the rule casts as the op's autocast kernel does.
    x, w, b = (t.float() for t in operands(device, leading=(4,)))
    with torch.autocast(device, dtype=torch.bfloat16):
        for in_dims in IN_DIMS:
            batched = [torch.stack([t, t]) if dim == 0 else torch.stack([t, t], dim) if dim is not None else t
                       for t, dim in zip((x, w, b), in_dims)]
            assert vmap(linear_sigmoid, in_dims=in_dims)(*batched).dtype == torch.bfloat16, in_dims


ENTRIES = {"linear_sigmoid": linear_sigmoid, "LinearSigmoidFunction.apply": LinearSigmoidFunction.apply}


def autocast_gradients(f, x, w, b, device):
    """(output dtype, weight gradient from backward, weight gradient from torch.func.vjp) with f under autocast."""
    w_leaf = w.clone().requires_grad_()
    with torch.autocast(device, dtype=torch.bfloat16):
        out = f(x, w_leaf, b)
        out_vjp, vjp_fn = torch.func.vjp(lambda w: f(x, w, b), w)
    out.float().sum().backward()
    (grad_w,) = vjp_fn(torch.ones_like(out_vjp))
    return out.dtype, w_leaf.grad, grad_w


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_python_function_under_autocast(entry, device):
    # The Python Function (linear_sigmoid's path inside torch.func) keeps float32 arguments while the op ran in
    # bfloat16: its backward must work in the output's dtype, and give eager's gradients in the arguments' dtype.
    x, w, b = (t.float() for t in operands(device))
    out_dtype, *ours = autocast_gradients(ENTRIES[entry], x, w, b, device)
    eager_dtype, *eager = autocast_gradients(reference_linear_sigmoid, x, w, b, device)
    assert out_dtype == eager_dtype == torch.bfloat16
    for a, e in zip(ours, eager):
        assert a.dtype == e.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=2e-2, atol=2e-2)


def test_forward_mode_ad_under_autocast(device):
    x, w, b = (t.float() for t in operands(device))

    def tangent_and_weight_gradient(f):
        w_leaf = w.clone().requires_grad_()
        with torch.autocast(device, dtype=torch.bfloat16), forward_ad.dual_level():
            out = f(forward_ad.make_dual(x, torch.ones_like(x)), w_leaf, b)
            primal, tangent = forward_ad.unpack_dual(out)
        primal.float().sum().backward()
        return tangent, w_leaf.grad

    ours, eager = tangent_and_weight_gradient(linear_sigmoid), tangent_and_weight_gradient(reference_linear_sigmoid)
    assert ours[0].dtype == eager[0].dtype == torch.bfloat16
    for a, e in zip(ours, eager):
        torch.testing.assert_close(a.float(), e.float(), rtol=2e-2, atol=2e-2)


def test_compiled_transform_under_autocast_casts_like_eager(device):
    # A float32 input with a bfloat16 weight is valid under autocast (both run in bfloat16), compiled too.
    x, w, b = (t.float() for t in operands(device))
    w = w.bfloat16()

    def input_gradient(f):
        with torch.autocast(device, dtype=torch.bfloat16):
            return grad(lambda x: f(x, w, b).float().sum())(x)

    compiled = torch.compile(lambda: input_gradient(linear_sigmoid), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(), input_gradient(reference_linear_sigmoid), rtol=2e-2, atol=2e-2)


def test_errors_inside_transforms_name_the_argument(device):
    x, w, b = operands(device)
    message = "linear_sigmoid: expected bias to be a Tensor or None, but got list"
    with pytest.raises(TypeError, match=re.escape(message)):
        grad(lambda w: linear_sigmoid(x, w, [1.0, 2.0]).sum())(w)
    with pytest.raises(TypeError, match="expected weight to have the same dtype as input"):
        grad(lambda w: linear_sigmoid(x, w.float(), b).sum())(w)


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transforms_compile_in_one_graph(transform, device):
    # Inside transforms torch.compile traces linear_sigmoid's definition (it cannot trace the op there); outside
    # them it keeps the op (tests/test_compile.py), and one compiled function serves both.
    x, w, b = operands(device)
    compiled = torch.compile(lambda: TRANSFORMS[transform](linear_sigmoid, x, w, b), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(), TRANSFORMS[transform](reference_linear_sigmoid, x, w, b))


def test_compiled_function_runs_in_and_out_of_transforms(device):
    x, w, b = operands(device)
    traced_ops = []

    def backend(graph_module, example_inputs):
        traced_ops.append([node.target for node in graph_module.graph.nodes if node.op == "call_function"])
        return graph_module

    def layer_or_its_gradient(x, w, b, gradient):
        return grad(lambda w: linear_sigmoid(x, w, b).sum())(w) if gradient else linear_sigmoid(x, w, b)

    compiled = torch.compile(layer_or_its_gradient, backend=backend)
    for gradient in (False, True, False):
        expected = grad(lambda w: reference_linear_sigmoid(x, w, b).sum())(w) if gradient else \
            reference_linear_sigmoid(x, w, b)
        torch.testing.assert_close(compiled(x, w, b, gradient), expected)
    assert len(traced_ops) == 2
    assert traced_ops[0] == [torch.ops.fused_sigmoid.linear_sigmoid]
    assert torch.ops.fused_sigmoid.linear_sigmoid not in traced_ops[1] and torch.sigmoid in traced_ops[1]


def test_compiled_forward_mode_ad(device):
    x, w, b = operands(device)

    def weight_tangent(f):
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(f(x, forward_ad.make_dual(w, torch.ones_like(w)), b)).tangent

    # Compiled first outside forward AD: the dual level must not reuse that graph.
    compiled = torch.compile(linear_sigmoid, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, w, b), reference_linear_sigmoid(x, w, b))
    torch.testing.assert_close(weight_tangent(compiled), weight_tangent(reference_linear_sigmoid))


def test_transform_compiled_by_inductor(device):
    x, w, b = operands(device)
    per_sample = TRANSFORMS["per-sample grads"]
    compiled = torch.compile(lambda: per_sample(linear_sigmoid, x, w, b), fullgraph=True)
    torch.testing.assert_close(compiled(), per_sample(reference_linear_sigmoid, x, w, b))
