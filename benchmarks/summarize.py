"""Markdown table of a benchmark CSV, as the README shows it: per shape and thread count, our time and our
speed-up over eager and over torch.compile of the eager code, forward (inference) and full (training step), beside
eager's speed-up over itself (eager timed twice): the noise a ratio near 1 has to be read against.

    python benchmarks/summarize.py benchmarks/results/cpu.csv
"""

import csv
import sys
from collections import defaultdict


def main(path: str) -> int:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    table = defaultdict(dict)
    for row in rows:
        key = (row["dtype"], int(row["threads"]), int(row["N"]), int(row["K"]), int(row["M"]), row["mode"])
        table[key][row["impl"]] = row
    print(f"Measured on {rows[0]['machine']}, torch {rows[0]['torch']}; medians of implementations timed in turn.\n")
    print("| dtype | threads | N x K -> M | mode | fused ms | vs eager | vs compile | fused+compile vs eager | "
          "% of floor | eager vs itself |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(table, key=lambda k: (k[0] != "float32", k[0], k[1], k[2] * k[3] * k[4] == 0, k[5])):
        dtype, threads, n, k, m, mode = key
        if mode == "backward":
            continue
        impls = table[key]
        fused = impls["fused"]
        compiled = impls.get("compile")
        fused_compiled = impls.get("fused+compile")
        versus_compile = (f"{float(compiled['median_ms']) / float(fused['median_ms']):.2f}x" if compiled else "n/a")
        compiled_fused = f"{float(fused_compiled['speedup_vs_eager']):.2f}x" if fused_compiled else "n/a"
        repeat = impls.get("eager-repeat")
        noise = f"{float(repeat['speedup_vs_eager']):.2f}x" if repeat else "n/a"
        print(f"| {dtype} | {threads} | {n} x {k} -> {m} | {mode} | {float(fused['median_ms']):.4g} | "
              f"{float(fused['speedup_vs_eager']):.2f}x | {versus_compile} | {compiled_fused} | "
              f"{100 * float(fused['fraction_of_floor']):.0f} | {noise} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
