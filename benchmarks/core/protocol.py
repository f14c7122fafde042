"""How samples are taken: the one place that calls the clock around a step.

Every timing in the harness goes through one of three protocols, all built on the
device-aware clock of :mod:`benchmarks.core.timer` and the steps of
:mod:`benchmarks.core.case` (``setup()`` untimed, then ``fn()`` timed):

- :func:`first_call` and :func:`rounds`: one candidate on its own, its cold first call
  apart from its steady state (the pytest-benchmark suites do the same through
  ``benchmark.pedantic``; profiles and quick checks use :func:`rounds`);
- :func:`turns` and :func:`turns_until_clear`: several candidates that are compared with
  each other (the models of one workload), call by call in turns, the order rotating from
  round to round (A B C, B C A, C A B, ...), so that a ratio compares samples taken side
  by side and the machine's drifts fall on all of them alike; each sample carries what
  the OS says happened during it, so that :func:`disturbed` can tell the samples another
  process disturbed;
- :func:`paired_turns`: two sides of a comparison that live in separate processes (the
  speed gate's base and head), benchmark by benchmark in alternating order (A B, B A, ...),
  one side running at a time; a sample is the fastest call of a turn (:func:`fastest`).

A candidate whose call raises or leaves NaN/inf behind leaves the rotation with status
"error" or "nonfinite"; the others go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from benchmarks.core.cli import one_line

MIN_CALLS, MAX_CALLS = 3, 200  # calls per turn in paired turns


def first_call(fn: Callable[[], object], timer, setup: Callable[[], object] | None = None) -> float:
    """Seconds of one call of ``fn`` after ``setup``: use it on the first, cold call."""
    if setup is not None:
        setup()
    start = timer()
    fn()
    return timer() - start


def rounds(
    fn: Callable[[], object],
    timer,
    count: int,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
) -> list[float]:
    """Seconds per call of ``fn`` over ``count`` calls after ``warmup`` untimed ones.

    The protocol of the pytest-benchmark suites (``setup`` untimed before every call,
    one device wait per call), for code that times without pytest.
    """
    out = []
    for i in range(warmup + count):
        if setup is not None:
            setup()
        start = timer()
        fn()
        seconds = timer() - start
        if i >= warmup:
            out.append(seconds)
    return out


@dataclass
class Candidate:
    """One of several things timed in turns: a name and its step (``benchmarks.core.case.Step``).

    A candidate that could not be built carries ``status`` and ``reason`` and no step.
    Per timed call it keeps the seconds, the round it was taken in, and what the OS says
    happened meanwhile (involuntary context switches, CPU seconds of the process), from
    which :func:`disturbed` tells the samples the machine disturbed.
    """

    name: str
    step: object | None = None
    status: str = "ok"  # "ok", "error", "nonfinite", or why it could not be built ("not installed", ...)
    reason: str = ""
    first_call_s: float = math.nan
    samples: list[float] = field(default_factory=list)  # seconds per timed call, in order
    rounds: list[int] = field(default_factory=list)  # the round of each sample
    switches: list[int] = field(default_factory=list)  # involuntary context switches during each
    cpu_s: list[float] = field(default_factory=list)  # CPU seconds of the process (all threads) during each

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.samples, self.rounds, self.switches, self.cpu_s = [], [], [], []


def os_usage() -> tuple[int, float]:
    """(involuntary context switches, CPU seconds) of this process so far, all threads together.

    (0, nan) where the platform has no getrusage (Windows): nothing is then seen as disturbed.
    """
    try:
        import resource
    except ImportError:
        return 0, math.nan
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nivcsw, r.ru_utime + r.ru_stime


# A sample is disturbed when the OS took a core from the process during it (an involuntary
# context switch), or when, in a call long enough for the CPU clock to tell (>= 1 ms), the
# process got under DISTURBED_USE of the CPU time its own typical call gets per second (a
# thread of the pool waited for a core: a parallel region then waits for its slowest thread,
# and the call takes many times as long while using fewer cores' time).
MIN_CPU_CLOCK_S = 1e-3
DISTURBED_USE = 0.7
DISTURBED_SLOWER = 1.3


def disturbed(c: Candidate, threads: int = 1) -> list[bool]:
    """Which of ``c``'s samples the machine disturbed (see above).

    With several threads neither sign alone counts: the OS moves a pool's threads for a few
    microseconds many times a second on an idle machine too, and a pool's CPU use varies
    from call to call with its serial parts. There a sample is disturbed when it lost CPU
    time and took longer for it (over DISTURBED_SLOWER times the median call): a thread
    waited for a core, and the call waited for the thread.
    """
    use = [cpu / wall if wall >= MIN_CPU_CLOCK_S and math.isfinite(cpu) else math.nan
           for cpu, wall in zip(c.cpu_s, c.samples)]
    typical = [u for u in use if not math.isnan(u)]
    # the undisturbed level: the 90th percentile, which holds even when most samples are disturbed
    level = sorted(typical)[int(0.9 * (len(typical) - 1))] if typical else math.nan
    lost = [not math.isnan(u) and u < DISTURBED_USE * level for u in use]
    if threads == 1:
        return [s > 0 or low for s, low in zip(c.switches, lost)]
    median = sorted(c.samples)[len(c.samples) // 2] if c.samples else math.nan
    return [low and wall > DISTURBED_SLOWER * median for low, wall in zip(lost, c.samples)]


def timed_call(step, timer, usage=os_usage) -> dict:
    """One call of ``step`` after its untimed setup:
    {"status", "reason", "seconds", "switches", "cpu_s", "clock"}.

    The OS's counters are read outside the timed region, just around it. A status other than
    "ok" ("error", "nonfinite") says why the call does not count. "clock" names the clock that
    took the seconds ("wall", "cpu"; None for a clock without a name), so that a caller in
    another process can check the call was timed by the run's clock."""
    try:
        step.setup()
        switches, cpu = usage()
        start = timer()
        step.fn()
        seconds = timer() - start
        switches_after, cpu_after = usage()
        bad = step.nonfinite()
    except Exception as e:
        return {"status": "error", "reason": one_line(e)}
    if bad:
        return {"status": "nonfinite", "reason": bad}
    return {"status": "ok", "reason": "", "seconds": seconds, "switches": switches_after - switches,
            "cpu_s": cpu_after - cpu, "clock": getattr(timer, "clock", None)}


