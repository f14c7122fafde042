"""The report's charts: matplotlib figures, returned as inline SVG data URIs.

Each function takes tidy rows (the benchmark or attribution table, already read by
:mod:`reports.data`) and returns a :class:`Chart`, or ``None`` when the rows hold
nothing to draw. Figures are built with ``matplotlib.figure.Figure`` directly: no
pyplot state, no GUI backend.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from benchmarks.core.schema import PART_COLOURS as PART_COLORS  # one colour per part, as in the flame graphs
from benchmarks.core.schema import PARTS
from benchmarks.core.units import time_unit
from reports import tables
from reports.data import PHASES, SHAPE
from reports.units import (byte_unit, is_missing, shape_label, shape_sort_key, width_list,
                           width_separator)

RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "kan-report",  # stable element ids: the same run renders the same page
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,  # grid lines behind bars
    "grid.alpha": 0.3,
}
WIDTH = 9.0  # inches; the page scales the SVG to its column


@dataclass
class Chart:
    title: str
    uri: str  # data:image/svg+xml;base64,...
    alt: str
    note: str = ""
    table: tables.Table | None = None  # figures the chart shows, as text (the fitted slopes, say)


def styled(chart_function):
    """Run a chart function under the report's matplotlib style (read as artists are made and saved)."""

    @functools.wraps(chart_function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return chart_function(*args, **kwargs)

    return wrapper


def _svg(fig: Figure, title: str, alt: str, note: str = "", table: tables.Table | None = None) -> Chart:
    buf = io.BytesIO()
    # constrained layout keeps labels inside; a tight box takes in any key or text that still reaches out
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.05)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return Chart(title, f"data:image/svg+xml;base64,{data}", alt, note, table)


def _figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _subplots(fig: Figure, rows: int, cols: int, **kw):
    return fig.subplots(rows, cols, squeeze=False, **kw)


LABEL_LENGTH = 60  # characters of a record's text on a chart; the tables carry it whole


def label(text: object) -> str:
    """Text from a record, safe for matplotlib: ``$`` would otherwise start mathtext, and a text
    longer than LABEL_LENGTH is cut (a very long model name would stall the layout and push
    everything else off the chart)."""
    text = str(text)
    if len(text) > LABEL_LENGTH:
        text = text[:LABEL_LENGTH - 1] + "…"
    return text.replace("$", r"\$")


TAB = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
# The registry's models keep one colour on every chart of every page; others get one from their name.
KNOWN_COLORS = {"kan": TAB[0], "kan-fast": TAB[3], "fourier-kan": TAB[1], "rbf-kan": TAB[2],
                "chebyshev-kan": TAB[4], "mlp": "#555555", "mlp-param": "#999999"}


def model_colors(models: list[str], families: dict[str, str]) -> dict[str, str]:
    """One colour per model, the same on every chart: KANs from tab10, MLP baselines in greys."""
    others = TAB[5:]
    greys = ["#777777", "#bbbbbb"]
    colors = {}
    for m in models:
        if m in KNOWN_COLORS:
            colors[m] = KNOWN_COLORS[m]
        else:
            palette = greys if families.get(m) == "mlp" else others
            colors[m] = palette[zlib.crc32(str(m).encode()) % len(palette)]
    return colors


