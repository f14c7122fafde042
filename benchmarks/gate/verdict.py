"""The speed gate's verdict, derived from its measurements.

Each side of a comparison gives one :class:`benchmarks.core.measurement.Measurement` per case
(:func:`side_measurements`): the case, the side's status for it, and its samples, one per turn
(the fastest call of the turn, :func:`benchmarks.core.protocol.fastest`), the round of each
(the turn's number, which pairs it with the other side's sample of the same turn) and whether
the machine disturbed every call of that turn. Which side timed it is the ``side`` fact
("head", "base"), not a part of the case: both sides time the same case, and the case is what
the comparison pairs them on. The gate appends them to its run folder's ``measurements.jsonl``
(the one place its samples are kept); every row of its verdict (:func:`judge`) is derived from
them through :mod:`benchmarks.core.stats`, so that reading them back gives the same table.
"""

from __future__ import annotations

import functools
from typing import Iterable

from benchmarks.core import protocol, stats
from benchmarks.core.measurement import Measurement
from benchmarks.core.units import format_seconds
from benchmarks.gate import child as suite

EXIT_PASS, EXIT_REGRESSION = 0, 1
HEAD, BASE = "head", "base"
NO_KAN = "the base has no kan package"
_HEAD_FAILED = ("error", "nonfinite")


# --- the measurements of one side ------------------------------------------------------------

def side_measurements(cases, label: str, side, turns: dict[str, list[list]], *, clock: str,
                      threads: int) -> list[Measurement]:
    """One measurement per case of the side ``label`` (a :class:`benchmarks.gate.cli.Side`, or None
    for a base without a kan package): its status there, and its samples from ``turns`` (that
    side's calls, {name: [[(seconds, disturbed), ...] per turn]})."""
    fastest = protocol.fastest({label: turns})[label]
    out = []
    for case in cases:
        name = suite.name(case)
        status, reason = side.status(name) if side is not None else ("missing", NO_KAN)
        taken = turns.get(name, []) if status == "ok" else []
        samples = fastest.get(name, []) if taken else []
        first = (side.hello.get("cases", {}).get(name) or {}).get("first_call_s") if side is not None else None
        facts = {"side": label, **({"calls_per_sample": len(taken[0])} if taken else {})}
        out.append(Measurement(case, name=name, status=status, reason=reason, threads=threads, clock=clock,
                               samples=tuple(samples), rounds=tuple(range(len(samples))),
                               disturbed=tuple(all(bad for _, bad in turn) for turn in taken),
                               first_call_s=first, facts=facts))
    return out


def by_side(measurements: Iterable[Measurement]) -> dict[str, dict[str, Measurement]]:
    """{side: {benchmark name: measurement}}."""
    out: dict[str, dict[str, Measurement]] = {HEAD: {}, BASE: {}}
    for m in measurements:
        out.setdefault(m.facts.get("side", HEAD), {})[m.name] = m
    return out


def cases_of(measurements: Iterable[Measurement]) -> list:
    """The cases measured, in the order first met."""
    return list(dict.fromkeys(m.case for m in measurements))


def _status(m: Measurement | None) -> tuple[str, str]:
    return ("missing", "not in the suite") if m is None else (m.status, m.reason)


def _samples(m: Measurement | None) -> list[float]:
    return [] if m is None else list(m.samples)


# --- verdicts --------------------------------------------------------------------------------

def judge(measurements: list[Measurement], mode: str, threshold: float, alpha: float,
          baseline: dict | None = None) -> list[dict]:
    """The verdict's rows (``mode`` "base": head against base; "baseline": head's ratios to the
    MLP against ``baseline``'s), each with its turn counts."""
    cases, measured = cases_of(measurements), by_side(measurements)
    if mode == "base":
        rows = judge_against_base(cases, measured, threshold, alpha)
    else:
        rows = judge_against_baseline(cases, measured[HEAD], baseline, threshold, alpha)
    for row in rows:
        sides = [measured.get(label, {}).get(row["benchmark"]) for label in (HEAD, BASE)]
        calls = [m.facts["calls_per_sample"] for m in sides if m is not None and "calls_per_sample" in m.facts]
        row["calls_per_sample"] = calls[0] if calls else None
        for label, m in zip((HEAD, BASE), sides):
            row[f"disturbed_{label}"] = m.disturbed_count if m is not None and m.samples else None
    return rows


