"""The bench suite: one pytest-benchmark test per case (model, phase, device, dtype, shapes).

The cases come from the selected suite (see ``conftest.py`` and ``suites.py``); the models
of a group are measured together, in turns, when its first case runs
(:func:`benchmarks.core.measure.measure_group`, through the ``measured`` fixture). Each
case, whatever its status, appends its row to the run's ``measurements.jsonl`` at once,
so an interrupted run keeps what finished; its samples go to pytest-benchmark.
"""

from __future__ import annotations

import pytest

from benchmarks.core import record
from benchmarks.core.machine import machine_label
from benchmarks.core.case import zoo
from benchmarks.core.cli import one_line


def test_case(benchmark, case, measured, bench_run, request):
    row = {
        "benchmark": request.node.name,
        **case.record(),
        "family": zoo().entry(case.model).family,
        "machine": machine_label(),
    }
    try:
        row.update(measured(case))
    except Exception as e:  # the whole group could not be measured
        row.update(status="error", reason=one_line(e))
        raise
    finally:
        if "status" in row:
            benchmark.extra_info.update({k: v for k, v in row.items() if k != "samples"})
            if bench_run is not None:
                bench_run.append_jsonl(record.MEASUREMENTS, row)
    if row["status"] == "ok":
        clock = request.node.get_closest_marker("benchmark").kwargs["timer"]
        rounds = clock.load(row["samples"], row.get("clock", "wall"))
        benchmark.pedantic(lambda: None, rounds=rounds, iterations=1, warmup_rounds=0)
        return
    benchmark.skipped = True  # no timing to report: silence pytest-benchmark's "fixture not used"
    if row["status"] == "skipped":
        pytest.skip(row["reason"])
    pytest.fail(f"{case.id}: {row['status']}: {row['reason']}", pytrace=False)
