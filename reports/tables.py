"""The report's tables: pandas does the grouping, these functions shape it for the page.

A :class:`Table` is plain data (captions, header, cells of text); the template writes
it out, escaping every string. Times are seconds in the record and get a readable
unit here; ratios read "3.2× slower" or "1.5× faster".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmarks.core import stats
from benchmarks.core.schema import PARTS
from reports.data import PHASES, SHAPE, RunData
from benchmarks.core.units import format_seconds as fmt_time  # the page's figures read as the terminal's
from reports.units import byte_unit, is_missing, shape_label, shape_sort_key


@dataclass
class Cell:
    text: str
    sub: str = ""  # a second, smaller line
    cls: str = ""  # "slower", "faster", "same", "bad", "num"
    title: str = ""  # shown on hover


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # a header row above ``columns``
    note: str = ""


def fmt_bytes(n: float) -> str:
    if is_missing(n) or not np.isfinite(n):
        return "–"
    scale, unit = byte_unit(n)
    return f"{n * scale:.3g} {unit}"


def fmt_number(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return "–" if not np.isfinite(v) else f"{v:.4g}"
    if is_missing(v):
        return "–"
    return str(v)


def fmt_ratio(r: float) -> tuple[str, str]:
    """("3.2× slower", "slower") for 3.2; ("1.5× faster", "faster") for 0.67; ("as fast", "same") near 1."""
    if r is None or not np.isfinite(r) or r <= 0:
        return "–", ""
    if 1 / 1.05 < r < 1.05:
        return f"as fast ({r:.2f}×)", "same"
    if r >= 1:
        return f"{r:.3g}× slower", "slower"
    return f"{1 / r:.3g}× faster", "faster"


def fmt_times(x: float) -> str:
    """A ratio as a factor: "2.4×", "0.65×", "423×"."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.0f}×" if x >= 100 else f"{x:.2g}×"


