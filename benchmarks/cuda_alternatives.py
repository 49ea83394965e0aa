"""The CUDA path's parts on the mid shapes, timed beside alternatives the op could take, so that one GPU run says
which to build. Each line is one call's median time (CUDA events, batches of about a millisecond, inputs rotated
among copies so that even the smallest tensor a call touches is three times the L2 over the copies) and the bytes it
must move over that time. Each variant's result on the first copy is checked against a float64 reference before it
is timed (once more after its CUDA graph replays): its relative error goes into the CSV, and a variant whose error
says it computes something else is reported, not timed. Results are held as long as a pass over the copies, so
that no variant reuses an output block still in L2.

Forward (65536 x 256 -> 256 runs cuBLAS with the bias, then the sigmoid over the output; the CUTLASS epilogue is
the other answer, timed by gpu_check.sh): the GEMM alone, the sigmoid alone, both, and both per block of rows small
enough that the sigmoid reads the block while the GEMM has just left it in L2, eagerly and replayed from a CUDA graph
(the graph takes the host's launch cost out: if blocks win only there, they lose in eager use).

Backward (dz pass, then cuBLAS for grad_input = dz @ W and grad_weight = dz^T @ x): each part alone, and the weight
gradient as C GEMMs over C blocks of rows at once (a batched GEMM with float partials, then their sum), since a
single GEMM with a 65536-long inner dimension and a 64 x 64 result has few tiles to spread over the GPU.

  python benchmarks/cuda_alternatives.py --output cuda_alternatives.csv [--shapes 65536x64x64 ...]
"""

import argparse
import collections
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from fused_sigmoid import linear_sigmoid
from fused_sigmoid.bench import copies_beyond_l2, copy_bandwidth, machine_name, median_seconds, parse_shape, write_csv
from fused_sigmoid.reference import reference_linear_sigmoid

ROW_BLOCKS = (8192, 16384, 32768)
SPLITS = (8, 32, 128)
Results = Union[torch.Tensor, tuple[torch.Tensor, ...]]


def rotating(calls: list[Callable[[], object]]) -> Callable[[], object]:
    turn = itertools.cycle(calls)
    return lambda: next(turn)()


