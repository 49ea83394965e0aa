"""The functional form and its autograd: ``linear_sigmoid`` and ``LinearSigmoidFunction``."""

from typing import Any, Optional

import torch
import torch.autograd.forward_ad as forward_ad

from fused_sigmoid import _extension, _fake, _vmap  # noqa: F401  (registers the ops, fake kernels, batching rule)

_forward_op = torch.ops.fused_sigmoid.linear_sigmoid
_backward_op = torch.ops.fused_sigmoid.linear_sigmoid_backward


def _differentiable_backward(
    grad_output: torch.Tensor,
    output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    needs: tuple[bool, bool, bool],
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The backward in differentiable torch operations, for create_graph=True (double backward). ``output``
    carries our forward's graph, so second derivatives flow through the fused op again."""
    grad_z = grad_output * (1 - output) * output
    out_features, in_features = weight.shape
    # The row count spelled out: reshape(-1, ...) cannot infer it when a feature count is 0.
    rows = input.shape[:-1].numel()
    grad_z_rows = grad_z.reshape(rows, out_features)
    grad_input = grad_z @ weight if needs[0] else None
    grad_weight = grad_z_rows.t() @ input.reshape(rows, in_features) if needs[1] else None
    grad_bias = grad_z_rows.sum(0) if needs[2] else None
    return grad_input, grad_weight, grad_bias


def _in_output_dtype(*tensors: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], ...]:
    """``tensors`` with the last one's dtype: under autocast the op ran in a lower precision than its arguments'."""
    dtype = tensors[-1].dtype
    return tuple(t.to(dtype) if t is not None and t.dtype != dtype else t for t in tensors)


class LinearSigmoidFunction(torch.autograd.Function):
    """``sigmoid(input @ weight.T + bias)`` with a hand-written backward.

    Saves input, weight and the output ``y`` (never the pre-activation): ``dz = dy * y * (1 - y)``,
    ``grad_input = dz @ weight``, ``grad_weight = dz.T @ input``, ``grad_bias = dz.sum(0)``, each computed only
    when ``ctx.needs_input_grad`` asks for it. Modifying the output in place before backward raises, as in eager.
    Under ``torch.func.vmap`` forward and backward run op by op (``generate_vmap_rule``). Under autocast the op runs
    in the autocast dtype; the backward then works in the output's dtype, as eager's casts make ``F.linear``'s do.
    Forward-mode AD is ``linear_sigmoid``'s (a jvp here would keep torch.compile from tracing this Function).

    Example::

        >>> x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        >>> w = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        >>> torch.autograd.gradcheck(LinearSigmoidFunction.apply, (x, w, None))
        True
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return _forward_op(input, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        input, weight, _ = inputs
        ctx.save_for_backward(input, weight, output)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        # Autograd casts each gradient back to its input's dtype.
        input, weight, output = _in_output_dtype(*ctx.saved_tensors)
        needs = tuple(ctx.needs_input_grad)
        # As in csrc/autograd.cpp: differentiable ops for create_graph=True and for batched gradients (which
        # torch.compile never passes; it cannot trace the check).
        batched = not torch.compiler.is_compiling() and torch._C._functorch.is_legacy_batchedtensor(grad_output)
        if torch.is_grad_enabled() or batched:
            return _differentiable_backward(grad_output, output, input, weight, needs)
        return _backward_op(grad_output, output, input, weight, list(needs))


class _LinearSigmoidWithJvp(LinearSigmoidFunction):
    """LinearSigmoidFunction with a forward-mode derivative, ``dy = (dx @ weight.T + input @ dweight.T + dbias) * y *
    (1 - y)``, for ``linear_sigmoid`` inside torch.func transforms and forward-AD levels, which the op's C++
    autograd cannot serve."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        LinearSigmoidFunction.setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output)

    @staticmethod
    def jvp(
        ctx: Any,
        input_tangent: Optional[torch.Tensor],
        weight_tangent: Optional[torch.Tensor],
        bias_tangent: Optional[torch.Tensor],
    ) -> torch.Tensor:
        input, weight, output = _in_output_dtype(*ctx.saved_tensors)
        input_tangent, weight_tangent, bias_tangent = _in_output_dtype(input_tangent, weight_tangent, bias_tangent,
                                                                       output)[:3]
        tangent_z = torch.zeros_like(output)
        if input_tangent is not None:
            tangent_z = tangent_z + torch.nn.functional.linear(input_tangent, weight)
        if weight_tangent is not None:
            tangent_z = tangent_z + torch.nn.functional.linear(input, weight_tangent)
        if bias_tangent is not None:
            tangent_z = tangent_z + bias_tangent
        return tangent_z * output * (1 - output)