def geomean(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")


def _phases(present) -> list[str]:
    present = set(present)
    return [p for p in PHASES if p in present] + sorted(present - set(PHASES))


def _models(rows: pd.DataFrame) -> list[str]:
    """KANs first, then the MLP baselines, each sorted."""
    families = dict(zip(rows["model"], rows["family"]))
    return sorted(set(rows["model"]), key=lambda m: (families.get(m) == "mlp", m))


BASELINE_OF = {"x_mlp": "mlp", "x_mlp_param": "mlp-param"}


@dataclass
class Combined:
    """A ratio column over the shapes of a model and phase (see :func:`combined`)."""

    ratio: float
    low: float
    high: float
    imprecise: str | None  # why the interval is wider than asked, or None
    disturbed: str | None  # the OS evidence of interference in the samples used, or None
    shapes: int


def _flag(at: pd.DataFrame, column: str, read) -> str | None:
    """A flag over shapes: the reason where one shape, "k of n shapes: first reason" where several."""
    if column not in at:
        return None
    said = [r for r in (read(v) for v in at[column]) if r]
    if not said:
        return None
    return said[0] if len(at) == 1 else f"{len(said)} of {len(at)} shapes: {said[0]}"


def combined(at: pd.DataFrame, column: str) -> Combined:
    """A ratio column over the shapes of ``at``: the geometric mean, the geometric mean of the
    interval's ends, and the flags. The interval of the mean is no wider than the mean of the
    intervals, so the words said of it are safe."""
    ok = at[np.isfinite(at[column].to_numpy(float)) & (at[column].to_numpy(float) > 0)]
    if ok.empty:
        return Combined(float("nan"), float("nan"), float("nan"), None, None, 0)
    low = ok[f"{column}_low"].to_numpy(float) if f"{column}_low" in ok else np.full(len(ok), np.nan)
    high = ok[f"{column}_high"].to_numpy(float) if f"{column}_high" in ok else np.full(len(ok), np.nan)
    baseline = BASELINE_OF.get(column, "mlp")
    imprecise = _flag(ok, "imprecise", lambda v: stats.imprecision_of(v, baseline))
    disturbed = _flag(ok, "interference", lambda v: v if isinstance(v, str) and v.strip() else None)
    return Combined(geomean(ok[column]), geomean(low), geomean(high), imprecise, disturbed, len(ok))


def said(at: pd.DataFrame, column: str) -> Cell:
    """The cell of a ratio column: direction and size, with its interval, shapes and flags below."""
    c = combined(at, column)
    if not c.shapes:
        return Cell("–")
    text = stats.words(c.ratio, c.low, c.high, c.imprecise, disturbed=c.disturbed, interval=True)
    way = stats.direction(c.ratio, c.low, c.high)
    cls = {"same": "same", "slower": "slower", "faster": "faster"}.get(way, "")
    sub = f"{stats.plain(c.ratio)}×" + (f" [{stats.plain(c.low)}, {stats.plain(c.high)}]" if np.isfinite(c.low) else "")
    sub += f", {c.shapes} shapes" if c.shapes > 1 else ""
    flags = [w for w, why in (("imprecise", c.imprecise), ("disturbed", c.disturbed)) if why]
    sub += f"; {', '.join(flags)}" if flags else ""
    shown = stats.words(c.ratio, c.low, c.high).replace("x slower", "× slower").replace("x faster", "× faster")
    return Cell(shown, sub, cls + (" imprecise" if flags else ""), title=text)  # the flags' reasons on hover


def headline(rows: pd.DataFrame, where: str) -> Table | None:
    """For each KAN: times slower or faster than the width- and parameter-matched MLP, per phase.

    A cell says what the measurement allows (:func:`benchmarks.core.stats.words`): slower or
    faster with its size where the interval excludes 1, "no clear difference" where it holds
    1; "imprecise" and "disturbed" are said below, never instead. Over several shapes it is
    the geometric mean (ratios multiply, so that is their fair average). KANs come fastest first.
    """
    kan = rows[(rows["family"] == "kan") & (rows["status"] == "ok")]
    if kan.empty or (kan["x_mlp"].isna().all() and kan["x_mlp_param"].isna().all()):
        return None
    phases = _phases(kan["phase"])
    speed = kan.groupby("model")["x_mlp"].apply(geomean)
    models = sorted(set(kan["model"]), key=lambda m: (not np.isfinite(speed.get(m, np.nan)), speed.get(m, 0), m))
    table_rows = []
    for model in models:
        cells = [Cell(model)]
        for phase in phases:
            at = kan[(kan["model"] == model) & (kan["phase"] == phase)]
            for column in ("x_mlp", "x_mlp_param"):
                cells.append(said(at, column))
        table_rows.append(cells)
    columns = ["KAN"] + ["widths", "parameters"] * len(phases)
    groups = [("", 1)] + [(f"{phase}, vs the MLP of the same", 2) for phase in phases]
    return Table(where, columns, table_rows, groups)


REFERENCE = "kan"  # the reference B-spline KAN: its ratio leads every headline


def headline_sentences(rows: pd.DataFrame, where: str) -> list[str]:
    """One line per phase: the reference KAN's ratio to the width-matched MLP, then the KANs with
    the smallest and the largest ratio."""
    kan = rows[(rows["family"] == "kan") & (rows["status"] == "ok") & rows["x_mlp"].notna()]
    lines = []
    for phase in _phases(kan["phase"]):
        at = kan[kan["phase"] == phase]
        by_model = at.groupby("model")["x_mlp"].apply(geomean).dropna()
        if by_model.empty:
            continue

        def say(model: str) -> str:
            c = combined(at[at["model"] == model], "x_mlp")
            return stats.words(c.ratio, c.low, c.high, c.imprecise, than="the width-matched MLP",
                               disturbed=c.disturbed, interval=True)

        parts = []
        if REFERENCE in by_model.index:
            parts.append(f"the reference KAN ({REFERENCE}): {say(REFERENCE)}")
        best, worst = by_model.idxmin(), by_model.idxmax()
        if best != REFERENCE:
            parts.append(f"the KAN with the smallest time ratio is {best}: {say(best)}")
        if worst not in (best, REFERENCE):
            parts.append(f"the largest is {worst}: {say(worst)}")
        lines.append(f"{where}, {phase}: " + "; ".join(parts).replace("; imprecise", ", imprecise")
                     .replace("; disturbed", ", disturbed") + ".")
    return lines


# The largest output difference, over the largest output, within which two computations of one
# function agree in a dtype: a few units of its rounding, grown over a network's sums.
SAME_WITHIN = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 3e-2, "float16": 3e-3}


