"""Batching rules of both ops under ``torch.func.vmap``.

Without them, vmap runs an op once per batch element, with a warning. The forward over a batch of inputs for one
layer, the common case (per-sample gradients, Jacobians), treats the batch as one more leading dimension: one fused
call serves it. A batch of weights or biases (an ensemble of layers), and the backward (vmapped by jacrev, batched
gradients and batched-gradient checks), run as batched products in opmath, rounded once, after the op's own
argument checks on one example, so that they refuse what the op refuses, with its messages.
"""

from typing import Any, Optional

import torch

from fused_sigmoid._fake import check_linear_sigmoid_args, check_linear_sigmoid_backward_args

_linear_sigmoid = torch.ops.fused_sigmoid.linear_sigmoid


def _batch_first(tensor: Optional[torch.Tensor], dim: Optional[int], size: int) -> Optional[torch.Tensor]:
    """``tensor`` with its vmapped dimension first, or expanded to ``size`` along a new first one."""
    if tensor is None:
        return None
    return tensor.movedim(dim, 0) if dim is not None else tensor.expand(size, *tensor.shape)


def _examples(batched: list[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
    """The first example of each batch-first tensor, as one call of the op would see it; shape-only stand-ins
    (meta tensors) for an empty batch."""
    if all(t is None or t.shape[0] > 0 for t in batched):
        return [None if t is None else t[0] for t in batched]
    return [None if t is None else torch.empty(t.shape[1:], dtype=t.dtype, device="meta") for t in batched]


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype the op computes in: float for the half types, as the kernels do."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _autocast(tensors: list[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
    """The op's arguments as its autocast kernel casts them (csrc/autocast.cpp): floating tensors other than
    float64, on the autocast device, to the autocast dtype."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        eligible = t is not None and t.is_floating_point() and t.dtype != torch.float64
        return t.to(dtype) if eligible and t.device.type == device_type else t

    return [cast(t) for t in tensors]


@torch.library.register_vmap("fused_sigmoid::linear_sigmoid")
def _linear_sigmoid_vmap(
    info: Any,
    in_dims: tuple[Optional[int], Optional[int], Optional[int]],
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, int]:
    # A call that leaves bias out (its schema default) has no in_dim for it.
    in_dims = (*in_dims, None)[:3]
    input_dim, weight_dim, bias_dim = in_dims
    size = info.batch_size
    if weight_dim is None and bias_dim is None:
        return _linear_sigmoid(_batch_first(input, input_dim, size), weight, bias), 0
    input, weight, bias = _autocast([input, weight, bias])
    inputs, weights, biases = (_batch_first(t, d, size) for t, d in zip((input, weight, bias), in_dims))
    check_linear_sigmoid_args(*_examples([inputs, weights, biases]))
    opmath = _opmath(input.dtype)
    with torch.autocast(input.device.type, enabled=False):
        z = torch.einsum("b...k,bmk->b...m", inputs.to(opmath), weights.to(opmath))
        if biases is not None:
            z = z + biases.to(opmath).reshape(size, *([1] * (z.dim() - 2)), -1)
        return torch.sigmoid(z).to(input.dtype), 0


@torch.library.register_vmap("fused_sigmoid::linear_sigmoid_backward")
def _linear_sigmoid_backward_vmap(
    info: Any,
    in_dims: tuple[Optional[int], ...],
    grad_output: torch.Tensor,
    output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    output_mask: list[bool],
) -> tuple[tuple[Optional[torch.Tensor], ...], tuple[Optional[int], ...]]:
    size = info.batch_size
    dy, y, x, w = (_batch_first(t, d, size) for t, d in zip((grad_output, output, input, weight), in_dims))
    check_linear_sigmoid_backward_args(*_examples([dy, y, x, w]))
    dtype, opmath = input.dtype, _opmath(input.dtype)
    out_features, in_features = w.shape[1:]
    rows = x.shape[1:-1].numel()
    y_opmath = y.to(opmath)
    dz = (dy.to(opmath) * (1 - y_opmath) * y_opmath).reshape(size, rows, out_features)
    x_rows = x.reshape(size, rows, in_features)
    grad_input = (dz @ w.to(opmath)).reshape(x.shape).to(dtype) if output_mask[0] else None
    grad_weight = (dz.transpose(1, 2) @ x_rows.to(opmath)).to(dtype) if output_mask[1] else None
    # As the kernels do: the bias gradient is dz's sum in double, rounded once.
    grad_bias = dz.double().sum(1).to(dtype) if output_mask[2] else None
    gradients = (grad_input, grad_weight, grad_bias)
    return gradients, tuple(None if g is None else 0 for g in gradients)
