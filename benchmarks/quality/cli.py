"""``python -m benchmarks.quality``: accuracy next to training time, every model on fixed tasks.

    python -m benchmarks.quality [--budget quick|default] [--task NAME ...] [--model NAME ...]
                                 [--seeds 0,1,2] [--steps N] [--device cpu|cuda|mps]
                                 [--dtype float32|float64] [--threads N] [--label TEXT]

Every registered model (the MLP baselines included) trains on every task
(:mod:`benchmarks.quality.tasks`) for every seed under one budget
(:data:`benchmarks.quality.train.BUDGETS`: Adam with the same learning-rate schedule, the
same steps and batch size for all); the B-spline KANs train twice, without and with
pykan's grid-update schedule. How they are trained and timed: :mod:`benchmarks.quality.train`.

The run folder (``results/<run-id>/``, or under ``$KAN_RESULTS``; :mod:`benchmarks.core.record`):
``environment.json``; ``quality.json``, the settings; ``quality.jsonl``, every row as soon as
its task and seed finish, so that Ctrl-C or SIGTERM keeps what finished (exit 130);
``quality.csv``, one row per task, model, variant and seed; ``quality_summary.csv``, the mean
and spread over seeds and each task's Pareto front (:mod:`benchmarks.quality.summary`).

Exit status: 0 every model trained (a diverged model is a finding, recorded as such, not a
failure of the run); 1 a model raised an error; 2 bad arguments or an unwritable results
folder, told in one line; 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import time

from benchmarks.core import cli, record
from benchmarks.core.cli import Parser
from benchmarks.core.command import Command, run_command
from benchmarks.core.units import format_seconds

DEFAULT_SEEDS = (0, 1, 2)
QUALITY_DTYPES = ("float32", "float64")


def parser() -> argparse.ArgumentParser:
    from benchmarks.quality.tasks import TASKS
    from benchmarks.quality.train import BUDGETS

    p = Parser(
        prog="python -m benchmarks.quality",
        description="Train every registered model on fixed small tasks under one budget and record the test "
        "metric next to the training time, in a new run folder under results/ (or $KAN_RESULTS).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="budgets:\n" + "\n".join(f"  {b.name:8} {b.describe()}" for b in BUDGETS.values())
        + "\n\ntasks:\n" + "\n".join(f"  {t.name:8} {t.formula}; widths {'x'.join(map(str, t.widths))}, grid "
                                     f"{t.grid_size}; {t.metric}" for t in TASKS.values())
        + "\n\nLists take commas or repeats: --task exp-sin,digits --model kan --model fourier-kan.",
    )
    p.add_argument("--budget", default="default", metavar="NAME", type=cli.one_of(list(BUDGETS), "budget"),
                   help=f"one of {', '.join(BUDGETS)} (default: default; quick checks the command in seconds)")
    p.add_argument("--task", type=cli.names(list(TASKS), "task"), action=cli.Names, default=None, metavar="NAME",
                   help=f"task(s) to train on (default: all: {', '.join(TASKS)})")
    cli.add_models(p, help="registered model(s) to train (default: all, MLP baselines included)")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, metavar="S,S", type=cli.int_list("--seeds", minimum=0),
                   help="seeds, comma-separated (default: 0,1,2): weights, data split and batch order")
    p.add_argument("--steps", type=cli.count(1), default=None, metavar="N",
                   help="training steps (default: the budget's)")
    cli.add_devices(p, default="cpu", multiple=False)
    cli.add_dtypes(p, QUALITY_DTYPES, default="float32")
    cli.add_threads(p, default=1, help="torch intra-op threads (default: 1: these networks are too small to gain "
                    "from more, and on a shared machine threads waiting at each operator's barrier for a "
                    "descheduled one make every step many times slower); recorded in the run")
    cli.add_label(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("quality", parser(), argv, _quality)


def _quality(args, cmd: Command) -> int:
    import dataclasses

    from benchmarks.core.case import zoo
    from benchmarks.core.timer import using_threads
    from benchmarks.quality.tasks import TASKS
    from benchmarks.quality.train import BUDGETS

    budget = BUDGETS[args.budget]
    if args.steps is not None:
        budget = dataclasses.replace(budget, steps=args.steps)
    tasks = [TASKS[n] for n in args.task or TASKS]
    models = args.model or list(zoo().available())
    seeds = tuple(dict.fromkeys(args.seeds))
    run = cmd.open(label=args.label or f"quality-{budget.name}", settings={
        "budget": {**budget.__dict__, "grid_update_steps": list(budget.grid_update_steps()),
                   "checkpoint_steps": budget.checkpoint_steps(), "schedule": budget.describe()},
        "tasks": [{"name": t.name, "formula": t.formula, "kind": t.kind, "widths": list(t.widths),
                   "grid_size": t.grid_size, "metric": t.metric, "target": t.target} for t in tasks],
        "models": models, "seeds": list(seeds), "device": args.device, "dtype": args.dtype, "threads": args.threads,
    })
    run.write_json(record.QUALITY + ".json", run.settings())  # quality.json, as readers of older runs expect
    print(f"quality: {len(tasks)} tasks x {len(models)} models x {len(seeds)} seeds, {budget.describe()}, "
          f"{args.device} {args.dtype}, {args.threads} threads; run folder {run.path}", flush=True)
    # imported before the training, which Ctrl-C or SIGTERM may stop anywhere: an interrupt in the
    # middle of a first import would leave the module half made for the ending that needs it
    from benchmarks.quality import summary, train

    with using_threads(args.threads):  # the run's count, applied while it trains and restored after
        rows, wall = _train_all(cmd, run, tasks, models, seeds, budget, args)

    summary_rows = summary.summarize(rows, {t.name: t.higher_is_better for t in tasks})
    run.write_rows(record.QUALITY, rows)
    run.write_rows(record.QUALITY_SUMMARY, summary_rows)
    print()
    print(format_summary(summary_rows))
    print()
    if cmd.interrupted:
        print(f"interrupted: kept the {len(rows)} finished rows")
    print(f"trained in {wall:.1f} s")
    return 1 if any(r["status"] == train.ERROR for r in rows) else 0


def _train_all(cmd: Command, run, tasks, models, seeds, budget, args) -> tuple[list[dict], float]:
    """Train every model on every task and seed, each group's rows appended as it finishes; the
    rows that reached the disk (all of them, or those finished before Ctrl-C) and the seconds taken."""
    from benchmarks.core.timer import DeviceTimer
    from benchmarks.quality import train

    rows: list[dict] = []
    timer = DeviceTimer(args.device)
    started = time.perf_counter()
    with cmd.interruptible():
        for task in tasks:
            for seed in seeds:
                data = task.data(seed)
                group = train.trainees(task, models, budget, args.device, args.dtype, seed)
                data = data.to(args.device, _torch_dtype(args.dtype))
                began = time.perf_counter()
                train.train(task, data, group, budget, seed, timer)
                for t in group:
                    r = train.row(t, task, budget, seed, args.threads)
                    rows.append(r)
                    run.append_jsonl(record.QUALITY + ".jsonl", r)
                print(f"  {task.name:8} seed {seed}: {len(group)} models in {time.perf_counter() - began:.1f} s; "
                      + _best(rows, task, seed), flush=True)
    return run.read_jsonl(record.QUALITY + ".jsonl"), time.perf_counter() - started


def _torch_dtype(name: str):
    from benchmarks.core.case import DTYPES

    return DTYPES[name]


def _best(rows: list[dict], task, seed: int) -> str:
    from benchmarks.quality.summary import label

    done = [r for r in rows if r["task"] == task.name and r["seed"] == seed and r["status"] == "ok"]
    if not done:
        return "no model trained to the end"
    pick = max if task.higher_is_better else min
    best = pick(done, key=lambda r: r["value"])
    bad = sum(r["status"] != "ok" for r in rows if r["task"] == task.name and r["seed"] == seed)
    return (f"best {label(best['model'], best['grid_updates'])} {task.metric} {best['value']:.4g}"
            + (f"; {bad} diverged or failed" if bad else ""))


def format_summary(rows: list[dict]) -> str:
    """The summary as aligned text: per task, each model's mean metric, spread, time and front."""
    from benchmarks.core.units import text_table

    def num(v, fmt="{:.4g}"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    shown = [{
        "task": r["task"], "model": r["label"], "metric": r["metric"],
        "mean": num(r["value_mean"]), "std": num(r["value_std"]),
        "ok/seeds": f"{r['ok']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
        "train s": num(r["train_s"], "{:.3g}"),
        "step ms": format_seconds(r["step_median_s"], unit="ms", missing="", suffix=False),
        "to target s": num(r["time_to_target_s"], "{:.3g}") + f" ({r['reached_target']}/{r['ok']})",
        "front": "yes" if r["pareto"] else "",
    } for r in rows]
    return text_table(shown, right=("mean", "std", "train s", "step ms", "to target s")) if shown else "(no rows)"
