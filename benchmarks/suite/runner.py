"""The bench's runner: a selection's groups measured one by one, each measurement kept as it ends.

:func:`run_suite` is what ``python -m benchmarks`` runs between opening its run folder and
writing its table: no test framework in between. Each group of the selection
(:meth:`benchmarks.suite.suites.Selection.groups`) is measured by the core
(:func:`benchmarks.core.measure.measure_group`), and each of its cases' measurements is
appended to the run's ``measurements.jsonl`` at once, so that a run stopped by Ctrl-C,
SIGTERM or a kill keeps every case that finished.

Cases on a device that is not present, or in a dtype the device does not support, are left
out (the pytest suite skips them with the reason). ``only``: substrings of case ids
(``-k``); a group is measured whole when any of its cases is asked for (its MLPs are the
baselines of the others' ratios), and only the cases asked for are recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from benchmarks.core import record
from benchmarks.core.case import Case, device_unavailable, dtype_unsupported, zoo
from benchmarks.core.cli import one_line
from benchmarks.core.machine import machine_label
from benchmarks.core.measure import measure_group
from benchmarks.core.measurement import Measurement
from benchmarks.core.units import format_seconds
from benchmarks.suite.export import benchmark_name

FAILED = ("error", "nonfinite")  # statuses that fail a run (exit 1); "skipped" does not


def runnable(case: Case) -> bool:
    """Whether ``case`` can run here: its device present, its dtype supported on it."""
    return not (device_unavailable(case.device) or dtype_unsupported(case.device, case.dtype))


def wanted(case: Case, only: Iterable[str] = ()) -> bool:
    """Whether ``case`` is asked for: runnable, and its id holds one of ``only`` (every case when empty)."""
    only = list(only)
    return runnable(case) and (not only or any(text in case.id for text in only))


def finished(case: Case, m: Measurement) -> Measurement:
    """``m`` named as the suite names its benchmark, with the model's family and the machine's label."""
    facts = {**m.facts, "family": zoo().entry(case.model).family, "machine": machine_label()}
    return dataclasses.replace(m, name=benchmark_name(case), facts=facts)


def _failed_group(cases: list[Case], error: Exception, threads: int) -> dict[str, Measurement]:
    """The measurements of a group that could not be measured at all: each case's error."""
    return {c.id: Measurement(c, status="error", reason=one_line(error), threads=threads) for c in cases}


def run_suite(selection, run: record.Run, threads: int, only: Iterable[str] = (),
              say: Callable[[str], None] | None = None) -> list[Measurement]:
    """Measure ``selection`` with ``threads`` threads into ``run`` (see the module docstring): the
    measurements, in order; each was appended to measurements.jsonl as it finished. Ctrl-C
    (KeyboardInterrupt) stops it between two calls, what finished kept on disk."""
    only = list(only)
    say = say or (lambda line: print(line, flush=True))
    out: list[Measurement] = []
    for group in selection.groups():
        cases = [c for c in group.cases if wanted(c, only)]
        if not cases:
            continue
        try:
            measured = measure_group(group, selection.suite, threads=threads)
        except Exception as e:  # the whole group failed (out of memory, a broken build): said per case
            measured = _failed_group(cases, e, threads)
        for case in cases:
            m = finished(case, measured[case.id])
            run.append_jsonl(record.MEASUREMENTS, m.to_json())
            out.append(m)
            said = format_seconds(m.median_s) if m.status == "ok" else f"{m.status}: {m.reason}"
            say(f"  {case.id:55} {said}")
    return out


def failed(measurements: Iterable[Measurement]) -> list[Measurement]:
    """The measurements that fail a run: an error, or NaN/inf in an output."""
    return [m for m in measurements if m.status in FAILED]
