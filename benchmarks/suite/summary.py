"""The printed summary of a bench run: per workload and phase, each model's median and what may
be said of it against the width-matched MLP.

It reads the tidy table that :func:`benchmarks.core.record.bench_table` built (the figures
are computed there, once) and words every ratio with :func:`benchmarks.core.stats.words`:
"N x slower/faster" where the interval excludes 1, "no clear difference" where it holds 1,
and "imprecise" or "disturbed" said beside it, never instead of it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.core import stats
from benchmarks.core.phases import SUITE_PHASES
from benchmarks.core.units import format_seconds

PHASES = SUITE_PHASES


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


def _text(row, column: str) -> str | None:
    v = row.get(column)
    return v if isinstance(v, str) and v.strip() else None


def verdict(row) -> str:
    """What may be said of one row against the width-matched MLP."""
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}" if isinstance(row.get("reason"), str) else str(row["status"])
    if row.get("model") == "mlp":
        return "the baseline"
    said = stats.words(_number(row["x_mlp"]), _number(row.get("x_mlp_low")), _number(row.get("x_mlp_high")),
                       stats.imprecision_of(_text(row, "imprecise"), "mlp"), than="the MLP",
                       disturbed=_text(row, "interference"), rounds=_number(row.get("used_rounds")))
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



def counts_line(frame: pd.DataFrame) -> str:
    """How many measurements and of which status; of the KAN rows (not the baselines), how many
    were imprecise or disturbed."""
    counts = frame["status"].value_counts()
    line = f"{len(frame)} measurements: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    kan = frame[(frame["status"] == "ok") & (frame["family"] == "kan")] if "family" in frame else frame.iloc[:0]
    flags = []
    if "imprecise" in kan and kan["imprecise"].notna().any():
        # by the ratio each concerns: the table below shows the ratio to the MLP, the page both
        by = {name: int(kan["imprecise"].map(lambda v, b=baseline: stats.imprecision_of(v, b) is not None).sum())
              for name, baseline in (("the MLP", "mlp"), ("mlp-param", "mlp-param"))}
        where = ", ".join(f"{n} {'in the ratio ' if not i else ''}to {name}"
                          for i, (name, n) in enumerate((k, v) for k, v in by.items() if v))
        flags.append(f"{int(kan['imprecise'].notna().sum())} imprecise" + (f" ({where})" if where else ""))
    if "interference" in kan and kan["interference"].notna().any():
        flags.append(f"{int(kan['interference'].notna().sum())} disturbed")
    if len(kan) and flags:
        line += (f"; of the {len(kan)} KAN rows, " + ", ".join(flags)
                 + "; their direction and size are still said")
    return line


REFERENCE = "kan"  # the reference KAN, whose ratio every summary and headline states


def reference_lines(frame: pd.DataFrame) -> list[str]:
    """Per phase, the reference KAN's time over the width-matched MLP: the geometric mean over the
    workloads measured, with the geometric mean of the intervals' ends (no narrower than the
    interval of the mean), in words."""
    kan = frame[(frame["model"] == REFERENCE) & (frame["status"] == "ok")]
    lines = []
    for phase in PHASES:
        at = kan[kan["phase"] == phase]
        values = at[["x_mlp", "x_mlp_low", "x_mlp_high"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        values = values[np.isfinite(values[:, 0]) & (values[:, 0] > 0)]
        if not len(values):
            continue
        ratio = float(np.exp(np.log(values[:, 0]).mean()))
        ends = values[np.isfinite(values[:, 1:]).all(axis=1) & (values[:, 1:] > 0).all(axis=1)]
        low, high = (float(np.exp(np.log(ends[:, k]).mean())) for k in (1, 2)) if len(ends) == len(values) \
            else (math.nan, math.nan)
        imprecise = int(at["imprecise"].map(lambda v: stats.imprecision_of(v, "mlp") is not None).sum()) \
            if "imprecise" in at else 0
        over = f", geometric mean over {len(values)} workloads" if len(values) > 1 else ""
        lines.append(f"{phase}, the reference KAN ({REFERENCE}){over}: "
                     + stats.words(ratio, low, high, f"{imprecise} of {len(values)} workloads" if imprecise else None,
                                   than="the width-matched MLP", interval=True))
    return lines


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
    lines = [counts_line(frame)] + reference_lines(frame)
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
                        f"  {phase:<9} {model:<{width}} {format_seconds(_number(row['median_s']), missing='-'):>9}  "
                        f"{stats.plain(ratio) if math.isfinite(ratio) else '-':>7} "
                        f"{interval(row.get('x_mlp_low'), row.get('x_mlp_high')):>18}  {verdict(row)}"
                    )
        return "\n".join(lines)
    lines += ["", f"{len(blocks)} workloads; geometric mean of time over the width-matched MLP "
              "(imprecise rows averaged in, and counted):",
              " " * width + "".join(f"{p:>22}" for p in phases)]
    ok = frame[(frame["status"] == "ok") & frame["x_mlp"].notna()]
    if ok.empty:
        lines.append("(no width-matched MLP was measured alongside, so there are no ratios)")
    for model in models:
        cells = []
        for phase in phases:
            at = ok[(ok["model"] == model) & (ok["phase"] == phase)]
            values = at["x_mlp"].to_numpy(float)
            text = f"x{stats.plain(float(np.exp(np.log(values).mean())))}" if values.size else "-"
            imprecise = int(at["imprecise"].map(lambda v: stats.imprecision_of(v, "mlp") is not None).sum()) \
                if "imprecise" in at else 0
            if imprecise:
                text += f" ({imprecise} imprecise)"
            cells.append(text)
        lines.append(f"{model:<{width}}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
