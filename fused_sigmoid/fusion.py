"""``fuse(model)``: swaps every ``nn.Linear`` whose only use is a sigmoid for a ``FusedLinearSigmoid``."""

import collections
import copy
import logging
from typing import NamedTuple, Union

import torch
from torch import fx, nn

from fused_sigmoid.modules import FusedLinearSigmoid

logger = logging.getLogger(__name__)

# Every spelling of the sigmoid as torch.fx records it: functions (torch.sigmoid, torch.special.expit), the method
# (x.sigmoid(), and F.sigmoid, which calls it) and the module (nn.Sigmoid).
_SIGMOID_FUNCTIONS = {torch.sigmoid: "torch.sigmoid", torch.special.expit: "torch.special.expit"}


class Replacement(NamedTuple):
    """One fusion ``fuse`` made: the qualified name of the ``nn.Linear`` and the sigmoid it absorbed, e.g.
    ``Replacement(linear='head.fc', sigmoid='torch.sigmoid')``."""

    linear: str
    sigmoid: str


def fuse(
    model: nn.Module, inplace: bool = False, report: bool = False
) -> Union[nn.Module, tuple[nn.Module, list[Replacement]]]:
    """Returns ``model`` with every ``nn.Linear`` whose only use is a sigmoid replaced by a ``FusedLinearSigmoid``.

    The fused layers share the Linear layers' parameters (no copy), and keep their names, so state_dict keys are
    unchanged. A Linear whose output has any other use (or that is called with arguments a plain Linear call
    does not have) is left alone. ``nn.Sequential`` models are rewritten in place of their layers (the sigmoid's
    slot becomes ``nn.Identity``, so indices and keys stay put); any other model is traced with ``torch.fx`` and
    the result is an ``fx.GraphModule``. Sigmoids written as ``torch.sigmoid``, ``F.sigmoid``, ``Tensor.sigmoid``
    or ``nn.Sigmoid`` are recognised.

    Args:
        model: the model to fuse.
        inplace: with ``False`` (the default) the model is deep-copied first and never changed; with ``True`` the
            returned model shares its parameters with ``model`` (and an ``nn.Sequential`` is changed itself).
        report: also return the list of ``Replacement`` made (they are logged at INFO level in any case).

    Returns:
        The fused model, or ``(fused model, replacements)`` with ``report=True``.

    Raises:
        RuntimeError: naming the model's class, when torch.fx cannot trace it (data-dependent control flow...).

    Example::

        >>> from fused_sigmoid import TutorialSimpleNN
        >>> fused, replaced = fuse(TutorialSimpleNN(), report=True)
        >>> replaced
        [Replacement(linear='fc1', sigmoid='torch.sigmoid')]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: expected model to be an nn.Module, but got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, nn.Sequential):
        replacements = _fuse_sequential(model, prefix="")
    else:
        model, replacements = _fuse_traced(model)
    for replacement in replacements:
        logger.info("fuse: %s + %s -> FusedLinearSigmoid", replacement.linear, replacement.sigmoid)
    return (model, replacements) if report else model


def _fuse_sequential(sequential: nn.Sequential, prefix: str) -> list[Replacement]:
    """Fuses adjacent (Linear, Sigmoid) pairs, recursing into nested Sequentials, without tracing."""
    replacements = []
    names = list(sequential._modules)
    for position, name in enumerate(names):
        layer = sequential._modules[name]
        if isinstance(layer, nn.Sequential):
            replacements += _fuse_sequential(layer, prefix=f"{prefix}{name}.")
            continue
        following = sequential._modules[names[position + 1]] if position + 1 < len(names) else None
        if type(layer) is nn.Linear and isinstance(following, nn.Sigmoid):
            sequential._modules[name] = FusedLinearSigmoid.from_linear(layer)
            sequential._modules[names[position + 1]] = nn.Identity()
            replacements.append(Replacement(f"{prefix}{name}", f"{prefix}{names[position + 1]} (nn.Sigmoid)"))
    return replacements


def _fuse_traced(model: nn.Module) -> tuple[fx.GraphModule, list[Replacement]]:
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:
        raise RuntimeError(
            f"fuse: torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: {error}). Fuse its "
            f"traceable submodules instead (fuse(model.part, inplace=True)), or use FusedLinearSigmoid directly."
        ) from error
    pairs = []
    for node in traced.graph.nodes:
        if _plain_linear_call(traced, node) is not None and len(node.users) == 1:
            (user,) = node.users
            sigmoid = _sigmoid_description(traced, user, node)
            if sigmoid is not None:
                pairs.append((node, user, sigmoid))
    fused_names = _install_fused_layers(traced, [linear_node for linear_node, _, _ in pairs])
    for linear_node, sigmoid_node, _ in pairs:
        with traced.graph.inserting_after(sigmoid_node):
            fused_node = traced.graph.call_module(fused_names[linear_node.target], linear_node.args)
        sigmoid_node.replace_all_uses_with(fused_node)
        traced.graph.erase_node(sigmoid_node)
        traced.graph.erase_node(linear_node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced, [Replacement(linear_node.target, sigmoid) for linear_node, _, sigmoid in pairs]


def _install_fused_layers(traced: fx.GraphModule, fused_calls: list[fx.Node]) -> dict[str, str]:
    """Adds one FusedLinearSigmoid per fused Linear and returns their names. It takes the Linear's own name when
    every call of that Linear is fused (so state_dict keys do not change), and a name beside it, sharing the
    Linear's parameters, when the Linear is still called unfused elsewhere."""
    fused_count = collections.Counter(node.target for node in fused_calls)
    call_count = collections.Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    names = {}
    for linear_name, count in fused_count.items():
        fused = FusedLinearSigmoid.from_linear(traced.get_submodule(linear_name))
        name = linear_name
        if count < call_count[linear_name]:
            name = f"{linear_name}_sigmoid"
            while _has_submodule(traced, name):
                name += "_"
        traced.add_submodule(name, fused)
        names[linear_name] = name
    return names


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _plain_linear_call(traced: fx.GraphModule, node: fx.Node):
    """The nn.Linear a node calls with one input and nothing else, or None. Subclasses are left alone: they may
    change what forward computes."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = traced.get_submodule(node.target)
    return module if type(module) is nn.Linear else None


def _sigmoid_description(traced: fx.GraphModule, node: fx.Node, argument: fx.Node):
    """How ``node`` applies a sigmoid to ``argument`` and to nothing else, or None when it does something else."""
    if node.args != (argument,) or node.kwargs:
        return None
    if node.op == "call_function" and node.target in _SIGMOID_FUNCTIONS:
        return _SIGMOID_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target == "sigmoid":
        return "Tensor.sigmoid"
    if node.op == "call_module" and isinstance(traced.get_submodule(node.target), nn.Sigmoid):
        return f"{node.target} (nn.Sigmoid)"
    return None
