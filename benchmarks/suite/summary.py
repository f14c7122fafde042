"""The printed summary of a bench run: model x phase, median and ratio to the MLP, per workload.

It reads the tidy table that :func:`benchmarks.core.record.bench_table` built (the derived
figures are computed there, once).
"""

from __future__ import annotations

import math

import pandas as pd


def format_seconds(s: float) -> str:
    if not isinstance(s, (int, float)) or math.isnan(s):
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _cell(row: pd.Series) -> str:
    if row["status"] != "ok":
        return str(row["status"])
    ratio = "" if math.isnan(row["x_mlp"]) else f" x{row['x_mlp']:.3g}"
    return format_seconds(row["median_s"]) + ratio


def summary(frame: pd.DataFrame, max_blocks: int = 6) -> str:
    """Model x phase: the median time and the ratio to the width-matched MLP, per workload.

    A workload is a device, dtype, widths, batch and grid size; a width-matched MLP (no
    grid) shows in every grid size's block. Past ``max_blocks`` workloads, only the
    geometric mean of x MLP over all workloads is shown per model and phase.
    """
    if frame.empty:
        return "no measurements"
    counts = frame["status"].value_counts()
    lines = [f"{len(frame)} measurements: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    phases = [p for p in ("forward", "backward", "train") if p in set(frame["phase"])]
    models = list(dict.fromkeys(frame["model"]))
    keys = ["device", "dtype", "widths", "batch"]
    blocks = []
    for key, group in frame.groupby(keys, sort=False):
        grids = sorted(set(group["grid_size"].dropna())) or [math.nan]
        for grid in grids:
            rows = group if math.isnan(grid) else group[group["grid_size"].isna() | (group["grid_size"] == grid)]
            blocks.append((key, grid, rows))
    width = max(len(m) for m in models) + 2
    if len(blocks) <= max_blocks:
        for (device, dtype, widths, batch), grid, rows in blocks:
            grid_text = "" if math.isnan(grid) else f", grid {int(grid)}"
            lines += ["", f"{device} {dtype} [{widths.replace('x', ', ')}] batch {int(batch)}{grid_text}"
                      "   (median, x width-matched MLP)",
                      " " * width + "".join(f"{p:>18}" for p in phases)]
            for model in models:
                cells = []
                for phase in phases:
                    hit = rows[(rows["model"] == model) & (rows["phase"] == phase)]
                    cells.append(_cell(hit.iloc[0]) if len(hit) else "")
                if any(cells):
                    lines.append(f"{model:<{width}}" + "".join(f"{c:>18}" for c in cells))
        return "\n".join(lines)
    lines += ["", f"{len(blocks)} workloads; geometric mean of x width-matched MLP over them:",
              " " * width + "".join(f"{p:>12}" for p in phases)]
    ok = frame[(frame["status"] == "ok") & frame["x_mlp"].notna()]
    if ok.empty:
        lines.append("(no width-matched MLP was measured alongside, so there are no ratios)")
    for model in models:
        cells = []
        for phase in phases:
            r = ok[(ok["model"] == model) & (ok["phase"] == phase)]["x_mlp"]
            cells.append(f"x{math.exp(r.map(math.log).mean()):.3g}" if len(r) else "-")
        lines.append(f"{model:<{width}}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)
