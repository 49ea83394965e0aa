"""Speed and memory of the fused op against eager PyTorch and torch.compile, with the machine's floors.

Run as ``python -m fused_sigmoid bench`` or ``python benchmarks/bench_linear_sigmoid.py`` (``--device cuda`` on a
GPU). Prints a table, writes a CSV naming the machine under ``benchmarks/results/`` and, with matplotlib
installed, a PNG of the speed-ups.
"""

import argparse
import csv
import itertools
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.utils.benchmark as benchmark

from fused_sigmoid.functional import linear_sigmoid
from fused_sigmoid.profiling import memory_profiling_works, peak_allocated_bytes
from fused_sigmoid.reference import reference_linear_sigmoid

# (batch N, in_features K, out_features M). The first seven are the canonical shapes; the last three are odd sizes.
SHAPES: list[tuple[int, int, int]] = [
    (1, 3, 2),
    (1_000_000, 3, 2),
    (262_144, 30, 1),
    (65_536, 64, 64),
    (16_384, 256, 256),
    (4_096, 1_024, 1_024),
    (8_192, 4_096, 1),
    (100_003, 7, 3),
    (30_001, 100, 10),
    (5_003, 515, 129),
]
CANONICAL_SHAPES = SHAPES[:7]
# Shapes measured in the other dtypes: bfloat16 on every canonical shape, float64 on a subset.
SUBSETS: dict[torch.dtype, list[tuple[int, int, int]]] = {
    torch.bfloat16: CANONICAL_SHAPES,
    torch.float64: [(1, 3, 2), (1_000_000, 3, 2), (262_144, 30, 1), (65_536, 64, 64), (4_096, 1_024, 1_024)],
}
# On a GPU: batches large enough that inputs and outputs do not fit in L2.
GPU_SHAPES: list[tuple[int, int, int]] = [
    (8_388_608, 3, 2),
    (4_194_304, 30, 1),
    (65_536, 64, 64),
    (65_536, 256, 256),
    (4_096, 4_096, 4_096),
    (16_384, 4_096, 1),
]
GPU_SUBSET = [(8_388_608, 3, 2), (65_536, 256, 256), (4_096, 4_096, 4_096)]
GPU_SUBSETS = {torch.bfloat16: GPU_SUBSET, torch.float16: GPU_SUBSET, torch.float64: GPU_SUBSET}
MODES = ("forward", "backward", "full")


@dataclass
class Case:
    """Tensors of one benchmark case, created once and shared by every implementation and mode."""

    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    grad_output: torch.Tensor
    shape: tuple[int, int, int]


def setup(shape: tuple[int, int, int], dtype: torch.dtype, device: str) -> Case:
    """The one factory behind every mode: inputs that require grad, and an output gradient."""
    n, k, m = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=generator).to(device, dtype).requires_grad_()
    w = (torch.randn(m, k, generator=generator) / math.sqrt(k)).to(device, dtype).requires_grad_()
    b = torch.randn(m, generator=generator).to(device, dtype).requires_grad_()
    grad_output = torch.randn(n, m, generator=generator).to(device, dtype)
    return Case(x, w, b, grad_output, shape)


def copies_beyond_l2(batch_bytes: int, device: torch.device) -> int:
    """How many copies of a batch of batch_bytes make a pass over them at least three times the GPU's L2 (50-60 MB
    on an H100/H200), so that every call reads its batch from device memory, as a model's next batch would be
    read; at most 64."""
    l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 * 2**20)
    return min(64, max(1, math.ceil(3 * l2_bytes / max(batch_bytes, 1))))


def rotation(case: Case) -> list[Case]:
    """The cases one measurement takes in turn. On a GPU, whose L2 holds a mid shape's whole batch, copies of the
    per-batch tensors (the input and the output gradient; the weights stay shared, as they are across a model's
    batches) as copies_beyond_l2 counts them. One case on the CPU."""
    if case.x.device.type != "cuda":
        return [case]
    copies = copies_beyond_l2((case.x.numel() + case.grad_output.numel()) * case.x.element_size(), case.x.device)
    return [case] + [Case(case.x.detach().clone().requires_grad_(), case.w, case.b, case.grad_output.clone(),
                          case.shape) for _ in range(copies - 1)]


IMPLEMENTATIONS = ("eager", "fused", "compile", "fused+compile", "compile-max-autotune", "eager-repeat")


