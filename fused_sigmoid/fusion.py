"""``fuse(model)``: swaps every ``nn.Linear`` whose only use is a sigmoid for a ``FusedLinearSigmoid``."""

import collections
import copy
import logging
from typing import NamedTuple, Optional, Union

import torch
from torch import fx, nn

from fused_sigmoid.functional import linear_sigmoid
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

    The fused layers share the Linear layers' parameters (no copy) and keep their names. Left alone: a Linear whose
    output has any other use, one called with more than its input, subclasses of ``nn.Linear`` and ``nn.Sigmoid``
    (their forward may differ), and layers with hooks (weight_norm, spectral_norm, user hooks: fusing would skip
    them). Sigmoids written as ``torch.sigmoid``, ``F.sigmoid``, ``Tensor.sigmoid``, ``torch.special.expit`` or
    ``nn.Sigmoid`` are recognised.

    A plain ``nn.Sequential`` is rewritten slot by slot, without tracing: the Linear's slot gets the fused layer and
    the sigmoid's becomes ``nn.Identity``, so indices and state_dict keys stay put; other modules inside it are
    fused as below. Any other model is traced with ``torch.fx`` and comes back as an ``fx.GraphModule`` whose
    state_dict keys are the original's for everything its forward uses (fx keeps nothing else: submodules and
    buffers that forward never touches, and methods other than forward, are not carried over). A Linear that is
    also called unfused elsewhere keeps its module, and its fused call uses the same parameters directly.

    Args:
        model: the model to fuse.
        inplace: with ``False`` (the default) the model is deep-copied first and never changed; with ``True`` the
            returned model shares its parameters with ``model`` (and a plain ``nn.Sequential`` is changed itself).
        report: also return the list of ``Replacement`` made (they are logged at INFO level in any case).

    Returns:
        The fused model, or ``(fused model, replacements)`` with ``report=True``.

    Raises:
        RuntimeError: naming the module, when torch.fx cannot trace it (data-dependent control flow...).

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
    model, replacements = _fuse_module(model, prefix="")
    for replacement in replacements:
        logger.info("fuse: %s + %s -> FusedLinearSigmoid", replacement.linear, replacement.sigmoid)
    return (model, replacements) if report else model


def _fuse_module(module: nn.Module, prefix: str) -> tuple[nn.Module, list[Replacement]]:
    if type(module) is nn.Sequential:
        return module, _fuse_sequential(module, prefix)
    if not any(_is_plain(layer, nn.Linear) for layer in module.modules()):
        return module, []
    return _fuse_traced(module, prefix)


def _fuse_sequential(sequential: nn.Sequential, prefix: str) -> list[Replacement]:
    """Fuses adjacent (Linear, Sigmoid) slots and, one by one, the modules in the other slots."""
    replacements = []
    names = list(sequential._modules)
    for position, name in enumerate(names):
        layer = sequential._modules[name]
        following = sequential._modules[names[position + 1]] if position + 1 < len(names) else None
        if _is_plain(layer, nn.Linear) and following is not None and _is_plain(following, nn.Sigmoid):
            sequential._modules[name] = FusedLinearSigmoid.from_linear(layer)
            sequential._modules[names[position + 1]] = nn.Identity()
            replacements.append(Replacement(f"{prefix}{name}", f"{prefix}{names[position + 1]} (nn.Sigmoid)"))
        elif layer is not None and not isinstance(layer, nn.Linear):  # a lone Linear has nothing to fuse with
            sequential._modules[name], inner = _fuse_module(layer, prefix=f"{prefix}{name}.")
            replacements += inner
    return replacements


def _fuse_traced(model: nn.Module, prefix: str) -> tuple[fx.GraphModule, list[Replacement]]:
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:
        where = f"{type(model).__name__} at {prefix[:-1]}" if prefix else type(model).__name__
        raise RuntimeError(
            f"fuse: torch.fx cannot trace {where} ({type(error).__name__}: {error}). Fuse its traceable submodules "
            "instead (fuse(model.part, inplace=True)), or use FusedLinearSigmoid directly."
        ) from error
    pairs = []
    for node in traced.graph.nodes:
        if _plain_linear_call(traced, node) is not None and len(node.users) == 1:
            (user,) = node.users
            sigmoid = _sigmoid_description(traced, user, node)
            if sigmoid is not None:
                pairs.append((node, user, sigmoid))
    calls = collections.Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    fused_calls = collections.Counter(linear_node.target for linear_node, _, _ in pairs)
    # Linear layers whose every call is fused: the fused layer takes the Linear's place and name.
    replaced_modules = {target for target, count in fused_calls.items() if count == calls[target]}
    for target in replaced_modules:
        traced.add_submodule(target, FusedLinearSigmoid.from_linear(traced.get_submodule(target)))
    for linear_node, sigmoid_node, _ in pairs:
        # Before the Linear's own call, where its input is ready and nothing has changed it in place since.
        with traced.graph.inserting_before(linear_node):
            fused_node = _fused_call(traced, linear_node, linear_node.target in replaced_modules)
        sigmoid_node.replace_all_uses_with(fused_node)
        traced.graph.erase_node(sigmoid_node)
        traced.graph.erase_node(linear_node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced, [Replacement(prefix + linear_node.target, sigmoid) for linear_node, _, sigmoid in pairs]


def _fused_call(traced: fx.GraphModule, linear_node: fx.Node, whole_module: bool) -> fx.Node:
    """The fused layer's call where the module was replaced; otherwise the fused op on the Linear's own
    parameters, read in place, so that the model gains no module and no state_dict key."""
    if whole_module:
        return traced.graph.call_module(linear_node.target, linear_node.args)
    linear = traced.get_submodule(linear_node.target)
    weight = traced.graph.get_attr(f"{linear_node.target}.weight")
    bias = traced.graph.get_attr(f"{linear_node.target}.bias") if linear.bias is not None else None
    return traced.graph.call_function(linear_sigmoid, (linear_node.args[0], weight, bias))


def _is_plain(module: Optional[nn.Module], kind: type) -> bool:
    """Exactly ``kind`` (a subclass may compute something else), with plain parameters and no hooks of any kind
    (weight_norm and spectral_norm are hooks too): fusing would bypass them."""
    if type(module) is not kind:
        return False
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
             getattr(module, "_backward_pre_hooks", {}))
    plain_parameters = all(isinstance(getattr(module, name, None), (nn.Parameter, type(None)))
                           for name in ("weight", "bias"))
    return not any(hooks) and plain_parameters


def _plain_linear_call(traced: fx.GraphModule, node: fx.Node) -> Optional[nn.Linear]:
    """The plain nn.Linear a node calls with one input and nothing else, or None."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = traced.get_submodule(node.target)
    return module if _is_plain(module, nn.Linear) else None


def _sigmoid_description(traced: fx.GraphModule, node: fx.Node, argument: fx.Node) -> Optional[str]:
    """How ``node`` applies a sigmoid to ``argument`` and to nothing else, or None when it does something else."""
    if node.args != (argument,) or node.kwargs:
        return None
    if node.op == "call_function" and node.target in _SIGMOID_FUNCTIONS:
        return _SIGMOID_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target == "sigmoid":
        return "Tensor.sigmoid"
    if node.op == "call_module" and _is_plain(traced.get_submodule(node.target), nn.Sigmoid):
        return f"{node.target} (nn.Sigmoid)"
    return None
