"""Fake (meta) kernels: output shapes and dtypes without running anything, for torch.compile and torch.export.

They repeat the C++ argument checks (csrc/checks.cpp) with the same messages, so a traced call fails the way an
eager one does.
"""

from collections.abc import Sequence
from typing import Optional

import torch

_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_input_dtype(op: str, input: torch.Tensor) -> None:
    if input.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"{op}: expected input to be a floating-point tensor (torch.float32, torch.float64, torch.bfloat16 "
            f"or torch.float16), but got {input.dtype}"
        )


def _check_like_input(op: str, name: str, tensor: torch.Tensor, input: torch.Tensor) -> None:
    if tensor.dtype != input.dtype:
        raise TypeError(
            f"{op}: expected {name} to have the same dtype as input ({input.dtype}), but got {tensor.dtype}"
        )
    if tensor.device != input.device:
        raise RuntimeError(
            f"{op}: expected {name} to be on the same device as input ({input.device}), but got {tensor.device}"
        )


def _check_weight_and_features(op: str, input: torch.Tensor, weight: torch.Tensor) -> None:
    if input.dim() < 1:
        raise RuntimeError(
            f"{op}: expected input to have at least 1 dimension (*, in_features), but got a 0-d tensor"
        )
    if weight.dim() != 2:
        raise RuntimeError(
            f"{op}: expected weight to be 2-D (out_features, in_features), but got a {weight.dim()}-D tensor "
            f"of shape {list(weight.shape)}"
        )
    if weight.shape[1] != input.shape[-1]:
        raise RuntimeError(
            f"{op}: weight has {weight.shape[1]} columns but input has {input.shape[-1]} features "
            f"(input shape {list(input.shape)}, weight shape {list(weight.shape)})"
        )


def check_linear_sigmoid_args(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> None:
    op = "linear_sigmoid"
    _check_input_dtype(op, input)
    _check_like_input(op, "weight", weight, input)
    if bias is not None:
        _check_like_input(op, "bias", bias, input)
    _check_weight_and_features(op, input, weight)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(
            f"{op}: expected bias of shape [{weight.shape[0]}] (out_features), but got shape {list(bias.shape)}"
        )


def check_linear_sigmoid_backward_args(
    grad_output: torch.Tensor, output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor
) -> None:
    op = "linear_sigmoid_backward"
    _check_input_dtype(op, input)
    _check_like_input(op, "weight", weight, input)
    _check_like_input(op, "output", output, input)
    _check_like_input(op, "grad_output", grad_output, input)
    _check_weight_and_features(op, input, weight)
    expected = [*input.shape[:-1], weight.shape[0]]
    if list(output.shape) != expected:
        raise RuntimeError(
            f"{op}: expected output of shape {expected} (input's leading dims, out_features), but got "
            f"{list(output.shape)}"
        )
    if grad_output.shape != output.shape:
        raise RuntimeError(
            f"{op}: expected grad_output of the output's shape {list(output.shape)}, but got "
            f"{list(grad_output.shape)}"
        )


@torch.library.register_fake("fused_sigmoid::linear_sigmoid")
def _linear_sigmoid_fake(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    check_linear_sigmoid_args(input, weight, bias)
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("fused_sigmoid::linear_sigmoid_backward")
def _linear_sigmoid_backward_fake(
    grad_output: torch.Tensor,
    output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    output_mask: Sequence[bool],
):
    check_linear_sigmoid_backward_args(grad_output, output, input, weight)
    grad_input = input.new_empty(input.shape) if output_mask[0] else None
    grad_weight = weight.new_empty(weight.shape) if output_mask[1] else None
    grad_bias = weight.new_empty((weight.shape[0],)) if output_mask[2] else None
    return grad_input, grad_weight, grad_bias
