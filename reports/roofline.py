"""The page's accelerator section: how busy the device was, how near its limits, eager against graphed.

Every figure comes from the bench table (:func:`benchmarks.core.record.bench_table` derives
``device_busy``, ``launch_bound``, ``flop_share`` and ``bandwidth_share``); a group of rows
without them (every CPU group) has nothing here, and the page shows no section for it.

- :func:`launch_bound_sentences`: the headline's line naming the launch-bound rows;
- :func:`device_table`: per row, the device's busy share and the achieved rates against its peaks;
- :func:`graphs_table`: each eager step beside the same step captured in CUDA graphs;
- :func:`chart`: the roofline: each row's achieved FLOP/s against its arithmetic intensity
  (FLOPs per byte of the least memory traffic), under the device's compute and bandwidth roofs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports import charts, tables
from reports.tables import Cell, Table, fmt_bytes, fmt_time
from reports.units import is_missing, shape_label, shape_sort_key

SHAPE = ["widths", "batch", "grid_size"]
PHASE_MARKERS = {"forward": "o", "backward": "s", "train": "^", "forward+backward": "D"}


def accelerator(rows: pd.DataFrame) -> pd.DataFrame:
    """The ok rows that carry a device-busy share or a peak (accelerator rows)."""
    if "device_busy" not in rows.columns:
        return rows.iloc[:0]
    ok = rows[rows["status"] == "ok"]
    return ok[ok["device_busy"].notna() | ok["peak_flops"].notna()]


def _mode(row) -> str:
    return "" if is_missing(row.get("mode")) else f" ({row['mode']})"


def launch_bound_sentences(rows: pd.DataFrame, where: str) -> list[str]:
    """One line naming the launch-bound rows by shape (and which models and phases where not all
    are), or nothing where no row was."""
    acc = accelerator(rows)
    bound = acc[acc["launch_bound"] == "yes"]
    if bound.empty:
        return []
    parts = []
    size = ["widths", "batch"]  # the MLPs have no grid: a shape here is widths and batch

    def names(rows) -> str:
        return ", ".join(f"{r['model']} {r['phase']}{_mode(r)}" for _, r in rows.iterrows())

    for (widths, batch), of_shape in sorted(acc.groupby(size), key=lambda kv: shape_sort_key(*kv[0], None)):
        at = of_shape[of_shape["launch_bound"] == "yes"]
        rest = of_shape[of_shape["launch_bound"] != "yes"]
        if at.empty:
            continue
        label = shape_label(widths, batch, None)
        if rest.empty:
            parts.append(f"{label}: all {len(at)} rows")
        elif len(rest) < len(at):
            parts.append(f"{label}: all but {names(rest)}")
        else:
            parts.append(f"{label}: {names(at)}")
    return [f"{where}: {len(bound)} of {len(acc)} rows are launch-bound (the device sat idle more than half "
            f"the call), so their times are Python and kernel launches and their ratios to the MLPs compare "
            f"overheads, not models — " + "; ".join(parts) + "."]


def _share(v) -> str:
    return "–" if is_missing(v) or not np.isfinite(v) else (f"{v:.0%}" if v >= 0.01 else f"{v:.1%}")


def _rate(v) -> str:
    return "–" if is_missing(v) or not np.isfinite(v) else f"{v / 1e12:.3g} TFLOP/s" if v >= 1e11 \
        else f"{v / 1e9:.3g} GFLOP/s"


def device_table(rows: pd.DataFrame, where: str) -> Table | None:
    """Per accelerator row: the device's busy share (launch-bound marked), achieved FLOP/s and
    bytes/s as shares of the device's peaks for the math that ran."""
    acc = accelerator(rows)
    if acc.empty:
        return None
    acc = acc.assign(_key=[shape_sort_key(*s) for s in acc[SHAPE].itertuples(index=False)])
    acc = acc.sort_values(["_key", "phase", "model"])
    out = []
    for _, r in acc.iterrows():
        bound = r["launch_bound"] == "yes"
        flops = r["flops"] / r["median_s"] if r["median_s"] > 0 else np.nan
        moved = r["bytes_moved"] / r["median_s"] if r["median_s"] > 0 else np.nan
        out.append([
            Cell(str(r["model"]) + _mode(r)), Cell(str(r["phase"])), Cell(shape_label(*r[SHAPE])),
            Cell(fmt_time(r["median_s"]), cls="num"),
            Cell(_share(r["device_busy"]), "launch-bound" if bound else "", "bad" if bound else "num",
                 title=f"device time per call {fmt_time(r['device_s'])}"),
            Cell(_rate(flops), cls="num"),
            Cell(_share(r["flop_share"]), "" if is_missing(r["math"]) else f"of {r['math']} peak", "num"),
            Cell(fmt_bytes(moved) + "/s" if np.isfinite(moved) else "–", cls="num"),
            Cell(_share(r["bandwidth_share"]), "of bandwidth", "num"),
        ])
    sources = sorted(set(acc["peak_source"].dropna()))
    return Table(f"{where} · device busy and share of peak",
                 ["model", "phase", "shape", "median", "device busy", "achieved", "share of peak",
                  "least bytes moved", "share"], out,
                 note="device busy: time in kernels, copies and memsets per call (a short torch.profiler pass "
                      "after the timing) over the median; under 50% the row is launch-bound. Achieved: the "
                      "model's FLOP count (backward 2x forward) over the median. Least bytes moved: parameters, "
                      "saved activations, inputs and outputs once (a floor). Peaks: " + ("; ".join(sources) or "–"))