def implementations(max_autotune: bool) -> dict[str, Callable]:
    """Fresh compiled functions each call (after torch._dynamo.reset()), so no case inherits another's graphs.
    Eager comes first: every other row is reported as a speed-up over it."""
    impls = {
        "eager": reference_linear_sigmoid,
        "fused": linear_sigmoid,
        "compile": torch.compile(reference_linear_sigmoid),
        "fused+compile": torch.compile(linear_sigmoid),
    }
    if max_autotune:
        impls["compile-max-autotune"] = torch.compile(reference_linear_sigmoid, mode="max-autotune")
    # Eager timed again, last in each round, as if it were another implementation: its speed-up over eager is the
    # run-to-run noise of this machine across a round, the yardstick for calling a ratio near 1 a win or a loss.
    impls["eager-repeat"] = reference_linear_sigmoid
    return impls


def workload(fn: Callable, cases: Sequence[Case], mode: str) -> Callable[[], object]:
    """A no-argument callable running one mode, each call on the next of cases. ``forward`` is inference (no
    autograd); ``backward`` reuses one recorded forward per case; ``full`` is a training step's forward and
    backward."""
    turn = itertools.cycle(range(len(cases)))
    inputs = [(case.x, case.w, case.b) for case in cases]
    if mode == "forward":
        def inference():
            with torch.no_grad():
                return fn(*inputs[next(turn)])
        return inference
    if mode == "backward":
        outs = [fn(*case_inputs) for case_inputs in inputs]

        def backward():
            i = next(turn)
            return torch.autograd.grad(outs[i], inputs[i], cases[i].grad_output, retain_graph=True)
        return backward

    def training_step():
        i = next(turn)
        return torch.autograd.grad(fn(*inputs[i]), inputs[i], cases[i].grad_output)
    return training_step


def bytes_and_flops(case: Case, mode: str) -> tuple[int, int]:
    """Bytes that must move and FLOPs that must run. Forward reads x, W, b and writes y; backward reads dy, y, x, W
    and writes dx, dW, db."""
    n, k, m = case.shape
    size = case.x.element_size()
    forward_bytes = (n * k + m * k + m + n * m) * size
    backward_bytes = (2 * n * m + n * k + m * k + n * k + m * k + m) * size
    forward_flops, backward_flops = 2 * n * k * m, 4 * n * k * m
    bytes_moved = {"forward": forward_bytes, "backward": backward_bytes, "full": forward_bytes + backward_bytes}
    flop_count = {"forward": forward_flops, "backward": backward_flops, "full": forward_flops + backward_flops}
    return bytes_moved[mode], flop_count[mode]


def median_seconds(fn: Callable[[], object], threads: int, min_run_time: float,
                   device: str = "cpu") -> tuple[float, float]:
    """Median and interquartile range of one call's time, warm-up excluded."""
    if device == "cuda":
        return cuda_event_median(fn, min_run_time)
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time)
    return measurement.median, measurement.iqr


def cuda_event_median(fn: Callable[[], object], min_run_time: float) -> tuple[float, float]:
    """CUDA-event timing: batches of calls long enough (about a millisecond) that launch jitter does not count,
    repeated until min_run_time has passed; returns the per-call median and interquartile range."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    batch, per_call = 1, []
    while True:
        start.record()
        for _ in range(batch):
            fn()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        if seconds >= 1e-3 or batch >= 1024:
            break
        batch *= 2
    elapsed = 0.0
    while elapsed < min_run_time or len(per_call) < 5:
        start.record()
        for _ in range(batch):
            fn()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        per_call.append(seconds / batch)
        elapsed += seconds
    quartiles = statistics.quantiles(per_call, n=4)
    return statistics.median(per_call), quartiles[2] - quartiles[0]


def copy_bandwidth(threads: int, device: str = "cpu") -> float:
    """Bytes per second of a large Tensor.copy_ (read plus write; 256 MiB each on the CPU, 1 GiB on a GPU): the
    memory floor's yardstick. Shapes whose data fit in the last-level cache can beat it."""
    src = torch.empty((256 if device == "cuda" else 64) * 1024 * 1024, device=device)
    src.uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds, _ = median_seconds(lambda: dst.copy_(src), threads, 1.0, device)
    return 2 * src.numel() * src.element_size() / seconds


def matmul_rate(dtype: torch.dtype, threads: int, device: str = "cpu") -> float:
    """FLOP/s of a large torch.mm in dtype (2048^3 on the CPU, 8192^3 on a GPU): the compute floor's yardstick."""
    size = 8192 if device == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    seconds, _ = median_seconds(lambda: torch.mm(a, b), threads, 1.0, device)
    return 2 * size**3 / seconds


def compute_yardsticks(rates: dict[torch.dtype, float], threads: int, device: str) -> dict[torch.dtype, float]:
    """The matmul rate each dtype's compute floor is measured against. On a CPU without fast kernels for a half type
    (ATen then runs its own loop, over 100x slower than float BLAS on a large product here) the machine can still do
    that work at float32's rate, as the op's through-float path does: a half type's yardstick is the faster of the
    two."""
    if device == "cuda":
        return rates
    float_rate = rates.get(torch.float32) or matmul_rate(torch.float32, threads, device)
    return {dtype: max(rate, float_rate) if dtype in (torch.bfloat16, torch.float16) else rate
            for dtype, rate in rates.items()}


