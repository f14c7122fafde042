"""One group of cases measured side by side: the rows of a run's measurements.

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
5. the rows: the median and spread of each model's samples, its ratios to the MLPs (the
   median of per-round ratios, with a 95% bootstrap interval), how many samples the
   machine disturbed, the load before and after, and whether the answer is stable.

The run decides the thread count and passes it in (``threads``); the group is built and
timed with it applied (:func:`benchmarks.core.timer.using_threads`), and the clock follows
from it and the device: the device-aware wall clock, or, for the CPU on one thread, the
process's CPU time (:func:`benchmarks.core.timer.clock_name`), which leaves out the time the
OS gave the core to other processes. Every candidate of a group is timed by that one clock,
a step in another process too (it is told the clock's name, and a call timed by another
clock fails, see :func:`benchmarks.core.protocol.timed_call`). On the wall clock, disturbed samples
(:func:`benchmarks.core.protocol.disturbed`) are left out of medians and ratios where
enough undisturbed rounds remain (:data:`CLEAN_SHARE`), since they measure the other
processes as much as the model; otherwise all are used and the row says how many were
disturbed. Either way the raw samples are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from benchmarks.core import device as accelerator, memory, stats
from benchmarks.core.cli import one_line
from benchmarks.core.case import Case, ModelUnavailable, make_step, phase_flops, zoo
from benchmarks.core.equivalence import same_function
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


BASELINES = (("x_mlp", "mlp"), ("x_mlp_param", "mlp-param"))
# Disturbed rounds are dropped while at least this share of the rounds (and the suite's
# min_rounds) stay; a machine busier than that is measured with all its samples, and said so.
CLEAN_SHARE = 0.5
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


class Timed:
    """A candidate's samples by round, and which of them the machine disturbed."""

    def __init__(self, c: Candidate, min_rounds: int, clock: str = "wall", threads: int = 1):
        flags = disturbed(c, threads)
        self.by_round = dict(zip(c.rounds, c.samples))
        # the CPU clock does not count the time the OS took the core away: nothing to leave out
        self.clean = {r for r, bad in zip(c.rounds, flags) if not bad or clock == "cpu"}
        self.disturbed = sum(flags)
        self.min_rounds = min_rounds

    def rounds(self, *others: "Timed") -> list[int]:
        """The rounds to use with ``others``: all those every one has, less the disturbed ones
        while enough are left (see CLEAN_SHARE)."""
        common = set(self.by_round).intersection(*(o.by_round for o in others))
        clean = common.intersection(self.clean, *(o.clean for o in others))
        enough = max(self.min_rounds, math.ceil(CLEAN_SHARE * len(common)))
        return sorted(clean if len(clean) >= enough else common)

    def samples(self, rounds: list[int]) -> list[float]:
        return [self.by_round[r] for r in rounds]


def ratio(num: Timed, den: Timed, resamples: int = 2000) -> stats.PairedRatio | None:
    """num / den over the rounds both took, with its interval; None with too few rounds."""
    rounds = num.rounds(den)
    if len(rounds) < 2:
        return None
    return stats.paired_ratio_interval(num.samples(rounds), den.samples(rounds), resamples=resamples)


def own_interval(t: Timed, resamples: int = 2000) -> stats.PairedRatio | None:
    """The candidate's median with its interval, as a ratio to itself (for a row without a baseline)."""
    rounds = t.rounds()
    if len(rounds) < 2:
        return None
    s = np.asarray(t.samples(rounds))
    low, high = stats.bootstrap_ratio_ci(s, [float(np.median(s))], resamples=resamples)
    return stats.PairedRatio(1.0, low, high, len(rounds))