def reference_shape(rows: pd.DataFrame) -> tuple | None:
    """The shape (widths, batch, grid) at which the most models have an ok forward and backward.

    Width-matched MLP rows carry no grid size; they count for every grid. Ties go to
    the shape with more measurements, then to the bigger network (product of its widths),
    the larger batch and the smaller grid: the shape where the models' own work shows most.
    """
    ok = rows[rows["status"] == "ok"]
    phases: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))  # shape -> model -> phases
    any_grid: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))  # (widths, batch) -> ...
    for widths, batch, grid, model, phase in ok[SHAPE + ["model", "phase"]].itertuples(index=False):
        batch = None if is_missing(batch) else batch
        if is_missing(grid):
            any_grid[(widths, batch)][model].add(phase)
        else:
            phases[(widths, batch, grid)][model].add(phase)
    if not phases:  # no grid sizes at all
        phases = {(w, b, None): m for (w, b), m in any_grid.items()}
        any_grid = {}
    best, best_score = None, None
    for shape, by_model in phases.items():
        merged = {m: p | any_grid.get(shape[:2], {}).get(m, set()) for m, p in by_model.items()}
        merged.update({m: p for m, p in any_grid.get(shape[:2], {}).items() if m not in merged})
        both = sum(p >= {"forward", "backward"} for p in merged.values())
        size = math.prod(width_list(shape[0]) or (0,))
        score = (both, sum(len(p) for p in merged.values()), size, shape[1] or -1, -(shape[2] or 0))
        if best_score is None or score > best_score:
            best, best_score = shape, score
    return best


def at_shape(rows: pd.DataFrame, widths, batch, grid) -> pd.DataFrame:
    """Rows measured at a shape; rows without a grid size (plain MLPs) match any grid."""
    match = rows["widths"] == widths
    match &= rows["batch"].isna() if is_missing(batch) else rows["batch"] == batch
    if not is_missing(grid):
        match &= (rows["grid_size"] == grid) | rows["grid_size"].isna()
    return rows[match]


def _families(rows: pd.DataFrame) -> dict[str, str]:
    return dict(zip(rows["model"], rows["family"]))


def _time_axis(ax, scale: float, unit: str, axis: str = "x") -> None:
    fmt = FuncFormatter(lambda v, _: f"{v * scale:g}")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(fmt)
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(f"median time ({unit})")


@styled
def time_split(rows: pd.DataFrame, where: str) -> Chart | None:
    """Median forward and backward time per model at the reference shape, stacked; train as a mark."""
    shape = reference_shape(rows)
    if shape is None:
        return None
    ok = at_shape(rows[rows["status"] == "ok"], *shape)
    medians = ok.groupby(["model", "phase"])["median_s"].median().unstack()
    for phase in PHASES:
        if phase not in medians:
            medians[phase] = np.nan
    medians = medians[medians[["forward", "backward"]].notna().any(axis=1)]
    if medians.empty:
        return None
    medians = medians.assign(_total=medians[["forward", "backward"]].sum(axis=1)).sort_values("_total")
    scale, unit = time_unit(float(np.nanmax(medians[PHASES].to_numpy())))
    colors = model_colors(list(medians.index), _families(rows))
    fig = _figure(1.0 + 0.38 * len(medians))
    ax = _subplots(fig, 1, 1)[0, 0]
    y = np.arange(len(medians))
    fwd = medians["forward"].fillna(0).to_numpy()
    bwd = medians["backward"].fillna(0).to_numpy()
    ax.barh(y, fwd, color=[colors[m] for m in medians.index], label="forward")
    ax.barh(y, bwd, left=fwd, color=[colors[m] for m in medians.index], alpha=0.45, hatch="//",
            edgecolor="white", label="backward")
    if medians["train"].notna().any():
        ax.plot(medians["train"], y, "kD", markersize=5, label="train step")
    ax.set_yticks(y, [label(m) for m in medians.index])
    ax.grid(axis="y", visible=False)
    _time_axis(ax, scale, unit)
    ax.legend(loc="lower right", fontsize=8)
    title = f"Forward and backward time per model — {where}"
    note = f"at {shape_label(*shape)}; backward hatched, stacked on forward; ◆ a whole training step"
    ax.set_title(label(f"{where} · {shape_label(*shape)}"), fontsize=9, loc="left")
    return _svg(fig, title, f"Stacked bars of forward and backward time per model, {where}", note)


MATCHED = (  # (column, marker, line, what it is against): one encoding on the chart and in its key
    ("x_mlp", "o", "-", "the width-matched MLP"),
    ("x_mlp_param", "s", "--", "the parameter-matched MLP"),
)


