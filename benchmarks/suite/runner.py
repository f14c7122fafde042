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

On CUDA and MPS the full suite's ladder is climbed (:mod:`benchmarks.suite.ladder`): a rung's
groups are measured together, then the climb stops (device busy, out of device memory, or the
top) or goes on to the next rung; the rungs above a stop are not measured, and the run's settings say so.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Iterable

from benchmarks.core import record
from benchmarks.core.case import Case, device_unavailable, dtype_unsupported, zoo
from benchmarks.core.cli import one_line
from benchmarks.core.machine import machine_label
from benchmarks.core.measure import measure_group
from benchmarks.core.measurement import Measurement
from benchmarks.core.units import format_seconds
from benchmarks.suite import ladder as climbing
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
              say: Callable[[str], None] | None = None, measure=measure_group) -> list[Measurement]:
    """Measure ``selection`` with ``threads`` threads into ``run`` (see the module docstring): the
    measurements, in order; each was appended to measurements.jsonl as it finished. Ctrl-C
    (KeyboardInterrupt) stops it between two calls, what finished kept on disk.

    On an accelerator, the suite's ladder (:mod:`benchmarks.suite.ladder`) is climbed rung by
    rung: each rung's groups are measured, then the climb decides whether the next rung runs;
    its rows that ran out of device memory are recorded as skipped. Each decision is kept in
    the run's settings (``ladder``) at once. ``measure``: the group measurer (tests pass a fake one).
    """
    only = list(only)
    say = say or (lambda line: print(line, flush=True))
    ladder = selection.suite.ladder
    plan = [(g, [c for c in g.cases if wanted(c, only)]) for g in selection.groups()]
    plan = [(g, cases) for g, cases in plan if cases]
    climbs = climbing.climbs(ladder, [g for g, _ in plan])
    if climbs:
        _keep_ladder(run, climbs, ladder)  # what a run killed before its first rung's end still says

    def rung_of(item) -> tuple | None:
        group = item[0]
        index = ladder.index(group.cases[0]) if ladder else None
        return None if index is None else (group.cases[0].device, group.cases[0].dtype, index)

    out: list[Measurement] = []
    for at, block in itertools.groupby(plan, key=rung_of):
        climb = climbs[at[:2]] if at else None
        if climb is not None and climb.stopped:
            continue  # above the rung the climb stopped at: counted in the ladder's line, not run
        measured_here: list[Measurement] = []
        for group, cases in block:
            try:
                measured = measure(group, selection.suite, threads=threads)
            except Exception as e:  # the whole group failed (out of memory, a broken build): said per case
                measured = _failed_group(cases, e, threads)
            if climb is not None:
                measured_here += measured.values()
                if any(climbing.out_of_memory(m) for m in measured.values()):
                    _release(group.cases[0].device)
            for case in cases:
                m = measured[case.id]
                if climb is not None and climbing.out_of_memory(m):
                    m = climbing.as_skipped(m, at[2], ladder)
                m = finished(case, m)
                run.append_jsonl(record.MEASUREMENTS, m.to_json())
                out.append(m)
                said = format_seconds(m.median_s) if m.status == "ok" else f"{m.status}: {m.reason}"
                say(f"  {case.id:55} {said}")
        if climb is not None:
            climb.decide(at[2], measured_here)
            _keep_ladder(run, climbs, ladder)
            say(f"  {climb.line()}")
    return out


def _keep_ladder(run: record.Run, climbs: dict, ladder) -> None:
    """The climbs so far into the run's settings, ``ladder`` (the rest of the settings kept)."""
    run.add_settings(ladder=climbing.record(climbs, ladder))


def _release(device: str) -> None:
    """After running out of device memory: give the allocator's cached blocks back, so that the
    groups after it (the next dtype's climb) start from a device as empty as it can be."""
    import gc

    import torch

    gc.collect()
    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def failed(measurements: Iterable[Measurement]) -> list[Measurement]:
    """The measurements that fail a run: an error, or NaN/inf in an output."""
    return [m for m in measurements if m.status in FAILED]
