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
