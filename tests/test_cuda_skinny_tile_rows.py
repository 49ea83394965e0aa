"""FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS, read once per process, bounds the rows of the skinny CUDA backward's tiles
(in the kernel whose threads own gradient elements; the per-row kernel of the smallest shapes takes the largest tiles):
256 by default, 512 or 1024 so that benchmarks/gpu_check.sh can time larger tiles from one build. Every setting gives
gradients within twice eager's error against float64 on skinny shapes whose tiles it changes, the largest one moves
the float32 weight gradient's bits (so the variable is read), and any other value is an error naming the variable.
Each setting runs in a fresh process. (tests/test_skinny_kernels_on_cpu.py runs the kernel with both the default and
the largest bound on every machine.)"""

from pathlib import Path

import pytest

from conftest import CUDA_REASON, cuda_ready, run_python

pytestmark = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

VARIABLE = "FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS"

# Runs in the child: gradients of shapes whose rows are narrow enough for tiles past 256 rows, over several chunks of
# 2048 rows, within twice eager's error against float64 (y is rounded before dz is formed from it, by eager as by us).
# At the largest bound float32 5 -> 1 holds 584 rows a tile, bfloat16 5 -> 2 904 and float64 3 -> 2 288 (too many
# gradient elements, or too many inputs or float64, for the per-row kernel); 30 -> 1 holds 128 at every bound. Prints
# a digest of the float32 5 -> 1 weight gradient's bits, which the tiles' partial sums set.
CHILD = r"""
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import torch
from conftest import assert_within_twice_eager_error, leaves
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid
torch.manual_seed(0)
for dtype, rows, k, m in [(torch.float32, 100003, 5, 1), (torch.bfloat16, 20011, 5, 2), (torch.float64, 20011, 3, 2),
                          (torch.float32, 4099, 30, 1)]:
    x, w, b = leaves((rows,), k, m, dtype, "cuda")
    grad_output = torch.randn(rows, m, device=x.device, dtype=dtype)
    ours, eager = (torch.autograd.grad(f(x, w, b), (x, w, b), grad_output)
                   for f in (linear_sigmoid, reference_linear_sigmoid))
    doubles = [t.detach().double().requires_grad_() for t in (x, w, b)]
    exact = torch.autograd.grad(reference_linear_sigmoid(*doubles), doubles, grad_output.double())
    for name, got, yardstick, want in zip(("grad_input", "grad_weight", "grad_bias"), ours, eager, exact):
        assert_within_twice_eager_error(got, yardstick, want, f"{name} {dtype} {rows}x{k}->{m}")
    if (dtype, k, m) == (torch.float32, 5, 1):
        print("digest", hashlib.sha256(ours[1].cpu().numpy().tobytes()).hexdigest())
print("gradients match")
"""


def run_child(settings):
    return run_python(CHILD, str(Path(__file__).parent), settings=settings, unset=(VARIABLE,))


def test_every_tile_bound_gives_the_gradients_and_the_bound_takes_effect():
    digests = {}
    for rows in (None, "512", "1024"):
        child = run_child({} if rows is None else {VARIABLE: rows})
        assert child.returncode == 0 and "gradients match" in child.stdout, \
            f"{rows}: " + child.stdout[-3000:] + child.stderr[-3000:]
        digests[rows] = next(line for line in child.stdout.splitlines() if line.startswith("digest"))
    # Larger tiles sum each weight element's rows in other float partials: the bits move, so the variable was read.
    assert digests[None] != digests["1024"], digests


def test_invalid_tile_bound_is_an_error_naming_the_variable():
    child = run_child({VARIABLE: "300"})
    assert child.returncode != 0
    assert f"{VARIABLE} must be 256, 512 or 1024, got '300'" in child.stderr, child.stderr[-3000:]
