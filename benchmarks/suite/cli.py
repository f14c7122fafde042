"""``python -m benchmarks``: run a bench suite into a new run folder and print a summary.

    python -m benchmarks [--suite smoke|quick|full] [--model NAME ...] [--device cpu|cuda|mps ...]
                         [--dtype float32|bfloat16 ...] [--threads N] [--label TEXT] [--graphs]
                         [-k TEXT ...]

1. check the arguments (a bad value: one line naming it and the valid ones, exit 2);
2. create the run folder (environment.json, and run.json with the settings and the planned cases);
3. measure the suite (:func:`benchmarks.suite.runner.run_suite`, the core directly): each finished
   case appends its Measurement to ``measurements.jsonl``;
4. build the tidy table ``benchmarks.csv`` from the measurements, export pytest-benchmark's
   ``benchmark.json`` from them, print the summary (with, on a GPU, where the full suite's ladder
   stopped and why: the settings' ``ladder`` in run.json) and the folder.

Ctrl-C (or SIGTERM) stops the suite; what finished is kept and tabled, and the exit status is 130.
Otherwise it is 1 when a case failed (an error, or NaN/inf output), else 0.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.core import cli
from benchmarks.core.command import Command, run_command


def _model_list() -> str:
    try:
        from benchmarks.core.case import zoo

        return "\n".join(f"  {name:15} {text}" for name, text in zoo().available().items())
    except ImportError as e:
        return f"  (the model registry cannot be imported: {e})"


def parser() -> argparse.ArgumentParser:
    from benchmarks.core.case import DTYPES
    from benchmarks.suite.suites import SUITES

    p = cli.Parser(
        prog="python -m benchmarks",
        description="Time every registered model (forward, backward, training step) on every device "
        "present, and keep the run in a new folder under results/ (or $KAN_RESULTS).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="suites:\n" + "\n".join(f"  {s.name:15} {s.description}" for s in SUITES.values())
        + "\n\nmodels:\n" + _model_list()
        + "\n\nLists take commas or repeats: --model kan,mlp --model rbf-kan. "
        "-k keeps the cases whose id holds the text: -k forward -k b256",
    )
    p.add_argument("--suite", default="quick", metavar="NAME", type=cli.one_of(list(SUITES), "suite"),
                   help=f"one of {', '.join(SUITES)} (default: quick)")
    cli.add_models(p, help="registered model(s) to time (default: all, MLP baselines included)")
    cli.add_devices(p, present=False)  # a device this machine lacks is skipped, and the run says so
    cli.add_dtypes(p, list(DTYPES), multiple=True, help=f"one or more of {', '.join(DTYPES)} (default: the suite's)")
    cli.add_threads(p)
    cli.add_label(p)
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run the I-th of N parts of the suite (whole workloads; for a CI matrix)")
    p.add_argument("--graphs", action="store_true",
                   help="on CUDA, also time every step with its model captured in CUDA graphs (forward and "
                        "backward replayed; the loss and optimizer step eager), beside the eager step")
    p.add_argument("-k", dest="only", action="append", default=[], metavar="TEXT",
                   help="only the cases whose id holds TEXT (repeat for several; their groups are timed whole)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("bench", parser(), argv, body)


def _selection(args):
    """The suite's cases as asked for; :class:`cli.UsageError` (one line, exit 2) where none can run."""
    from benchmarks.suite import suites

    try:
        selection = suites.select(args.suite, args.model, args.device, args.dtype, args.shard, args.graphs)
    except (ValueError, ImportError) as e:
        raise cli.UsageError(str(e)) from None
    if args.only and not any(text in c.id for c in selection.cases() for text in args.only):
        raise cli.UsageError(f"no case of the selection has {' or '.join(map(repr, args.only))} in its id "
                             f"(ids look like {selection.cases()[0].id})")
    return selection


def body(args, cmd: Command) -> int:
    from benchmarks.core.machine import idle_cores
    from benchmarks.core.timer import default_threads, torch_threads, using_threads

    selection = _selection(args)
    # the run's thread count, decided once here and passed to the runner
    if args.threads is None:
        threads, why = default_threads(idle_cores(), torch_threads())
    else:
        threads, why = args.threads, f"{args.threads} (--threads)"
    with using_threads(threads):  # environment.json records the count the run applies
        return _run(args, cmd, selection, threads, why)


