"""The tidy table of a bench run (``benchmarks.csv``) and its printed summary.

:func:`tidy` turns the run's measurement rows (``measurements.jsonl``, one per finished
case) into one row per measurement with the columns of ``record.BENCH_COLUMNS`` and the
derived figures:

- ``throughput`` = batch / median_s (samples per second);
- ``gflops`` = flops / median_s / 1e9, with ``flops`` the analytic count of the timed work;
- ``x_mlp`` = median_s / the median of the width-matched ``mlp`` on the same device, dtype,
  phase, widths and batch in this run; ``x_mlp_param`` likewise against ``mlp-param``,
  whose grid size must match too (its widths follow the KAN's parameter count).

Only rows whose status is "ok" carry times and the figures derived from them.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.record import BENCH_COLUMNS

MATCH = ["machine", "device", "dtype", "phase", "widths", "batch"]
BASELINES = (("x_mlp", "mlp", False), ("x_mlp_param", "mlp-param", True))
TIME_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "rounds", "throughput", "gflops"]
INTEGER_COLUMNS = ["batch", "grid_size", "rounds", "flops", "param_bytes", "saved_bytes", "peak_bytes",
                   "threads", "parameters"]
FLOAT_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "first_call_s"]


def tidy(rows: list[dict]) -> pd.DataFrame:
    """The tidy table (BENCH_COLUMNS, in order) of measurement rows, with derived figures."""
    frame = pd.DataFrame(list(rows))
    for column in BENCH_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    frame = frame[BENCH_COLUMNS].copy()
    for column in INTEGER_COLUMNS + FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    ok = frame["status"] == "ok"
    frame.loc[~ok, TIME_COLUMNS] = math.nan
    frame["throughput"] = (frame["batch"] / frame["median_s"]).where(ok)
    frame["gflops"] = (frame["flops"] / frame["median_s"] / 1e9).where(ok)
    frame = mlp_ratios(frame)
    for column in INTEGER_COLUMNS:  # whole numbers stay whole in the CSV, empty where unknown
        frame[column] = frame[column].round().astype("Int64")
    return frame


def mlp_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill ``x_mlp`` and ``x_mlp_param``: each ok row's median over its baseline MLP's median."""
    ok = frame["status"] == "ok"
    for column, baseline, by_grid in BASELINES:
        keys = MATCH + (["grid_size"] if by_grid else [])
        base = frame[ok & (frame["model"] == baseline)]
        base = base.groupby(keys, dropna=False)["median_s"].median().rename("_baseline").reset_index()
        merged = frame[keys].merge(base, on=keys, how="left")
        ratio = frame["median_s"].to_numpy() / merged["_baseline"].to_numpy()
        frame[column] = ratio
        frame.loc[~ok, column] = math.nan
    return frame


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
