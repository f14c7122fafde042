#!/usr/bin/env bash
# One check of the harness on a GPU box, run from the repository root:
#
#     bash benchmarks/studies/gpu_check.sh            # bench, profile, report (about 6 minutes on an H200)
#     GPU_CHECK_TESTS=1 bash benchmarks/studies/gpu_check.sh   # and the fast tests on CUDA
#
# 1. the quick bench suite on CUDA with --graphs (eager and CUDA-graph steps, the busy shape);
# 2. the profile on CUDA of kan and kan-fast (python -m profiles --device cuda), timed;
# 3. one report page of both runs;
# 4. the busy share and share of peak of each model at the busy shape, and whether the
#    launch-bound rows were labelled (python -m benchmarks.studies.gpu_check).
#
# $KAN_PYTHON is the interpreter (default python3); runs go under $KAN_RESULTS (default
# results/gpu-check/); the key files are copied into $OUT when it is set (at most 8 files).
# With nox installed, the same stages are `nox -s bench -- --device cuda --graphs`,
# `nox -s profile -- --device cuda --model kan kan-fast --pyspy-timeout 45` and `nox -s report`
# (KAN_PYTHON=python3; nox -s bench also builds the CPU kernels, about 30 s).
set -u
PY=${KAN_PYTHON:-python3}
export KAN_RESULTS=${KAN_RESULTS:-results/gpu-check}
export PYTHONUNBUFFERED=1
LOGS=$(mktemp -d)
mkdir -p "$KAN_RESULTS"
stamp() { date +%s; }
t0=$(stamp)

echo "== environment"
$PY - <<'PY'
import os, sysconfig, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print("Python.h", os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")),
      "tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
PY

echo "== bench (quick suite, cuda, --graphs)"
t=$(stamp)
timeout ${BENCH_TIMEOUT:-420} $PY -m benchmarks --suite quick --device cuda --graphs --label gpu-check 2>&1 | tee "$LOGS/bench.log" | tail -n 60
echo "bench: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s"
BENCH=$(ls -d "$KAN_RESULTS"/*-gpu-check 2>/dev/null | tail -n 1)

echo "== profile (cuda, kan and kan-fast)"
t=$(stamp)
timeout ${PROFILE_TIMEOUT:-200} $PY -m profiles --device cuda --model kan kan-fast --pyspy-timeout 45 2>&1 | tee "$LOGS/profile.log" | tail -n 40
echo "profile: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s (the issue asks for under 180 s)"
PROFILE=$(ls -d "$KAN_RESULTS"/*-profile 2>/dev/null | tail -n 1)

echo "== report"
MERGE=()
[ -n "$PROFILE" ] && MERGE=(--merge "$PROFILE")
[ -n "$BENCH" ] && timeout 120 $PY -m reports --run "$BENCH" "${MERGE[@]}" --out "$KAN_RESULTS/report.html" 2>&1 | tail -n 5

if [ "${GPU_CHECK_TESTS:-0}" = 1 ]; then
  echo "== tests (-m 'not slow', on CUDA)"
  t=$(stamp)
  timeout 300 $PY -m pytest -m "not slow" -q -p no:cacheprovider --durations=15 tests 2>&1 | tee "$LOGS/tests.log" | tail -n 40
  echo "tests: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s"
fi

echo "== at the busy shape"
[ -n "$BENCH" ] && $PY -m benchmarks.studies.gpu_check "$BENCH" | tee "$LOGS/busy.txt"
grep -c "launch-bound (device busy" "$LOGS/bench.log" | sed 's/^/printed summary rows worded as launch-bound: /'
echo "total: $(( $(stamp) - t0 )) s"

if [ -n "${OUT:-}" ]; then
  [ -n "$BENCH" ] && cp "$BENCH/benchmarks.csv" "$OUT/" && cp "$BENCH/device.json" "$OUT/" 2>/dev/null
  [ -n "$PROFILE" ] && cp "$PROFILE/profile.json" "$PROFILE/attribution.csv" "$OUT/" 2>/dev/null
  cp "$KAN_RESULTS/report.html" "$OUT/" 2>/dev/null
  cat "$LOGS"/*.log > "$OUT/logs.txt" 2>/dev/null
  cp "$LOGS/busy.txt" "$OUT/" 2>/dev/null
fi