def _call(c: Candidate, timer, usage) -> float | None:
    """One call of ``c`` (see :func:`timed_call`); its seconds, or None when it failed (``c`` says why).

    A step that lives in another process (the peers' children) times itself there, by the same
    protocol, through its own ``timed_call()``; a call it timed by another clock than ``timer``'s
    fails (its samples could not be paired with the others')."""
    remote = getattr(c.step, "timed_call", None)
    try:
        result = remote() if remote is not None else timed_call(c.step, timer, usage)
    except Exception as e:  # the other process failed
        result = {"status": "error", "reason": one_line(e)}
    wanted = getattr(timer, "clock", None)
    if result["status"] == "ok" and result.get("clock") != wanted and wanted is not None:
        result = {"status": "error", "reason": f"timed by the {result.get('clock')} clock, "
                                               f"not the run's {wanted} clock"}
    if result["status"] != "ok":
        c.fail(result["status"], result["reason"])
        return None
    c.switches.append(result["switches"])
    c.cpu_s.append(result["cpu_s"])
    return result["seconds"]


def _first_calls(candidates: list[Candidate], timer, warmup: int, usage) -> list[Candidate]:
    """Each live candidate's first, cold call (timed apart), then ``warmup`` untimed rounds."""
    live = [c for c in candidates if c.status == "ok"]
    for c in live:
        seconds = _call(c, timer, usage)
        if seconds is not None:
            c.first_call_s = seconds
    for _ in range(warmup):
        for c in live:
            if c.status == "ok":
                _call(c, timer, usage)
    for c in live:  # the warm-up's counters are not samples
        c.switches, c.cpu_s = [], []
    return [c for c in live if c.status == "ok"]


def _round(live: list[Candidate], r: int, timer, usage) -> None:
    """Round ``r``: one timed call of each live candidate, the order rotated by ``r`` (A B C, B C A,
    C A B, ...), so that no candidate always runs first, or right after the same one."""
    n = len(live)
    for i in range(n):
        c = live[(r + i) % n]
        if c.status != "ok":
            continue
        seconds = _call(c, timer, usage)
        if seconds is not None:
            c.samples.append(seconds)
            c.rounds.append(r)


