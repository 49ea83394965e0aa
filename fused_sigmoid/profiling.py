"""Peak memory of a call, from the PyTorch profiler's allocation timeline (every tensor allocation, the ones made
inside C++ ops included)."""

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Largest number of tensor bytes that ``fn`` held allocated at once, beyond what existed before it ran.

    Uses the profiler's memory timeline (``torch.profiler`` with ``profile_memory``); the result of ``fn`` is
    dropped inside the measurement, so only its own allocations count.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        name = action.name
        if name == "CREATE":
            live += size
        elif name == "DESTROY":
            live -= size
        peak = max(peak, live)
    return peak


def memory_profiling_works() -> bool:
    """Whether this torch's profiler exposes the allocation timeline used above."""
    try:
        return peak_allocated_bytes(lambda: torch.empty(1024)) >= 4096
    except (AttributeError, RuntimeError):
        return False