def graphed(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """The same calls, each captured once in a CUDA graph (warmed up on a side stream first, as capture asks); the
    first call of the result replays the first copy's graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(side)
    graphs = []
    for call in calls:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        graphs.append(graph)
    return rotating([graph.replay for graph in graphs])


# A variant: the elements it must move at least, one call per copy of the inputs (each returning what it computed),
# and what the first copy's call must return (None: nothing to check, as for the sigmoid of whatever y holds).
Variant = tuple[int, list[Callable[[], Results]], Optional[Results]]


def forward_variants(xs, w, b, outs) -> dict[str, Variant]:
    n, k = xs[0].shape
    m = w.shape[0]
    wide = [t.double() for t in (xs[0], w, b)]
    layer, pre_activation = reference_linear_sigmoid(*wide), torch.addmm(wide[2], wide[0], wide[1].t())

    def gemm(x, y):
        return lambda: torch.addmm(b, x, w.t(), out=y)

    def gemm_then_sigmoid(x, y, block_rows):
        def call():
            for start in range(0, n, block_rows):
                rows = slice(start, start + block_rows)
                torch.addmm(b, x[rows], w.t(), out=y[rows])
                y[rows].sigmoid_()
            return y
        return call

    elements = n * k + n * m
    variants = {
        "ours (linear_sigmoid)": (elements, [lambda x=x: linear_sigmoid(x, w, b) for x in xs], layer),
        "cuBLAS GEMM + bias alone": (elements, [gemm(x, y) for x, y in zip(xs, outs)], pre_activation),
        "sigmoid_ alone": (2 * n * m, [y.sigmoid_ for y in outs], None),
        "GEMM, then sigmoid_": (elements, [gemm_then_sigmoid(x, y, n) for x, y in zip(xs, outs)], layer),
    }
    for block_rows in ROW_BLOCKS:
        if block_rows < n:
            variants[f"GEMM, then sigmoid_, blocks of {block_rows} rows"] = (
                elements, [gemm_then_sigmoid(x, y, block_rows) for x, y in zip(xs, outs)], layer)
    return variants


def split_weight_grad(dz: torch.Tensor, x: torch.Tensor, splits: int) -> torch.Tensor:
    """dz^T @ x as one GEMM per block of rows, all in one batched call, then the sum of the blocks' results."""
    blocks_dz = dz.view(splits, -1, dz.shape[1]).transpose(1, 2)
    blocks_x = x.view(splits, -1, x.shape[1])
    if dz.dtype in (torch.bfloat16, torch.float16):
        # Float partials for the half types (bmm's out_dtype, on CUDA), as the op's own sums are.
        return torch.bmm(blocks_dz, blocks_x, out_dtype=torch.float32).sum(0).to(dz.dtype)
    return torch.bmm(blocks_dz, blocks_x).sum(0)


def backward_variants(dys, ys, xs, w, dzs) -> dict[str, Variant]:
    n, k = xs[0].shape
    m = w.shape[0]
    mask = [True, True, True]
    # The first copy's gradients in float64, from the formulas themselves.
    dy64, y64, x64, w64 = (t.double() for t in (dys[0], ys[0], xs[0], w))
    dz64 = dy64 * y64 * (1 - y64)
    grad_input, grad_weight, grad_bias = dz64 @ w64, dz64.t() @ x64, dz64.sum(0)
    variants = {
        "ours (linear_sigmoid_backward)": (2 * n * m + 2 * n * k, [
            lambda dy=dy, y=y, x=x: tuple(torch.ops.fused_sigmoid.linear_sigmoid_backward(dy, y, x, w, mask))
            for dy, y, x in zip(dys, ys, xs)], (grad_input, grad_weight, grad_bias)),
        "dz = sigmoid_backward(dy, y)": (3 * n * m, [
            lambda dy=dy, y=y: torch.ops.aten.sigmoid_backward(dy, y) for dy, y in zip(dys, ys)], dz64),
        "db = dz.sum(0)": (n * m, [lambda dz=dz: dz.sum(0) for dz in dzs], grad_bias),
        "dx = dz @ W": (n * m + n * k, [lambda dz=dz: torch.mm(dz, w) for dz in dzs], grad_input),
        "dW = dz^T @ x": (n * m + n * k, [lambda dz=dz, x=x: torch.mm(dz.t(), x) for dz, x in zip(dzs, xs)],
                          grad_weight),
    }
    for splits in SPLITS:
        if n % splits == 0:
            variants[f"dW as {splits} batched GEMMs + sum"] = (n * m + n * k, [
                lambda dz=dz, x=x, splits=splits: split_weight_grad(dz, x, splits) for dz, x in zip(dzs, xs)],
                grad_weight)
    return variants


# Relative errors past which a variant is taken to compute something else (and is not timed): several times the
# worst rounding of a correct one (TF32 GEMMs, or bfloat16 outputs summed over 65536 rows in bfloat16 partials),
# well under what one block of rows left out costs (0.1 and more).
REFUSED_ERROR = {torch.float64: 1e-10, torch.float32: 5e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def relative_error(result: Results, expected: Results) -> float:
    """The worst error of the results against the float64 reference, relative to each reference's largest value;
    infinite where a shape differs or a value is NaN."""
    results, references = (result, expected) if isinstance(result, tuple) else ((result,), (expected,))
    worst = 0.0
    for got, want in zip(results, references):
        if got.shape != want.shape:
            return math.inf
        error = ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
        worst = max(worst, error if error == error else math.inf)
    return worst


def keeping_results(call: Callable[[], Results], recent: collections.deque) -> Callable[[], Results]:
    """call, with its last results held (as a model holds its activations), so that a variant that allocates its
    output gets a new block each time rather than the one it just freed, still in L2."""
    def kept():
        result = call()
        recent.append(result)
        return result
    return kept


def measure(shape, dtype, device, bandwidth, min_run_time, machine) -> list[dict]:
    n, k, m = shape
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=generator, device=device).to(dtype)

    w, b = randn(m, k) / math.sqrt(k), randn(m)
    size = torch.finfo(dtype).bits // 8
    # Copies enough that even the smallest tensor a variant touches rotates through three times the L2.
    copies = copies_beyond_l2(n * min(k, m) * size, torch.device(device)) if device == "cuda" else 1
    xs = [randn(n, k) for _ in range(copies)]
    ys = [reference_linear_sigmoid(x, w, b) for x in xs]
    dys = [randn(n, m) for _ in range(copies)]
    dzs = [torch.ops.aten.sigmoid_backward(dy, y) for dy, y in zip(dys, ys)]
    outs = [torch.empty(n, m, device=device, dtype=dtype) for _ in range(copies)]
    rows = []
    graphs_work = device == "cuda"
    for part, variants in (("forward", forward_variants(xs, w, b, outs)),
                           ("backward", backward_variants(dys, ys, xs, w, dzs))):
        for name, (elements, calls, expected) in variants.items():
            recent = collections.deque(maxlen=copies)
            calls = [keeping_results(call, recent) for call in calls]
            launches = ("eager", "CUDA graph") if graphs_work and name.startswith("GEMM, then") else ("eager",)
            for launch in launches:
                try:
                    # A variant that writes the output must write all of it: what an earlier one left is gone.
                    outs[0].fill_(float("nan"))
                    if launch == "eager":
                        fn, result = rotating(calls), calls[0]()
                    else:
                        fn = graphed(calls)
                        outs[0].fill_(float("nan"))  # what the first copy's graph writes, not its warm-up
                        fn()
                        result = outs[0]
                    error = 0.0 if expected is None else relative_error(result, expected)
                    if not error <= REFUSED_ERROR[dtype]:
                        print(f"# {name} ({launch}): wrong result, not timed: relative error {error:.2e}")
                        continue
                    for _ in range(3):
                        fn()
                    median, iqr = median_seconds(fn, torch.get_num_threads(), min_run_time, device)
                except Exception as failure:  # a variant the machine's torch lacks is reported, not fatal
                    print(f"# {name} ({launch}): failed ({type(failure).__name__}: {failure})"[:200])
                    if launch == "CUDA graph":
                        # A capture that failed can leave its stream current: no more graphs in this process.
                        graphs_work = False
                        torch.cuda.set_stream(torch.cuda.default_stream())
                    continue
                row = dict(machine=machine, torch=torch.__version__, dtype=str(dtype).replace("torch.", ""), N=n,
                           K=k, M=m, batch_copies=copies, part=part, variant=name, launch=launch,
                           median_ms=median * 1e3, iqr_ms=iqr * 1e3, bytes=elements * size,
                           fraction_of_copy_bandwidth=elements * size / median / bandwidth, relative_error=error)
                rows.append(row)
                print(f"{row['dtype']:>9} {f'{n}x{k}->{m}':>16} {part:>8} {name:>46} {launch:>10} "
                      f"{row['median_ms']:>9.4f} {100 * row['fraction_of_copy_bandwidth']:>6.1f} {error:>8.1e}",
                      flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu only tries the script out on small shapes: the question is the GPU's")
    parser.add_argument("--shapes", nargs="*", type=parse_shape, default=[(65536, 64, 64), (65536, 256, 256)])
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--min-run-time", type=float, default=0.05, help="seconds of timing per line")
    parser.add_argument("--output", type=Path, required=True, help="CSV")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda_alternatives: this machine's torch sees no CUDA device")
        return 1
    started = time.time()
    machine = machine_name(args.device)
    bandwidth = copy_bandwidth(torch.get_num_threads(), args.device)
    # TF32 as the GPU benchmarks allow it, for this run only (the tests call main in a process of their own tests).
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = args.device == "cuda"
    try:
        print(f"# {machine}; torch {torch.__version__}; TF32 {torch.backends.cuda.matmul.allow_tf32}; "
              f"copy bandwidth {bandwidth / 1e9:.0f} GB/s")
        print(f"{'dtype':>9} {'shape':>16} {'part':>8} {'variant':>46} {'launch':>10} {'ms':>9} {'copy %':>6} "
              f"{'error':>8}")
        rows = []
        for dtype in (getattr(torch, name) for name in args.dtypes):
            for shape in args.shapes:
                rows += measure(shape, dtype, args.device, bandwidth, args.min_run_time, machine)
                if rows:  # written after every shape, so a run cut short keeps what it measured
                    write_csv(rows, args.output)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    print(f"# wrote {args.output}; {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
