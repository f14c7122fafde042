"""One group of cases measured side by side: a :class:`benchmarks.core.measurement.Measurement` each.

:func:`measure_group` is the work behind every benchmark of the bench suites (and
:func:`time_group` behind the peers' command). The models of one workload and their MLP
baselines (a :class:`Group`) are built, probed for memory, then timed in turns, call by call, the order rotating from
round to round (:func:`benchmarks.core.protocol.turns_until_clear`), until every ratio to
an MLP is clear (its 95% interval within +/-5%) or the workload's time budget is spent.

Order of work for one group:

1. build each case (:func:`benchmarks.core.case.make_step`); parameter bytes and the bytes
   autograd saves for backward are counted on an untimed forward;
2. each model's first, cold call is timed apart (``first_call_s``), then warm-up rounds;
   NaN or inf in what a call produced takes the model out, its row ``nonfinite``;
3. rounds of turns; after each, the ratios are checked for clarity;
4. the device's peak memory per model, on one more untimed call each;
5. the measurements: each model's samples, their rounds and which the machine disturbed (its
   median, spread and stability are derived from those), its ratios to the MLPs (the median
   of per-round ratios, with a 95% bootstrap interval), the load before and after.

The run decides the thread count and passes it in (``threads``); the group is built and
timed with it applied (:func:`benchmarks.core.timer.using_threads`), and the clock follows
from it and the device: the device-aware wall clock, or, for the CPU on one thread, the
process's CPU time (:func:`benchmarks.core.timer.clock_name`), which leaves out the time the
OS gave the core to other processes. Every candidate of a group is timed by that one clock,
a step in another process too (it is told the clock's name, and a call timed by another
clock fails, see :func:`benchmarks.core.protocol.timed_call`). On the wall clock, disturbed samples
(:func:`benchmarks.core.protocol.disturbed`) are left out of medians and ratios where
enough undisturbed rounds remain (:data:`benchmarks.core.measurement.CLEAN_SHARE`), since they measure the other
processes as much as the model; otherwise all are used and the row says how many were
disturbed. Either way the raw samples are kept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Protocol

from benchmarks.core import device as accelerator, memory, stats
from benchmarks.core.cli import one_line
from benchmarks.core.case import Case, ModelUnavailable, make_step, phase_flops, zoo
from benchmarks.core.equivalence import same_function
from benchmarks.core.measurement import BASELINES, FACTS, Measurement, Ratio, own_spread
from benchmarks.core.protocol import Candidate, disturbed, os_usage, turns_until_clear
from benchmarks.core.machine import load_average
from benchmarks.core.timer import clock_for, using_threads

@dataclass(frozen=True)
class Group:
    """The cases timed together, in turns: the models of one workload (phase, device, dtype,
    widths, batch, grid size) and the width-matched MLP, which has no grid.

    ``companions`` are cases timed in the rotation only to be paired with (the MLP of a
    second grid size: its own row is reported with the first), never reported themselves.
    """

    cases: tuple[Case, ...]
    companions: tuple[Case, ...] = ()

    @property
    def unit(self) -> tuple:
        """What a shard never splits: a device, dtype, shape, batch and phase, every grid and model."""
        c = self.cases[0]
        return (c.device, c.dtype, c.widths, c.batch, c.phase)


class Budget(Protocol):
    """How long a group is timed (a bench suite is one): warm-up rounds, then at least
    ``min_rounds`` and at most ``max_rounds``, more only while under ``max_time`` s per model."""

    warmup_rounds: int
    min_rounds: int
    max_rounds: int
    max_time: float


# Resamples of the interval checked between rounds (the recorded one takes stats' default).
CHECK_RESAMPLES = 400


def _forward_flops(case: Case) -> int | None:
    """The registry's FLOP count of one forward, or None where the registry has none for the model."""
    try:
        zoo().entry(case.model).flops_function()
    except (ImportError, AttributeError, ValueError):  # ValueError: not registered (a model passed in)
        return None
    return case.forward_flops()


