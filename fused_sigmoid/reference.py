"""The plain-PyTorch reference: what fused_sigmoid must equal. Tests, benchmarks and the notebook import it from
here and nowhere else."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def reference_linear_sigmoid(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Eager ``torch.sigmoid(F.linear(input, weight, bias))``."""
    return torch.sigmoid(F.linear(input, weight, bias))


class TutorialSimpleNN(nn.Module):
    """The tutorial's ``SimpleNN`` as written there: ``nn.Linear(3, 2)`` followed by ``torch.sigmoid``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = torch.sigmoid(x)
        return x