def measure_group(group: Group, suite: Budget, *, threads: int, usage=os_usage,
                  build: Callable[[Case], object] = make_step) -> dict[str, dict]:
    """Measure ``group`` with ``threads`` intra-op threads; a row per reported case (by case id),
    see the module docstring.

    A row's ``status`` is "ok", "nonfinite" or "error" (with ``reason``), or "skipped" where
    the model's module cannot be imported. ``build``: the step builder (tests pass odd models).
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
               threads: int, usage=os_usage) -> dict[str, dict]:
    """Time the candidates of a group in turns until clear (or out of budget) and fill their rows.

    ``threads`` is the run's thread count, applied here to the candidates of this process (a
    candidate in another process was started with it); the clock follows from it and the device
    (:func:`benchmarks.core.timer.clock_for`), the same for every candidate."""
    device = group.cases[0].device
    live = list(candidates.values())
    baseline_of = _baselines(group, candidates)

    def clear(rounds: int) -> bool:
        timed = {name: Timed(c, suite.min_rounds, clock, threads) for name, c in candidates.items() if c.status == "ok"}
        for name, t in timed.items():
            pairs = [b for b in baseline_of.get(name, {}).values() if b in timed]
            checks = [ratio(t, timed[b], CHECK_RESAMPLES) for b in pairs] or [own_interval(t, CHECK_RESAMPLES)]
            if any(r is None or not r.clear() for r in checks):
                return False
        return True

    timer, clock = clock_for(device, threads)
    load_before = load_average()
    with using_threads(threads):
        turns_until_clear(live, timer, suite.warmup_rounds, suite.min_rounds, suite.max_rounds,
                          budget_s=suite.max_time * max(1, len(live)), clear=clear, usage=usage)
    load_after = load_average()

    timed = {name: Timed(c, suite.min_rounds, clock, threads) for name, c in candidates.items() if c.status == "ok"}
    for case in group.cases:
        row, c = rows[case.id], candidates.get(case.id)
        if c is None:
            continue  # skipped or failed to build: the row says why
        row["first_call_s"] = None if math.isnan(c.first_call_s) else c.first_call_s
        if c.status != "ok":
            row.update(status=c.status, reason=c.reason)
            continue
        local = not hasattr(c.step, "timed_call")  # a step in another process keeps its memory there
        with using_threads(threads):
            row["peak_bytes"] = _peak_bytes(c.step, device) if local else None
            busy = _device_seconds(c.step) if local else None
        if busy is not None:  # accelerator rows only: a CPU row keeps the fields it always had
            row["device_s"] = busy
        row["clock"] = clock
        row.update(_figures(timed[case.id], c, baseline_of.get(case.id, {}), timed, load_before, load_after, clock))
    return rows


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


def _figures(t: Timed, c: Candidate, baselines: dict[str, str], timed: dict[str, Timed],
             load_before, load_after, clock: str) -> dict:
    """A measured row's timings, ratios and stability. Disturbed samples make a row unstable
    on the wall clock only: the CPU clock does not count the time they lost."""
    rounds = t.rounds()
    used = np.asarray(t.samples(rounds))
    q1, median, q3 = np.percentile(used, [25, 50, 75])
    row = dict(
        status="ok", median_s=float(median), iqr_s=float(q3 - q1), mean_s=float(used.mean()),
        min_s=float(used.min()), max_s=float(used.max()), rounds=len(c.samples), used_rounds=len(rounds),
        samples=list(c.samples), disturbed=t.disturbed, load_before=_load(load_before), load_after=_load(load_after),
    )
    spreads: dict[str, float] = {}  # the interval's reach, per ratio
    for column, model in BASELINES:
        if c.step.case.model == model:  # the baseline itself: 1 by definition
            row.update({column: 1.0, f"{column}_low": 1.0, f"{column}_high": 1.0})
            continue
        base = baselines.get(column)
        r = ratio(t, timed[base]) if base in timed else None
        if r is not None:
            row.update({column: r.ratio, f"{column}_low": r.ci_low, f"{column}_high": r.ci_high})
            spreads[f"to {model}"] = r.spread
    if not spreads:
        own = own_interval(t)
        spreads["of the median"] = own.spread if own else math.inf
    row.update(_stability(spreads, t.disturbed if clock == "wall" else 0, len(c.samples), len(rounds)))
    return row


def _load(load) -> float | None:
    return None if not load else float(load[0])


def _stability(spreads: dict[str, float], disturbed_count: int, rounds: int, used: int) -> dict:
    """stable, or unstable with the reason: a wide interval (which), disturbed samples."""
    reasons = []
    what, spread = max(spreads.items(), key=lambda item: item[1])
    if not spread <= stats.CLEAR_WITHIN:
        reasons.append(f"interval {what} {_reach(spread)}")
    # every ratio's own: a reader of the ratio to the MLP is told of that ratio's interval, not another's
    imprecise = [f"interval {what} {_reach(s)}" for what, s in spreads.items() if not s <= stats.CLEAR_WITHIN]
    interference = None
    if disturbed_count and used == rounds and disturbed_count > (1 - CLEAN_SHARE) * rounds:
        interference = f"{disturbed_count} of {rounds} samples disturbed"
        reasons.append(interference)
    # "stable"/"unstable_reason" as older harnesses wrote them; the summary and page read the two flags
    return {"stable": "unstable" if reasons else "stable", "unstable_reason": "; ".join(reasons) or None,
            "imprecise": "; ".join(imprecise) or None, "interference": interference}


def _reach(spread: float) -> str:
    return "wider than ±5%" if not math.isfinite(spread) else f"±{spread:.1%}" if spread < 0.1 else f"±{spread:.0%}"
