"""Two runs compared: whether they were measured under the same conditions, and each benchmark's
change between them (its ratio over the MLP, and its time where the conditions match), as the
page's comparison section shows it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.core import stats
from benchmarks.core.units import format_seconds as fmt_time
from reports.data import RunData
from reports.tables import VERDICT_ORDER, VERDICT_WORDS, Cell, Table
from reports.units import is_missing, shape_label


LOAD_PER_CORE = 0.25  # two runs' loads may differ by this much per core (at least 0.5) and still match


def _one(values) -> set:
    return {v for v in values if not is_missing(v)}


def _load(run: RunData) -> float | None:
    """The load a run's numbers were taken under: the median of its rows' load before and after
    each workload, else the 1-minute load average as the run began."""
    rows = run.benchmarks
    loads = pd.concat([pd.to_numeric(rows.get(c, pd.Series(dtype=float)), errors="coerce")
                       for c in ("load_before", "load_after")]).dropna()
    if len(loads):
        return float(loads.median())
    start = run.environment.get("load_average")
    return float(start[0]) if isinstance(start, list) and start and isinstance(start[0], (int, float)) else None


def environments(new: RunData, old: RunData) -> dict:
    """Whether two runs were measured under the same conditions, so that their absolute times may
    be judged against each other: the same CPU, devices and torch, the same clock and threads, and
    loads within LOAD_PER_CORE per core. ``matched``: bool; ``differences``: what differed, in words;
    ``same_commit``: the commit both measured, where it is one (None otherwise); ``dirty``: either
    side had uncommitted changes."""
    differences = []
    n_env, o_env = new.environment, old.environment
    for key, what in (("cpu", "CPU"), ("machine", "machine")):
        if n_env.get(key) != o_env.get(key):
            differences.append(f"{what} {o_env.get(key) or '?'} then {n_env.get(key) or '?'}")
    n_torch, o_torch = (e.get("torch", {}).get("version") if isinstance(e.get("torch"), dict) else None
                        for e in (n_env, o_env))
    if n_torch != o_torch:
        differences.append(f"torch {o_torch or '?'} then {n_torch or '?'}")
    devices = [sorted(str(d.get("name")) for d in e.get("devices", []) if isinstance(d, dict)) for e in (o_env, n_env)]
    if devices[0] != devices[1]:
        differences.append(f"devices {', '.join(devices[0]) or '?'} then {', '.join(devices[1]) or '?'}")
    for column, what in (("clock", "clock"), ("threads", "threads")):
        o, n = (sorted(map(str, _one(r.benchmarks[column]))) if column in r.benchmarks else []
                for r in (old, new))
        if column == "threads" and not (o and n):
            o, n = ([str(e.get("threads"))] if e.get("threads") is not None else [] for e in (o_env, n_env))
        if o != n:
            differences.append(f"{what} {', '.join(o) or '?'} then {', '.join(n) or '?'}")
    cores = n_env.get("cpu_count") or o_env.get("cpu_count") or 1
    bound = max(0.5, LOAD_PER_CORE * float(cores))
    o_load, n_load = _load(old), _load(new)
    if o_load is None or n_load is None:
        differences.append("the load of one run is not recorded")
    elif abs(n_load - o_load) > bound:
        differences.append(f"load {o_load:.1f} then {n_load:.1f} on {cores} cores (within {bound:g} would match)")
    elif max(o_load, n_load) > float(cores):
        # alike, but so busy that the times measure the neighbours as much as the code
        differences.append(f"load {o_load:.1f} and {n_load:.1f} on {cores} cores: more work than cores in "
                           f"{'both runs' if min(o_load, n_load) > float(cores) else 'one run'}")
    n_commit, o_commit = (e.get("commit") if isinstance(e.get("commit"), dict) else {} for e in (n_env, o_env))
    same = n_commit.get("id") if n_commit.get("id") and n_commit.get("id") == o_commit.get("id") else None
    return {"matched": not differences, "differences": differences, "same_commit": same,
            "dirty": bool(n_commit.get("dirty") or o_commit.get("dirty")),
            "load_old": o_load, "load_new": n_load}


RATIO_COLUMN = {"mlp-param": "x_mlp"}  # which ratio carries a model's comparison; the MLP itself has none


def compare_runs(new: RunData, old: RunData, threshold: float, judge_times: bool | None = None) -> pd.DataFrame:
    """Per benchmark in both runs: the change of its time over the width-matched MLP measured in the
    same run (new x_mlp / old x_mlp), judged against its workload's typical change (:func:`_judge_ratios`),
    with an interval, p-value and verdict (:func:`benchmarks.core.stats.compare_ratios`); a machine
    that was uniformly slower in one run cancels. The absolute times are compared too (:func:`benchmarks.core.stats.compare` on the raw
    samples: the speed gate's rule), but judged only where ``judge_times`` (by default: the two
    runs' environments match, :func:`environments`); the width-matched MLP's own row has only its
    absolute time to go by. ``threshold`` is the ratio beyond which a significant change counts.
    """
    if judge_times is None:
        judge_times = environments(new, old)["matched"]
    new_samples, old_samples = new.samples(), old.samples()
    old_rows = old.benchmarks.drop_duplicates("benchmark").set_index("benchmark")
    out = []
    for _, row in new.benchmarks.drop_duplicates("benchmark").iterrows():
        name = row["benchmark"]
        if name not in old_rows.index:
            continue
        before = old_rows.loc[name]
        entry = {
            "benchmark": name, "model": row["model"], "phase": row["phase"], "device": row["device"],
            "shape": shape_label(row["widths"], row["batch"], row["grid_size"]),
            "old_s": before["median_s"], "new_s": row["median_s"], "old_x": np.nan, "new_x": np.nan,
            "ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n_new": 0, "n_old": 0,
            "threshold": threshold, "verdict": "", "note": "", "judged_by": "",
            "time_ratio": np.nan, "time_low": np.nan, "time_high": np.nan, "time_verdict": "",
            "workload_shift": np.nan,
        }
        if row["status"] != "ok" or before["status"] != "ok":
            entry["verdict"] = "failed"
            entry["note"] = f"status new {row['status']}, old {before['status']}"
            out.append(entry)
            continue
        time_said = _compare_times(entry, name, new_samples, old_samples, row, before, threshold)
        is_baseline = row["model"] == "mlp" or (row.get("family") == "mlp" and row["model"] not in RATIO_COLUMN)
        column = RATIO_COLUMN.get(row["model"], "x_mlp")
        figures = [_number(r.get(c)) for r in (row, before) for c in (column, f"{column}_low", f"{column}_high")]
        if not is_baseline and np.isfinite(figures).all() and all(v > 0 for v in figures):
            entry.update(old_x=figures[3], new_x=figures[0], n_new=_rounds(row), n_old=_rounds(before),
                         _figures=figures, judged_by="time over the MLP")  # judged below, with its workload
        elif judge_times and time_said:
            entry.update(ratio=entry["time_ratio"], ci_low=entry["time_low"], ci_high=entry["time_high"],
                         verdict=time_said, judged_by="time")
            if is_baseline:
                entry["note"] = "the baseline: judged by its time (the environments match)"
        else:
            entry["ratio"] = entry["time_ratio"]
            entry["ci_low"], entry["ci_high"] = entry["time_low"], entry["time_high"]
            entry["verdict"] = "not judged"
            why = ("its time is judged only where the two runs' environments match" if not judge_times
                   else "no raw samples of its time in both runs")
            entry["note"] = (f"the baseline: {why}" if is_baseline
                             else "no ratio to the MLP with an interval in both runs" + ("" if judge_times else f"; {why}"))
        if not judge_times and entry["time_verdict"] not in ("", "no samples"):
            entry["time_verdict"] = "not judged"
        entry["_workload"] = (row["phase"], row["device"], row["dtype"], row["widths"], row["batch"])
        out.append(entry)
    _judge_ratios(out, threshold)
    columns = ["benchmark", "model", "phase", "device", "shape", "old_s", "new_s", "old_x", "new_x", "ratio",
               "ci_low", "ci_high", "p", "n_new", "n_old", "threshold", "verdict", "note", "judged_by",
               "time_ratio", "time_low", "time_high", "time_verdict", "workload_shift"]
    frame = pd.DataFrame(out, columns=columns)
    rank = {v: i for i, v in enumerate(VERDICT_ORDER)}
    frame["_rank"] = frame["verdict"].map(lambda v: rank.get(v, len(rank)))
    frame["_size"] = -np.abs(np.log(frame["ratio"].astype(float).where(frame["ratio"] > 0)))
    return frame.sort_values(["_rank", "_size"]).drop(columns=["_rank", "_size"]).reset_index(drop=True)


def _judge_ratios(entries: list[dict], threshold: float) -> None:
    """Judge each model's change of its time over the MLP (new x_mlp / old x_mlp) against the typical
    change of its workload: the median over every model of the workload, the MLP's 1 among them.

    On a shared machine the MLP's own time moves between runs too (a busy neighbour costs a
    small, memory-bound step more than a large one), and then every ratio of its workload moves
    with it. The median of the workload's changes is that shift; a model that changed is one that
    moved away from its workload. A shift common to every model of a workload is said in the row.
    """
    changes: dict[tuple, list[float]] = {}
    for e in entries:
        if "_figures" in e:
            changes.setdefault(e["_workload"], [1.0]).append(e["_figures"][0] / e["_figures"][3])
        elif e["model"] == "mlp" and "_workload" in e:
            changes.setdefault(e["_workload"], [1.0])
    for e in entries:
        figures = e.pop("_figures", None)
        workload = e.pop("_workload", None)
        if figures is None:
            continue
        members = changes.get(workload, [1.0])
        shift = float(np.median(members)) if len(members) >= 3 else 1.0
        new_x, new_low, new_high, old_x, old_low, old_high = figures
        c = stats.compare_ratios(new_x, new_low, new_high, old_x * shift, old_low * shift, old_high * shift,
                                 threshold=threshold, n=min(e["n_new"], e["n_old"]))
        e.update(ratio=c.ratio, ci_low=c.ci_low, ci_high=c.ci_high, p=c.p_slower if c.ratio >= 1 else c.p_faster,
                 verdict=VERDICT_WORDS.get(c.verdict, c.verdict), workload_shift=shift)
        if abs(math.log(shift)) > math.log(1.02):
            e["judged_by"] = f"time over the MLP, against its workload's shift ×{shift:.2f}"


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _rounds(row) -> int:
    for column in ("used_rounds", "rounds"):
        v = _number(row.get(column))
        if np.isfinite(v) and v > 0:
            return int(v)
    return stats.MIN_SAMPLES  # a table without counts: the intervals carry the uncertainty


def _compare_times(entry: dict, name: str, new_samples: dict, old_samples: dict, row, before,
                   threshold: float) -> str:
    """Fill the absolute comparison of one benchmark into ``entry``; its verdict in words, or ""."""
    if name in new_samples and name in old_samples and new_samples[name] and old_samples[name]:
        try:
            c = stats.compare(new_samples[name], old_samples[name], threshold=threshold)
        except ValueError as e:
            entry["note"] = str(e)
            return ""
        entry.update(old_s=c.median_base, new_s=c.median_head, time_ratio=c.ratio, time_low=c.ci_low,
                     time_high=c.ci_high, time_verdict=VERDICT_WORDS.get(c.verdict, c.verdict))
        return entry["time_verdict"]
    entry["time_ratio"] = row["median_s"] / before["median_s"]
    entry["time_verdict"] = "no samples"
    return ""


def comparison_table(frame: pd.DataFrame, caption: str = "", value=fmt_time,
                     old: str = "old median", new: str = "new median") -> Table:
    """One row per benchmark of a comparison frame; ``value`` formats the two medians."""
    rows = []
    for _, r in frame.iterrows():
        cls = {"slower": "slower", "faster": "faster", "no significant change": "same", "failed": "bad",
               "error": "bad"}.get(r["verdict"], "")
        interval = f"{r['ci_low']:.3f}–{r['ci_high']:.3f}" if np.isfinite(r["ci_low"]) else "–"
        p = f"{r['p']:.2g}" if np.isfinite(r["p"]) else "–"
        rows.append([
            Cell(str(r["model"]), title=str(r["benchmark"])), Cell(str(r["phase"])), Cell(str(r["device"])),
            Cell(str(r["shape"]), cls="nowrap"), Cell(value(r["old_s"]), cls="num"), Cell(value(r["new_s"]), cls="num"),
            Cell(f"{r['ratio']:.3f}" if np.isfinite(r["ratio"]) else "–", cls="num"), Cell(interval, cls="num"),
            Cell(p, cls="num"), Cell(f"{r['n_new']} / {r['n_old']}", cls="num"),
            Cell(str(r["verdict"]), str(r["note"]) if isinstance(r["note"], str) else "", cls),
        ])
    columns = ["model", "phase", "device", "shape", old, new, "new / old", "95% interval", "p", "n new / old",
               "verdict"]
    keep = [i for i, c in enumerate(columns) if c not in ("device", "shape") or any(row[i].text for row in rows)]
    return Table(caption, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows])


def run_comparison_table(frame: pd.DataFrame, caption: str = "") -> Table:
    """One row per benchmark of :func:`compare_runs`: each run's time over the MLP, the change and its
    verdict, then the medians and their ratio, judged or not."""
    rows = []
    for _, r in frame.iterrows():
        cls = {"slower": "slower", "faster": "faster", "no significant change": "same", "failed": "bad"}.get(r["verdict"], "")
        interval = f"{r['ci_low']:.3f}–{r['ci_high']:.3f}" if np.isfinite(r["ci_low"]) else "–"
        p = f"{r['p']:.2g}" if np.isfinite(r["p"]) else "–"
        time_ratio = f"{r['time_ratio']:.3f}" if np.isfinite(r["time_ratio"]) else "–"
        rows.append([
            Cell(str(r["model"]), title=str(r["benchmark"])), Cell(str(r["phase"])), Cell(str(r["device"])),
            Cell(str(r["shape"]), cls="nowrap"),
            *(Cell(f"{stats.plain(v)}×" if np.isfinite(v) else "–", cls="num") for v in (r["old_x"], r["new_x"])),
            Cell(f"{r['ratio']:.3f}" if np.isfinite(r["ratio"]) else "–", r["judged_by"], cls="num"),
            Cell(interval, cls="num"), Cell(p, cls="num"),
            Cell(str(r["verdict"]), str(r["note"]) if isinstance(r["note"], str) else "", cls),
            Cell(fmt_time(r["old_s"]), cls="num"), Cell(fmt_time(r["new_s"]), cls="num"),
            Cell(time_ratio, str(r["time_verdict"] or ""), cls="num"),
        ])
    columns = ["model", "phase", "device", "shape", "old × MLP", "new × MLP", "change", "95% interval", "p",
               "verdict", "old median", "new median", "time new / old"]
    keep = [i for i, c in enumerate(columns) if c not in ("device", "shape") or any(row[i].text for row in rows)]
    return Table(caption, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows])


def verdict_counts(frame: pd.DataFrame) -> list[tuple[str, int]]:
    counts = frame["verdict"].value_counts()
    return [(v, int(counts[v])) for v in VERDICT_ORDER if v in counts] + \
        [(v, int(n)) for v, n in counts.items() if v not in VERDICT_ORDER]