def probe(step, case: Case, threads: int) -> dict:
    """The case's size figures, from an untimed forward: parameters, bytes, FLOPs, and the
    ``threads`` it runs with (the run's choice, applied by the caller)."""
    parameters = memory.parameter_count(step.model)
    forward_flops = _forward_flops(case)
    row = dict(
        parameters=parameters,
        param_bytes=memory.param_bytes(step.model),
        saved_bytes=memory.saved_tensor_bytes(step.forward, exclude=step.model.parameters()),
        flops=None if forward_flops is None else phase_flops(forward_flops, case.phase, parameters),
        threads=threads,
    )
    return {**row, **accelerator_figures(step, case, row)}


def accelerator_figures(step, case: Case, row: dict) -> dict:
    """On an accelerator: the math that ran, the device's peaks for it, and the least bytes a
    call moves (:mod:`benchmarks.core.device`); nothing on the CPU."""
    peak = accelerator.row_peak(case.device, case.dtype)
    if peak is None:
        return {}
    itemsize = step.inputs.element_size()
    io = itemsize * case.batch * (case.widths[0] + case.widths[-1])
    return dict(math=peak.math, peak_flops=peak.flops, peak_bandwidth=peak.bandwidth, peak_source=peak.source,
                bytes_moved=accelerator.bytes_moved(case.phase, row["param_bytes"], row["saved_bytes"] or 0, io))


def ratio(num: Measurement, den: Measurement, resamples: int = 2000) -> Ratio | None:
    """num / den over the rounds both took (less the disturbed ones while enough are left), with
    its interval; None with too few rounds."""
    rounds = num.used_rounds(den)
    if len(rounds) < 2:
        return None
    r = stats.paired_ratio_interval(num.samples_of(rounds), den.samples_of(rounds), resamples=resamples)
    return Ratio(r.ratio, r.ci_low, r.ci_high, r.pairs)


def measured(c: Candidate, case: Case, *, clock: str, threads: int, min_rounds: int, **fields) -> Measurement:
    """The :class:`Measurement` of candidate ``c`` of ``case`` as it stands: its samples, their rounds and
    which of them the machine disturbed (:func:`benchmarks.core.protocol.disturbed`)."""
    ok = c.status == "ok"
    return Measurement(case, status=c.status, reason=c.reason, threads=threads, clock=clock,
                       samples=tuple(c.samples) if ok else (), rounds=tuple(c.rounds) if ok else (),
                       disturbed=tuple(disturbed(c, threads)) if ok else (), min_rounds=min_rounds,
                       first_call_s=None if math.isnan(c.first_call_s) else c.first_call_s, **fields)


def measure_group(group: Group, suite: Budget, *, threads: int, usage=os_usage,
                  build: Callable[[Case], object] = make_step) -> dict[str, Measurement]:
    """Measure ``group`` with ``threads`` intra-op threads: a :class:`Measurement` per reported case
    (by case id), see the module docstring.

    A measurement's ``status`` is "ok", "nonfinite" or "error" (with ``reason``), or "skipped"
    where the model's module cannot be imported. ``build``: the step builder (tests pass odd models).
    """
    with using_threads(threads):
        rows, candidates = build_candidates(group, threads=threads, build=build)
        same_function(group, candidates, rows)  # kan-fast against kan, on the inputs timed, before any timing
        return time_group(group, candidates, rows, suite, threads=threads, usage=usage)


def build_candidates(group: Group, *, threads: int, build: Callable[[Case], object] = make_step):
    """(rows, candidates) of a group, built with ``threads`` threads: each case built and
    probed, or its row saying why not."""
    rows: dict[str, dict] = {c.id: {} for c in group.cases}
    candidates: dict[str, Candidate] = {}
    for case in group.cases + group.companions:
        row = rows.get(case.id, {})
        try:
            with using_threads(threads):
                step = build(case)
                row.update(probe(step, case, threads))
        except ModelUnavailable as e:
            row.update(status="skipped", reason=str(e))
            continue
        except Exception as e:
            row.update(status="error", reason=one_line(e))
            continue
        candidates[case.id] = Candidate(case.id, step)
    return rows, candidates


