#!/usr/bin/env bash
# The GPU check, for a fresh H100/H200 machine that has its own CUDA build of torch, nvcc and ninja and nothing to
# download: builds the extension with its CUDA kernels (for sm_90a, so that the Hopper CUTLASS kernels are real), calls
# the op's error paths each in a process of its own (one crashed its process on an H100), runs the CUDA tests (with a
# native stack of any test that crashes its process), runs compute-sanitizer's memcheck over a short CUDA subset, runs
# the CUDA benchmarks, times the CUTLASS forward's Hopper and Ampere kernels against cuBLAS + sigmoid on GEMM shapes (to
# set the CUTLASS path's bounds and choose its kernels), runs compute-sanitizer's racecheck over the skinny kernels
# (tests/test_skinny_kernels_on_cpu.py checks their barriers on every machine; this checks them on the hardware), then,
# as time allows, compares with torch.compile(mode="max-autotune") on the mid shapes, times the skinny backward with
# larger tiles (FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS), profiles the skinny kernels with Nsight Compute, times the mid
# shapes' parts beside alternatives to them (benchmarks/cuda_alternatives.py) and runs the rest of the test suite, and
# prints a short table last. Into the folder given as the argument go check.log (every step's full output, in order),
# cuda.csv, cuda_speedup.png, cuda_max_autotune.csv, cuda_alternatives.csv, cuda_gemm_bound_0.csv,
# cuda_gemm_bound_8192.csv and cuda_gemm_bound_8192_hopper.csv (the same shapes with every forward on cuBLAS, with the
# Ampere CUTLASS kernels taking all of them, and with the Hopper ones): eight files, as many as a lent machine sends
# back.
# The steps share one budget of 7.5 minutes (CHECK_SECONDS), most important first, each cut off where it would overrun
# it.
#
# The machine has no CUTLASS: its headers travel as the nvidia-cutlass wheel in .whl/ (git-ignored). Fetch it here
# with `python3 -m pip download --no-deps -d .whl nvidia-cutlass==4.2.0.0` and name .whl in the device call's carry;
# without it the build runs every GEMM-sized forward on cuBLAS and this check says so.
#
#   bash benchmarks/gpu_check.sh OUTPUT_DIR
#   CHECK_REUSE_BUILD=1 CHECK_STEPS="autotune tiles ncu" bash benchmarks/gpu_check.sh OUTPUT_DIR   (a second call)
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUTPUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
deadline=$((SECONDS + ${CHECK_SECONDS:-450}))
# The steps after the build, in this order; CHECK_STEPS names a subset, so that a second call on a machine still
# warm from the first (which keeps its build: CHECK_REUSE_BUILD=1) can run the steps the first one's budget cut.
all_steps="tests memcheck bench cutlass racecheck autotune tiles ncu alternatives cpu"
steps=" ${CHECK_STEPS:-$all_steps} "
for name in $steps; do
  [[ " $all_steps " == *" $name "* ]] || { echo "CHECK_STEPS: no step '$name' (steps: $all_steps)"; exit 2; }
done
wants() { [[ "$steps" == *" $1 "* ]]; }
status=0
log="$out/check.log" step_log=/tmp/gpu_check_step.log
# A step's output goes to step_log, to be searched, and then into check.log (keep).
step() { echo "== $1 ($(date +%T), $((deadline - SECONDS)) s left)" | tee -a "$log"; : >"$step_log"; }
keep() { cat "$step_log" >>"$log"; }
# The time limit of a step: what it needs at most, or what is left of the budget if that is less.
limit() { local left=$((deadline - SECONDS - 5)); echo $((left < $1 ? (left > 0 ? left : 1) : $1)); }
export PYTHONUNBUFFERED=1
# The machine's Python has no notebook tooling; tests/test_notebook.py runs in CI.
pytest_args=(-q -p no:cacheprovider --ignore=tests/test_notebook.py -rfE)
# A kernel that hangs stops its test, with the stacks printed, instead of the whole step (pytest-timeout is there).
if python3 -c "import pytest_timeout" 2>/dev/null; then pytest_args+=(--timeout=90); fi

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
python3 - <<'PY' | tee -a "$log"
import os, setuptools, torch
from torch.utils import cpp_extension
include = os.path.join(cpp_extension.CUDA_HOME or "", "include")
print("torch", torch.__version__, "CUDA", torch.version.cuda, "| setuptools", setuptools.__version__,
      "| CUDA_HOME", cpp_extension.CUDA_HOME, "| cuBLAS/cuSPARSE headers there:",
      all(os.path.exists(os.path.join(include, h)) for h in ("cublas_v2.h", "cusparse.h")))
