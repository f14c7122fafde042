#!/bin/sh
# kan.native's tests against kernels built with AddressSanitizer and UBSan.
#
#   tests/sanitize.sh [pytest arguments]      (PYTHON=/path/to/python to choose the interpreter)
#
# KAN_NATIVE_SANITIZE=1 builds the kernels with -fsanitize=address,undefined into their own
# cache entry. Python itself is not instrumented, so the ASan runtime must be loaded before
# anything else (LD_PRELOAD); leak detection is off because the interpreter keeps objects
# alive at exit by design. UBSan stops at the first error, so undefined behaviour fails
# the run rather than scrolling past. Runs tests/test_nonfinite.py too where it exists.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ASAN_RUNTIME=$("${CXX:-g++}" -print-file-name=libasan.so)
if [ ! -e "$ASAN_RUNTIME" ]; then
    echo "sanitize.sh: no ASan runtime found (${CXX:-g++} -print-file-name=libasan.so)" >&2
    exit 1
fi
export KAN_NATIVE_SANITIZE=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
tests=tests/test_native.py
if [ -e tests/test_nonfinite.py ]; then
    tests="$tests tests/test_nonfinite.py"
fi
LD_PRELOAD=$ASAN_RUNTIME "$PYTHON" -m kan.native build
# shellcheck disable=SC2086
LD_PRELOAD=$ASAN_RUNTIME exec "$PYTHON" -m pytest $tests -m "not slow" -q -p no:cacheprovider "$@"
