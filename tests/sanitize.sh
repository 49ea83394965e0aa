#!/usr/bin/env bash
# The CPU test suite against a debug build of the extension with AddressSanitizer and UndefinedBehaviorSanitizer.
# Usage: bash tests/sanitize.sh [pytest arguments]   (in the environment the Quick start set up)
# The build goes to build/sanitize/ and never replaces the normal one; every sanitizer report stops the run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
build="$repo/build/sanitize"

echo "== Building with -fsanitize=address,undefined into $build"
mkdir -p "$build"
FUSED_SIGMOID_FORCE_CPU=1 FUSED_SIGMOID_SANITIZE=address,undefined \
    python setup.py build --build-base "$build" > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
lib="$build/$(python -c 'import sys, sysconfig; print(f"lib.{sysconfig.get_platform()}-cpython-{sys.version_info[0]}{sys.version_info[1]}")')"

# Python itself is not instrumented, so the ASan runtime must be loaded before it, and libstdc++ with it: ASan
# intercepts C++ throws only if libstdc++ is there when it starts, and torch reports every error by throwing. Leak
# checking is off: the interpreter and torch keep allocations alive until exit by design (tests/test_leaks.py
# covers ours).
# The run starts in the sanitized build's folder and puts it on PYTHONPATH (for the tests' subprocesses too), so
# `import fused_sigmoid` finds it before the normal build.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}"
cd "$lib"
python -c "import fused_sigmoid._C as c, sys; assert c.__file__.startswith('$lib'), c.__file__; print('testing', c.__file__)"

# Test paths given relative to the repository still work from here.
args=()
for arg in "$@"; do
    if [[ -e "$repo/${arg%%::*}" ]]; then args+=("$repo/$arg"); else args+=("$arg"); fi
done
# By default the whole suite but the leak tests: ASan keeps freed memory in quarantine, so resident memory grows by
# design under it.
[[ ${#args[@]} -gt 0 ]] || args=("$repo/tests" "--ignore=$repo/tests/test_leaks.py")

echo "== CPU test suite under the sanitizers"
python -m pytest -q -p no:cacheprovider "${args[@]}"