PY

has_cuda_build() {
  python3 -c "import fused_sigmoid, sys; sys.exit(0 if fused_sigmoid.has_cuda_kernels() else 1)"
}
if [ "${CHECK_REUSE_BUILD:-0}" = 1 ] && has_cuda_build; then
  step "build: reusing the one this machine holds (CHECK_REUSE_BUILD=1; sources changed since are not rebuilt)"
else
step "build (sm_90a for this card)"
cutlass_wheel=$(ls .whl/nvidia_cutlass-*.whl 2>/dev/null | head -1)
if [ -n "$cutlass_wheel" ]; then
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('/tmp/cutlass')" "$cutlass_wheel"
  export CUTLASS_INCLUDE_DIR=/tmp/cutlass/cutlass_library/source/include
else
  echo "no CUTLASS wheel in .whl/: GEMM-sized shapes will run on cuBLAS plus a sigmoid pass" | tee -a "$log"
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0a}" MAX_JOBS="${MAX_JOBS:-16}"
# The Hopper CUTLASS translation unit alone takes about a minute (61 s on two cores here, sm_90a only); a build cut
# short would be repeated without CUTLASS.
build() { timeout "$(limit 210)" python3 -m pip install --no-build-isolation --no-deps --no-index -e . >>"$log" 2>&1; }
if ! build; then
  # The CUTLASS GEMM is the build's newest and least tried part: without it the rest of the check can still run.
  tail -30 "$log"
  [ -n "${CUTLASS_INCLUDE_DIR:-}" ] || exit 1
  echo "the build failed with CUTLASS; building without it" | tee -a "$log"
  status=1
  unset CUTLASS_INCLUDE_DIR
  build || { tail -30 "$log"; exit 1; }
fi
has_cuda_build || { echo "built without CUDA kernels"; exit 1; }
# Which kernels each forward launches, ours beside eager's, in launch order with their times: the CUTLASS GEMM where
# it was built, the skinny kernel, cuBLAS and its companions (a gap to eager on one shape shows up here).
python3 - <<'PY' 2>&1 | tee -a "$log"
import time
import torch
from fused_sigmoid import linear_sigmoid, reference_linear_sigmoid
torch.backends.cuda.matmul.allow_tf32 = True
for dtype, (n, k, m) in [(torch.bfloat16, (4096, 4096, 4096)), (torch.float32, (4096, 4096, 4096)),
                         (torch.float32, (65536, 64, 64)), (torch.float32, (65536, 3, 2))]:
    x, w, b = (torch.randn(*size, device="cuda", dtype=dtype) for size in ((n, k), (m, k), (m,)))
    for name, fn in (("ours", linear_sigmoid), ("eager", reference_linear_sigmoid)):
        fn(x, w, b)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            fn(x, w, b)
            torch.cuda.synchronize()
        kernels = [f"{event.name[:90]} {event.time_range.elapsed_us():.1f} us" for event in profile.events()
                   if event.device_type.name == "CUDA"]
        print(f"{dtype} {n}x{k}->{m} {name}: {kernels}")
