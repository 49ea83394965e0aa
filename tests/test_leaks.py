"""Repeated calls leave resident memory flat: after a warm-up, 10,000 more forward and backward steps (through the
functional op, the module, and forward alone under no_grad) grow the process's resident set by less than 20 MiB.
A leak of any tensor the op makes (the smallest here is 16 KiB per call) would grow it by over 150 MiB."""

import gc
import os

import pytest
import torch

from fused_sigmoid import FusedLinearSigmoid, linear_sigmoid

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm (Linux)")

WARM_UP_STEPS = 1_000
STEPS = 10_000
ALLOWED_GROWTH = 20 * 2**20


@pytest.fixture(autouse=True)
def one_thread():
    """The loops run on one thread: the op keeps no per-thread state (no thread_local, no per-thread buffers), so
    threads add nothing to leak, and on a shared machine OpenMP's idle threads spin between the many tiny calls,
    which stretched these loops from seconds to minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def resident_bytes():
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def functional_step(rows, in_features, out_features):
    x = torch.randn(rows, in_features, requires_grad=True)
    w = torch.randn(out_features, in_features, requires_grad=True)
    b = torch.randn(out_features, requires_grad=True)
    grad_output = torch.randn(rows, out_features)

    def step():
        torch.autograd.grad(linear_sigmoid(x, w, b), (x, w, b), grad_output)
    return step


def module_step(rows, in_features, out_features):
    layer = FusedLinearSigmoid(in_features, out_features)
    x = torch.randn(rows, in_features, requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()
    return step


def no_grad_step(rows, in_features, out_features):
    layer = FusedLinearSigmoid(in_features, out_features)
    x = torch.randn(rows, in_features)

    def step():
        with torch.no_grad():
            layer(x)
    return step


@pytest.mark.parametrize("make_step, shape", [
    (functional_step, (64, 64, 64)),   # tiled
    (module_step, (64, 64, 64)),
    (no_grad_step, (64, 64, 64)),
    (functional_step, (64, 3, 2)),     # direct, exact shape: the one-pass backward and its partial sums
    (functional_step, (64, 30, 5)),    # direct, vectorised
    (functional_step, (16, 600, 300)), # GEMM (weight over 512 KiB)
], ids=["functional-tiled", "module-tiled", "no_grad-tiled", "functional-direct-exact", "functional-direct",
        "functional-gemm"])
def test_resident_memory_stays_flat(make_step, shape):
    step = make_step(*shape)
    for _ in range(WARM_UP_STEPS):
        step()
    before = resident_bytes()
    for _ in range(STEPS):
        step()
    growth = resident_bytes() - before
    assert growth < ALLOWED_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MiB over {STEPS} steps"