def judge_against_base(cases, measured: dict[str, dict[str, Measurement]], threshold, alpha) -> list[dict]:
    """One row per benchmark: the comparison, or why there is none ("new", "removed", ...)."""
    rows = []
    for case in cases:
        row = suite.fields(case)
        head, base = measured[HEAD].get(suite.name(case)), measured[BASE].get(suite.name(case))
        (hs, hreason), (bs, breason) = _status(head), _status(base)
        if hs == "ok" and bs == "ok":
            row.update(status=None, **stats.compare(_samples(head), _samples(base), threshold, alpha,
                                                    paired=True).to_dict())
            row["status"] = row.pop("verdict")
        elif hs == "ok" and bs == "missing":
            row.update(status="new", reason=breason)
        elif hs == "missing" and bs == "ok":
            row.update(status="removed", reason=hreason)
        elif hs == "missing" and bs == "missing":
            row.update(status="absent", reason=hreason)
        else:
            side, reason = (HEAD, hreason) if hs in _HEAD_FAILED else (BASE, breason)
            row.update(status="error", reason=f"{side}: {reason}", failed_side=side)
        rows.append(row)
    return rows


def judge_against_baseline(cases, head: dict[str, Measurement], baseline: dict, threshold, alpha) -> list[dict]:
    """One row per benchmark: its time over the MLP's (same phase, same run) against the baseline's."""
    ratios = baseline["ratios"]
    rows = []
    for case in cases:
        row, name = suite.fields(case), suite.name(case)
        hs, hreason = _status(head.get(name))
        reference_name = f"{suite.BASELINE_MODEL}-{case.phase}"
        h, ref = _samples(head.get(name)), _samples(head.get(reference_name))
        if case.model == suite.BASELINE_MODEL:
            row.update(status="reference" if hs == "ok" else "error", reason=hreason)
        elif hs in _HEAD_FAILED:
            row.update(status="error", reason=f"head: {hreason}", failed_side=HEAD)
        elif hs == "missing":
            row.update(status="removed" if name in ratios else "absent", reason=hreason)
        elif name not in ratios:
            row.update(status="new", reason="not in the baseline file")
        elif not ref:
            row.update(status="error", reason=f"{reference_name} could not be measured", failed_side=HEAD)
        else:
            c = stats.compare_to_reference(h, ref, ratios[name], threshold, alpha,
                                           paired=len(h) == len(ref))  # taken round by round
            row.update(**c.to_dict())
            row["status"] = row.pop("verdict")
        rows.append(row)
    return rows


def overall(rows: list[dict]) -> tuple[str, int, str]:
    """(verdict, exit status, one-line summary) of a table of rows: "fail" and 1 on a regression or
    a model the working tree could not measure, else "pass" and 0."""
    regressions = [r["benchmark"] for r in rows if r["status"] == stats.REGRESSION]
    failed = [r["benchmark"] for r in rows if r.get("failed_side") == HEAD]
    improvements = [r["benchmark"] for r in rows if r["status"] == stats.IMPROVEMENT]
    parts = []
    if regressions:
        parts.append(f"regression in {', '.join(regressions)}")
    if failed:
        parts.append(f"could not measure {', '.join(failed)} in the working tree")
    if improvements:
        parts.append(f"faster: {', '.join(improvements)}")
    if regressions or failed:
        return "fail", EXIT_REGRESSION, "; ".join(parts)
    return "pass", EXIT_PASS, "; ".join(["no regression", *parts])


_ms = functools.partial(format_seconds, unit="ms", spec=".3f", missing="-")  # one unit down a column


def format_table(rows: list[dict], baseline_mode: bool = False) -> str:
    """The verdict table, one line per benchmark, for the terminal."""
    head_col, base_col = ("x mlp", "baseline") if baseline_mode else ("head median", "base median")
    lines = [f"{'benchmark':<20} {base_col:>13} {head_col:>13} {'head/base':>9} "
             f"{'95% interval':>15} {'p(slower)':>9}  verdict"]
    for r in rows:
        if r.get("ratio") is not None:  # a comparison was made
            fmt = (lambda v: f"{v:.2f}") if baseline_mode else _ms
            interval = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            lines.append(
                f"{r['benchmark']:<20} {fmt(r['median_base']):>13} {fmt(r['median_head']):>13} "
                f"{r['ratio']:>9.3f} {interval:>15} "
                f"{r['p_slower']:>9.2g}  {r['status']}"
            )
        else:
            reason = f" ({r['reason']})" if r.get("reason") and r["status"] != "reference" else ""
            lines.append(f"{r['benchmark']:<20} {'-':>13} {'-':>13} {'-':>9} {'-':>15} {'-':>9}  "
                         f"{r['status']}{reason}")
    return "\n".join(lines)


# --- a baseline file's ratios ------------------------------------------------------------------

def baseline_ratios(head: dict[str, Measurement]) -> dict[str, float]:
    """Median time of each KAN case over the MLP's (same phase), from the working tree's measurements."""
    ratios = {}
    for name, m in head.items():
        if m.case is None or m.case.model == suite.BASELINE_MODEL or not m.samples:
            continue
        reference = head.get(f"{suite.BASELINE_MODEL}-{m.case.phase}")
        if reference is not None and reference.samples:
            mine, theirs = list(m.samples), list(reference.samples)
            ratio = stats.paired_ratio(mine, theirs) if len(mine) == len(theirs) else stats.median_ratio(mine, theirs)
            ratios[name] = round(ratio, 4)
    return ratios
