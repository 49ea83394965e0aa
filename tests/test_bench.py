"""The benchmark suite runs end to end on a tiny case and writes what the README's table is made from."""

import csv
import subprocess
import sys
from pathlib import Path

import torch

from fused_sigmoid import bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_every_implementation_and_summarizes(tmp_path):
    output = tmp_path / "cpu.csv"
    rows = bench.run(shapes=[(64, 8, 16)], subsets={}, dtypes=[torch.float32], thread_counts=[1],
                     modes=["forward", "full"], max_autotune=False, min_run_time=0.01, rounds=2, device="cpu",
                     output=output)
    with output.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(rows) == 2 * 5
    assert {row["impl"] for row in written} == {"eager", "eager-repeat", "fused", "compile", "fused+compile"}
    for row in written:
        assert float(row["median_ms"]) > 0 and float(row["floor_ms"]) > 0
        assert row["threads"] == "1" and row["torch"] == torch.__version__ and row["machine"]
        if row["impl"] == "eager":
            assert float(row["speedup_vs_eager"]) == 1.0
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summarize.py"), str(output)],
                           capture_output=True, text=True, check=True).stdout
    assert "| float32 | 1 | 64 x 8 -> 16 | forward |" in table
    assert "| float32 | 1 | 64 x 8 -> 16 | full |" in table


def test_workload_takes_each_rotated_batch_in_turn():
    # On a GPU a measurement rotates among copies of the batch (bench.rotation); every mode must compute on the copy
    # whose turn it is, the gradients included.
    cases = [bench.setup((32, 5, 3), torch.float64, "cpu") for _ in range(3)]
    for i, case in enumerate(cases):
        with torch.no_grad():
            case.x.mul_(i + 1)
            case.grad_output.add_(i)
    for mode in ("forward", "backward", "full"):
        work = bench.workload(bench.linear_sigmoid, cases, mode)
        for i in [0, 1, 2, 0]:
            case = cases[i]
            expected = torch.sigmoid(torch.nn.functional.linear(case.x, case.w, case.b))
            if mode == "forward":
                torch.testing.assert_close(work(), expected)
            else:
                grads = torch.autograd.grad(expected, (case.x, case.w, case.b), case.grad_output)
                for got, want in zip(work(), grads):
                    torch.testing.assert_close(got, want)


def test_rotation_keeps_cpu_cases_single():
    case = bench.setup((32, 5, 3), torch.float32, "cpu")
    assert bench.rotation(case) == [case]


def test_half_types_compute_floor_is_at_least_float32s_on_the_cpu():
    # Where a half type's own matmul is slower than float32's, float32's rate is what the machine can do.
    rates = {torch.bfloat16: 1e9, torch.float32: 5e10, torch.float64: 2e10, torch.float16: 9e10}
    assert bench.compute_yardsticks(rates, 1, "cpu") == {
        torch.bfloat16: 5e10, torch.float32: 5e10, torch.float64: 2e10, torch.float16: 9e10}
    assert bench.compute_yardsticks(rates, 1, "cuda") == rates
