#!/bin/sh
# kan.native's tests against kernels built with AddressSanitizer and UBSan.
#
#   tests/sanitize.sh [pytest arguments]      (PYTHON=/path/to/python to choose the interpreter)
#
# KAN_NATIVE_SANITIZE=1 builds the kernels with -fsanitize=address,undefined into their own
# cache entry (a slower build: the timeout is raised). Python itself is not instrumented,
# so the ASan runtime must be loaded before anything else (LD_PRELOAD), and the C++
# runtime with it: ASan intercepts C++ throws (torch's dispatcher raises errors as C++
# exceptions) only if libstdc++ is there when it starts. Leak detection is off because
# the interpreter keeps objects alive at exit by design. UBSan stops at the first error,
# so undefined behaviour fails the run rather than scrolling past. Runs
# tests/test_nonfinite.py, tests/test_native_values.py and tests/test_native_self_test.py too
# where they exist: every case of their parametrised sweeps (the quick run samples them), not
# the slow rebuilds and end-to-end runs.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ASAN_RUNTIME=$("${CXX:-g++}" -print-file-name=libasan.so)
CXX_RUNTIME=$("${CXX:-g++}" -print-file-name=libstdc++.so)
if [ ! -e "$ASAN_RUNTIME" ]; then
    echo "sanitize.sh: no ASan runtime found (${CXX:-g++} -print-file-name=libasan.so)" >&2
    exit 1
fi
export KAN_NATIVE_SANITIZE=1
export KAN_NATIVE_BUILD_TIMEOUT=${KAN_NATIVE_BUILD_TIMEOUT:-3600}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
tests=tests/test_native.py
for extra in tests/test_nonfinite.py tests/test_native_values.py tests/test_native_self_test.py; do
    if [ -e "$extra" ]; then
        tests="$tests $extra"
    fi
done
PRELOAD="$ASAN_RUNTIME $CXX_RUNTIME"
LD_PRELOAD=$PRELOAD "$PYTHON" -m kan.native build
# shellcheck disable=SC2086
LD_PRELOAD=$PRELOAD exec "$PYTHON" -m pytest $tests -m "not slow or sweep" -q -p no:cacheprovider "$@"
