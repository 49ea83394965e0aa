"""Every compiled instruction-set variant of the CPU kernels, forced with ATEN_CPU_CAPABILITY in a fresh process,
agrees with eager PyTorch on each kernel path, and only those variants hold wider instructions than the baseline."""

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch

import fused_sigmoid  # noqa: F401

# Runs in the child: forward and gradients on every kernel (direct fixed and vectorised, tiled one and two vectors
# wide, GEMM), with rows that leave a partial tile; (300, 100, 3) is the direct kernel's in-place half rows.
CHILD = r"""
import sys, torch
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid
assert torch.ops.fused_sigmoid.cpu_capability() == sys.argv[1], torch.ops.fused_sigmoid.cpu_capability()
torch.manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    half = dtype in (torch.bfloat16, torch.float16)
    tolerance = dict(rtol=2e-2, atol=2e-2) if half else {}
    for rows, k, m in [(999, 3, 2), (513, 30, 1), (257, 17, 8), (403, 40, 12), (301, 70, 90), (64, 600, 300),
                       (300, 100, 3), (1001, 9, 1), (1001, 24, 1), (1001, 41, 1), (1001, 48, 1), (1001, 49, 1),
                       (501, 97, 1)]:
        # One output's rows of 2 to 6 vectors have a weight-gradient loop of their own: 9 to 97 inputs meet both
        # ends of that range and pass them at every capability's width (float 8 or 16 lanes, double 4 or 8). Their
        # rows are read in place from a wider tensor.
        x = torch.randn(rows, k + 3, dtype=dtype)[:, 1:k + 1] if m == 1 else torch.randn(rows, k, dtype=dtype)
        x.requires_grad_()
        w = torch.randn(m, k, dtype=dtype, requires_grad=True)
        b = torch.randn(m, dtype=dtype, requires_grad=True)
        ours, eager = linear_sigmoid(x, w, b), reference_linear_sigmoid(x, w, b)
        torch.testing.assert_close(ours, eager, **tolerance)
        if (k, m) in [(30, 1), (100, 3)]:  # the direct kernel's vectorised rows, in every dtype
            # A row gives the same bits wherever it falls among the four-row groups (each capability sums them
            # its own way).
            with torch.no_grad():
                assert torch.equal(linear_sigmoid(x[1:], w, b), ours[1:]), (dtype, rows, k, m)
        dy = torch.randn_like(ours)
        for a, e in zip(torch.autograd.grad(ours, (x, w, b), dy), torch.autograd.grad(eager, (x, w, b), dy)):
            torch.testing.assert_close(a, e, **({"rtol": 5e-2, "atol": 5e-1} if half else {"rtol": 1e-4, "atol": 1e-4}))
"""

MACHINE = torch.backends.cpu.get_cpu_capability()
RANK = {"DEFAULT": 0, "NO AVX": 0, "AVX2": 1, "AVX512": 2}


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2", "AVX512"])
def test_each_capability_matches_eager(capability):
    if RANK.get(MACHINE, 0) < RANK[capability]:
        pytest.skip(f"this CPU runs ATen at {MACHINE}, below {capability}")
    environment = dict(os.environ, ATEN_CPU_CAPABILITY=capability.lower())
    child = subprocess.run([sys.executable, "-c", CHILD, capability], env=environment, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]


def functions_with_wide_instructions(library):
    """Demangled names of the library's functions whose machine code holds AVX, AVX2 or AVX-512 instructions: in
    objdump's AT&T syntax their vector instructions' mnemonics start with v, and only they reach ymm and zmm
    registers; AVX-512's mask instructions (kmovw, kortestw) name k registers."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library], capture_output=True, text=True,
                             check=True, timeout=120).stdout
    wide, function = set(), None
    for line in listing.splitlines():
        header = re.match(r"[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif function and re.search(r"\tv[a-z]|%[yz]mm|%k[0-7]\b", line):
            wide.add(function)
    return wide


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the AVX2 and AVX-512 kernels are x86 only")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils) to read the library's code")
def test_wide_instructions_stay_in_the_capability_kernels():
    # Only code chosen by the CPU's capability may use AVX2 or AVX-512. Inline code that a capability file shares
    # with the rest (c10's error formatting, say) is kept once for the whole library, from whichever object the
    # linker meets first: were that the AVX-512 file's copy, the first error raised on a machine without AVX-512
    # would kill the process.
    wide = functions_with_wide_instructions(importlib.util.find_spec("fused_sigmoid._C").origin)
    assert any("::AVX512::" in name for name in wide) and any("::AVX2::" in name for name in wide), sorted(wide)[:5]
    outside = sorted(name for name in wide if not re.search(r"::(AVX2|AVX512)::", name))
    assert not outside, outside[:10]
