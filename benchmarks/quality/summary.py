"""The summary of a quality run: per task and model, the metric over seeds and its Pareto standing.

Computed here, once, from the rows of quality.csv; the report only reads it. A diverged or
failed seed is counted, never averaged in: ``value_mean`` and ``value_std`` are over the
seeds that trained to the end (``ok``). A model is on the Pareto front of its task when no
other model is at least as accurate (mean metric, equal within TIE) in at most as much
training time (the median over seeds of the total), and strictly better in one of the two.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.quality.train import DIVERGED, OK


def label(model: str, grid_updates) -> str:
    """``kan`` or ``kan +grid updates``: a model and its training variant, as the tables name it."""
    return f"{model} +grid updates" if _updated(grid_updates) else str(model)


def _updated(grid_updates) -> bool:
    try:
        return float(grid_updates) > 0
    except (TypeError, ValueError):
        return False


def summarize(rows: list[dict], higher_is_better: dict[str, bool]) -> list[dict]:
    """One summary row per task and model variant (record.TABLES["quality_summary"])."""
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    frame["label"] = [label(m, g) for m, g in zip(frame["model"], frame["grid_updates"])]
    out = []
    for (task, name), g in frame.groupby(["task", "label"], sort=False):
        ok = g[g["status"] == OK]
        values = ok["value"].astype(float)
        reached = ok["time_to_target_s"].astype(float).dropna()
        first = g.iloc[0]
        out.append({
            "task": task, "metric": first["metric"], "label": name, "model": first["model"],
            "family": first["family"], "grid_updates": int(g["grid_updates"].max()),
            "seeds": len(g), "ok": len(ok), "diverged": int((g["status"] == DIVERGED).sum()),
            "failed": int((~g["status"].isin([OK, DIVERGED])).sum()),
            "value_mean": _stat(values, np.mean), "value_std": _stat(values, lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0),
            "value_min": _stat(values, np.min), "value_max": _stat(values, np.max),
            "train_s": _stat(ok["train_s"].astype(float), np.median),
            "step_median_s": _stat(ok["step_median_s"].astype(float), np.median),
            "first_step_s": _stat(g["first_step_s"].astype(float).dropna(), np.median),
            "target": first["target"], "reached_target": len(reached),
            "time_to_target_s": _stat(reached, np.median),
            "parameters": first["parameters"], "flops_per_step": first["flops_per_step"],
            "pareto": False, "dominated_by": "",
        })
    for task in dict.fromkeys(r["task"] for r in out):
        mark_pareto([r for r in out if r["task"] == task], higher_is_better.get(task, False))
    return out


def _stat(values: pd.Series, fn) -> float:
    v = values.to_numpy(float)
    v = v[np.isfinite(v)]
    return float(fn(v)) if v.size else math.nan


# Mean metrics closer than this (relative) are equally accurate: kan and kan-fast compute the same
# function and differ in float32 rounding only, and no three-seed mean resolves 0.1%.
TIE = 1e-3


def mark_pareto(rows: list[dict], higher_is_better: bool) -> None:
    """Set ``pareto`` and ``dominated_by`` on the rows of one task (see the module docstring)."""
    sign = 1.0 if higher_is_better else -1.0
    scored = [r for r in rows if math.isfinite(r["value_mean"]) and math.isfinite(r["train_s"])]

    def as_good(o, r):  # o at least as accurate as r, with ties
        return sign * (o["value_mean"] - r["value_mean"]) >= -TIE * abs(r["value_mean"])

    def better(o, r):  # o strictly more accurate than r, beyond a tie
        return sign * (o["value_mean"] - r["value_mean"]) > TIE * abs(r["value_mean"])

    for r in scored:
        by = [o["label"] for o in scored if o is not r and as_good(o, r) and o["train_s"] <= r["train_s"]
              and (better(o, r) or o["train_s"] < r["train_s"])]
        r["pareto"] = not by
        r["dominated_by"] = ", ".join(by)