def same_function(rows: pd.DataFrame) -> str | None:
    """A line on whether kan-fast computes kan's function, from the difference each workload recorded."""
    fast = rows[(rows["model"] == "kan-fast") & (rows["status"] == "ok")]
    if fast.empty or "kan" not in set(rows["model"]):
        return None
    measured = pd.to_numeric(fast.get("max_rel_difference", pd.Series(dtype=float)), errors="coerce").dropna()
    if measured.empty:
        return ("kan-fast against kan: this run did not record whether they compute the same function (a bench "
                "made by an older harness, or no forward workload of both); tests/test_fast.py checks it.")
    within = fast.loc[measured.index, "dtype"].map(lambda d: SAME_WITHIN.get(str(d), 1e-5))
    off = measured[measured > within]
    n = f"{len(measured)} workload{'s' if len(measured) > 1 else ''}"
    if off.empty:
        return (f"kan-fast computes the same function as kan: given kan's weights, its largest output difference "
                f"is {measured.max():.2g} of kan's largest output over {n} of this run's own inputs (within "
                f"the dtype's rounding).")
    worst = fast.loc[off.idxmax()]
    return (f"kan-fast does NOT compute the same function as kan in {len(off)} of {n}: given kan's weights, its "
            f"output differs by up to {off.max():.2g} of kan's largest output ({worst['dtype']}, "
            f"{shape_label(worst['widths'], worst['batch'], worst['grid_size'])}; within "
            f"{SAME_WITHIN.get(str(worst['dtype']), 1e-5):g} would be rounding).")


def speedup(rows: pd.DataFrame, fast: str = "kan-fast", reference: str = "kan") -> list[str]:
    """Per phase: ``fast``'s time over ``reference``'s, from their times over the MLP in each workload
    (each with its interval), as the geometric mean over workloads, in words."""
    ok = rows[rows["status"] == "ok"]
    keys = ["phase", "device", "dtype", "widths", "batch", "grid_size"]
    pair = ok[ok["model"] == fast].merge(ok[ok["model"] == reference], on=keys, suffixes=("_fast", "_ref"))
    lines = []
    for phase in _phases(pair["phase"]):
        found = []
        for _, r in pair[pair["phase"] == phase].iterrows():
            figures = [float(r.get(f"x_mlp{end}_{side}", np.nan)) for side in ("fast", "ref") for end in ("", "_low", "_high")]
            if np.isfinite(figures).all() and min(figures) > 0:
                c = stats.compare_ratios(*figures)
                found.append((c.ratio, c.ci_low, c.ci_high))
        if found:
            ratio, low, high = (geomean([f[k] for f in found]) for k in range(3))
            over = f", geometric mean over {len(found)} workloads" if len(found) > 1 else ""
            lines.append(f"{phase}{over}: {fast} is " + stats.words(ratio, low, high, than=reference, interval=True))
    return lines


