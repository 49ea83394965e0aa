"""The plain-PyTorch reference: what fused_sigmoid must equal. Tests, benchmarks and the notebook import it from
here and nowhere else."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def reference_linear_sigmoid(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Eager ``torch.sigmoid(F.linear(input, weight, bias))``: input ``(*, in_features)``, weight
    ``(out_features, in_features)``, bias ``(out_features,)`` or None; returns ``(*, out_features)``.

    Example::

        >>> reference_linear_sigmoid(torch.zeros(4, 3), torch.ones(2, 3)).shape
        torch.Size([4, 2])
    """
    return torch.sigmoid(F.linear(input, weight, bias))


class TutorialSimpleNN(nn.Module):
    """The tutorial's ``SimpleNN`` as written there: ``nn.Linear(3, 2)`` followed by ``torch.sigmoid``,
    ``(*, 3) -> (*, 2)``.

    Example::

        >>> TutorialSimpleNN()(torch.tensor([[0.5, -0.2, 3.0]])).shape
        torch.Size([1, 2])
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = torch.sigmoid(x)
        return x
