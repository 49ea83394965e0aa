"""Loads the compiled library, whose static initialisers register the ops under torch.ops.fused_sigmoid."""

import torch

try:
    from fused_sigmoid import _C  # noqa: F401
except ImportError as error:
    raise ImportError(
        f"fused_sigmoid: the compiled extension fused_sigmoid._C could not be loaded ({error}). Build it "
        "against the torch you run (here torch " + torch.__version__ + ") from the repository root with "
        "`pip install --no-build-isolation -e .`; rebuild after changing torch."
    ) from error


def has_cuda_kernels() -> bool:
    """Whether this build registered CUDA kernels (it does when built with a CUDA toolkit and CUDA torch).

    Example::

        >>> device = "cuda" if torch.cuda.is_available() and has_cuda_kernels() else "cpu"
    """
    return torch._C._dispatch_has_kernel_for_dispatch_key("fused_sigmoid::linear_sigmoid", "CUDA")