def conditions(rows: pd.DataFrame, environment: dict) -> str | None:
    """The clock, threads and load the numbers were taken under, in one line."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return None
    clocks = sorted({str(c) for c in ok["clock"].dropna()}) if "clock" in ok else []
    clock = {"cpu": "the process's CPU time (one thread on the CPU: time the OS gave other processes is not "
                    "counted)", "wall": "the wall clock, the device synchronised"}
    threads = sorted({int(t) for t in pd.to_numeric(ok["threads"], errors="coerce").dropna()})
    loads = pd.concat([pd.to_numeric(ok[c], errors="coerce") for c in ("load_before", "load_after") if c in ok]).dropna()
    cores = environment.get("cpu_count")
    parts = [" and ".join(clock.get(c, c) for c in clocks) if clocks else "a clock this table does not name"]
    if threads:
        parts.append(f"{'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}")
    if len(loads):
        low, high = loads.min(), loads.max()
        load = f"load average {low:.1f}" + (f" to {high:.1f}" if high - low >= 0.05 else "")
        load += f" on {cores} cores" if cores else ""
        if cores and high > cores:
            load += " (more work than cores: other processes competed for the CPU)"
        parts.append(load)
    else:
        start = environment.get("load_average")
        parts.append(f"load average {start[0]:.1f} as the run began" if isinstance(start, list) and start
                     else "load not recorded")
    return "Measured on " + "; ".join(parts) + "."


def timings(rows: pd.DataFrame, where: str) -> list[Table]:
    """Per phase, median time (IQR below) for every shape and model; KANs carry their ×MLP."""
    tables = []
    for phase in _phases(rows["phase"]):
        at = rows[rows["phase"] == phase]
        models = _models(at)
        cell_of: dict[tuple, Cell] = {}
        for row in at.itertuples(index=False):
            shape = _shape_key(row.widths, row.batch, row.grid_size)
            if (shape, row.model) in cell_of:
                continue
            if row.status != "ok":
                cell_of[(shape, row.model)] = Cell(str(row.status), cls="bad", title=_reason(row))
                continue
            sub = f"±{fmt_time(row.iqr_s)}" if np.isfinite(row.iqr_s) else ""
            if row.family == "kan" and np.isfinite(row.x_mlp):
                sub += f" · {fmt_times(row.x_mlp)} MLP"
            cell_of[(shape, row.model)] = Cell(fmt_time(row.median_s), sub.strip(" ·"), "num", str(row.benchmark))
        # Models without a grid (the width-matched MLP) join every grid size of their widths and batch.
        shapes = {s for s, _ in cell_of}
        gridded = {s[:2] for s in shapes if s[2] is not None}
        for (shape, model), cell in list(cell_of.items()):
            if shape[2] is None and shape[:2] in gridded:
                for other in (s for s in shapes if s[:2] == shape[:2] and s[2] is not None):
                    cell_of.setdefault((other, model), cell)
        shapes = sorted((s for s in shapes if s[2] is not None or s[:2] not in gridded),
                        key=lambda s: shape_sort_key(*s))
        table_rows = [[Cell(shape_label(*s))] + [cell_of.get((s, m), Cell("")) for m in models] for s in shapes]
        tables.append(Table(f"{where} · {phase}", ["shape"] + models, table_rows,
                            note="median time; ± the interquartile range; × MLP: KAN time / width-matched MLP time"))
    return tables


def _reason(row) -> str:
    reason = getattr(row, "reason", None)
    return str(row.benchmark) + ("" if is_missing(reason) or not str(reason).strip() else f": {reason}")


def _shape_key(widths, batch, grid) -> tuple:
    """A shape as a hashable key: missing batch or grid size as None (NaN never equals itself)."""
    return (widths, None if is_missing(batch) else batch, None if is_missing(grid) else grid)


DETAIL_COLUMNS = [
    ("model", "model", str), ("shape", "shape", str), ("median", "median_s", fmt_time),
    ("IQR", "iqr_s", fmt_time), ("rounds", "rounds", fmt_number), ("first call", "first_call_s", fmt_time),
    ("samples/s", "throughput", fmt_number), ("GFLOP/s", "gflops", fmt_number),
    ("parameters", "param_bytes", fmt_bytes), ("saved", "saved_bytes", fmt_bytes),
    ("peak", "peak_bytes", fmt_bytes), ("× MLP", "x_mlp", fmt_number),
    ("× param-MLP", "x_mlp_param", fmt_number), ("status", "status", str), ("reason", "reason", str),
]


def details(rows: pd.DataFrame, where: str) -> Table:
    """Every measurement of a machine and device, with every figure the record holds."""
    rows = rows.assign(shape=[shape_label(*s) for s in rows[SHAPE].itertuples(index=False)])
    rows = rows.assign(_key=[shape_sort_key(*s) for s in rows[SHAPE].itertuples(index=False)])
    order = {p: i for i, p in enumerate(PHASES)}
    rows = rows.assign(_phase=rows["phase"].map(lambda p: order.get(p, len(order))))
    rows = rows.sort_values(["_phase", "phase", "model", "_key"], key=None)
    table_rows = []
    for _, row in rows.iterrows():
        cells = [Cell(str(row["phase"]))]
        for _, column, fmt in DETAIL_COLUMNS:
            value = row[column]
            cls = "bad" if column == "status" and value != "ok" else ("num" if fmt is not str else "")
            cells.append(Cell(fmt(value) if fmt is not str else ("–" if is_missing(value) else str(value)), cls=cls))
        table_rows.append(cells)
    return Table(where, ["phase"] + [c[0] for c in DETAIL_COLUMNS], table_rows)


VERDICT_WORDS = {  # benchmarks.core.stats verdicts as the page says them
    "regression": "slower", "improvement": "faster", "unchanged": "no significant change",
    "insufficient samples": "too few samples",
}
VERDICT_ORDER = ["slower", "faster", "no significant change", "too few samples", "not judged", "no samples", "failed"]


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


def sync_pairs(attribution: pd.DataFrame) -> pd.DataFrame:
    """Share per part with and without synchronisation, where a profile has both.

    Rows: machine, scenario, profiler, model, device, phase, part, unsynchronized, synchronized.
    """
    a = attribution.assign(machine=attribution["machine"] if "machine" in attribution else "")
    a = a[a["synchronized"].notna()]
    keys = ["machine", "scenario", "profiler", "model", "device", "phase"]
    out = []
    for k, g in a.groupby(keys, dropna=False):
        if set(g["synchronized"]) != {True, False}:
            continue
        shares = {}
        for sync, h in g.groupby("synchronized"):
            values = h.groupby("part")["seconds"].sum(min_count=1)
            if not (values.notna().any() and values.sum() > 0):
                values = h.groupby("part")["share"].sum(min_count=1)
            shares[bool(sync)] = values / values.sum()
        for part in sorted(set(shares[True].index) | set(shares[False].index)):
            out.append(dict(zip(keys, k), part=part, unsynchronized=float(shares[False].get(part, 0.0)),
                            synchronized=float(shares[True].get(part, 0.0))))
    return pd.DataFrame(out, columns=keys + ["part", "unsynchronized", "synchronized"])


ASYNC_DEVICES = ("cuda", "mps", "xpu")


def noise_sentence(noise: list[dict]) -> str:
    """What the loop profiled twice says of the CPU's two loops: how large the noise between profiled
    runs was, and whether the synchronised loop's difference stays within it."""
    if not noise:
        return ("This run profiled only the CPU, where work runs as it is called: the two loops are one "
                "computation, so where the columns below differ it is noise between two profiled runs "
                "(profile the loop again to see how large that noise is here).")
    parts = []
    for n in noise:
        moved = n.get("largest_synchronized_points")
        said = f"{n['profiler']}: the same loop profiled twice moved a part's share by up to {n['largest_noise_points']:.0f} points"
        if moved is not None:
            said += (f", the synchronised loop by up to {moved:.0f}, "
                     + ("within that noise" if n.get("within_noise") else "more than that noise (the load moved between the runs)"))
        parts.append(said)
    return ("This run profiled only the CPU, where work runs as it is called: the two loops are one computation, "
            "so their differences below are noise between profiled runs. " + "; ".join(parts) + ".")