def graphs_table(rows: pd.DataFrame, where: str) -> Table | None:
    """Each eager step beside the same step captured in CUDA graphs, where both were measured."""
    if "mode" not in rows.columns or not (rows["mode"] == "cuda graph").any():
        return None
    eager = rows[rows["mode"].isna()]
    graphed = rows[rows["mode"] == "cuda graph"]
    key = ["model", "phase"] + SHAPE
    merged = eager.merge(graphed, on=key, suffixes=("", "_graph"), how="inner")
    if merged.empty:
        return None
    merged = merged.assign(_key=[shape_sort_key(*s) for s in merged[SHAPE].itertuples(index=False)])
    out = []
    for _, r in merged.sort_values(["_key", "phase", "model"]).iterrows():
        ok = r["status"] == "ok" and r["status_graph"] == "ok"
        why = "" if r["status_graph"] == "ok" else str(r.get("reason_graph") or r["status_graph"])
        ratio = r["median_s"] / r["median_s_graph"] if ok else np.nan
        out.append([
            Cell(str(r["model"])), Cell(str(r["phase"])), Cell(shape_label(*r[SHAPE])),
            Cell(fmt_time(r["median_s"]), _share(r["device_busy"]) + " busy", "num"),
            Cell(fmt_time(r["median_s_graph"]) if ok else str(r["status_graph"]),
                 _share(r["device_busy_graph"]) + " busy" if ok else why[:80], "num" if ok else "bad", title=why),
            Cell(tables.fmt_times(ratio), cls="num"),
        ])
    return Table(f"{where} · eager and in CUDA graphs", ["model", "phase", "shape", "eager", "CUDA graph",
                                                         "eager / graph"], out,
                 note="The graphed step replays the model's forward and its backward as CUDA graphs "
                      "(torch.cuda.make_graphed_callables); the loss and the optimizer step run eagerly. What "
                      "the graph saves is Python and launch time; a model that cannot be captured says why.")


@charts.styled
def chart(rows: pd.DataFrame, where: str) -> charts.Chart | None:
    """The roofline of a device: achieved FLOP/s against FLOPs per least byte moved, per row."""
    acc = accelerator(rows)
    acc = acc[acc["peak_flops"].notna() & acc["peak_bandwidth"].notna() & (acc["bytes_moved"] > 0)
              & acc["flops"].notna()]
    if acc.empty:
        return None
    intensity = (acc["flops"] / acc["bytes_moved"]).to_numpy(float)
    achieved = (acc["flops"] / acc["median_s"]).to_numpy(float)
    fig = charts._figure(4.2)
    ax = charts._subplots(fig, 1, 1)[0, 0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    x = np.logspace(np.log10(max(intensity.min() / 4, 1e-2)), np.log10(intensity.max() * 4), 100)
    bandwidth = float(acc["peak_bandwidth"].iloc[0])
    for (math, peak), _ in acc.groupby(["math", "peak_flops"]):
        ax.plot(x, np.minimum(peak, bandwidth * x), color="#333333", lw=1)
        ax.annotate(f"{math} peak {peak / 1e12:.3g} TFLOP/s", (x[-1], peak), ha="right", va="bottom", fontsize=7)
    ax.annotate(f"memory {bandwidth / 1e12:.3g} TB/s", (x[0], bandwidth * x[0]), ha="left", va="bottom",
                fontsize=7, rotation=0)
    colors = charts.model_colors(list(dict.fromkeys(acc["model"])), dict(zip(acc["model"], acc["family"])))
    for (model, phase, mode), at in acc.groupby(["model", "phase", acc["mode"].fillna("eager")]):
        i = acc.index.get_indexer(at.index)
        bound = (at["launch_bound"] == "yes").to_numpy()
        style = dict(marker=PHASE_MARKERS.get(phase, "o"), s=28, edgecolors=colors[model])
        face = "none" if mode != "eager" else colors[model]
        ax.scatter(intensity[i][~bound], achieved[i][~bound], facecolors=face, **style)
        if bound.any():
            ax.scatter(intensity[i][bound], achieved[i][bound], facecolors=face, alpha=0.35, **style)
    # the key: a colour per model, a marker per phase, hollow for CUDA graphs (outside the axes)
    from matplotlib.lines import Line2D

    keys = [Line2D([], [], ls="", marker="o", color=colors[m], label=charts.label(m)) for m in colors]
    keys += [Line2D([], [], ls="", marker=PHASE_MARKERS.get(p, "o"), color="#555555", label=p)
             for p in dict.fromkeys(acc["phase"])]
    if acc["mode"].notna().any():
        keys.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", color="#555555", label="CUDA graph"))
    keys.append(Line2D([], [], ls="", marker="o", color="#555555", alpha=0.35, label="launch-bound"))
    ax.legend(handles=keys, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of the least memory traffic)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(charts.label(where), fontsize=9, loc="left")
    return charts._svg(fig, f"Roofline — {where}", f"Achieved FLOP/s against arithmetic intensity, {where}",
                       "each row of the run; hollow: captured in CUDA graphs; faint: launch-bound (the device idle "
                       "more than half the call). A point far under its roof is held back by launches or by "
                       "memory traffic the floor estimate does not count.")
