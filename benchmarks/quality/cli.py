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
import sys
import time

from benchmarks.core.cli import Parser, announce, busy_warning, choices, terminate_as_interrupt
from benchmarks.core.timer import DEVICE_TYPES

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
    p.add_argument("--budget", default="default", metavar="NAME",
                   help=f"one of {', '.join(BUDGETS)} (default: default; quick checks the command in seconds)")
    p.add_argument("--task", action="append", default=[], metavar="NAME",
                   help=f"task(s) to train on (default: all: {', '.join(TASKS)})")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="registered model(s) to train (default: all, MLP baselines included)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), metavar="S,S",
                   help="seeds, comma-separated (default: 0,1,2): weights, data split and batch order")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="training steps (default: the budget's)")
    p.add_argument("--device", default="cpu", metavar="NAME", help=f"one of {', '.join(DEVICE_TYPES)} (default: cpu)")
    p.add_argument("--dtype", default="float32", metavar="NAME",
                   help=f"one of {', '.join(QUALITY_DTYPES)} (default: float32)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch intra-op threads (default: 1: these networks are too small to gain from more, "
                   "and on a shared machine threads waiting at each operator's barrier for a descheduled "
                   "one make every step many times slower); recorded in the run")
    p.add_argument("--label", default=None, metavar="TEXT", help="added to the run folder's name")
    return p


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in str(text).split(","))
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be non-negative integers separated by commas, got {text!r}")
    return tuple(dict.fromkeys(seeds))


def settings(args):
    """(budget, tasks, models, seeds, threads) from the arguments; ``ValueError`` in one line when bad."""
    import dataclasses

    from benchmarks.core.case import device_unavailable, zoo
    from benchmarks.core.timer import check_threads, torch_threads
    from benchmarks.quality.tasks import TASKS
    from benchmarks.quality.train import BUDGETS

    if args.budget not in BUDGETS:
        raise ValueError(f"unknown budget {args.budget!r}; valid budgets: {', '.join(BUDGETS)}")
    budget = BUDGETS[args.budget]
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {args.steps}")
        budget = dataclasses.replace(budget, steps=args.steps)
    tasks = [TASKS[n] for n in choices(args.task, list(TASKS), "task") or TASKS]
    models = choices(args.model, list(zoo().available()), "model") or list(zoo().available())
    seeds = _seeds(args.seeds)
    if args.device not in DEVICE_TYPES:
        raise ValueError(f"unknown device {args.device!r}; valid devices: {', '.join(DEVICE_TYPES)}")
    absent = device_unavailable(args.device)
    if absent:
        raise ValueError(f"device {args.device!r} was asked for but {absent}")
    if args.dtype not in QUALITY_DTYPES:
        raise ValueError(f"unknown dtype {args.dtype!r}; valid dtypes: {', '.join(QUALITY_DTYPES)}")
    threads = torch_threads() if args.threads is None else check_threads(args.threads)
    return budget, tasks, models, seeds, threads


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or the parser's own one-line error
        return int(e.code or 0)
    try:
        budget, tasks, models, seeds, threads = settings(args)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from benchmarks.core.timer import using_threads

    with using_threads(threads):  # the run's count, applied while it trains and restored after
        return _run(args, budget, tasks, models, seeds, threads)


def _run(args, budget, tasks, models, seeds, threads: int) -> int:
    from benchmarks.core import record
    from benchmarks.core.timer import DeviceTimer
    from benchmarks.quality import summary, train

    try:
        run = record.new_run(args.label or f"quality-{budget.name}")
    except record.RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = run.environment()
    warning = busy_warning(env.get("load_average"), env.get("cpu_count"))
    if warning:
        print(warning, flush=True)
    run.write_json(record.QUALITY + ".json", {
        "budget": {**budget.__dict__, "grid_update_steps": list(budget.grid_update_steps()),
                   "checkpoint_steps": budget.checkpoint_steps(), "schedule": budget.describe()},
        "tasks": [{"name": t.name, "formula": t.formula, "kind": t.kind, "widths": list(t.widths),
                   "grid_size": t.grid_size, "metric": t.metric, "target": t.target} for t in tasks],
        "models": models, "seeds": list(seeds), "device": args.device, "dtype": args.dtype, "threads": threads,
    })
    print(f"quality: {len(tasks)} tasks x {len(models)} models x {len(seeds)} seeds, {budget.describe()}, "
          f"{args.device} {args.dtype}, {threads} threads; run folder {run.path}", flush=True)

    rows: list[dict] = []
    timer = DeviceTimer(args.device)
    started = time.perf_counter()
    interrupted = False
    try:
        with terminate_as_interrupt():
            for task in tasks:
                for seed in seeds:
                    data = task.data(seed)
                    group = train.trainees(task, models, budget, args.device, args.dtype, seed)
                    data = data.to(args.device, _torch_dtype(args.dtype))
                    began = time.perf_counter()
                    train.train(task, data, group, budget, seed, timer)
                    for t in group:
                        r = train.row(t, task, budget, seed, threads)
                        rows.append(r)
                        run.append_jsonl(record.QUALITY + ".jsonl", r)
                    print(f"  {task.name:8} seed {seed}: {len(group)} models in {time.perf_counter() - began:.1f} s; "
                          + _best(rows, task, seed), flush=True)
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - started

    rows = run.read_jsonl(record.QUALITY + ".jsonl")  # what reached the disk: the tables hold exactly that
    summary_rows = summary.summarize(rows, {t.name: t.higher_is_better for t in tasks})
    run.write_rows(record.QUALITY, rows)
    run.write_rows(record.QUALITY_SUMMARY, summary_rows)
    print()
    print(format_summary(summary_rows))
    print()
    if warning:
        print(warning)
    if interrupted:
        print(f"interrupted: kept the {len(rows)} finished rows")
    print(f"trained in {wall:.1f} s")
    announce(run)
    if interrupted:
        return 130
    return 1 if any(r["status"] == train.ERROR for r in rows) else 0


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
    from benchmarks.studies.targets import text_table

    def num(v, fmt="{:.4g}"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    shown = [{
        "task": r["task"], "model": r["label"], "metric": r["metric"],
        "mean": num(r["value_mean"]), "std": num(r["value_std"]),
        "ok/seeds": f"{r['ok']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
        "train s": num(r["train_s"], "{:.3g}"), "step ms": num(r["step_median_s"] * 1e3, "{:.3g}"),
        "to target s": num(r["time_to_target_s"], "{:.3g}") + f" ({r['reached_target']}/{r['ok']})",
        "front": "yes" if r["pareto"] else "",
    } for r in rows]
    return text_table(shown, right=("mean", "std", "train s", "step ms", "to target s")) if shown else "(no rows)"