def sync_lesson(pairs: pd.DataFrame, noise: list[dict] | None = None) -> tuple[list[str], Table | None]:
    """A sentence with this run's own example of the lesson, and the shares before and after synchronising.

    ``noise``: the loop_noise entries of profile.json (the loop profiled twice), which say on the
    CPU how large the noise between profiled runs was."""
    if pairs.empty:
        return [], None
    pairs = pairs.assign(moved=pairs["unsynchronized"] - pairs["synchronized"],
                         asynchronous=pairs["device"].map(lambda d: str(d).split(":")[0] in ASYNC_DEVICES))
    pairs = pairs.sort_values("asynchronous", ascending=False, kind="stable")
    on_device = pairs[pairs["asynchronous"]]
    if not on_device.empty and on_device["moved"].max() >= 0.1:
        top = on_device.loc[on_device["moved"].idxmax()]
        example = (f"In this run {top['profiler']} on {top['device']} ({top['scenario']}) put "
                   f"{top['unsynchronized']:.0%} of the time in {top['part']} without synchronisation "
                   f"and {top['synchronized']:.0%} with it.")
    elif on_device.empty:
        example = noise_sentence([n for n in noise or [] if str(n.get("device", "cpu")).startswith("cpu")])
    else:
        example = "In this run synchronising moved no part's share by as much as 10 points."
    several_machines = pairs["machine"].nunique() > 1
    profile_keys = ["machine", "scenario", "profiler", "model", "device", "phase"]
    profiles = list(pairs.groupby(profile_keys, dropna=False, sort=True).groups)
    parts = sorted(set(pairs["part"]), key=lambda p: (p not in PARTS, PARTS.index(p) if p in PARTS else 0, p))
    rows = []
    for part in parts:
        cells = [Cell(part)]
        for profile in profiles:
            match = (pairs["part"] == part)
            for key, value in zip(profile_keys, profile):
                match &= pairs[key] == value
            r = pairs[match]
            if r.empty:
                cells += [Cell("–", cls="num"), Cell("–", cls="num")]
                continue
            r = r.iloc[0]
            cells += [Cell(f"{r['unsynchronized']:.0%}", cls="num"),
                      Cell(f"{r['synchronized']:.0%}",
                           cls="num" + (" moved" if r["asynchronous"] and abs(r["moved"]) >= 0.1 else ""))]
        rows.append(cells)
    names = [" · ".join(str(v) for v in (p[0] if several_machines else "", p[2], p[3], p[4], p[1]) if v)
             for p in profiles]
    table = Table("Share of time per part, without and with synchronisation", ["part"] + ["async", "synced"] * len(profiles),
                  rows, groups=[("", 1)] + [(n, 2) for n in names])
    return [example], table