def peak_memory_mib(fn: Callable[[], object], device: str) -> float:
    """Peak tensor memory that one call allocates beyond what was live before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if not memory_profiling_works():
        return float("nan")
    return peak_allocated_bytes(fn) / 2**20


def machine_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), host {cpu_model()}"
    return f"{cpu_model()}, {os.cpu_count()} cores"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(shapes: Sequence[tuple[int, int, int]], subsets: dict[torch.dtype, Sequence[tuple[int, int, int]]],
        dtypes: Sequence[torch.dtype], thread_counts: Sequence[int], modes: Sequence[str], max_autotune: bool,
        min_run_time: float, rounds: int, device: str, output: Optional[Path],
        impl_names: Optional[Sequence[str]] = None) -> list[dict]:
    """Measures every case and returns the table's rows; impl_names, when given, limits the implementations to
    those (eager, the yardstick, is always measured)."""
    machine = machine_name(device)
    kernels = "CUDA" if device == "cuda" else torch.ops.fused_sigmoid.cpu_capability()
    print(f"# {machine}; torch {torch.__version__}; fused_sigmoid kernels {kernels}; TF32 matmul "
          f"{torch.backends.cuda.matmul.allow_tf32}; median of {rounds} rounds, implementations in turn")
    rows: list[dict] = []
    header = (f"{'threads':>7} {'dtype':>8} {'shape (N, K, M)':>24} {'mode':>8} {'impl':>20} {'median ms':>10} "
              f"{'x eager':>8} {'floor %':>8} {'peak MiB':>9}")
    # The thread count is the caller's again afterwards (run is also called from tests and notebooks).
    previous_threads = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            bandwidth = copy_bandwidth(threads, device)
            print(f"\n# {threads} thread(s): copy bandwidth {bandwidth / 1e9:.1f} GB/s")
            rates = {dtype: matmul_rate(dtype, threads, device) for dtype in dtypes}
            for dtype, rate in rates.items():
                print(f"# {threads} thread(s): {dtype} large matmul {rate / 1e9:.0f} GFLOP/s")
            rates = compute_yardsticks(rates, threads, device)
            print(header)
            for dtype in dtypes:
                for shape in shapes:
                    if shape not in subsets.get(dtype, shapes):
                        continue
                    cases = rotation(setup(shape, dtype, device))
                    torch._dynamo.reset()
                    impls = {name: fn for name, fn in implementations(max_autotune).items()
                             if impl_names is None or name == "eager" or name in impl_names}
                    for mode in modes:
                        rows += measure_case(cases, mode, impls, threads, bandwidth, rates[dtype], min_run_time,
                                             rounds, device, machine)
                    # Written after every case, so a run stopped by a time limit keeps what it measured.
                    if output is not None and rows:
                        write_csv(rows, output)
    finally:
        torch.set_num_threads(previous_threads)
    if output is not None and rows:
        print(f"\n# wrote {output}")
    return rows


def measure_case(cases: Sequence[Case], mode: str, impls: dict[str, Callable], threads: int, bandwidth: float,
                 rate: float, min_run_time: float, rounds: int, device: str, machine: str) -> list[dict]:
    """Every implementation on one case (taken in turn with its copies) and mode: a table row each, as dicts."""
    case = cases[0]
    moved, flops = bytes_and_flops(case, mode)
    floor = max(moved / bandwidth, flops / rate)
    works = {}
    for name, fn in impls.items():
        try:
            work = workload(fn, cases, mode)  # the backward mode's recorded forward compiles here
            for _ in range(3):  # warm-up, compilation included
                work()
        except Exception as error:  # a compile mode that fails here is reported, not fatal
            print(f"# {name} {case.shape} {mode}: failed ({type(error).__name__}: {error})"[:200])
            continue
        works[name] = work
    # Rounds take the implementations in turn, so that a burst of load on a shared machine hits them alike; each
    # one's time is the median of its per-round medians, and its speed-up the median of its per-round ratios to
    # eager, so that a slow drift of the machine's speed between rounds cancels out.
    medians: dict[str, list[float]] = {name: [] for name in works}
    iqrs: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            median, iqr = median_seconds(work, threads, min_run_time, device)
            medians[name].append(median)
            iqrs[name].append(iqr)
    rows = []
    for name, work in works.items():
        median = statistics.median(medians[name])
        speedup = statistics.median(eager / own for eager, own in zip(medians["eager"], medians[name]))
        peak = peak_memory_mib(work, device) if case.shape[0] > 1 else float("nan")
        row = dict(machine=machine, torch=torch.__version__, threads=threads,
                   dtype=str(case.x.dtype).replace("torch.", ""), N=case.shape[0], K=case.shape[1],
                   M=case.shape[2], batch_copies=len(cases), mode=mode, impl=name, median_ms=median * 1e3,
                   iqr_ms=statistics.median(iqrs[name]) * 1e3, speedup_vs_eager=speedup,
                   floor_ms=floor * 1e3, fraction_of_floor=floor / median, peak_mib=peak)
        rows.append(row)
        print(f"{threads:>7} {row['dtype']:>8} {str(case.shape):>24} {mode:>8} {name:>20} "
              f"{row['median_ms']:>10.4f} {row['speedup_vs_eager']:>8.2f} "
              f"{100 * row['fraction_of_floor']:>8.1f} {peak:>9.2f}", flush=True)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_speedups(csv_path: Path, png_path: Path) -> bool:
    """Bar chart of the speed-up over eager per shape (float32, forward and full, each thread count)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    with csv_path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["dtype"] == "float32" and r["mode"] in ("forward", "full")]
    if not rows:
        print("# no float32 forward or full rows: no plot")
        return False
    panels = sorted({(int(r["threads"]), r["mode"]) for r in rows})
    measured = {r["impl"] for r in rows}
    # Every implementation measured but eager, the yardstick, and its repeat, the noise.
    impls = [i for i in IMPLEMENTATIONS if i in measured and i not in ("eager", "eager-repeat")]
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for axis, (threads, mode) in zip(axes[:, 0], panels):
        selected = [r for r in rows if int(r["threads"]) == threads and r["mode"] == mode]
        shapes = list(dict.fromkeys((r["N"], r["K"], r["M"]) for r in selected))
        width = 0.8 / len(impls)
        for index, impl in enumerate(impls):
            values = {(r["N"], r["K"], r["M"]): float(r["speedup_vs_eager"]) for r in selected if r["impl"] == impl}
            axis.bar([i + index * width for i in range(len(shapes))], [values.get(s, 0) for s in shapes], width,
                     label=impl)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
        axis.set_xticklabels([f"{n}x{k}->{m}" for n, k, m in shapes], fontsize=7, rotation=15)
        axis.set_yscale("log")
        axis.set_ylabel("speed-up over eager")
        axis.set_title(f"{mode}, float32, {threads} thread(s)", fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(f"fused_sigmoid vs eager PyTorch ({rows[0]['machine']}, torch {rows[0]['torch']})", fontsize=9)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=110)
    print(f"# wrote {png_path}")
    return True


