"""The report's tables: pandas does the grouping, these functions shape it for the page.

A :class:`Table` is plain data (captions, header, cells of text); the template writes
it out, escaping every string. Times are seconds in the record and get a readable
unit here; ratios read "3.2× slower" or "1.5× faster".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmarks.core import stats
from benchmarks.core.units import format_seconds as fmt_time  # the page's figures read as the terminal's
from reports.data import PHASES, SHAPE
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
            sub = f"IQR {fmt_time(row.iqr_s)}" if np.isfinite(row.iqr_s) else ""
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
                            note="median time; IQR: the interquartile range (the middle half of the samples spans it); "
                                 "× MLP: the median of the paired per-round ratios, KAN time / width-matched "
                                 "MLP time"))
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
    ("parameter bytes", "param_bytes", fmt_bytes), ("saved", "saved_bytes", fmt_bytes),
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