PROFILER_ORDER = ["cprofile", "torch", "py-spy"]


def overhead_table(overhead: dict, caption: str = "") -> Table | None:
    """profile.json's "overhead": per scenario, its measured steps' time without a profiler and under each,
    with the factor it slowed them by."""
    scenarios = overhead.get("scenarios") if isinstance(overhead, dict) else None
    if not isinstance(scenarios, dict) or not scenarios:
        return None
    names = sorted({n for said in scenarios.values() for n in (said.get("profilers") or {})},
                   key=lambda n: (PROFILER_ORDER.index(n) if n in PROFILER_ORDER else len(PROFILER_ORDER), n))
    rows = []
    for stem, said in scenarios.items():
        steps = said.get("steps")
        cells = [Cell(str(stem), f"{steps} steps" if steps else ""), Cell(fmt_time(said.get("bare_s")), cls="num")]
        for name in names:
            under = (said.get("profilers") or {}).get(name)
            if not isinstance(under, dict):
                cells.append(Cell("–", cls="num"))
                continue
            factor = under.get("factor")
            cells.append(Cell(fmt_time(under.get("seconds")), f"{factor:.3g}× the bare time" if factor else "", "num"))
        rows.append(cells)
    return Table(caption, ["scenario", "no profiler"] + names, rows,
                 note="the same measured steps, timed without a profiler and under each, one run after another")


