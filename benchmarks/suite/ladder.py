"""The full suite's ladder on an accelerator: workloads that grow until the device is busy.

On a GPU the small shapes measure Python and kernel launches, not the models (docs/gpu.md).
How much work keeps a device busy depends on the device, its dtype and the host that feeds it,
so the full suite does not guess one shape: on CUDA and MPS it climbs a :class:`Ladder` of
rungs (widths, batch) of growing work, per device and dtype, and stops where the device is
busy. The CPU has no ladder: its suites are what they were.

The runner (:func:`benchmarks.suite.runner.run_suite`) measures a rung whole (every model,
phase, grid size and mode of it), then :meth:`Climb.decide` says whether to go on:

- **out of memory**: a row of the rung ran out of device memory. Those rows are recorded as
  ``skipped`` with the reason (:func:`as_skipped`), not as errors, and the climb stops: the
  rungs above need more;
- **busy**: the rung's judge, the width-matched MLP's eager training step, kept the device busy
  for at least ``busy_at`` of its call (:func:`busy_share`: ``device_s / median_s``, the
  table's ``device_busy``), so it is not launch-bound either. The MLP judges because it is the
  fastest model, the least busy at a shape, and the denominator of every ratio: once it is
  busy, a KAN / MLP ratio compares the models' work, not two overheads. Without the MLP in the
  selection, the least busy eager row of the rung judges;
- **top**: the ladder's last rung ran.

Otherwise the next rung runs. Where no device time was recorded (MPS, whose kernels
torch.profiler does not see; a CUDA profiler that is not permitted) the judge's busy share is
estimated from how its time grew with its FLOPs since the rung below (:func:`growth_share`);
on the first rung it is unknown and the climb goes on.

A rung that was not run is no row of the table; the run's settings (``ladder`` in run.json) and the
printed summary say how many rungs ran, where the climb stopped and why (:func:`lines`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

from benchmarks.core.measurement import Measurement
from benchmarks.core.schema import LAUNCH_BOUND_BELOW
from benchmarks.core.timer import device_type

# The judge's busy share at or above which a rung keeps the device busy: its launches and Python
# are at most a quarter of the call, so ratios to it are mostly the models' own work. Well above
# the launch-bound line (LAUNCH_BOUND_BELOW), which marks a row the device sat idle in.
BUSY_AT = 0.75
assert BUSY_AT > LAUNCH_BOUND_BELOW
JUDGE = ("mlp", "train")  # the width-matched MLP's training step (model, phase)
ACCELERATORS = ("cuda", "mps")

# How an out-of-memory error reads in a row's reason: torch.cuda.OutOfMemoryError ("CUDA out of
# memory. Tried to allocate ..."), MPS's RuntimeError ("MPS backend out of memory ...").
_OUT_OF_MEMORY = re.compile(r"OutOfMemoryError|out of memory", re.IGNORECASE)

# Why a climb stopped (``Climb.stopped``).
BUSY, OUT_OF_MEMORY, TOP = "busy", "out of memory", "top"


@dataclass(frozen=True)
class Rung:
    """One workload size of the ladder: the widths and batch every model of it runs at."""

    widths: tuple[int, ...]
    batch: int

    @property
    def work(self) -> int:
        """batch x the weights of the widths (sum of in x out): what a dense forward's FLOPs grow with."""
        return self.batch * sum(a * b for a, b in zip(self.widths, self.widths[1:]))

    def label(self) -> str:
        return f"[{', '.join(map(str, self.widths))}] batch {self.batch}"


@dataclass(frozen=True)
class Ladder:
    """Rungs of strictly growing work, climbed on an accelerator until ``busy_at``."""

    rungs: tuple[Rung, ...]
    busy_at: float = BUSY_AT

    def __post_init__(self):
        works = [r.work for r in self.rungs]
        if not self.rungs or any(b <= a for a, b in zip(works, works[1:])):
            raise ValueError(f"a ladder's rungs must grow in work, got {[r.label() for r in self.rungs]}")
        if not 0 < self.busy_at <= 1:
            raise ValueError(f"busy_at is a share of the call in (0, 1], got {self.busy_at}")

    def index(self, case) -> int | None:
        """The rung (0-based) that ``case`` belongs to, or None (a CPU case, or not of a rung)."""
        if device_type(case.device) not in ACCELERATORS:
            return None
        for i, rung in enumerate(self.rungs):
            if (rung.widths, rung.batch) == (tuple(case.widths), case.batch):
                return i
        return None