def parse_shape(text: str) -> tuple[int, int, int]:
    n, k, m = (int(part) for part in text.replace("_", "").split("x"))
    return n, k, m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_sigmoid bench", description=__doc__)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--shapes", nargs="*", type=parse_shape,
                        help="NxKxM, e.g. 1000000x3x2 (default: the canonical shapes of the device)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16", "float64"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, os.cpu_count() or 1],
                        help="CPU thread counts (on a GPU, the host's count is left alone)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--max-autotune", action="store_true", help="also torch.compile(mode='max-autotune')")
    parser.add_argument("--impls", nargs="*", choices=IMPLEMENTATIONS[1:],
                        help="measure only these beside eager (default: all; compile-max-autotune needs "
                        "--max-autotune)")
    parser.add_argument("--allow-tf32", action="store_true", help="let float32 matmuls use TF32 (GPU)")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timing per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of measurements, implementations in turn")
    parser.add_argument("--output", type=Path, help="CSV (default: benchmarks/results/<device>.csv)")
    parser.add_argument("--plot", type=Path, help="PNG (default: benchmarks/results/<device>_speedup.png)")
    args = parser.parse_args(argv)
    output = args.output or Path(f"benchmarks/results/{args.device}.csv")
    plot = args.plot or Path(f"benchmarks/results/{args.device}_speedup.png")
    torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
    if args.device == "cuda":
        shapes, subsets, threads = GPU_SHAPES, GPU_SUBSETS, [torch.get_num_threads()]
    else:
        shapes, subsets, threads = SHAPES, SUBSETS, sorted(set(args.threads))
    if args.shapes:
        # Shapes asked for by name are measured in every dtype asked for.
        shapes, subsets = args.shapes, {}
    started = time.time()
    rows = run(shapes, subsets, [getattr(torch, name) for name in args.dtypes], threads, args.modes,
               args.max_autotune, args.min_run_time, args.rounds, args.device, output, args.impls)
    if rows:
        plot_speedups(output, plot)
    print(f"# {time.time() - started:.0f} s")
    return 0