def profiler_sentence(settings: dict) -> str:
    """What the share chart's bars may be compared by, and what py-spy --native does to the process it samples."""
    said = ("Each profiler slows the steps it watches by its own factor (the table below), so the bars compare by "
            "their shares of the time, never by their times.")
    if isinstance(settings, dict) and settings.get("py_spy_native"):
        said += (" py-spy ran with --native: to read the C++ frames it pauses the process it samples while it "
                 "unwinds each stack, which slows that process most of all.")
    return said


def slope_table(series: list[dict], phases: list[str], models: list[str]) -> Table:
    """The fitted log-log slopes of scaling series: one row per model, one column per phase."""
    slopes = {(s["model"], s["phase"]): s for s in series}
    rows = []
    for model in models:
        cells = [Cell(model)]
        for phase in phases:
            s = slopes.get((model, phase))
            cells.append(Cell(f"{s['slope']:.2f}", cls="num", title=f"{len(s['x'])} points") if s else Cell("–"))
        rows.append(cells)
    return Table("", ["slope"] + phases, rows)


def frame_table(frame: pd.DataFrame, caption: str = "") -> Table:
    """Any table as it is: numbers to four significant digits, everything else as text."""
    rows = [[Cell(fmt_number(v), cls="num" if isinstance(v, (int, float, np.number)) else "")
             for v in record] for record in frame.itertuples(index=False)]
    return Table(caption, [str(c) for c in frame.columns], rows)


GATE_COLUMNS = {"median_base": "old_s", "median_head": "new_s", "n_head": "n_new", "n_base": "n_old",
                "reason": "note"}


