"""The batching rule of ``torch.ops.fused_sigmoid.linear_sigmoid`` under ``torch.func.vmap``.

Without one, vmap runs the op once per batch element, with a warning. Over a batch of inputs for one layer, the
common case (per-sample gradients, Jacobians), the batch is one more leading dimension of the input: one fused call
serves it. Over a batch of weights or biases (an ensemble of layers), one batched product and eager's sigmoid do.
"""

from typing import Any, Optional

import torch


def _batch_first(tensor: torch.Tensor, dim: Optional[int], size: int) -> torch.Tensor:
    """``tensor`` with its vmapped dimension first, or expanded to ``size`` along a new first one."""
    return tensor.movedim(dim, 0) if dim is not None else tensor.expand(size, *tensor.shape)


@torch.library.register_vmap("fused_sigmoid::linear_sigmoid")
def _linear_sigmoid_vmap(
    info: Any,
    in_dims: tuple[Optional[int], Optional[int], Optional[int]],
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
) -> tuple[torch.Tensor, int]:
    input_dim, weight_dim, bias_dim = in_dims
    if weight_dim is None and bias_dim is None:
        return torch.ops.fused_sigmoid.linear_sigmoid(_batch_first(input, input_dim, info.batch_size), weight, bias), 0
    inputs = _batch_first(input, input_dim, info.batch_size)
    weights = _batch_first(weight, weight_dim, info.batch_size)
    z = torch.einsum("b...k,bmk->b...m", inputs, weights)
    if bias is not None:
        biases = _batch_first(bias, bias_dim, info.batch_size)
        z = z + biases.reshape(info.batch_size, *([1] * (z.dim() - 2)), -1)
    return torch.sigmoid(z), 0
