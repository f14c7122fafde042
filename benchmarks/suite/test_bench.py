"""The bench suite: one pytest-benchmark test per case (model, phase, device, dtype, shapes).

For those who run the suites with pytest and pytest-benchmark's own options
(``pytest benchmarks/suite/test_bench.py --bench-suite smoke --benchmark-json=...``);
``python -m benchmarks`` measures the same cases without pytest (:mod:`benchmarks.suite.runner`).
The cases come from the selected suite (see ``conftest.py`` and ``suites.py``); the models
of a group are measured together, in turns, when its first case runs
(:func:`benchmarks.core.measure.measure_group`, through the ``measured`` fixture). Each
case, whatever its status, appends its Measurement to ``measurements.jsonl`` of the run
folder given with ``--bench-run``, at once; its samples go to pytest-benchmark.

On a GPU the full suite's ladder rungs (:mod:`benchmarks.suite.ladder`) are cases like the
others here: this route does not climb, it runs every rung; a rung's case that runs out of
device memory is skipped with the reason, as ``python -m benchmarks`` records it.
"""

from __future__ import annotations

import pytest

from benchmarks.core import record
from benchmarks.core.cli import one_line
from benchmarks.core.measurement import Measurement
from benchmarks.suite import ladder
from benchmarks.suite.runner import finished


def test_case(benchmark, case, measured, bench_run, request):
    failure = None
    try:
        m = measured(case)
    except Exception as e:  # the whole group could not be measured
        m, failure = Measurement(case, status="error", reason=one_line(e)), e
    steps = _ladder(request)
    rung = steps.index(case) if steps else None
    if rung is not None and ladder.out_of_memory(m):  # a ladder rung too large for the device: skipped
        m, failure = ladder.as_skipped(m, rung, steps), None
    m = finished(case, m)
    benchmark.extra_info.update(m.row())
    if bench_run is not None:
        bench_run.append_jsonl(record.MEASUREMENTS, m.to_json())
    if failure is not None:
        raise failure
    if m.status == "ok":
        clock = request.node.get_closest_marker("benchmark").kwargs["timer"]
        rounds = clock.load(m.samples, m.clock or "wall")
        benchmark.pedantic(lambda: None, rounds=rounds, iterations=1, warmup_rounds=0)
        return
    benchmark.skipped = True  # no timing to report: silence pytest-benchmark's "fixture not used"
    if m.status == "skipped":
        pytest.skip(m.reason)
    pytest.fail(f"{case.id}: {m.status}: {m.reason}", pytrace=False)


def _ladder(request):
    """The selected suite's ladder (conftest.py keeps the selection on the config), or None."""
    selection = getattr(getattr(request, "config", None), "_kan_selection", None)
    return getattr(getattr(selection, "suite", None), "ladder", None)