@styled
def mlp_ratios(rows: pd.DataFrame, where: str) -> Chart | None:
    """KAN time / MLP time at every shape, one panel per phase, with each ratio's 95% interval.

    Shapes run along x, grouped by widths and batch; a line joins the grid sizes of one
    group only, so that each segment reads as "the ratio as the grid grows". The models sit
    side by side around each shape's position, so that their marks do not hide each other.
    Colour is the model; the mark and line say which MLP (a filled circle on a solid line,
    the width-matched one; an open square on a dashed line, the parameter-matched one);
    unstable measurements are drawn faint.
    """
    kan = rows[(rows["family"] == "kan") & (rows["status"] == "ok")]
    kan = kan[kan["x_mlp"].notna() | kan["x_mlp_param"].notna()]
    if kan.empty:
        return None
    phases = [p for p in PHASES if p in set(kan["phase"])] + sorted(set(kan["phase"]) - set(PHASES))
    shapes = sorted({_shape(*s) for s in kan[SHAPE].itertuples(index=False)}, key=lambda s: shape_sort_key(*s))
    index = {s: i for i, s in enumerate(shapes)}
    colors = model_colors(sorted(set(rows["model"])), _families(rows))
    models = sorted(set(kan["model"]))
    slots = len(models) * len(MATCHED)
    step = min(0.7 / max(slots, 1), 0.12)  # the models' marks spread over at most 0.7 of a shape's slot
    many = len(shapes) > 8
    fig = _figure(1.9 * len(phases) + (1.6 if many else 0.9))
    axes = _subplots(fig, len(phases), 1, sharex=True)[:, 0]
    handles = {}
    for ax, phase in zip(axes, phases):
        at = kan[kan["phase"] == phase]
        for (model, widths, batch), g in at.groupby(["model", "widths", "batch"], dropna=False):
            x = np.array([index[_shape(*s)] for s in g[SHAPE].itertuples(index=False)], dtype=float)
            order = np.argsort(x)
            faint = g["imprecise"].notna().to_numpy()[order] if "imprecise" in g else np.zeros(len(g), bool)
            for k, (column, marker, line, _) in enumerate(MATCHED):
                values = g[column].to_numpy(float)[order]
                if not np.isfinite(values).any():
                    continue
                slot = models.index(model) * len(MATCHED) + k
                xs = x[order] + (slot - (slots - 1) / 2) * step
                low = g.get(f"{column}_low", pd.Series(np.nan, index=g.index)).to_numpy(float)[order]
                high = g.get(f"{column}_high", pd.Series(np.nan, index=g.index)).to_numpy(float)[order]
                (drawn,) = ax.plot(xs, values, marker + line, color=colors[model], markersize=3.5, linewidth=1,
                                   markerfacecolor=colors[model] if marker == "o" else "white")
                handles.setdefault(model, drawn)
                has = np.isfinite(low) & np.isfinite(high)
                if has.any():
                    # a ratio outside its own interval (the median of per-round ratios against an interval
                    # made another way, in an older table) draws the bar to the ratio, never a negative one
                    below = np.maximum(values[has] - low[has], 0)
                    above = np.maximum(high[has] - values[has], 0)
                    ax.errorbar(xs[has], values[has], yerr=[below, above],
                                fmt="none", ecolor=colors[model], elinewidth=0.8, capsize=1.5)
                if faint.any():
                    ax.plot(xs[faint], values[faint], "x", color="#999999", markersize=6)
        for i in range(1, len(shapes)):
            if shapes[i][:2] != shapes[i - 1][:2]:
                ax.axvline(i - 0.5, color="#cccccc", linewidth=0.8)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.grid(axis="x", visible=False)
        ax.set_xlim(-0.5, len(shapes) - 0.5)
        ax.set_ylabel(f"{label(phase)}: KAN / MLP")
    axes[0].set_title(label(where), fontsize=9, loc="left")
    from matplotlib.lines import Line2D

    key = [Line2D([], [], color="black", marker=marker, linestyle=line, markersize=4, linewidth=1,
                  markerfacecolor="black" if marker == "o" else "white", label=f"against {what}")
           for _, marker, line, what in MATCHED]
    key.append(Line2D([], [], color="#999999", marker="x", linestyle="none", label="imprecise (interval wider than ±5%)"))
    fig.legend(list(handles.values()) + key, [label(m) for m in handles] + [k.get_label() for k in key],
               loc="outside right upper", fontsize=7, title="model (colour) and MLP (mark)", title_fontsize=7)
    ticks = [label(shape_label(*s)).replace("batch ", "b").replace("grid ", "g") for s in shapes]
    axes[-1].set_xticks(range(len(shapes)), ticks, rotation=90 if many else 30, ha="center" if many else "right",
                        fontsize=7 if many else 8)
    note = ("Colour: the model. Filled circle on a solid line: against the width-matched MLP; open square on a "
            "dashed line: against the parameter-matched MLP; bars: the 95% interval; a grey x: imprecise. Above 1 "
            "the KAN is slower; b: batch, g: grid size; a line joins the grid sizes of one shape.")
    return _svg(fig, f"KAN / MLP time over shapes and grid sizes — {where}",
                f"KAN to MLP time ratios over shapes, {where}", note)


