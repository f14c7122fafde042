#!/usr/bin/env bash
# One check of kan-fast's Triton kernels on a GPU box, run from the repository root:
#
#     bash benchmarks/studies/triton_check.sh        # at most 9.5 minutes: the stages' timeouts sum to 550 s
#
# 1. the Triton tests on CUDA (tests/test_triton.py, -m "not slow", 8 workers: most of their
#    time is compiling kernels);
# 2. python -m benchmarks.studies.triton_gpu: correctness against the float64 reference and
#    kan-fast(triton) with both contractions, kan-fast(torch), kan, mlp-param and the pip peers
#    timed in turns with CUDA events, with the CUDA targets' verdicts;
# 3. python -m benchmarks.studies.targets --device cuda --backend triton: the same targets
#    through the harness's measuring core.
#
# $KAN_PYTHON is the interpreter (default python3); the peers (flashkan, inkan) must import
# there for their targets to be judged: on a box without a package index, download their wheels
# beforehand (pip download --no-deps flashkan==0.2.0 inkan==0.5.2 -d FOLDER) and set
# $PEER_WHEELS=FOLDER to install them first. Runs go under $KAN_RESULTS (default
# results/triton-check/); the logs and rows are copied into $OUT when it is set.
set -u
PY=${KAN_PYTHON:-python3}
export KAN_RESULTS=${KAN_RESULTS:-results/triton-check}
export PYTHONUNBUFFERED=1
LOGS=$(mktemp -d)
mkdir -p "$KAN_RESULTS"
stamp() { date +%s; }
t0=$(stamp)

$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'device',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
if [ -n "${PEER_WHEELS:-}" ]; then
  $PY -m pip install --quiet --no-deps "$PEER_WHEELS"/flashkan-*.whl "$PEER_WHEELS"/inkan-*.whl || echo "peers: install failed"
fi
for peer in flashkan inkan; do $PY -c "import $peer" 2>/dev/null && echo "$peer: imports" || echo "$peer: missing"; done

echo "== Triton tests on CUDA"
t=$(stamp)
timeout ${TESTS_TIMEOUT:-150} $PY -m pytest tests/test_triton.py -m "not slow" -q -p no:cacheprovider -n ${TEST_WORKERS:-8} --durations=5 2>&1 | tee "$LOGS/tests.log" | tail -n 15
echo "tests: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s"

echo "== triton_gpu study"
t=$(stamp)
OUT_STUDY=$(mktemp -d)
OUT=$OUT_STUDY timeout ${STUDY_TIMEOUT:-220} $PY -m benchmarks.studies.triton_gpu --budget-s ${STUDY_BUDGET:-160} 2>&1 | tee "$LOGS/triton_gpu.log" | tail -n 70
echo "triton_gpu: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s"

echo "== targets study, cuda, backend triton"
t=$(stamp)
timeout ${TARGETS_TIMEOUT:-180} $PY -m benchmarks.studies.targets --device cuda --backend triton 2>&1 | tee "$LOGS/targets.log" | tail -n 40
echo "targets: exit ${PIPESTATUS[0]}, $(( $(stamp) - t )) s"
echo "total: $(( $(stamp) - t0 )) s"

if [ -n "${OUT:-}" ]; then
  cat "$LOGS"/*.log > "$OUT/triton-logs.txt" 2>/dev/null
  cp "$OUT_STUDY/triton_gpu.jsonl" "$OUT/" 2>/dev/null
  TARGETS_RUN=$(ls -d "$KAN_RESULTS"/*-fast-targets 2>/dev/null | tail -n 1)
  [ -n "$TARGETS_RUN" ] && cp "$TARGETS_RUN/fast_targets.csv" "$TARGETS_RUN/fast_targets_verdicts.csv" "$OUT/" 2>/dev/null
fi
