"""benchmarks/cuda_alternatives.py times alternatives to the CUDA path's parts; each must compute what it stands in
for, or its timing answers nothing. Checked here on the CPU in float64 against eager PyTorch (the script runs the
same calls on a GPU, where it also checks each result itself before timing it), and the script must run end to
end."""

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fused_sigmoid import reference_linear_sigmoid

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cuda_alternatives", ROOT / "benchmarks" / "cuda_alternatives.py")
alternatives = importlib.util.module_from_spec(spec)
spec.loader.exec_module(alternatives)

# More rows than the largest block of rows, and a multiple of every split, so every variant is built.
N, K, M = 40960, 6, 5


@pytest.fixture(scope="module")
def tensors():
    generator = torch.Generator().manual_seed(0)
    sizes = ((N, K), (N, M), (M, K), (M,))
    x, dy, w, b = (torch.randn(*size, generator=generator, dtype=torch.float64) for size in sizes)
    return x, w, b, reference_linear_sigmoid(x, w, b), dy


def test_forward_variants_compute_the_layer(tensors):
    x, w, b, y, _ = tensors
    out = torch.full((N, M), float("nan"), dtype=torch.float64)
    variants = alternatives.forward_variants([x], w, b, [out])
    assert any("blocks of" in name for name in variants)
    for name, (_, calls, _) in variants.items():
        out.fill_(float("nan"))
        returned = calls[0]()
        if name == "sigmoid_ alone":
            continue  # the sigmoid of whatever the output holds: its timing needs no particular values
        want = F.linear(x, w, b) if name.startswith("cuBLAS GEMM") else y
        torch.testing.assert_close(returned, want, msg=name)
        if not name.startswith("ours"):
            torch.testing.assert_close(out, want, msg=name)  # in the output a CUDA graph of it would write


def test_backward_variants_compute_their_gradients(tensors):
    x, w, b, y, dy = tensors
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    want_dx, want_dw, want_db = torch.autograd.grad(reference_linear_sigmoid(*leaves), leaves, dy)
    dz = torch.ops.aten.sigmoid_backward(dy, y)
    variants = alternatives.backward_variants([dy], [y], [x], w, [dz])
    assert sum(name.startswith("dW as") for name in variants) == len(alternatives.SPLITS)
    wants = {"dz": dz, "db": want_db, "dx": want_dx, "dW": want_dw}
    for name, (_, calls, _) in variants.items():
        got = calls[0]()
        if name.startswith("ours"):
            assert len(got) == 3
            for part, want in zip(got, (want_dx, want_dw, want_db)):
                torch.testing.assert_close(part, want, msg=name)
        else:
            torch.testing.assert_close(got, wants[name.split()[0]], msg=name)


def test_the_scripts_own_check_refuses_a_wrong_result(tensors):
    x, w, b, y, _ = tensors
    assert alternatives.relative_error(y.clone(), y) == 0
    assert alternatives.relative_error(y.float(), y) <= alternatives.REFUSED_ERROR[torch.float32]
    assert alternatives.relative_error(y.bfloat16(), y) <= alternatives.REFUSED_ERROR[torch.bfloat16]
    one_block_left_out = y.clone()
    one_block_left_out[-320:] = 0
    for dtype in (torch.float32, torch.bfloat16):
        assert alternatives.relative_error(one_block_left_out.to(dtype), y) > alternatives.REFUSED_ERROR[dtype]
        assert alternatives.relative_error((y.to(dtype), one_block_left_out.to(dtype)), (y, y)) > \
            alternatives.REFUSED_ERROR[dtype]
    assert alternatives.relative_error(torch.full_like(y, float("nan")), y) == float("inf")
    assert alternatives.relative_error(y[1:], y) == float("inf")


def test_script_writes_a_row_for_every_variant(tmp_path):
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    output = tmp_path / "alternatives.csv"
    assert alternatives.main(["--device", "cpu", "--dtypes", "float64", "--shapes", f"{N}x{K}x{M}",
                              "--min-run-time", "0.01", "--output", str(output)]) == 0
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    variants = {row["variant"] for row in rows}
    assert len(rows) == len(variants) == 4 + 3 + 5 + len(alternatives.SPLITS)
    for row in rows:
        assert float(row["median_ms"]) > 0 and int(row["bytes"]) > 0 and row["machine"]
        assert float(row["relative_error"]) <= alternatives.REFUSED_ERROR[torch.float64]
    # The GPU run allows TF32 for itself only: the tests that follow in this process must find it as it was.
    assert torch.backends.cuda.matmul.allow_tf32 == allow_tf32