# Training steps that took longer on an H100 than their forward and backward timed apart: ours 0.59 ms against
# 0.11 + 0.24 at 16384 x 4096 -> 1, and eager and ours about 0.2 ms more at 65536 x 256 -> 256 in bfloat16 and eager
# at 65536 x 64 -> 64. Their kernels, the kernels' total, and the wall time of a step among 20 run back to back: a
# wall time well above the kernels' total is time the GPU waited (on the host, or on a synchronization).
for dtype, (n, k, m) in [(torch.float32, (16384, 4096, 1)), (torch.bfloat16, (65536, 256, 256)),
                         (torch.float32, (65536, 64, 64))]:
    leaves = [torch.randn(*size, device="cuda", dtype=dtype, requires_grad=True) for size in ((n, k), (m, k), (m,))]
    grad_output = torch.randn(n, m, device="cuda", dtype=dtype)
    for name, fn in (("ours", linear_sigmoid), ("eager", reference_linear_sigmoid)):
        torch.autograd.grad(fn(*leaves), leaves, grad_output)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            torch.autograd.grad(fn(*leaves), leaves, grad_output)
            torch.cuda.synchronize()
        events = [event for event in profile.events() if event.device_type.name == "CUDA"]
        kernels = [f"{event.name[:70]} {event.time_range.elapsed_us():.1f} us" for event in events]
        started = time.perf_counter()
        for _ in range(20):
            torch.autograd.grad(fn(*leaves), leaves, grad_output)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - started) / 20 * 1e6
        busy_us = sum(event.time_range.elapsed_us() for event in events)
        print(f"{dtype} {n}x{k}->{m} training step {name}: {wall_us:.0f} us a step, kernels {busy_us:.0f} us:",
              kernels)
print("CUTLASS kernels this build can run here:", torch.ops.fused_sigmoid.cutlass_kernels())
PY
fi

# Where a test crashes its process (on an H100 with torch 2.11 one did, on CPU and CUDA alike, where CI's machines
# pass it), the native stack of that test alone, from cuda-gdb (the machine has no gdb; cuda-gdb debugs host code
# too): the test's name from pytest-xdist's report of the crashed worker.
backtrace_crashes() {
  grep -oE "crashed while running '[^']+'" "$step_log" | cut -d"'" -f2 | sort -u | head -2 | while read -r test; do
    echo "== native stack of the crash in $test" | tee -a "$log"
    timeout "$(limit 60)" cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info registers rip" \
      -ex "x/4i \$pc" --args python3 -m pytest -q -p no:cacheprovider --run-slow "$test" 2>&1 \
      | grep -vE "^\[(New|Thread|Detaching|Inferior)" | tail -60 | tee -a "$log"
  done
}
# pytest-xdist's workers run the files in parallel, and a test that crashes its worker is reported as failed while a
# fresh worker goes on with the rest (in one process, a crash ended the step at 62% of the tests).
xdist_args=()
if python3 -c "import xdist" 2>/dev/null; then xdist_args=(-n 4 --dist loadfile); fi

if wants tests; then
step "error paths, each call in a process of its own"
# On an H100 with torch 2.11 an error test crashed its process (bias of one element, CPU and CUDA alike), where errors
# that print only devices passed: which messages crash here, ours and torch's own, with and without C++ stack traces.
timeout "$(limit 60)" python3 - <<'PY' 2>&1 | tee -a "$log"
import os, subprocess, sys
setup = ("import torch\nfrom fused_sigmoid import linear_sigmoid\n"
         "x, w, b = torch.randn(5, 3), torch.randn(2, 3), torch.randn(2)\n")
calls = {
    "torch's own error, sizes in it": "torch.ones(2) + torch.ones(3)",
    "ours, devices only": "linear_sigmoid(x, w.to('meta'), b)",
    "ours, sizes in it (raw op)": "torch.ops.fused_sigmoid.linear_sigmoid(x, w, b[:1])",
    "ours, sizes in it": "linear_sigmoid(x, w, b[:1])",
    "ours, feature counts in it": "linear_sigmoid(x[:, :2], w, b)",
}
child = setup + ("try:\n    {}\nexcept Exception as error:\n"
                 "    print(type(error).__name__, str(error).splitlines()[0])\nelse:\n    print('no error raised')")
runs = {(name, traces): subprocess.Popen([sys.executable, "-c", child.format(call)], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True,
                                         env={**os.environ, "TORCH_SHOW_CPP_STACKTRACES": traces})
        for name, call in calls.items() for traces in ("0", "1")}
for (name, traces), run in runs.items():
    output = run.communicate()[0].strip().splitlines()
    outcome = f"crashed (signal {-run.returncode})" if run.returncode < 0 else (output or ["no output"])[-1][:100]
    print(f"{name}, C++ stack traces {'on' if traces == '1' else 'off'}: {outcome}")
PY
step "CUDA tests (every test with a CUDA case, tensors past 2^31 elements included)"
timeout "$(limit 200)" python3 -m pytest tests "${pytest_args[@]}" "${xdist_args[@]}" -k cuda --run-slow \
  --maxfail=30 --durations=10 >"$step_log" 2>&1 || status=1
keep; tail -40 "$step_log"; backtrace_crashes
fi

if wants memcheck; then
step "compute-sanitizer memcheck on a CUDA subset"
# Without the caching allocator every tensor is its own allocation, so an access past its end is caught rather
# than landing in a neighbour inside the same cached block.
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$(limit 100)" compute-sanitizer --tool memcheck --error-exitcode 3 \
  python3 -m pytest "${pytest_args[@]}" -x tests/test_forward_parity.py tests/test_backward_parity.py \
  tests/test_reduced_precision.py \
  -k "cuda and (case0 or case7 or non_contiguous or empty or zero or rounded_exact or (layouts and 777x40x56))" \
  >"$step_log" 2>&1 || {
    # Under some sandboxed runtimes the sanitizer refuses the device; that is a missing tool, not a finding.
    if grep -q "Device not supported" "$step_log"; then echo "compute-sanitizer: device not supported here"
    else status=1; fi
  }
