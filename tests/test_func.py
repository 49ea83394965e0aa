"""torch.func transforms (grad, jacrev, jacfwd, hessian, jvp, vmap, per-sample gradients) and forward-mode AD
through linear_sigmoid and the module, against the same transforms of eager PyTorch, in float64."""

from contextlib import contextmanager

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

from fused_sigmoid import FusedLinearSigmoid, linear_sigmoid, reference_linear_sigmoid


def operands(device, leading=(5,), in_features=3, out_features=2):
    generator = torch.Generator().manual_seed(0)
    shapes = ((*leading, in_features), (out_features, in_features), (out_features,))
    return [torch.randn(shape, generator=generator, dtype=torch.float64).to(device) for shape in shapes]


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
