"""The quality study's chart: each task's test metric against training time, its Pareto front
marked. Drawn in the charts' style (:mod:`reports.charts`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullLocator

from reports.charts import Chart, _figure, _subplots, _svg, label, model_colors, styled
from reports.units import is_missing


QUALITY_MARKERS = {False: "o", True: "^"}  # trained without / with grid updates


def _log_ticks(axis, text, most: int = 6) -> None:
    """Round ticks on a log axis, evenly spread, at most ``most`` of them, no minor labels."""
    from matplotlib.ticker import FixedLocator

    low, high = sorted(axis.get_view_interval())
    if not low > 0:
        return
    ticks = []
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in mantissas if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            break
    step = max(1, math.ceil(len(ticks) / most))
    axis.set_major_locator(FixedLocator(ticks[::step]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: text(v)))
    axis.set_minor_locator(NullLocator())


@styled
def quality_front(summary: pd.DataFrame, where: str = "") -> Chart | None:
    """The test metric against training time (log), one panel per task, each task's Pareto front marked.

    A point is a model (its mean metric over the seeds that trained to the end, with the
    spread as a bar; the median training time). Filled: on the front, no model as accurate
    in less time; hollow: dominated. A step line joins the front.
    """
    rows = summary[np.isfinite(pd.to_numeric(summary["value_mean"], errors="coerce"))
                   & (pd.to_numeric(summary["train_s"], errors="coerce") > 0)]
    if rows.empty:
        return None
    tasks = list(dict.fromkeys(rows["task"]))
    families = {m: ("mlp" if str(m).startswith("mlp") else "kan") for m in rows["model"]}
    if "family" in rows:
        families.update({m: f for m, f in zip(rows["model"], rows["family"]) if not is_missing(f)})
    colors = model_colors(list(dict.fromkeys(rows["model"])), families)
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig = _figure(2.7 * nrows + 0.6)
    axes = _subplots(fig, nrows, cols)
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.ravel(), tasks):
        at = rows[rows["task"] == task]
        metric = str(at["metric"].iloc[0])
        accuracy = "accuracy" in metric
        for r in at.itertuples(index=False):
            d = r._asdict()
            updates = not is_missing(d.get("grid_updates")) and float(d["grid_updates"]) > 0
            front = str(d["pareto"]).strip().lower() in ("true", "1", "yes")
            color = colors[d["model"]]
            std = d.get("value_std")
            if not is_missing(std) and np.isfinite(std) and std > 0:
                ax.errorbar(d["train_s"], d["value_mean"], yerr=std, color=color, linewidth=0.8, capsize=2,
                            zorder=2)
            ax.scatter(d["train_s"], d["value_mean"], marker=QUALITY_MARKERS[updates], s=42,
                       facecolor=color if front else "white", edgecolor=color, linewidths=1.4, zorder=3)
        front_rows = at[at["pareto"].map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))]
        front_rows = front_rows.sort_values("train_s")
        if len(front_rows) > 1:
            ax.step(front_rows["train_s"], front_rows["value_mean"], where="post", color="black",
                    linewidth=0.8, linestyle=":", zorder=1)
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, lambda v: f"{v:g} s")
        if accuracy:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        else:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, lambda v: f"{v:g}")
        ax.set_title(label(task), fontsize=9, loc="left")
        ax.set_ylabel(label(f"{metric} ({'higher' if accuracy else 'lower'} is better)"))
        ax.set_xlabel("training time (log)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=colors[m], markeredgecolor=colors[m],
                      label=label(m)) for m in colors]
    handles += [
        Line2D([], [], marker="o", linestyle="", color="black", markerfacecolor="black", label="on the Pareto front"),
        Line2D([], [], marker="o", linestyle="", color="black", markerfacecolor="white", label="dominated"),
        Line2D([], [], marker="^", linestyle="", color="black", markerfacecolor="white", label="with grid updates"),
        Line2D([], [], color="black", linestyle=":", linewidth=0.8, label="Pareto front"),
        Line2D([], [], color="black", linewidth=0.8, label="± std over seeds"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7)
    if where:
        fig.suptitle(label(where), fontsize=9, x=0.0, ha="left")
    note = ("each point is a model: its mean test metric over the seeds that trained to the end (bar: ± one "
            "standard deviation) against its median total training time, log axis; filled marks are on the "
            "task's Pareto front (no model as accurate in less time), hollow ones are dominated; ▲ trained with "
            "grid updates, ● without")
    return _svg(fig, "Accuracy against training time" + (f" — {where}" if where else ""),
                "Test metric against training time per task, Pareto front marked", note)