def _shape(widths, batch, grid) -> tuple:
    """A hashable shape: NaN batch or grid as None."""
    return (widths, None if is_missing(batch) else batch, None if is_missing(grid) else grid)


SCALING = {"batch": "batch size", "grid_size": "grid size", "width": "width",
           "parameters": "parameters (across architectures)"}


def compact(v: float) -> str:
    """A tick label: 64, 1024, 12k, 3.5M (k only from 10 000 on, so that batch sizes stay whole)."""
    for at, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= at:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:g}"


def scaling_series(rows: pd.DataFrame, variable: str) -> list[dict]:
    """Per (phase, model), the longest series of ok rows in which only ``variable`` changes.

    ``variable`` is "batch", "grid_size", "width" or "parameters"; for "width" the series
    keeps every layer width but one fixed (784-*-10), and x is the one that changes; for
    "parameters" the architectures differ and x is the model's parameter count (the
    "parameters" column, else parameter bytes / 4). Each series is a
    dict: phase, model, x, y (median seconds, the median where a point was measured twice),
    fixed (what was held fixed, as text) and slope (the least-squares slope of log y on log x).
    """
    if variable not in SCALING:
        raise ValueError(f"unknown scaling variable {variable!r}; expected one of {', '.join(SCALING)}")
    ok = rows[(rows["status"] == "ok") & (rows["median_s"] > 0)]
    points: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    parameters = ok["parameters"] if "parameters" in ok else pd.Series(np.nan, index=ok.index)
    if "param_bytes" in ok:
        parameters = parameters.fillna(ok["param_bytes"] / 4)
    ok = ok.assign(_parameters=parameters)
    columns = ["phase", "model", "dtype", "widths", "batch", "grid_size", "median_s", "_parameters"]
    for phase, model, dtype, widths, batch, grid, median, parameters in ok[columns].itertuples(index=False):
        batch, grid = (None if is_missing(v) else v for v in (batch, grid))
        if variable == "parameters" and not is_missing(parameters) and parameters > 0:
            points[(phase, model, dtype, ("various widths", batch, grid))][parameters].append(median)
        elif variable == "batch" and batch is not None:
            points[(phase, model, dtype, (widths, None, grid))][batch].append(median)
        elif variable == "grid_size" and grid is not None:
            points[(phase, model, dtype, (widths, batch, None))][grid].append(median)
        elif variable == "width" and width_list(widths):
            w = width_list(widths)
            for position in range(len(w)):
                masked = width_separator(widths).join("*" if i == position else str(v) for i, v in enumerate(w))
                points[(phase, model, dtype, (masked, batch, grid))][w[position]].append(median)
    # Per phase, one context held fixed for every model: the one most models were swept in,
    # then the longest sweep, then the most work (the slowest, least dominated by overheads).
    # A model without a grid size (the width-matched MLP) joins the context of any grid.
    series = {k: v for k, v in points.items() if len(v) >= 2}
    best: dict[tuple, dict] = {}
    for phase in sorted({k[0] for k in series}):
        contexts = {k[3] for k in series if k[0] == phase and not (variable != "grid_size" and k[3][2] is None)}
        contexts = contexts or {k[3] for k in series if k[0] == phase}

        def members(context):
            return {k[1]: v for k, v in series.items() if k[0] == phase and (
                k[3] == context or (variable != "grid_size" and k[3][2] is None and k[3][:2] == context[:2]))}

        def score(context):
            m = members(context)
            return (len(m), sum(len(v) for v in m.values()),
                    sum(np.median(ys) for v in m.values() for ys in v.values()))

        context = max(sorted(contexts, key=str), key=score)
        for model, by_x in members(context).items():
            xs = sorted(by_x)
            best[(phase, model)] = {"phase": phase, "model": model, "x": np.array(xs, dtype=float),
                                    "y": np.array([np.median(by_x[v]) for v in xs], dtype=float),
                                    "fixed": shape_label(*context)}
    for series in best.values():
        series["slope"] = float(np.polyfit(np.log(series["x"]), np.log(series["y"]), 1)[0])
    return sorted(best.values(), key=lambda c: (c["phase"], c["model"]))