def calls(c: Candidate, timer, count: int, usage=os_usage) -> None:
    """``count`` timed calls of one candidate, each after its untimed setup, added to its samples."""
    for r in range(count):
        _round([c], r, timer, usage)


def turns(candidates: list[Candidate], timer, repeats: int, warmup: int, usage=os_usage) -> None:
    """First call, ``warmup`` untimed rounds, then ``repeats`` timed rounds, the candidates taking turns."""
    live = _first_calls(candidates, timer, warmup, usage)
    for r in range(repeats):
        _round(live, r, timer, usage)


def turns_until_clear(candidates: list[Candidate], timer, warmup: int, min_rounds: int, max_rounds: int,
                      budget_s: float, clear: Callable[[int], bool], usage=os_usage,
                      clock: Callable[[], float] = time.perf_counter) -> int:
    """Rounds of turns until ``clear(rounds)`` says the answer is clear, or the budget is spent.

    At least ``min_rounds`` and at most ``max_rounds`` timed rounds; after ``min_rounds``,
    more only while the wall time of the timed rounds is under ``budget_s``. ``clear`` is
    asked after each round from ``min_rounds`` on (it reads the candidates' samples).
    Returns the number of timed rounds taken.
    """
    live = _first_calls(candidates, timer, warmup, usage)
    started = clock()
    r = 0
    while r < max_rounds:
        _round(live, r, timer, usage)
        r += 1
        if r >= min_rounds and (clock() - started >= budget_s or clear(r)):
            break
    return r


class Side(Protocol):
    """One side of a paired comparison, usually a child process (``benchmarks.gate``)."""

    label: str

    def warm_up(self) -> dict[str, float]:
        """Run every benchmark a while; the seconds per call of each that ran."""

    def take_turns(self, name: str, count: int, calls: int) -> list[list[tuple[float, bool]]]:
        """``count`` turns of ``calls`` calls of benchmark ``name``: (seconds, disturbed) of each call."""


def paired_turns(sides: list[Side], count: int, per_turn: int, sample_s: float,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, list[list]]]:
    """Raw calls per side label and benchmark: {label: {name: [[(seconds, disturbed), ...], ...]}}.

    The sides take turns benchmark by benchmark (A B, B A, A B, ...), so that the two
    sides' turns at one benchmark are taken seconds apart at most. A turn is enough calls
    to last about ``sample_s`` (at least MIN_CALLS, at most MAX_CALLS), the same number on
    both sides, so that a sample made of a turn means the same thing on both.
    """
    estimates: dict[str, float] = {}
    for side in sides:  # one at a time: a side's warm-up never competes with the other's
        for name, seconds in side.warm_up().items():
            estimates[name] = min(estimates.get(name, math.inf), seconds)
    calls = {name: min(MAX_CALLS, max(MIN_CALLS, math.ceil(sample_s / max(seconds, 1e-9))))
             for name, seconds in estimates.items()}
    taken: dict[str, dict[str, list[list]]] = {side.label: {} for side in sides}
    for r in range(count):
        for i, (name, n) in enumerate(calls.items()):
            for side in (sides if (r + i) % 2 == 0 else sides[::-1]):
                taken[side.label].setdefault(name, []).extend(side.take_turns(name, per_turn, n))
        if progress:
            progress(r + 1, count)
    return taken


def fastest(taken: dict[str, dict[str, list[list]]]) -> dict[str, dict[str, list[float]]]:
    """One sample per turn: its fastest undisturbed call (its fastest call where the machine
    disturbed them all), the one least touched by other work."""
    def sample(turn) -> float:
        clean = [s for s, bad in turn if not bad]
        return float(min(clean or [s for s, _ in turn]))

    return {label: {name: [sample(t) for t in ts] for name, ts in by_name.items()}
            for label, by_name in taken.items()}


def disturbed_turns(taken: dict[str, dict[str, list[list]]]) -> dict[str, dict[str, int]]:
    """How many turns of each side and benchmark had every call disturbed."""
    return {label: {name: sum(all(bad for _, bad in t) for t in ts) for name, ts in by_name.items()}
            for label, by_name in taken.items()}