def time_group(group: Group, candidates: dict[str, Candidate], rows: dict[str, dict], suite: Budget, *,
               threads: int, usage=os_usage) -> dict[str, Measurement]:
    """Time the candidates of a group in turns until clear (or out of budget): a :class:`Measurement`
    per reported case, named by its case id, with the figures of ``rows`` (``FACTS``; a case that
    could not be built has its status and reason there).

    ``threads`` is the run's thread count, applied here to the candidates of this process (a
    candidate in another process was started with it); the clock follows from it and the device
    (:func:`benchmarks.core.timer.clock_for`), the same for every candidate."""
    device = group.cases[0].device
    cases = {case.id: case for case in group.cases + group.companions}
    baseline_of = _baselines(group, candidates)
    timer, clock = clock_for(device, threads)

    def now() -> dict[str, Measurement]:
        return {name: measured(c, cases[name], clock=clock, threads=threads, min_rounds=suite.min_rounds)
                for name, c in candidates.items() if c.status == "ok"}

    def clear(rounds: int) -> bool:
        timed = now()
        for name, m in timed.items():
            checks = [ratio(m, timed[b], CHECK_RESAMPLES) for b in baseline_of.get(name, {}).values() if b in timed]
            spreads = [math.inf if r is None else r.spread for r in checks] or [own_spread(m.used, CHECK_RESAMPLES)]
            if not all(s <= stats.CLEAR_WITHIN for s in spreads):
                return False
        return True

    load_before = load_average()
    with using_threads(threads):
        turns_until_clear(list(candidates.values()), timer, suite.warmup_rounds, suite.min_rounds, suite.max_rounds,
                          budget_s=suite.max_time * max(1, len(candidates)), clear=clear, usage=usage)
    load_after = load_average()
    timed = now()
    return {case.id: _measurement(case, candidates.get(case.id), rows[case.id], timed, baseline_of.get(case.id, {}),
                                  clock=clock, threads=threads, min_rounds=suite.min_rounds,
                                  load=(_load(load_before), _load(load_after)))
            for case in group.cases}


def _measurement(case: Case, c: Candidate | None, row: dict, timed: dict[str, Measurement], baselines: dict[str, str],
                 *, clock: str, threads: int, min_rounds: int, load: tuple) -> Measurement:
    """The measurement of one reported case: its facts, its samples, its paired ratios to its baselines."""
    facts = {k: v for k, v in row.items() if k in FACTS}
    if c is None:  # skipped or failed to build: the row says why
        return Measurement(case, name=case.id, status=row.get("status", "error"), reason=row.get("reason", ""),
                           threads=threads, facts=facts)
    if c.status != "ok":
        return measured(c, case, clock=clock, threads=threads, min_rounds=min_rounds, name=case.id, facts=facts)
    local = not hasattr(c.step, "timed_call")  # a step in another process keeps its memory there
    with using_threads(threads):
        facts["peak_bytes"] = _peak_bytes(c.step, case.device) if local else None
        busy = _device_seconds(c.step) if local else None
    if busy is not None:  # accelerator rows only: a CPU row keeps the fields it always had
        facts["device_s"] = busy
    facts["load_before"], facts["load_after"] = load
    mine = timed[case.id]
    paired = {column: ratio(mine, timed[base]) for column, base in baselines.items() if base in timed}
    return dataclasses.replace(mine, name=case.id, facts=facts,
                               ratios={column: r for column, r in paired.items() if r is not None})


def _baselines(group: Group, candidates: dict[str, Candidate]) -> dict[str, dict[str, str]]:
    """For each case id, the case ids of its MLP baselines in the group: {column: baseline id}."""
    every = list(group.cases) + list(group.companions)
    out: dict[str, dict[str, str]] = {}
    for case in group.cases:
        for column, model in BASELINES:
            if case.model == model:
                continue  # a model's ratio to itself is 1 by definition
            match = [b for b in every if b.model == model and b.id in candidates
                     and (model == "mlp" or b.grid_size == case.grid_size)]
            if match:
                out.setdefault(case.id, {})[column] = match[0].id
    return out


def _peak_bytes(step, device: str) -> int | None:
    """Peak device memory over one untimed call (None where the device keeps no peak)."""
    peak = memory.DeviceMemory(device)
    step.setup()
    peak.reset()
    step.fn()
    return peak.read()


def _device_seconds(step) -> float | None:
    """Device seconds per call from a short profiler pass after the timing (CUDA only); a
    profiler that cannot run here leaves the column empty rather than failing the row."""
    try:
        return accelerator.device_seconds(step)
    except RuntimeError:
        return None


def _load(load) -> float | None:
    return None if not load else float(load[0])
