"""One case measured: the value every table, summary, page and comparison of the bench derives from.

In the manner of ``torch.utils.benchmark``'s ``Measurement`` (with its ``TaskSpec``): a
:class:`Measurement` holds the frozen description of what was measured (a
:class:`benchmarks.core.case.Case`), how it was timed (``threads``, ``clock``), the raw
samples with the round each was taken in and whether the machine disturbed it, the first,
cold call, its status, and the figures measured apart from the timing (memory, FLOPs, the
device's busy time, the variant's output difference). The median, spread and stability
are properties computed from the samples, never stored beside them.

``ratios`` are the exception that proves the rule: a paired ratio to an MLP baseline is a
comparison of two measurements' samples, round by round, with its bootstrap interval; the
group that timed both computes it (:mod:`benchmarks.core.measure`) and the measurement
carries it.

``measurements.jsonl`` holds one :meth:`Measurement.to_json` object per line (with
``version``); :meth:`Measurement.from_json` reads those, and the flat rows that earlier
harnesses wrote (no ``version``), whose figures are kept as they were recorded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from benchmarks.core import stats
from benchmarks.core.case import Case

VERSION = 1  # of the JSON form; a reader refuses a newer one rather than misread it

# Disturbed samples are left out of a measurement's figures while at least this share of its
# rounds (and the suite's least rounds) remain; a machine busier than that is measured with
# all its samples, and said so.
CLEAN_SHARE = 0.5
# The ratios to the MLP baselines, by column, and the model each is a ratio to.
BASELINES = (("x_mlp", "mlp"), ("x_mlp_param", "mlp-param"))


@dataclass(frozen=True)
class Ratio:
    """A paired ratio to a baseline: the median of per-round ratios, its 95% bootstrap interval,
    and the number of rounds paired."""

    ratio: float
    low: float
    high: float
    pairs: int

    @property
    def spread(self) -> float:
        """How far the interval reaches from the ratio, relative to it (0.05: within +/-5%)."""
        return stats.PairedRatio(self.ratio, self.low, self.high, self.pairs).spread


# What a measurement records besides its samples: the figures measured apart from the timing,
# named as the tidy table names them (benchmarks.core.schema.BENCH_COLUMNS).
FACTS = ("family", "machine", "package", "parameters", "param_bytes", "saved_bytes", "flops", "peak_bytes",
         "device_s", "math", "peak_flops", "peak_bandwidth", "peak_source", "bytes_moved", "equivalence",
         "max_rel_difference", "load_before", "load_after",
         # the speed gate's: the side whose code was timed ("head", "base"), and how many calls a
         # sample is the fastest of (benchmarks.gate.verdict)
         "side", "calls_per_sample",
         # the targets study's dense floor: the widths of the KAN whose first layer's product it stands for
         "stands_for")


@dataclass(frozen=True)
class Measurement:
    """One case measured (see the module docstring).

    ``name`` is the benchmark's name in the run (the bench's ``test_case[<case id>]``, as
    pytest-benchmark names it; the case id elsewhere). ``status`` is "ok", or "skipped" (the
    model cannot be imported here), "error" or "nonfinite" (NaN/inf in an output), or why a
    peer is "not available", with ``reason``; only an "ok" measurement has samples.
    ``min_rounds`` is the suite's least number of rounds, which decides whether disturbed
    samples may be left out (:data:`CLEAN_SHARE`).
    """

    case: Case | None
    name: str = ""
    status: str = "ok"
    reason: str = ""
    threads: int | None = None
    clock: str | None = None  # "wall" (device-aware) or "cpu" (the process's CPU time)
    samples: tuple[float, ...] = ()  # seconds per timed call, in order
    rounds: tuple[int, ...] = ()  # the round of each sample
    disturbed: tuple[bool, ...] = ()  # whether the machine disturbed each sample
    min_rounds: int = 2
    first_call_s: float | None = None
    ratios: Mapping[str, Ratio] = field(default_factory=dict)  # {"x_mlp": Ratio, "x_mlp_param": Ratio}
    facts: Mapping[str, Any] = field(default_factory=dict)  # FACTS measured for this case
    # the figures a row of an earlier harness recorded (read from a row without "version"): kept as
    # written, since the samples they came from (or which of them were disturbed) are not all there
    recorded: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not len(self.samples) == len(self.rounds) == len(self.disturbed):
            raise ValueError(f"{self.name}: {len(self.samples)} samples, {len(self.rounds)} rounds and "
                             f"{len(self.disturbed)} disturbed flags; they go in threes")
        unknown = set(self.facts) - set(FACTS)
        if unknown:
            raise ValueError(f"unknown measurement facts {sorted(unknown)}; known: {', '.join(FACTS)}")

    # -- the samples a figure is made of -------------------------------------------------------
    @property
    def clean(self) -> tuple[bool, ...]:
        """Per sample, whether it counts as undisturbed: the CPU clock does not count the time the
        OS took the core away, so on it every sample does."""
        return tuple(not bad or self.clock == "cpu" for bad in self.disturbed)

    def used_rounds(self, *others: "Measurement") -> list[int]:
        """The rounds to use with ``others`` (paired with them): those every one has, less the
        disturbed ones while enough are left (:data:`CLEAN_SHARE`, at least ``min_rounds``)."""
        common = set(self.rounds).intersection(*(o.rounds for o in others))
        clean = common.intersection(*({r for r, ok in zip(m.rounds, m.clean) if ok} for m in (self, *others)))
        enough = max(self.min_rounds, math.ceil(CLEAN_SHARE * len(common)))
        return sorted(clean if len(clean) >= enough else common)

    def samples_of(self, rounds: list[int]) -> list[float]:
        by_round = dict(zip(self.rounds, self.samples))
        return [by_round[r] for r in rounds]

    @property
    def used(self) -> np.ndarray:
        """The samples the figures are made of: (used rounds,) seconds."""
        return np.asarray(self.samples_of(self.used_rounds()), dtype=float)

    # -- derived figures -----------------------------------------------------------------------
    @property
    def median_s(self) -> float:
        return float(np.median(self.used)) if self.samples else math.nan

    @property
    def iqr_s(self) -> float:
        if not self.samples:
            return math.nan
        q1, q3 = np.percentile(self.used, [25, 75])
        return float(q3 - q1)

    @property
    def disturbed_count(self) -> int:
        return sum(self.disturbed)

    def figures(self) -> dict[str, Any]:
        """The timing figures of an "ok" measurement, as the tidy table names them."""
        used = self.used
        return dict(median_s=self.median_s, iqr_s=self.iqr_s, mean_s=float(used.mean()), min_s=float(used.min()),
                    max_s=float(used.max()), rounds=len(self.samples), used_rounds=len(used),
                    disturbed=self.disturbed_count)

    def ratio_columns(self) -> dict[str, float]:
        """x_mlp, x_mlp_param and their interval ends: 1 for the baseline itself, else as paired."""
        out: dict[str, float] = {}
        for column, model in BASELINES:
            r = Ratio(1.0, 1.0, 1.0, 0) if self.case is not None and self.case.model == model else \
                self.ratios.get(column)
            if r is not None:
                out.update({column: r.ratio, f"{column}_low": r.low, f"{column}_high": r.high})
        return out

    def stability(self) -> dict[str, Any]:
        """stable, or unstable with the reasons: an interval wider than asked (which ratio's), or
        more disturbed samples than could be left out (on the wall clock only: the CPU clock does not
        count the time they lost)."""
        spreads = {f"to {model}": self.ratios[column].spread for column, model in BASELINES
                   if column in self.ratios and not (self.case and self.case.model == model)}
        if not spreads:
            spreads["of the median"] = own_spread(self.used)
        # NaN: no interval at all, from fewer rounds than one needs (the verdict says so), not a wide one
        had = {what: s for what, s in spreads.items() if not math.isnan(s)}
        reasons = [] if len(had) == len(spreads) else [f"no interval (under {stats.MIN_INTERVAL_PAIRS} rounds)"]
        imprecise = [f"interval {what} {_reach(s)}" for what, s in had.items() if not s <= stats.CLEAR_WITHIN]
        if had:
            what, spread = max(had.items(), key=lambda item: item[1])
            if not spread <= stats.CLEAR_WITHIN:
                reasons.append(f"interval {what} {_reach(spread)}")
        counted = self.disturbed_count if self.clock == "wall" else 0
        n, used = len(self.samples), len(self.used_rounds())
        interference = None
        if counted and used == n and counted > (1 - CLEAN_SHARE) * n:
            interference = f"{counted} of {n} samples disturbed"
            reasons.append(interference)
        # "stable"/"unstable_reason" as older harnesses wrote them; the summary and page read the two flags
        return {"stable": "unstable" if reasons else "stable", "unstable_reason": "; ".join(reasons) or None,
                "imprecise": "; ".join(imprecise) or None, "interference": interference}

    def row(self) -> dict[str, Any]:
        """The measurement as one row of the tidy table (:func:`benchmarks.core.schema.bench_table`
        derives the rest: throughput, GFLOP/s, the device's shares)."""
        if self.recorded:
            return dict(self.recorded)
        row: dict[str, Any] = {"benchmark": self.name, **(self.case.record() if self.case else {}),
                               "status": self.status, "reason": self.reason or None, "threads": self.threads,
                               "first_call_s": self.first_call_s, **self.facts}
        if self.status == "ok" and self.samples:
            row.update(clock=self.clock, **self.figures(), **self.ratio_columns(), **self.stability())
        return row

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """One line of measurements.jsonl: the raw measurement (no derived figure), with ``version``."""
        if self.recorded:
            return dict(self.recorded)  # an earlier harness's row stays as it was written
        case = None if self.case is None else {**dataclasses.asdict(self.case), "widths": list(self.case.widths)}
        return {"version": VERSION, "name": self.name, "case": case, "status": self.status, "reason": self.reason,
                "threads": self.threads, "clock": self.clock, "min_rounds": self.min_rounds,
                "first_call_s": self.first_call_s, "samples": list(self.samples), "rounds": list(self.rounds),
                "disturbed": [bool(b) for b in self.disturbed],
                "ratios": {k: [r.ratio, r.low, r.high, r.pairs] for k, r in self.ratios.items()},
                "facts": dict(self.facts)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Measurement":
        """A measurement from :meth:`to_json`'s object, or from a row an earlier harness wrote."""
        if "version" not in doc:
            return _from_row(doc)
        if not isinstance(doc["version"], int) or doc["version"] > VERSION:
            raise ValueError(f"a measurement of version {doc['version']!r}, newer than this harness reads "
                             f"({VERSION}): update the harness")
        case = None if doc.get("case") is None else Case(**{**doc["case"], "widths": tuple(doc["case"]["widths"])})
        return cls(case, name=doc.get("name", ""), status=doc.get("status", "ok"), reason=doc.get("reason") or "",
                   threads=doc.get("threads"), clock=doc.get("clock"), min_rounds=int(doc.get("min_rounds", 2)),
                   first_call_s=doc.get("first_call_s"), samples=tuple(float(s) for s in doc.get("samples", ())),
                   rounds=tuple(int(r) for r in doc.get("rounds", ())),
                   disturbed=tuple(bool(b) for b in doc.get("disturbed", ())),
                   ratios={k: Ratio(*v) for k, v in (doc.get("ratios") or {}).items()},
                   facts=dict(doc.get("facts") or {}))


def _from_row(row: Mapping[str, Any]) -> Measurement:
    """A row as earlier harnesses wrote it (flat, the tidy table's columns and ``samples``): its
    case where the row names a valid one, its samples where it kept them, its figures as recorded."""
    samples = tuple(float(s) for s in row.get("samples") or ())
    try:
        widths = tuple(int(w) for w in str(row["widths"]).split("x"))
        grid = row.get("grid_size")
        case = Case(row["model"], row["phase"], row["device"], row["dtype"], widths, int(row["batch"]),
                    None if grid is None or grid != grid else int(grid), graph=row.get("mode") == "cuda graph")
    except (KeyError, TypeError, ValueError):
        case = None  # too little said to name the case: the row still renders as recorded
    return Measurement(case, name=str(row.get("benchmark") or ""), status=str(row.get("status") or "ok"),
                       reason=row.get("reason") or "", threads=row.get("threads"), clock=row.get("clock"),
                       first_call_s=row.get("first_call_s"), samples=samples, rounds=tuple(range(len(samples))),
                       # which samples were disturbed was never written: none counts as such
                       disturbed=(False,) * len(samples), recorded=dict(row))


def own_spread(samples, resamples: int = 2000) -> float:
    """The reach of the median's 95% bootstrap interval, relative to the median (NaN, no interval, from
    fewer than ``stats.MIN_INTERVAL_PAIRS`` samples, as for a paired ratio)."""
    s = np.asarray(samples, dtype=float)
    if s.size < stats.MIN_INTERVAL_PAIRS:
        return math.nan
    low, high = stats.bootstrap_ratio_ci(s, [float(np.median(s))], resamples=resamples)
    return stats.PairedRatio(1.0, low, high, s.size).spread


def _reach(spread: float) -> str:
    return "wider than ±5%" if not math.isfinite(spread) else f"±{spread:.1%}" if spread < 0.1 else f"±{spread:.0%}"


def samples_by_name(measurements) -> dict[str, list[float]]:
    """Raw samples (seconds) per benchmark name, of the measurements that have them."""
    return {m.name: list(m.samples) for m in measurements if m.status == "ok" and m.samples}
