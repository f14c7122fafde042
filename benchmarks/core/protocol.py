"""How samples are taken: the one place that calls the clock around a step.

Every timing in the harness goes through one of three protocols, all built on the
device-aware clock of :mod:`benchmarks.core.timer` and the steps of
:mod:`benchmarks.core.case` (``setup()`` untimed, then ``fn()`` timed):

- :func:`first_call` and :func:`rounds`: one candidate on its own, its cold first call
  apart from its steady state (the pytest-benchmark suites do the same through
  ``benchmark.pedantic``; profiles and quick checks use :func:`rounds`);
- :func:`turns`: several candidates that are compared with each other (the models of one
  workload), call by call in turns (A B C A B C ...), so that a ratio compares samples
  taken side by side and the machine's drifts fall on all of them alike;
- :func:`paired_turns`: two sides of a comparison that live in separate processes (the
  speed gate's base and head), benchmark by benchmark in alternating order (A B, B A, ...),
  one side running at a time; a sample is the fastest call of a turn (:func:`fastest`).

A candidate whose call raises or leaves NaN/inf behind leaves the rotation with status
"error" or "nonfinite"; the others go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

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
    """

    name: str
    step: object | None = None
    status: str = "ok"  # "ok", "error", "nonfinite", or why it could not be built ("not installed", ...)
    reason: str = ""
    first_call_s: float = math.nan
    samples: list[float] = field(default_factory=list)  # seconds per timed call, in order

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.samples = []


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def turns(candidates: list[Candidate], timer, repeats: int, warmup: int) -> None:
    """First call, ``warmup`` untimed calls, then ``repeats`` timed calls of each, taking turns."""

    def call(c: Candidate, timed: bool) -> None:
        step = c.step
        try:
            step.setup()
            start = timer()
            step.fn()
            seconds = timer() - start
            bad = step.nonfinite()
        except Exception as e:
            c.fail("error", _one_line(e))
            return
        if bad:
            c.fail("nonfinite", bad)
        elif timed:
            c.samples.append(seconds)
        elif math.isnan(c.first_call_s):
            c.first_call_s = seconds

    live = [c for c in candidates if c.status == "ok"]
    for c in live:
        call(c, timed=False)
    for i in range(warmup + repeats):
        for c in live:
            if c.status == "ok":
                call(c, timed=i >= warmup)


class Side(Protocol):
    """One side of a paired comparison, usually a child process (``benchmarks.gate``)."""

    label: str

    def warm_up(self) -> dict[str, float]:
        """Run every benchmark a while; the seconds per call of each that ran."""

    def take_turns(self, name: str, count: int, calls: int) -> list[list[float]]:
        """``count`` turns of ``calls`` calls of benchmark ``name``: seconds of each call."""


def paired_turns(sides: list[Side], count: int, per_turn: int, sample_s: float,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, list[list[float]]]]:
    """Raw call times per side label and benchmark: {label: {name: [[seconds, ...], ...]}}.

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
    taken: dict[str, dict[str, list[list[float]]]] = {side.label: {} for side in sides}
    for r in range(count):
        for i, (name, n) in enumerate(calls.items()):
            for side in (sides if (r + i) % 2 == 0 else sides[::-1]):
                taken[side.label].setdefault(name, []).extend(side.take_turns(name, per_turn, n))
        if progress:
            progress(r + 1, count)
    return taken


def fastest(taken: dict[str, dict[str, list[list[float]]]]) -> dict[str, dict[str, list[float]]]:
    """One sample per turn: its fastest call, the one least disturbed by other work."""
    return {label: {name: [float(min(t)) for t in ts] for name, ts in by_name.items()}
            for label, by_name in taken.items()}
