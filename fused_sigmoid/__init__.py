"""fused_sigmoid: ``sigmoid(x @ W.T + b)`` as one fused C++/CUDA op with a hand-written backward.

``linear_sigmoid`` is the functional form, ``FusedLinearSigmoid`` the drop-in for ``nn.Linear`` followed by
``torch.sigmoid``; both run ``torch.ops.fused_sigmoid.linear_sigmoid``. ``fuse(model)`` puts the fused
layer into an existing model.
"""

from fused_sigmoid._extension import has_cuda_kernels
from fused_sigmoid.functional import LinearSigmoidFunction, linear_sigmoid
from fused_sigmoid.fusion import Replacement, fuse
from fused_sigmoid.modules import FusedLinearSigmoid, SimpleNN
from fused_sigmoid.reference import TutorialSimpleNN, reference_linear_sigmoid

__version__ = "0.1.0"

__all__ = [
    "FusedLinearSigmoid",
    "LinearSigmoidFunction",
    "Replacement",
    "SimpleNN",
    "TutorialSimpleNN",
    "fuse",
    "has_cuda_kernels",
    "linear_sigmoid",
    "reference_linear_sigmoid",
]