@styled
def scaling(rows: pd.DataFrame, variable: str, where: str) -> Chart | None:
    """Median time against ``variable``, log-log, one panel per phase; the fitted slopes as a table."""
    series = scaling_series(rows, variable)
    if not series:
        return None
    phases = [p for p in PHASES if any(s["phase"] == p for s in series)]
    phases += sorted({s["phase"] for s in series} - set(phases))
    colors = model_colors(sorted(set(rows["model"])), _families(rows))
    fig = _figure(2.9, WIDTH)
    axes = _subplots(fig, 1, len(phases))[0]
    all_y = np.concatenate([s["y"] for s in series])
    scale, unit = time_unit(float(np.sqrt(all_y.min() * all_y.max())))  # the unit of the middle of the range
    fixed = sorted({s["fixed"] for s in series})
    handles = {}
    for ax, phase in zip(axes, phases):
        for s in (s for s in series if s["phase"] == phase):
            (line,) = ax.plot(s["x"], s["y"], "o-", color=colors.get(s["model"], "black"), markersize=3)
            handles[s["model"]] = line
        ax.set_xscale("log")
        ax.set_yscale("log")
        xs = {tuple(s["x"]) for s in series if s["phase"] == phase}
        if len(xs) == 1 and len(next(iter(xs))) <= 8:  # every model at the same few points: tick each
            ax.set_xticks(next(iter(xs)))
        else:
            ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        decades = math.log10(max(s["y"].max() for s in series) / min(s["y"].min() for s in series))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v * scale)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(label(phase), fontsize=9)
        ax.set_xlabel(SCALING[variable])
    axes[0].set_ylabel(f"median time ({unit})")
    models = sorted(handles, key=lambda m: (_families(rows).get(m) == "mlp", m))
    fig.legend([handles[m] for m in models], [label(m) for m in models], loc="outside right upper", fontsize=7)
    fig.suptitle(label(where), fontsize=9, x=0.0, ha="left")
    slopes = tables.slope_table(series, phases, models)
    note = ("log-log; the table gives the fitted slope, the exponent of time against " + SCALING[variable]
            + " (1: proportional); held fixed: " + "; ".join(fixed))
    return _svg(fig, f"Time against {SCALING[variable]} — {where}",
                f"Scaling of time with {SCALING[variable]}, {where}", note, slopes)