def linear_sigmoid(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``torch.sigmoid(F.linear(input, weight, bias))`` in one fused op.

    Args:
        input: ``(*, in_features)``, float32, float64, bfloat16 or float16.
        weight: ``(out_features, in_features)``, same dtype and device as input.
        bias: ``(out_features,)`` or None.

    Returns:
        ``(*, out_features)``, contiguous, in input's dtype.

    Example::

        >>> linear_sigmoid(torch.tensor([[0.5, -0.2, 3.0]]), torch.ones(2, 3), torch.zeros(2))
        tensor([[0.9644, 0.9644]])
    """
    if torch.compiler.is_compiling() and _inside_a_transform():
        # torch.compile cannot trace the op inside gradient transforms or forward AD (its fake-tensor pass reaches
        # the op's C++ autograd, which functorch refuses, also from inside a Python Function), so it traces the
        # definition instead, which Inductor fuses as it does the unfused layer. Inside vmap too: tracing sees only
        # the innermost transform, and a gradient transform may lie beneath it. Outside transforms the same
        # compiled code keeps the op.
        _raise_for_unsupported_arguments(input, weight, bias)
        if not torch.is_autocast_enabled(input.device.type):
            # Under autocast the dtypes may differ until F.linear casts them, as the op's autocast kernel does.
            _fake.check_linear_sigmoid_args(input, weight, bias)
        return torch.sigmoid(torch.nn.functional.linear(input, weight, bias))
    try:
        return _forward_op(input, weight, bias)
    except (TypeError, RuntimeError, NotImplementedError):
        # Arguments are checked only once the op refuses them, so that a valid call (a one-row one takes a few
        # microseconds) pays nothing for it: the dispatcher's own errors for these cases do not name the argument.
        _raise_for_unsupported_arguments(input, weight, bias)
        if not _inside_a_transform():
            raise
    # The op's autograd is C++, which refuses torch.func transforms and forward-mode tangents before computing
    # anything; there the Python Function serves (outside the except block, so that its own errors stand alone).
    return _LinearSigmoidWithJvp.apply(input, weight, bias)


# TorchScript (torch.jit.script of the module, of the tutorial's model, or of code calling linear_sigmoid) compiles a
# call of linear_sigmoid as a call of the op, as it does PyTorch's own functions (torch.jit._builtins): TorchScript
# cannot parse its Python body (a try block), and the op is all a scripted program needs (its autograd and argument
# checks are in C++).
torch.jit._builtins._register_builtin(linear_sigmoid, "fused_sigmoid::linear_sigmoid")


def _inside_a_transform() -> bool:
    """Whether a torch.func transform or a forward-mode AD level is active.

    Spelled so that torch.compile reads it right: Dynamo wraps the interpreter stack's top in an object whose
    ``is None`` is never true, but whose type is the real one's (and it guards the compiled code on the stack)."""
    no_transform = type(torch._C._functorch.peek_interpreter_stack()) is type(None)
    return not no_transform or forward_ad._current_level >= 0


def _raise_for_unsupported_arguments(input: Any, weight: Any, bias: Any) -> None:
    """Raises what linear_sigmoid users should read for an argument that is no tensor, or no dense one."""
    for name, value in (("input", input), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            message = f"linear_sigmoid: expected {name} to be a Tensor, but got {type(value).__name__}"
            raise TypeError(message) from None
    if bias is not None and not isinstance(bias, torch.Tensor):
        message = f"linear_sigmoid: expected bias to be a Tensor or None, but got {type(bias).__name__}"
        raise TypeError(message) from None
    # The op has kernels for dense tensors only.
    for name, value in (("input", input), ("weight", weight), ("bias", bias)):
        if value is not None and value.layout != torch.strided:
            raise RuntimeError(
                f"linear_sigmoid: expected {name} to be a dense (strided) tensor, but got {value.layout}"
            ) from None
