"""``python -m fused_sigmoid demo``: the tutorial's two examples, run with our layer beside eager PyTorch."""

import torch

from fused_sigmoid import _extension
from fused_sigmoid.functional import linear_sigmoid
from fused_sigmoid.modules import FusedLinearSigmoid, SimpleNN
from fused_sigmoid.reference import TutorialSimpleNN


def build_description() -> str:
    if _extension.has_cuda_kernels():
        kind = "CPU and CUDA kernels"
    else:
        kind = "CPU only"
    return f"{kind}, {torch.ops.fused_sigmoid.cpu_capability()} CPU kernels, torch {torch.__version__}"


def _show(label: str, ours: torch.Tensor, eager: torch.Tensor) -> float:
    difference = (ours - eager).abs().max().item()
    print(f"  eager PyTorch : {eager}")
    print(f"  fused_sigmoid : {ours}")
    print(f"  largest difference ({label}): {difference:.3g}")
    return difference


def main() -> int:
    print(f"fused_sigmoid demo ({build_description()})\n")

    print("1. torch.sigmoid(torch.tensor([1.0, 2.0, 3.0, 4.0])), ours as a layer with identity weight:")
    input_tensor = torch.tensor([1.0, 2.0, 3.0, 4.0])
    first = _show("sigmoid", linear_sigmoid(input_tensor, torch.eye(4)), torch.sigmoid(input_tensor))

    print("\n2. SimpleNN on [[0.5, -0.2, 3.0]], the tutorial's model and ours with the same weights:")
    torch.manual_seed(0)
    tutorial_model = TutorialSimpleNN()
    model = SimpleNN()
    model.load_state_dict(tutorial_model.state_dict())
    input_data = torch.tensor([[0.5, -0.2, 3.0]])
    with torch.no_grad():
        second = _show("SimpleNN", model(input_data), tutorial_model(input_data))

    layer = FusedLinearSigmoid(3, 2, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    passed = torch.autograd.gradcheck(layer, (x,), raise_exception=False)
    print(f"\n3. torch.autograd.gradcheck of FusedLinearSigmoid(3, 2) in float64: {'passed' if passed else 'FAILED'}")

    ok = passed and first <= 1e-6 and second <= 1e-6
    print("\nall match eager PyTorch" if ok else "\nMISMATCH against eager PyTorch")
    return 0 if ok else 1