keep; grep -E "ERROR SUMMARY|passed|failed" "$step_log" | tail -3
fi

if wants bench; then
step "benchmarks: the issue's shapes in float32 (TF32 allowed) and a bfloat16 subset"
timeout "$(limit 170)" python3 -m fused_sigmoid bench --device cuda --allow-tf32 --dtypes float32 bfloat16 \
  --impls fused compile eager-repeat --rounds 2 --min-run-time 0.05 \
  --output "$out/cuda.csv" --plot "$out/cuda_speedup.png" >"$step_log" 2>&1 || { status=1; tail -5 "$step_log"; }
keep; grep -E "^# .*failed" "$step_log"
fi

# The sweep needs a build with CUTLASS (the Ampere kernels at least) on this device.
has_cutlass_kernels() {
  python3 -c "import sys, torch, fused_sigmoid; sys.exit(0 if torch.ops.fused_sigmoid.cutlass_kernels() else 1)"
}
if wants cutlass && has_cutlass_kernels; then
  step "the CUTLASS forward's Hopper and Ampere kernels against cuBLAS + sigmoid on GEMM shapes, as time allows"
  # Right after the benchmarks: whether the Hopper kernels, their epilogue's sigmoids now overlapping, beat cuBLAS on
  # the half types' mid shapes decides their bound (cutlass/gemm_sigmoid.cu). Hopper's first, each setting's eager
  # beside it in its own CSV.
  for setting in 8192_hopper 0 8192; do
    bound=${setting%_hopper}
    case $setting in *_hopper) hopper=1 ;; *) hopper=0 ;; esac
    FUSED_SIGMOID_CUTLASS_MAX_FEATURES=$bound FUSED_SIGMOID_CUTLASS_HOPPER=$hopper timeout "$(limit 60)" \
      python3 -m fused_sigmoid bench --device cuda \
      --allow-tf32 --dtypes bfloat16 float32 --modes forward --impls fused --rounds 2 --min-run-time 0.05 \
      --shapes 65536x64x64 65536x128x128 65536x256x256 32768x512x512 8192x4096x4096 \
      --output "$out/cuda_gemm_bound_$setting.csv" --plot /tmp/cuda_gemm_bound.png >>"$step_log" 2>&1
    case $? in
      0) ;;
      124) echo "CUTLASS setting $setting: cut short by the time budget" | tee -a "$step_log" ;;
      *) echo "CUTLASS setting $setting: failed" | tee -a "$step_log"; status=1 ;;
    esac
  done
  keep; grep -E "^# .*failed" "$step_log" && status=1
fi

if wants racecheck; then
step "compute-sanitizer racecheck on the skinny kernels' shared-memory pipeline"
# The skinny kernels refill each shared-memory stage while other warps may still read it unless the barriers say
# otherwise. Three million rows give every forward block several tiles and some backward blocks a second chunk;
# 4097 rows at an odd offset take the element-by-element copies.
# Only our skinny kernels are checked: with every kernel instrumented (the eager reference's cuBLAS GEMMs over three
# million rows too), 100 s did not see the first test through on an H100. Newer sanitizers name the option
# --kernel-name, older ones --filter.
kernel_filter=--kernel-name
[[ $(compute-sanitizer --help 2>&1) == *--kernel-name* ]] || kernel_filter=--filter
timeout "$(limit 90)" compute-sanitizer --tool racecheck "$kernel_filter" kns=skinny --error-exitcode 3 \
  python3 -m pytest "${pytest_args[@]}" -x tests/test_backward_parity.py \
  -k "cuda and ((more_rows_than and 3000001 and dtype0) or (odd_offset and 4097 and features0))" >"$step_log" 2>&1
