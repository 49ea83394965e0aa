"""Accuracy of the op's float32 sigmoid, in ulps against a float64 reference, beside eager torch.sigmoid's, on
each CPU kernel path.

The op is made to compute sigmoid(x) itself: with an identity weight and no bias its pre-activation is x exactly
(every other product is 0 * x = 0), so its error is its sigmoid's alone. Direct path: input (N, 1), weight [[1]];
tiled: (N / 32, 32) by a 32 x 32 identity; GEMM: (N / 384, 384) by a 384 x 384 identity (over the tiled kernel's
512 KiB of weight). Inputs are finite (an
identity's zeros times inf would give NaN).

Inputs: every `--stride`-th float32 with |x| <= 87 (by bit pattern, so that every binade is sampled alike), whose
sigmoid is a normal float32; every float32 of the regions where rounding is hardest: 1 - tiny (16 <= |x| <= 17.5)
and -104 <= x <= -87, where exp(-x) overflows float32 while the exact sigmoid is still a subnormal number; and the
saturated tails, up to |x| = 110. "flushed" counts outputs of 0 where the exact sigmoid rounds to a nonzero
subnormal.

    python benchmarks/sigmoid_ulp.py [--stride 97]

Prints a table and writes benchmarks/results/sigmoid_ulp.csv, naming the machine and torch.
"""

import argparse
import sys
from pathlib import Path

import torch

from fused_sigmoid import linear_sigmoid
from fused_sigmoid.bench import machine_name, write_csv

PATHS = {"direct": 1, "tiled": 32, "GEMM": 384}  # path: the identity's size (384^2 floats pass the tiled kernel's
# 512 KiB), and the input's row length
# Values per call: a multiple of every row length, and small enough that the float64 copies stay modest.
CHUNK = 384 << 14


def float32_range(low: float, high: float, stride: int = 1) -> torch.Tensor:
    """Every stride-th float32 in [low, high] (low >= 0), in order of bit pattern."""
    bits = torch.tensor([low, high], dtype=torch.float32).view(torch.int32).tolist()
    return torch.arange(bits[0], bits[1] + 1, stride, dtype=torch.int32).view(torch.float32)


def symmetric(values: torch.Tensor) -> torch.Tensor:
    return torch.cat([-values.flip(0), values])


def regions(stride: int) -> dict[str, torch.Tensor]:
    return {
        f"|x| <= 87, every {stride}th float": symmetric(float32_range(0.0, 87.0, stride)),
        "16 <= |x| <= 17.5, every float": symmetric(float32_range(16.0, 17.5)),
        "-104 <= x <= -87, every float": -float32_range(87.0, 104.0),
        "87 <= x <= 110, -110 <= x <= -104, every 7th": torch.cat([float32_range(87.0, 110.0, 7),
                                                                   -float32_range(104.0, 110.0, 7)]),
    }


def ulps(values: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|values - exact| in units of the float32 spacing at exact (2**-149 below the smallest normal)."""
    _, exponent = torch.frexp(exact)
    spacing = torch.ldexp(torch.ones_like(exact), (exponent - 1).clamp(min=-126) - 23)
    return (values.double() - exact).abs() / spacing


def flushed(values: torch.Tensor, exact: torch.Tensor) -> int:
    """How many values are 0 where the exact result rounds to a nonzero float32 (at least half the smallest
    subnormal, 2**-150)."""
    return ((values == 0) & (exact.abs() > 2.0**-150)).sum().item()


def ours(x: torch.Tensor, path: str) -> torch.Tensor:
    width = PATHS[path]
    with torch.no_grad():
        return linear_sigmoid(x.view(-1, width), torch.eye(width)).view(-1)


def padded(values: torch.Tensor) -> torch.Tensor:
    """values followed by zeros up to a multiple of the widest row, so that every path takes whole rows."""
    return torch.cat([values, values.new_zeros(-values.numel() % max(PATHS.values()))])


def measure(values: torch.Tensor, path: str) -> dict:
    worst_ours = worst_eager = 0.0
    worst_input = float("nan")
    nan_ours = nan_eager = flushed_ours = flushed_eager = saturation_mismatches = bitwise_differences = 0
    for start in range(0, values.numel(), CHUNK):
        x = padded(values[start:start + CHUNK])
        exact = torch.sigmoid(x.double())
        mine, eager = ours(x, path), torch.sigmoid(x)
        error_ours, error_eager = ulps(mine, exact), ulps(eager, exact)
        if error_ours.max().item() > worst_ours:
            worst_ours = error_ours.max().item()
            worst_input = x[error_ours.argmax()].item()
        worst_eager = max(worst_eager, error_eager.max().item())
        nan_ours += mine.isnan().sum().item()
        nan_eager += eager.isnan().sum().item()
        flushed_ours += flushed(mine, exact)
        flushed_eager += flushed(eager, exact)
        saturation_mismatches += ((mine == 0) != (eager == 0)).sum().item() + ((mine == 1) != (eager == 1)).sum().item()
        bitwise_differences += (mine != eager).sum().item()
    return dict(path=path, inputs=values.numel(), max_ulp_ours=worst_ours, max_ulp_eager=worst_eager,
                worst_input_ours=worst_input, nan_for_finite_ours=nan_ours, nan_for_finite_eager=nan_eager,
                flushed_ours=flushed_ours, flushed_eager=flushed_eager, saturation_mismatches=saturation_mismatches,
                differences_from_eager=bitwise_differences)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride", type=int, default=97, help="sample every n-th float32 of [-110, 110]")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sigmoid_ulp.csv"))
    args = parser.parse_args(argv)
    machine = machine_name("cpu")
    capability = torch.ops.fused_sigmoid.cpu_capability()
    print(f"# {machine}; torch {torch.__version__}; fused_sigmoid kernels {capability}; float32")
    print(f"{'region':<46} {'path':<7} {'inputs':>9} {'max ulp ours':>13} {'max ulp eager':>14} "
          f"{'NaN':>4} {'flushed ours/eager':>19} {'saturation':>11} {'!= eager':>9}")
    rows = []
    for region, values in regions(args.stride).items():
        for path in PATHS:
            row = dict(machine=machine, torch=torch.__version__, capability=capability, region=region,
                       **measure(values, path))
            rows.append(row)
            saturation = "agree" if row["saturation_mismatches"] == 0 else f"{row['saturation_mismatches']} differ"
            flushes = f"{row['flushed_ours']}/{row['flushed_eager']}"
            print(f"{region:<46} {path:<7} {row['inputs']:>9} {row['max_ulp_ours']:>13.4g} "
                  f"{row['max_ulp_eager']:>14.4g} {row['nan_for_finite_ours']:>4} {flushes:>19} {saturation:>11} "
                  f"{row['differences_from_eager']:>9}")
    write_csv(rows, args.output)
    print(f"# wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
