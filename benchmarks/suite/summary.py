"""The printed summary of a bench run: per workload and phase, each model's median and what may
be said of it against the width-matched MLP.

It reads the tidy table that :func:`benchmarks.core.record.bench_table` built (the figures
are computed there, once) and words every ratio with :func:`benchmarks.core.stats.words`:
nothing is called faster or slower where the interval includes 1 or the row is unstable.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.core import stats

PHASES = ("forward", "backward", "train")


def format_seconds(s: float) -> str:
    if not isinstance(s, (int, float)) or math.isnan(s):
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _number(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def interval(low, high) -> str:
    low, high = _number(low), _number(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{stats.plain(low)}, {stats.plain(high)}]"


def verdict(row) -> str:
    """What may be said of one row against the width-matched MLP."""
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}" if isinstance(row.get("reason"), str) else str(row["status"])
    if row.get("model") == "mlp":
        return "the baseline"
    unstable = row.get("unstable_reason") if row.get("stable") == "unstable" else None
    said = stats.words(_number(row["x_mlp"]), _number(row.get("x_mlp_low")), _number(row.get("x_mlp_high")),
                       unstable if isinstance(unstable, str) else None, than="the MLP")
    return launch_bound_words(row, said)


def launch_bound_words(row, said: str) -> str:
    """``said`` of a launch-bound row (the device idle more than half the call) as what it is:
    a comparison of Python and kernel-launch overheads, not of the models; other rows unchanged."""
    if row.get("launch_bound") != "yes":
        return said
    return (f"launch-bound (device busy {_number(row.get('device_busy')):.0%}): overheads compared, "
            f"not models: {said}")


def launch_bound_line(frame: pd.DataFrame) -> str | None:
    """One line naming how many rows were launch-bound, or None where none was."""
    if "launch_bound" not in frame.columns:
        return None
    bound = frame[frame["launch_bound"] == "yes"]
    if bound.empty:
        return None
    busy = frame[frame["launch_bound"] == "no"]
    return (f"{len(bound)} of {len(bound) + len(busy)} accelerator rows launch-bound (the device idle more than "
            f"half the call): their times are Python and kernel launches, and their ratios compare overheads, "
            f"not models")


def _blocks(frame: pd.DataFrame):
    keys = ["device", "dtype", "widths", "batch", "mode"]  # a CUDA-graph row is a workload of its own
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        grids = sorted(set(group["grid_size"].dropna())) or [math.nan]
        for grid in grids:
            rows = group if math.isnan(grid) else group[group["grid_size"].isna() | (group["grid_size"] == grid)]
            yield key, grid, rows


def summary(frame: pd.DataFrame, max_blocks: int = 6) -> str:
    """Per workload (device, dtype, widths, batch, grid) and phase: model, median, time over the
    width-matched MLP with its 95% interval, and the verdict. Past ``max_blocks`` workloads,
    the geometric mean of each model's ratio over them instead, with how many were unstable."""
    if frame.empty:
        return "no measurements"
    counts = frame["status"].value_counts()
    lines = [f"{len(frame)} measurements: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    unstable = frame[frame["stable"] == "unstable"]
    if len(unstable):
        lines[0] += f"; {len(unstable)} unstable (their ratios are not called faster or slower)"
    bound = launch_bound_line(frame)
    if bound:
        lines.append(bound)
    phases = [p for p in PHASES if p in set(frame["phase"])]
    models = list(dict.fromkeys(frame["model"]))
    width = max(len(m) for m in models) + 2
    blocks = list(_blocks(frame))
    if len(blocks) <= max_blocks:
        for (device, dtype, widths, batch, mode), grid, rows in blocks:
            grid_text = "" if math.isnan(grid) else f", grid {int(grid)}"
            mode_text = f", {mode}" if isinstance(mode, str) else ""
            lines += ["", f"{device} {dtype} [{str(widths).replace('x', ', ')}] batch {int(batch)}{grid_text}{mode_text}"]
            lines.append(f"  {'phase':<9} {'model':<{width}} {'median':>9}  {'x MLP':>7} {'95% interval':>18}  verdict")
            for phase in phases:
                for model in models:
                    hit = rows[(rows["model"] == model) & (rows["phase"] == phase)]
                    if not len(hit):
                        continue
                    row = hit.iloc[0]
                    ratio = _number(row["x_mlp"])
                    lines.append(
                        f"  {phase:<9} {model:<{width}} {format_seconds(_number(row['median_s'])):>9}  "
                        f"{stats.plain(ratio) if math.isfinite(ratio) else '-':>7} "
                        f"{interval(row.get('x_mlp_low'), row.get('x_mlp_high')):>18}  {verdict(row)}"
                    )
        return "\n".join(lines)
    lines += ["", f"{len(blocks)} workloads; geometric mean of time over the width-matched MLP "
              "(unstable rows counted, not averaged in):",
              " " * width + "".join(f"{p:>22}" for p in phases)]
    ok = frame[(frame["status"] == "ok") & frame["x_mlp"].notna()]
    if ok.empty:
        lines.append("(no width-matched MLP was measured alongside, so there are no ratios)")
    for model in models:
        cells = []
        for phase in phases:
            at = ok[(ok["model"] == model) & (ok["phase"] == phase)]
            steady = at[at["stable"] != "unstable"]["x_mlp"].to_numpy(float)
            text = f"x{stats.plain(float(np.exp(np.log(steady).mean())))}" if steady.size else "-"
            if len(at) > steady.size:
                text += f" ({len(at) - steady.size} unstable)"
            cells.append(text)
        lines.append(f"{model:<{width}}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
