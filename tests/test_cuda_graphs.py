"""CUDA graphs: a training step of the layer (forward and all three gradients) captured in a torch.cuda.CUDAGraph
replays on new data with the same step's eager values (its bits, on the skinny kernels) and eager PyTorch's (in
bfloat16, an error against float64 at most twice eager's), on every CUDA path (the skinny kernels, the tensor-core GEMM
where the build has CUTLASS, cuBLAS);
torch.compile(mode="reduce-overhead"), which captures graphs itself, gives eager's values. Capture forbids
synchronising the host, allocating outside the graph's pool and launching on another stream: a kernel that did any of
these fails here."""

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import CUDA_REASON, assert_within_twice_eager_error, cuda_ready
from fused_sigmoid import FusedLinearSigmoid, reference_linear_sigmoid

pytestmark = pytest.mark.skipif(not cuda_ready, reason=CUDA_REASON)

# (rows, in_features, out_features): skinny; the GEMM path within the CUTLASS bound (K, M <= 64); beyond it.
SHAPES = [(4099, 3, 2), (1000, 30, 1), (512, 64, 64), (300, 200, 100)]


def training_step(layer, x, grad_output, forward=None):
    """(y, grad_input, grad_weight, grad_bias) of the layer, or of forward(x, weight, bias) on its parameters."""
    y = layer(x) if forward is None else forward(x, layer.weight, layer.bias)
    return (y, *torch.autograd.grad(y, (x, layer.weight, layer.bias), grad_output))


def inputs(rows, in_features, out_features, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=generator, dtype=dtype).cuda()
    grad_output = torch.randn(rows, out_features, generator=generator, dtype=dtype).cuda()
    return x, grad_output


def float64_step(layer, x, grad_output):
    """The training step in float64 on eager PyTorch: the exact values the bfloat16 steps are held to."""
    leaves = [t.detach().double().requires_grad_() for t in (x, layer.weight, layer.bias)]
    y = reference_linear_sigmoid(*leaves)
    return (y, *torch.autograd.grad(y, leaves, grad_output.double()))


# bfloat16 takes the tensor-core GEMM at (512, 64, 64) where the build has CUTLASS; float32 and float64 take cuBLAS
# (TF32 is off). The bfloat16 tolerance is for the replay against the same step run eagerly (cuBLAS may pick another
# algorithm inside a capture); against eager PyTorch, bfloat16 takes the reduced-precision rule instead.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_captured_training_step_replays_on_new_data(shape, dtype):
    torch.manual_seed(0)
    skinny = shape[1] <= 64 and shape[2] <= 8
    layer = FusedLinearSigmoid(shape[1], shape[2], device="cuda", dtype=dtype)
    static_x, static_grad_output = inputs(*shape, dtype, seed=0)
    static_x.requires_grad_()
    # Warm-up on a side stream, as capture requires: first calls may initialise cuBLAS and cache launch settings.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            training_step(layer, static_x, static_grad_output)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = training_step(layer, static_x, static_grad_output)

    # bfloat16 values of both draws, (replayed, eager PyTorch's, float64), per output of the step.
    reduced_precision = [([], [], []) for _ in captured]
    for seed in (1, 2):
        x, grad_output = inputs(*shape, dtype, seed)
        with torch.no_grad():
            static_x.copy_(x)
            static_grad_output.copy_(grad_output)
        graph.replay()
        torch.cuda.synchronize()
        x.requires_grad_()
        eager_ours = training_step(layer, x, grad_output)
        for replayed, ours in zip(captured, eager_ours):
            # The skinny kernels are ours, so the replay must repeat the eager step's bits; cuBLAS may pick another
            # algorithm inside a capture.
            if skinny:
                assert torch.equal(replayed, ours)
            else:
                torch.testing.assert_close(replayed, ours, **TOLERANCES[dtype])
        reference = training_step(layer, x, grad_output, reference_linear_sigmoid)
        if dtype != torch.bfloat16:
            for replayed, expected in zip(captured, reference):
                torch.testing.assert_close(replayed, expected, **TOLERANCES[dtype])
            continue
        # Our GEMM rounds y once, eager rounds the pre-activation and then y: where y is within an ulp of 1, 1 - y in
        # dz = dy * y * (1 - y) differs by up to 2x between the two, and a weight gradient summing 512 such rows
        # moved by 0.058 on an H100. So each is held to float64, over both draws, as test_reduced_precision does.
        for values, step in zip(reduced_precision, zip(captured, reference, float64_step(layer, x, grad_output))):
            for kept, value in zip(values, step):
                kept.append(value.detach().flatten().clone())
    for name, (replayed, eager, exact) in zip(("y", "grad_input", "grad_weight", "grad_bias"), reduced_precision):
        if replayed:
            assert_within_twice_eager_error(torch.cat(replayed), torch.cat(eager), torch.cat(exact), name)


def test_compiled_with_reduce_overhead_gives_eager_values():
    counters.clear()
    torch.manual_seed(0)
    layer = FusedLinearSigmoid(64, 8, device="cuda", dtype=torch.float64)
    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    for seed in range(4):
        x, grad_output = inputs(1024, 64, 8, torch.float64, seed)
        x.requires_grad_()
        # Outputs of a replayed graph live in its pool until the next run: the step's values are cloned at once.
        step = [t.clone() for t in training_step(compiled, x, grad_output)]
        reference = training_step(layer, x, grad_output, reference_linear_sigmoid)
        for value, expected in zip(step, reference):
            torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    # Inductor falls back to running without graphs, silently, where it cannot capture one.
    assert not counters["inductor"]["cudagraph_skips"]
