"""``FusedLinearSigmoid``, the drop-in for ``nn.Linear`` followed by ``torch.sigmoid``, and the tutorial's model
built on it."""

from typing import Optional

import torch
from torch import nn

from fused_sigmoid.functional import linear_sigmoid


class FusedLinearSigmoid(nn.Module):
    """``y = sigmoid(x @ weight.T + bias)`` as one layer: the drop-in for ``nn.Linear`` + ``torch.sigmoid``.

    Same constructor, parameters, initialisation (the same seed draws the same numbers as ``nn.Linear``) and
    state_dict keys as ``nn.Linear``. It is deliberately not a subclass of ``nn.Linear``: tools that swap every
    ``nn.Linear`` by type (dynamic quantisation, adapters) must not silently drop the sigmoid.

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``.

    Example::

        >>> layer = FusedLinearSigmoid(3, 2)
        >>> layer(torch.randn(8, 3)).shape
        torch.Size([8, 2])
    """

    __constants__ = ["in_features", "out_features"]
    in_features: int
    out_features: int
    weight: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises exactly as ``nn.Linear`` does, by running its own code on these parameters."""
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear_sigmoid(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "FusedLinearSigmoid":
        """A layer computing ``torch.sigmoid(linear(x))`` that shares ``linear``'s parameters (no copy).

        Example::

            >>> linear = nn.Linear(3, 2)
            >>> FusedLinearSigmoid.from_linear(linear).weight is linear.weight
            True
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"FusedLinearSigmoid.from_linear: expected an nn.Linear, but got {type(linear).__name__}"
            )
        fused = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        fused.weight = linear.weight
        if linear.bias is not None:
            fused.bias = linear.bias
        return fused


class SimpleNN(nn.Module):
    """The tutorial's ``SimpleNN`` with ``fc1`` and ``torch.sigmoid`` fused: ``(*, 3) -> (*, 2)``.

    Its state_dict keys are the tutorial model's (``fc1.weight``, ``fc1.bias``), so weights saved from one load
    into the other.

    Example::

        >>> model = SimpleNN()
        >>> model.load_state_dict(TutorialSimpleNN().state_dict())
        <All keys matched successfully>
        >>> model(torch.tensor([[0.5, -0.2, 3.0]])).shape
        torch.Size([1, 2])
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = FusedLinearSigmoid(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(x)