case $? in
  0) ;;
  124) echo "racecheck cut short by the time budget" | tee -a "$step_log" ;;
  *) if grep -q "Device not supported" "$step_log"; then echo "compute-sanitizer: device not supported here"
     else status=1; fi ;;
esac
keep; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|passed|failed" "$step_log" | tail -4
fi

if wants autotune; then
step "mid shapes against torch.compile(mode='max-autotune'), as time allows"
timeout "$(limit 120)" python3 -m fused_sigmoid bench --device cuda --allow-tf32 --dtypes float32 \
  --shapes 65536x64x64 65536x256x256 --max-autotune --impls fused compile-max-autotune --rounds 2 \
  --min-run-time 0.05 --output "$out/cuda_max_autotune.csv" --plot /tmp/cuda_max_autotune.png \
  >"$step_log" 2>&1 || { echo "max-autotune comparison cut short:"; tail -3 "$step_log"; }
keep
fi

if wants tiles; then
step "the skinny backward's tile bound: 256 rows (the default), 512 and 1024, as time allows"
# Each bound in its own process, as the variable is read once. The rows go to check.log only: the eight files a lent
# machine sends back are taken. The bound applies to the kernel whose threads own gradient elements, where it ran the
# 3 -> 2 backward at 43% (float32) and 22% (bfloat16) of its floor on an H100 (3 -> 2 has a per-row kernel since); the
# shapes here stay with that kernel and have larger tiles at larger bounds (5 -> 1: up to 584 rows in float32 and
# 1024 in bfloat16; 5 -> 2: 448 and 904).
for rows in 256 512 1024; do
  FUSED_SIGMOID_SKINNY_BACKWARD_TILE_ROWS=$rows timeout "$(limit 40)" python3 -m fused_sigmoid bench --device cuda \
    --dtypes float32 bfloat16 --modes backward full --impls fused --rounds 2 --min-run-time 0.05 \
    --shapes 8388608x5x1 8388608x5x2 --output "/tmp/skinny_tile_rows_$rows.csv" --plot /tmp/skinny_tile_rows.png \
    >>"$step_log" 2>&1 || echo "tile bound $rows: cut short or failed" | tee -a "$step_log"
done
keep
python3 - /tmp/skinny_tile_rows_256.csv /tmp/skinny_tile_rows_512.csv /tmp/skinny_tile_rows_1024.csv \
  <<'PY' | tee -a "$log"
import csv, os, sys
# Per bound: our time, our speed-up over the eager run of the same process, and the share of the memory floor.
runs = [{(r["dtype"], f"{r['N']}x{r['K']}->{r['M']}", r["mode"]): r for r in csv.DictReader(open(path))
         if r["impl"] == "fused"} if os.path.exists(path) else {} for path in sys.argv[1:]]
print(f"{'dtype':>9} {'shape':>16} {'mode':>8}" + "".join(f" {f'{rows} rows: ms, x eager, floor %':>32}"
                                                          for rows in (256, 512, 1024)))
for key in sorted(set().union(*runs)):
    cells = [f"{float(run[key]['median_ms']):.4f} {float(run[key]['speedup_vs_eager']):.2f}x "
             f"{100 * float(run[key]['fraction_of_floor']):.0f}%" if key in run else "-" for run in runs]
    print(f"{key[0]:>9} {key[1]:>16} {key[2]:>8}" + "".join(f" {cell:>32}" for cell in cells))
PY
fi

if wants ncu; then
step "Nsight Compute on the skinny kernels (throughput, occupancy, stall reasons), as time allows"
# The skinny kernels run far under the copy bandwidth; the hardware counters say whether they wait on memory, on
# their own instructions or on barriers. --clock-control none leaves the card's clocks as they are.
skinny_calls='
import torch
from fused_sigmoid import linear_sigmoid
for dtype, (n, k, m) in [(torch.float32, (8388608, 3, 2)), (torch.bfloat16, (8388608, 3, 2)),
                         (torch.float32, (4194304, 30, 1))]:
    x, w, b = (torch.randn(*size, device="cuda", dtype=dtype, requires_grad=True) for size in ((n, k), (m, k), (m,)))
    y = linear_sigmoid(x, w, b)
    torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
    torch.cuda.synchronize()