# --------------------------------------------------------------------------- a rung's figures


def out_of_memory(m: Measurement) -> bool:
    """Whether ``m`` failed by running out of device memory (its reason says so)."""
    return m.status == "error" and bool(_OUT_OF_MEMORY.search(m.reason or ""))


def as_skipped(m: Measurement, rung: int, ladder: Ladder) -> Measurement:
    """A row that ran out of device memory on rung ``rung`` (0-based), recorded as skipped: the
    device is too small for it, which is not the harness failing."""
    why = f"out of device memory on ladder rung {rung + 1} ({ladder.rungs[rung].label()}): {m.reason}"
    return replace(m, status="skipped", reason=why)


def busy_share(m: Measurement) -> float | None:
    """The device's busy share of ``m``'s call, as the table computes it (device_s / median_s, at
    most 1); None where no device time was recorded."""
    device_s = m.facts.get("device_s")
    if m.status != "ok" or device_s is None or not m.samples:
        return None
    median = m.median_s
    return min(1.0, float(device_s) / median) if median > 0 else None


def growth_share(t_below: float, w_below: float, t_here: float, w_here: float) -> float | None:
    """The busy share of a call of ``w_here`` FLOPs taking ``t_here`` s, estimated from a smaller
    one (``w_below`` FLOPs, ``t_below`` s) of the same step: the call's time taken as a fixed
    overhead plus work at a fixed rate, the busy share is the work's part of the larger call,
    ``w_here / (w_here - w_below) * (1 - t_below / t_here)``, in [0, 1].

    Time proportional to work gives 1; time that did not grow gives 0. A device that runs the
    larger work at a higher rate (as GPUs do) makes the estimate low, so the climb errs upward.
    """
    if not (w_here > w_below > 0 and t_here > 0 and t_below > 0):
        return None
    return min(1.0, max(0.0, w_here / (w_here - w_below) * (1 - t_below / t_here)))


def _judges(measured: Iterable[Measurement]) -> list[Measurement]:
    """The rows that judge a rung: the MLP's eager training step, or every eager row without it."""
    eager = [m for m in measured if m.status == "ok" and m.case is not None and not m.case.graph]
    mlp = [m for m in eager if (m.case.model, m.case.phase) == JUDGE]
    return mlp or eager


def _key(m: Measurement) -> tuple:
    return m.case.model, m.case.phase, m.case.grid_size


def _grown(m: Measurement, below: dict) -> float | None:
    """:func:`growth_share` of judge ``m`` against the same model, phase and grid on the rung below."""
    t_below, w_below = below.get(_key(m), (None, None))
    w_here = m.facts.get("flops")
    if t_below is None or not w_below or not w_here:
        return None
    return growth_share(t_below, float(w_below), m.median_s, float(w_here))


def _name(m: Measurement) -> str:
    return "the MLP's training step" if (m.case.model, m.case.phase) == JUDGE else f"{m.case.model} {m.case.phase}"


# --------------------------------------------------------------------------- the climb


@dataclass
class RungResult:
    """One rung that ran: how busy its judge kept the device, and how that was known."""

    rung: int  # 0-based
    label: str
    busy: float | None = None
    busy_from: str | None = None  # "device time" or "time's growth with FLOPs"
    judged_by: str | None = None
    out_of_memory: int = 0  # rows recorded as skipped for want of device memory

    def to_json(self) -> dict:
        return {"rung": self.rung + 1, "shape": self.label, "busy": self.busy, "busy_from": self.busy_from,
                "judged_by": self.judged_by, "out_of_memory": self.out_of_memory}


