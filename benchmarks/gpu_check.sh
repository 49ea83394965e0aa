#!/usr/bin/env bash
# The GPU check, for a fresh H100/H200 machine that has its own CUDA build of torch, nvcc and ninja and nothing to
# download: builds the extension with its CUDA kernels, runs the whole test suite (the CUDA tests run when a GPU
# is present), runs compute-sanitizer's memcheck over a short CUDA subset, runs the CUDA benchmarks, and prints a
# short table last. Full logs and CSVs go into the folder given as the argument. Each step has a time limit and
# the limits add up to 7.5 minutes.
#
#   bash benchmarks/gpu_check.sh OUTPUT_DIR
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUTPUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
status=0
step() { echo "== $1 ($(date +%T))"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" | tee -a "$out/gpu.txt"

step "build (sm_90 for this card)"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
timeout 120 python3 -m pip install --no-build-isolation --no-deps --no-index -e . >"$out/build.log" 2>&1 \
  || { tail -30 "$out/build.log"; exit 1; }
python3 -c "import fused_sigmoid, sys; sys.exit(0 if fused_sigmoid.has_cuda_kernels() else 1)" \
  || { echo "built without CUDA kernels"; exit 1; }

step "tests (CPU and CUDA)"
timeout 150 python3 -m pytest tests -q -x -p no:cacheprovider >"$out/tests.log" 2>&1 || status=1
tail -3 "$out/tests.log"

step "compute-sanitizer memcheck on a CUDA subset"
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m pytest -q -x -p no:cacheprovider \
  tests/test_forward_parity.py tests/test_backward_parity.py -k "cuda and (case0 or case7 or non_contiguous or empty or zero)" \
  >"$out/memcheck.log" 2>&1 || {
    # Under some sandboxed runtimes the sanitizer refuses the device; that is a missing tool, not a finding.
    if grep -q "Device not supported" "$out/memcheck.log"; then echo "compute-sanitizer: device not supported here"
    else status=1; fi
  }
grep -E "ERROR SUMMARY|passed|failed" "$out/memcheck.log" | tail -3

step "benchmarks"
timeout 120 python3 -m fused_sigmoid bench --device cuda --allow-tf32 --dtypes float32 bfloat16 --rounds 2 \
  --min-run-time 0.1 --output "$out/cuda.csv" --plot "$out/cuda_speedup.png" >"$out/bench.log" 2>&1 || status=1

step "summary"
python3 - "$out/cuda.csv" <<'PY' || status=1
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["impl"] in ("fused", "compile")]
print(f"{'dtype':>9} {'shape':>22} {'mode':>8} {'impl':>8} {'ms':>9} {'x eager':>8} {'floor %':>8}")
for r in rows:
    shape = f"{r['N']}x{r['K']}->{r['M']}"
    print(f"{r['dtype']:>9} {shape:>22} {r['mode']:>8} {r['impl']:>8} {float(r['median_ms']):>9.3f} "
          f"{float(r['speedup_vs_eager']):>8.2f} {100 * float(r['fraction_of_floor']):>8.1f}")
PY
exit $status