'
if command -v ncu >/dev/null; then
  timeout "$(limit 60)" ncu --clock-control none --kernel-name regex:skinny --launch-count 6 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats python3 -c "$skinny_calls" >"$step_log" 2>&1 \
    || echo "Nsight Compute did not finish (not a failure of the check)" | tee -a "$step_log"
  keep; grep -E "skinny_(backward_)?kernel<|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy" \
    "$step_log" | cut -c1-120 | head -24
else
  echo "no ncu on this machine" | tee -a "$log"
fi
fi

if wants alternatives; then
step "the mid shapes' parts beside alternatives (row blocks in the forward, batched weight gradients), as time allows"
# 11 s on an H100 (cuda-h100-alternatives.csv, whose results decided against both alternatives); each variant's result
# is checked before it is timed.
PYTHONPATH=. timeout "$(limit 45)" python3 benchmarks/cuda_alternatives.py --output "$out/cuda_alternatives.csv" \
  >"$step_log" 2>&1 || { echo "alternatives cut short or failed (not a failure of the check):"; tail -3 "$step_log"; }
keep; grep -E "^# .*(failed|wrong)" "$step_log" | cut -c1-160 | head -5
fi

if wants cpu; then
step "the rest of the test suite (CPU cases, on this machine's torch), as time allows"
timeout "$(limit 90)" python3 -m pytest tests "${pytest_args[@]}" "${xdist_args[@]}" -k "not cuda" >"$step_log" 2>&1
case $? in 0) ;; 124) echo "CPU cases cut short by the time budget (CI runs them all)" ;; *) status=1 ;; esac
keep; tail -3 "$step_log"; backtrace_crashes
fi

step "summary"
python3 - "$out"/cuda.csv "$out"/cuda_max_autotune.csv <<'PY' | tee -a "$log" || status=1
import csv, os, sys
print(f"{'dtype':>9} {'shape':>22} {'mode':>8} {'impl':>20} {'ms':>9} {'x eager':>8} {'floor %':>8}")
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    for r in csv.DictReader(open(path)):
        if r["impl"] in ("eager", "eager-repeat"):
            continue
        shape = f"{r['N']}x{r['K']}->{r['M']}"
        print(f"{r['dtype']:>9} {shape:>22} {r['mode']:>8} {r['impl']:>20} {float(r['median_ms']):>9.3f} "
              f"{float(r['speedup_vs_eager']):>8.2f} {100 * float(r['fraction_of_floor']):>8.1f}")
PY
python3 - "$out"/cuda_gemm_bound_0.csv "$out"/cuda_gemm_bound_8192.csv "$out"/cuda_gemm_bound_8192_hopper.csv \
  <<'PY' | tee -a "$log"
import csv, os, sys
# Each setting ran in its own process: beside the ratio of the times, the ratio of each one's speed-up over the eager
# it measured in its own run, which cancels a drift of the machine between the processes.
runs = [{(r["dtype"], f"{r['N']}x{r['K']}->{r['M']}"): (float(r["median_ms"]), float(r["speedup_vs_eager"]))
         for r in csv.DictReader(open(path)) if r["impl"] == "fused"} if os.path.exists(path) else {}
        for path in sys.argv[1:]]
cublas, ampere, hopper = runs
if cublas:
    print(f"{'dtype':>9} {'shape':>20} {'cuBLAS ms':>10}  CUTLASS speed-up over cuBLAS + sigmoid: "
          "by time / by own-eager ratio")
    for key in sorted(cublas):
        cells = [f"{cublas[key][0] / kernel[key][0]:.2f}x / {kernel[key][1] / cublas[key][1]:.2f}x" if key in kernel
                 else "-" for kernel in (ampere, hopper)]
        print(f"{key[0]:>9} {key[1]:>20} {cublas[key][0]:>10.3f}  Ampere {cells[0]:>15}  Hopper {cells[1]:>15}")
PY
exit $status