@dataclass
class Climb:
    """The climb of one device and dtype: the rungs that ran and why it stopped (None: climbing)."""

    ladder: Ladder
    device: str
    dtype: str
    planned: tuple[int, ...]  # the rungs (0-based) this selection holds for the device and dtype
    steps: list[RungResult] = field(default_factory=list)
    stopped: str | None = None  # BUSY, OUT_OF_MEMORY or TOP
    _timed: dict = field(default_factory=dict, repr=False)  # rung -> {judge's key: (median_s, flops)}

    def decide(self, rung: int, measured: list[Measurement]) -> RungResult:
        """Record rung ``rung`` (0-based) from every measurement its groups returned, and whether
        the climb stops there (``stopped``)."""
        step = RungResult(rung, self.ladder.rungs[rung].label(), out_of_memory=sum(map(out_of_memory, measured)))
        judges = _judges(measured)
        known = [(s, m) for s, m in ((busy_share(m), m) for m in judges) if s is not None]
        if not known and self._timed:  # no device time: estimated against the rung below
            below = self._timed[max(self._timed)]
            known = [(s, m) for s, m in ((_grown(m, below), m) for m in judges) if s is not None]
            step.busy_from = "time's growth with FLOPs"
        elif known:
            step.busy_from = "device time"
        if known:
            step.busy, judge = min(known, key=lambda pair: pair[0])
            step.judged_by = _name(judge)
        else:
            step.busy_from = None
        self._timed[rung] = {_key(m): (m.median_s, m.facts.get("flops")) for m in judges}
        self.steps.append(step)
        if step.out_of_memory:
            self.stopped = OUT_OF_MEMORY
        elif step.busy is not None and step.busy >= self.ladder.busy_at:
            self.stopped = BUSY
        elif rung == max(self.planned):
            self.stopped = TOP
        return step

    def to_json(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "rungs": len(self.planned), "ran": len(self.steps),
                "stopped": self.stopped, "steps": [s.to_json() for s in self.steps], "line": self.line()}

    def line(self) -> str:
        """The climb in one line: how many rungs ran, where it stopped and why."""
        head = f"ladder {self.device} {self.dtype}: {len(self.steps)} of {len(self.planned)} rungs ran"
        if not self.steps:
            return head + " (the run stopped before the first)"
        last = self.steps[-1]
        where = f"rung {last.rung + 1} ({last.label})"
        busy = _busy_words(last, self.ladder.busy_at)
        left = len([r for r in self.planned if r > last.rung])
        rest = f"; {left} rung{'s' if left != 1 else ''} above not run" if left else ""
        if self.stopped == OUT_OF_MEMORY:
            return (f"{head}; stopped at {where}: out of device memory in {last.out_of_memory} "
                    f"row{'s' if last.out_of_memory != 1 else ''} (recorded as skipped){rest}")
        if self.stopped == BUSY:
            return f"{head}; stopped at {where}: {busy}{rest}"
        if self.stopped == TOP:
            return f"{head}; reached the top, {where}, without the device busy: {busy}"
        return f"{head}; the run stopped after {where}: {busy}"


def _busy_words(step: RungResult, busy_at: float) -> str:
    if step.busy is None:
        return f"device busy unknown (no device time recorded; busy means {busy_at:.0%} or more)"
    how = "" if step.busy_from == "device time" else f", estimated from the {step.busy_from}"
    side = "at or above" if step.busy >= busy_at else "under"
    return f"device busy {step.busy:.0%} in {step.judged_by}{how} ({side} {busy_at:.0%})"


def climbs(ladder: Ladder | None, groups) -> dict[tuple[str, str], Climb]:
    """A :class:`Climb` per device and dtype that ``groups`` hold rungs of (none without a ladder)."""
    if ladder is None:
        return {}
    planned: dict[tuple[str, str], set[int]] = {}
    for g in groups:
        rung = ladder.index(g.cases[0])
        if rung is not None:
            planned.setdefault((g.cases[0].device, g.cases[0].dtype), set()).add(rung)
    return {key: Climb(ladder, *key, tuple(sorted(rungs))) for key, rungs in planned.items()}


def record(climbs: dict[tuple[str, str], Climb], ladder: Ladder) -> dict:
    """The ladder as the run's settings keep it: the rungs, the rule, and each climb."""
    return {"rungs": [r.label() for r in ladder.rungs], "busy_at": ladder.busy_at,
            "judge": "the width-matched MLP's eager training step (without it, the least busy eager row)",
            "climbs": [c.to_json() for c in climbs.values()]}


def lines(settings: dict | None) -> list[str]:
    """The summary's lines of a run's ladder (its settings' ``ladder``); none where it had none."""
    ladder = (settings or {}).get("ladder") if isinstance(settings, dict) else None
    if not isinstance(ladder, dict):
        return []
    return [c["line"] for c in ladder.get("climbs", []) if isinstance(c, dict) and c.get("line")]


__all__ = ["BUSY_AT", "JUDGE", "Rung", "Ladder", "Climb", "RungResult", "out_of_memory", "as_skipped", "busy_share",
           "growth_share", "climbs", "record", "lines", "BUSY", "OUT_OF_MEMORY", "TOP"]
