"""Benchmark of fused_sigmoid's op against eager PyTorch and torch.compile: see fused_sigmoid/bench.py, or run
`python benchmarks/bench_linear_sigmoid.py --help`."""

import sys

from fused_sigmoid.bench import main

if __name__ == "__main__":
    sys.exit(main())
