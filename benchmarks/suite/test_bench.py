"""The bench suite: one pytest-benchmark test per case (model, phase, device, dtype, shapes).

The cases come from the selected suite (see ``conftest.py`` and ``suites.py``); the work of
one case is :func:`benchmarks.suite.measure.measure`. Each finished case, whatever its status,
appends its row to the run's ``measurements.jsonl`` at once, so an interrupted run keeps
what finished.
"""

from __future__ import annotations

import pytest

from benchmarks.core import record
from benchmarks.core.case import ModelUnavailable, zoo
from benchmarks.suite.measure import measure


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def test_case(benchmark, case, suite, bench_run, request):
    row = {
        "benchmark": request.node.name,
        **case.record(),
        "family": zoo().entry(case.model).family,
        "machine": record.machine_label(),
    }
    try:
        measure(benchmark, case, suite, row)
    except ModelUnavailable as e:
        row.update(status="skipped", reason=str(e))
    except Exception as e:
        row.update(status="error", reason=_one_line(e))
        raise
    finally:
        if "status" in row:
            benchmark.extra_info.update({k: v for k, v in row.items() if k != "samples"})
            if bench_run is not None:
                bench_run.append_jsonl(record.MEASUREMENTS, row)
            if row["status"] != "ok":
                benchmark.skipped = True  # no timing to report: silence pytest-benchmark's "fixture not used"
    if row["status"] == "skipped":
        pytest.skip(row["reason"])
    if row["status"] == "nonfinite":
        pytest.fail(f"{case.id}: {row['reason']}", pytrace=False)