def _run(args, cmd: Command, selection, threads: int, why: str) -> int:
    from benchmarks.core import device, record, schema
    from benchmarks.suite import export, runner

    cases = selection.cases()
    planned = sum(1 for c in cases if runner.wanted(c, args.only))
    ladder = selection.suite.ladder
    on_rungs = sum(1 for c in cases if ladder and ladder.index(c) is not None and runner.wanted(c, args.only))
    present = selection.present_devices()
    run = cmd.open(label=args.label, settings={
        # the devices timed; those asked for (or the default's) that this machine lacks, apart
        "suite": selection.suite.name, "models": list(selection.models), "devices": present,
        "devices_absent": [d for d in selection.devices if d not in present],
        "dtypes": list(selection.dtypes or selection.suite.dtypes), "threads": threads, "threads_choice": why,
        "shard": None if selection.shard is None else f"{selection.shard[0]}/{selection.shard[1]}",
        "graphs": selection.graphs, "only": list(args.only),
        "cases": planned,  # what a partial run is measured against ("after N of M cases")
        **({"ladder_cases": on_rungs} if on_rungs else {}),  # of "cases", those on ladder rungs: at most these run
    })
    print(opening(selection, planned, on_rungs, args.only, why, run.path), flush=True)
    with cmd.interruptible():  # Ctrl-C or SIGTERM: keep and table what finished
        runner.run_suite(selection, run, threads, args.only)
    device.record_peaks(run, device.peaks_used())  # device.json: the peaks the rows were set against
    measurements = run.measurements()  # what reached the disk: the table holds exactly that
    frame = record.bench_table([m.row() for m in measurements])
    path = run.write_table("benchmarks", frame)
    exported = export.write(run, measurements, selection.suite)
    _ending(frame, why, cmd.interrupted, run.settings())
    print(f"raw samples {schema.MEASUREMENTS}, tidy table {path.name}"
          + (f", pytest-benchmark JSON {run.benchmark_json.name}" if exported else "") + ", environment.json, run.json")
    return 1 if runner.failed(measurements) else 0


def opening(selection, planned: int, on_rungs: int, only: list[str], why: str, path) -> str:
    """The run's first line: the suite, the cases this machine will time (those on devices it lacks counted
    apart, by device), the threads and the run folder."""
    cases = selection.cases()
    present = selection.present_devices()
    absent = [c for c in cases if c.device not in present]
    here = len(cases) - len(absent)
    missing = ", ".join(d for d in selection.devices if d not in present)
    skipped = f" on {', '.join(present)} ({len(absent)} more on {missing}, not present here: skipped)" if absent else ""
    shard = f", shard {selection.shard[0]}/{selection.shard[1]}" if selection.shard else ""
    kept = f", {planned} with {' or '.join(map(repr, only))} in the id" if only else ""
    climbed = (f" ({on_rungs} of them on ladder rungs, climbed until the device is busy: the rungs above "
               f"are not run)") if on_rungs else ""
    return (f"bench: suite {selection.suite.name}{shard}, {here} cases{skipped}{kept}{climbed}; threads {why}; "
            f"run folder {path}")


def clock_words(clocks: list[str]) -> str:
    """The clocks the rows were timed on, each said once: "; clock: cpu, the process's CPU time (...)"."""
    said = {"cpu": "cpu, the process's CPU time (one thread on the CPU: time the OS gave other processes is not "
                   "counted)", "wall": "wall"}
    return f"; clock: {'; '.join(said.get(c, c) for c in clocks)}" if clocks else ""


def _ending(frame, why: str, interrupted: bool, settings: dict | None = None) -> None:
    """The summary, the ladder's climbs, the threads and clock, and what an interrupt kept."""
    from benchmarks.suite import ladder, summary

    print()
    print(summary.summary(frame))
    for line in ladder.lines(settings):
        print(line)
    print()
    print(f"threads: {why}" + clock_words(sorted(set(frame["clock"].dropna()))))
    if interrupted:
        print(f"interrupted: kept the {len(frame)} finished measurements; the run is marked partial")


if __name__ == "__main__":
    sys.exit(main())