@styled
def memory(rows: pd.DataFrame, where: str) -> Chart | None:
    """Parameter, saved-for-backward and peak memory per model at the reference shape."""
    shape = reference_shape(rows)
    if shape is None:
        return None
    at = at_shape(rows[rows["status"] == "ok"], *shape)
    bars: dict[str, pd.Series] = {
        "parameters": at.groupby("model")["param_bytes"].max(),
        "saved for backward": at.groupby("model")["saved_bytes"].max(),
    }
    for phase in PHASES:
        bars[f"peak, {phase}"] = at[at["phase"] == phase].groupby("model")["peak_bytes"].max()
    frame = pd.DataFrame(bars).dropna(axis=1, how="all").dropna(axis=0, how="all")
    if frame.empty:
        return None
    frame = frame.sort_values(list(frame.columns)[-1])
    scale, unit = byte_unit(float(np.nanmax(frame.to_numpy())))
    fig = _figure(1.0 + 0.22 * len(frame) * len(frame.columns) / 2 + 0.4)
    ax = _subplots(fig, 1, 1)[0, 0]
    height = 0.8 / len(frame.columns)
    y = np.arange(len(frame))
    palette = ["#4c78a8", "#72b7b2", "#f58518", "#e45756", "#b279a2"]
    for i, column in enumerate(frame.columns):
        ax.barh(y + (i - (len(frame.columns) - 1) / 2) * height, frame[column].fillna(0) * scale, height,
                label=column, color=palette[i % len(palette)])
    ax.set_yticks(y, [label(m) for m in frame.index])
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"memory ({unit})")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(label(f"{where} · {shape_label(*shape)}"), fontsize=9, loc="left")
    return _svg(fig, f"Memory per model — {where}", f"Memory per model, {where}",
                f"at {shape_label(*shape)}")


@styled
def attribution(rows: pd.DataFrame, scenario: str) -> Chart | None:
    """Share of time per part, one stacked bar per profiler, model, device, phase and synchronisation."""
    rows = rows[rows["scenario"] == scenario]
    if rows.empty:
        return None
    keys = ["machine", "profiler", "model", "device", "phase", "synchronized"]
    rows = rows.assign(machine=rows["machine"] if "machine" in rows else "")
    parts = [p for p in PARTS if p in set(rows["part"])] + sorted(set(rows["part"]) - set(PARTS))
    several_machines = rows["machine"].nunique() > 1
    bars = []
    for k, g in rows.groupby(keys, dropna=False, sort=True):
        seconds = g.groupby("part")["seconds"].sum(min_count=1)
        share = g.groupby("part")["share"].sum(min_count=1)
        values = seconds if seconds.notna().any() and seconds.sum() > 0 else share
        total = values.sum()
        if not total > 0:
            continue
        sync = {True: "synchronized", False: "not synchronized"}.get(k[5], "")
        shown = (k[0] if several_machines else "", k[1], k[2], k[3], k[4], sync)
        name = " · ".join(str(v) for v in shown if v not in ("", None) and not is_missing(v))
        bars.append((name, (values / total).reindex(parts).fillna(0.0), seconds.sum() if seconds.notna().any() else None))
    if not bars:
        return None
    fig = _figure(1.1 + 0.32 * len(bars))
    ax = _subplots(fig, 1, 1)[0, 0]
    y = np.arange(len(bars))[::-1]
    left = np.zeros(len(bars))
    for part in parts:
        widths = np.array([b[1][part] for b in bars]) * 100
        ax.barh(y, widths, left=left, color=PART_COLORS.get(part, "#cccccc"), label=label(part))
        for yi, li, wi in zip(y, left, widths):
            if wi >= 7:
                ax.text(li + wi / 2, yi, f"{wi:.0f}%", ha="center", va="center", fontsize=7, color="white")
        left += widths
    # no seconds beside the bars: each profiler slows the steps it watches by its own factor, so
    # only the shares compare across bars (the times, bare and under each profiler, are in a table)
    ax.set_yticks(y, [label(b[0]) for b in bars])
    ax.set_xlim(0, 100)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("share of time (%)")
    ax.grid(axis="y", visible=False)
    # the key above the bars, inside the figure: constrained layout makes room for it, in rows
    fig.legend(*ax.get_legend_handles_labels(), ncol=min(len(parts), 6), fontsize=7, loc="outside upper center",
               frameon=False)
    return _svg(fig, f"Where the time goes — {scenario}", f"Share of time per part, scenario {scenario}",
                "each bar is one profiler's view of the same steps: compare the shares, not the times, "
                "since each profiler slows the steps by its own factor (see the overhead table)")