def gate_frame(gate: object) -> pd.DataFrame | None:
    """The speed gate's rows (gate.json "benchmarks") in the columns of :func:`compare_runs`.

    None when gate.json holds no list of rows. In the gate's baseline mode the medians
    are times over the MLP's, not seconds.
    """
    rows = gate.get("benchmarks") if isinstance(gate, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return None
    frame = pd.DataFrame(rows).rename(columns=GATE_COLUMNS)
    columns = ["benchmark", "model", "phase", "device", "shape", "old_s", "new_s", "ratio", "ci_low", "ci_high",
               "p_slower", "p_faster", "n_new", "n_old", "status", "note"]
    for column in columns:
        if column not in frame:
            frame[column] = np.nan
    numeric = ["old_s", "new_s", "ratio", "ci_low", "ci_high", "p_slower", "p_faster"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    frame["n_new"] = frame["n_new"].fillna(0).astype(int)
    frame["n_old"] = frame["n_old"].fillna(0).astype(int)
    frame["p"] = np.where(frame["ratio"] >= 1, frame["p_slower"], frame["p_faster"])
    frame["verdict"] = frame["status"].map(lambda s: VERDICT_WORDS.get(s, "–" if is_missing(s) else str(s)))
    frame["note"] = frame["note"].map(lambda v: "" if is_missing(v) else str(v))
    settings = gate.get("settings") if isinstance(gate.get("settings"), dict) else {}
    frame["threshold"] = float(settings.get("threshold") or 1.15)
    for column in ("device", "shape"):
        frame[column] = frame[column].map(lambda v: "" if is_missing(v) else str(v))
    return frame.drop(columns=["p_slower", "p_faster", "status"])


def gate_summary(gate: object) -> dict:
    """The gate's overall verdict, summary line, mode and what it compared, for the page."""
    gate = gate if isinstance(gate, dict) else {}
    base = gate.get("base") if isinstance(gate.get("base"), dict) else {}
    head = gate.get("head") if isinstance(gate.get("head"), dict) else {}
    mode = str(gate.get("mode") or "base")
    against = (f"the baseline file {base.get('baseline')}" if mode == "baseline"
               else f"base {base.get('ref') or '?'} ({str(base.get('commit') or '?')[:9]})")
    head_text = str(head.get("id") or "?")[:9] + (" with uncommitted changes" if head.get("dirty") else "")
    return {"verdict": str(gate.get("verdict") or "?"), "summary": str(gate.get("summary") or ""),
            "mode": mode, "against": against, "head": head_text}


# --- quality: accuracy next to training time (quality_summary.csv) -----------------------------

def _quality_value(metric: str, v: float) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.1%}" if "accuracy" in str(metric) else f"{v:.4g}"


def _count(v: object) -> int:
    return 0 if is_missing(v) or not np.isfinite(float(v)) else int(v)


def quality_tables(summary: pd.DataFrame, caption_suffix: str = "") -> list[Table]:
    """One table per task from quality_summary.csv: each model's metric over seeds, its training time,
    and whether it is on the task's Pareto front (as accurate in as little training time)."""
    out = []
    for task, rows in summary.groupby("task", sort=False):
        metric = str(rows["metric"].iloc[0])
        better = "higher" if "accuracy" in metric else "lower"
        ascending = better == "lower"
        rows = rows.sort_values("value_mean", ascending=ascending, na_position="last")
        table_rows = []
        for r in rows.itertuples(index=False):
            d = r._asdict()
            ok, seeds = _count(d.get("ok")), _count(d.get("seeds"))
            diverged, failed = _count(d.get("diverged")), _count(d.get("failed"))
            spread = ""
            if ok > 1 and not is_missing(d.get("value_std")):
                spread = f"± {_quality_value(metric, d['value_std'])} (min {_quality_value(metric, d.get('value_min'))}, " \
                         f"max {_quality_value(metric, d.get('value_max'))})"
            seeds_text = f"{ok}/{seeds}"
            seeds_sub = ", ".join(t for t in (f"{diverged} diverged" if diverged else "",
                                              f"{failed} failed" if failed else "") if t)
            reached = _count(d.get("reached_target"))
            front = bool(d["pareto"]) if not is_missing(d["pareto"]) else False
            dominated = "" if is_missing(d.get("dominated_by")) else str(d.get("dominated_by"))
            table_rows.append([
                Cell(str(d["label"])),
                Cell(_quality_value(metric, d["value_mean"]), spread, "num" if ok else "bad"),
                Cell(seeds_text, seeds_sub, "num" + (" bad" if diverged or failed else "")),
                Cell(fmt_time(d["train_s"]), cls="num"),
                Cell(fmt_time(d.get("step_median_s")), f"first {fmt_time(d.get('first_step_s'))}", "num"),
                Cell(fmt_time(d.get("time_to_target_s")), f"{reached} of {ok} seeds" if ok else "", "num"),
                Cell(fmt_number(d.get("parameters")), cls="num"),
                Cell(_flops(d.get("flops_per_step")), cls="num"),
                Cell("on the front" if front else ("dominated" if dominated else "–"),
                     f"by {dominated}" if dominated else "", "faster" if front else ""),
            ])
        target = rows["target"].iloc[0] if "target" in rows else np.nan
        target_text = "" if is_missing(target) else f"{'at least' if better == 'higher' else 'at most'} " \
                                                     f"{_quality_value(metric, float(target))}"
        columns = ["model", f"{metric} ({better} is better)", "seeds ok", "training time",
                   "time per step", f"time to target {target_text}".strip(), "parameters", "FLOPs per step",
                   "Pareto front"]
        out.append(Table(f"{task}{caption_suffix}", columns, table_rows))
    return out


def _flops(v: object) -> str:
    if is_missing(v):
        return "–"
    v = float(v)
    for at, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= at:
            return f"{v / at:.3g} {suffix}"
    return f"{v:.0f}"