RATIO_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.5,
               2, 3, 5, 10, 20, 50, 100]


def ratio_ticks(lo: float, hi: float, most: int = 9) -> list[float]:
    """Round ratios between ``lo`` and ``hi``, spaced evenly enough on a log axis; 1 always among them."""
    inside = [v for v in RATIO_TICKS if lo / 1.05 <= v <= hi * 1.05]
    gap = (math.log(hi) - math.log(lo)) / most
    ticks = [1.0]
    for v in sorted(inside, key=lambda v: abs(math.log(v))):
        if all(abs(math.log(v) - math.log(t)) >= gap for t in ticks):
            ticks.append(v)
    return sorted(ticks)


@styled
def comparison(table: pd.DataFrame, limit: int = 40, title: str = "New / old time per benchmark",
               axis: str = "new / old median time") -> Chart | None:
    """New/old ratio with its interval for the ``limit`` benchmarks that changed most."""
    t = table[np.isfinite(table["ratio"].to_numpy(float)) & (table["ratio"] > 0)]
    if t.empty:
        return None
    t = t.assign(_size=np.abs(np.log(t["ratio"]))).sort_values("_size", ascending=False).head(limit)
    t = t.sort_values("ratio")
    colors = {"slower": "#d62728", "faster": "#2ca02c"}
    fig = _figure(0.9 + 0.2 * len(t))
    ax = _subplots(fig, 1, 1)[0, 0]
    y = np.arange(len(t))
    low = t["ci_low"].to_numpy(float)
    high = t["ci_high"].to_numpy(float)
    ratio = t["ratio"].to_numpy(float)
    has_ci = np.isfinite(low) & np.isfinite(high)
    point_colors = [colors.get(v, "#555555") for v in t["verdict"]]
    ax.hlines(y[has_ci], low[has_ci], high[has_ci], color=np.array(point_colors)[has_ci], linewidth=1.5)
    ax.scatter(ratio, y, color=point_colors, s=14, zorder=3)
    threshold = float(t["threshold"].iloc[0])
    ax.axvspan(1 / threshold, threshold, color="#dddddd", alpha=0.6, linewidth=0)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    lo = np.nanmin(np.concatenate([ratio, low[has_ci], [1 / threshold]]))
    hi = np.nanmax(np.concatenate([ratio, high[has_ci], [threshold]]))
    ax.set_xticks(ratio_ticks(lo, hi))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_locator(NullLocator())
    names = [" · ".join(str(v) for v in (r.model, r.phase, r.device, r.shape) if not is_missing(v) and str(v))
             for r in t.itertuples()]
    ax.set_yticks(y, [label(n) for n in names], fontsize=7)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"{axis} (interval: 95%)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    key = [Line2D([], [], color=c, marker="o", markersize=4, linewidth=1.5, label=v)
           for v, c in (("slower", colors["slower"]), ("faster", colors["faster"]),
                        ("no significant change", "#555555"))]
    key.append(Patch(color="#dddddd", alpha=0.6, label=f"within ±{(threshold - 1) * 100:.0f}%"))
    fig.legend(handles=key, loc="outside right upper", fontsize=7)
    note = (f"the {len(t)} benchmarks that changed most, each with its 95% interval; grey band: within "
            f"±{(threshold - 1) * 100:.0f}%; red slower, green faster, grey no significant change")
    return _svg(fig, title, "Ratio of new to old time per benchmark", note)
