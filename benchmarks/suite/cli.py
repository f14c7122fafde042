"""``python -m benchmarks``: run a bench suite into a new run folder and print a summary.

    python -m benchmarks [--suite smoke|quick|full] [--model NAME ...] [--device cpu|cuda|mps ...]
                         [--dtype float32|bfloat16 ...] [--threads N] [--label TEXT] [--graphs]
                         [-- PYTEST-ARGS]

1. check the arguments (a bad value: one line naming it and the valid ones, exit 2);
2. create the run folder (``record.new_run``: environment.json);
3. run pytest on ``benchmarks/suite/test_bench.py``: pytest-benchmark writes ``benchmark.json``,
   each finished case appends its row to ``measurements.jsonl``;
4. build the tidy table ``benchmarks.csv`` from the rows, print the summary and the folder.

Ctrl-C (or SIGTERM) stops the suite; what finished is kept and tabled, and the exit status is 130.
Otherwise the exit status is pytest's: 1 when a case failed (an error, or NaN/inf output).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _model_list() -> str:
    try:
        from benchmarks.core.case import zoo

        return "\n".join(f"  {name:15} {text}" for name, text in zoo().available().items())
    except ImportError as e:
        return f"  (the model registry cannot be imported: {e})"


def parser() -> argparse.ArgumentParser:
    from benchmarks.core.case import DTYPES
    from benchmarks.core.cli import Parser
    from benchmarks.suite.suites import SUITES
    from benchmarks.core.timer import DEVICE_TYPES

    p = Parser(
        prog="python -m benchmarks",
        description="Time every registered model (forward, backward, training step) on every device "
        "present, and keep the run in a new folder under results/ (or $KAN_RESULTS).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="suites:\n" + "\n".join(f"  {s.name:15} {s.description}" for s in SUITES.values())
        + "\n\nmodels:\n" + _model_list()
        + "\n\nLists take commas or repeats: --model kan,mlp --model rbf-kan. "
        "Arguments after -- go to pytest, e.g. -- -k forward -x",
    )
    p.add_argument("--suite", default="quick", metavar="NAME",
                   help=f"one of {', '.join(SUITES)} (default: quick)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="registered model(s) to time (default: all, MLP baselines included)")
    p.add_argument("--device", action="append", default=[], metavar="NAME",
                   help=f"one or more of {', '.join(DEVICE_TYPES)} (default: every one present)")
    p.add_argument("--dtype", action="append", default=[], metavar="NAME",
                   help=f"one or more of {', '.join(DTYPES)} (default: the suite's)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: torch's choice); recorded in the run")
    p.add_argument("--label", default=None, help="appended to the run folder's name")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run the I-th of N parts of the suite (whole workloads; for a CI matrix)")
    p.add_argument("--graphs", action="store_true",
                   help="on CUDA, also time every step with its model captured in CUDA graphs (forward and "
                        "backward replayed; the loss and optimizer step eager), beside the eager step")
    p.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    return p


def pytest_arguments(selection, run, threads: int, extra: list[str]) -> list[str]:
    """The pytest command line for ``selection`` writing into ``run``, timed with ``threads`` threads."""
    args = [
        str(HERE / "test_bench.py"), "--rootdir", str(ROOT), "-p", "no:cacheprovider", "-q",
        f"--bench-suite={selection.suite.name}", f"--bench-run={run.path}", f"--bench-threads={threads}",
        f"--benchmark-json={run.benchmark_json}",
        "--benchmark-columns=median,iqr,min,rounds", "--benchmark-sort=name",
    ]
    args += [f"--bench-model={m}" for m in selection.models]
    if selection.explicit_devices:
        args += [f"--bench-device={d}" for d in selection.devices]
    args += [f"--bench-dtype={d}" for d in selection.dtypes or ()]
    if selection.shard:
        args.append(f"--bench-shard={selection.shard[0]}/{selection.shard[1]}")
    if selection.graphs:
        args.append("--bench-graphs")
    return args + list(extra)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from benchmarks.core.machine import idle_cores
    from benchmarks.core.timer import check_threads, default_threads, torch_threads, using_threads
    from benchmarks.suite import suites

    try:
        selection = suites.select(args.suite, args.model, args.device, args.dtype, args.shard, args.graphs)
        if args.threads is not None:
            threads = check_threads(args.threads)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # the run's thread count, decided once here and passed to the suite (--bench-threads)
    if args.threads is None:
        threads, why = default_threads(idle_cores(), torch_threads())
    else:
        why = f"{threads} (--threads)"
    with using_threads(threads):  # environment.json records the count the run applies
        return _run(args, selection, threads, why)


def _run(args, selection, threads: int, why: str) -> int:
    import pytest

    from benchmarks.core import device, record
    from benchmarks.core.cli import announce, busy_warning, terminate_as_interrupt
    from benchmarks.suite import summary

    try:
        run = record.new_run(args.label)
    except record.RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    warning = busy_warning(run.environment().get("load_average"), os.cpu_count())
    if warning:
        print(warning, flush=True)
    cases = selection.cases()
    absent = sum(1 for c in cases if c.device not in selection.present_devices())
    skipped = f" ({absent} on devices not present here, skipped)" if absent else ""
    run.write_json(record.BENCH_SETTINGS, {
        "suite": selection.suite.name, "models": list(selection.models), "devices": list(selection.devices),
        "dtypes": list(selection.dtypes or selection.suite.dtypes), "threads": threads, "threads_choice": why,
        "shard": None if selection.shard is None else f"{selection.shard[0]}/{selection.shard[1]}",
        "graphs": selection.graphs,
        "cases": len(cases) - absent, "state": record.RUNNING,  # a run killed before its end stays "running"
    })
    shard = f", shard {selection.shard[0]}/{selection.shard[1]}" if selection.shard else ""
    print(f"bench: suite {selection.suite.name}{shard}, {len(cases)} cases{skipped}; threads {why}; "
          f"run folder {run.path}", flush=True)
    with terminate_as_interrupt():  # stopped by CI or a batch system: keep what finished, as on Ctrl-C
        code = pytest.main(pytest_arguments(selection, run, threads, args.pytest_args))
    interrupted = code == pytest.ExitCode.INTERRUPTED
    device.record_peaks(run, device.peaks_used())  # device.json: the peaks the rows were set against

    frame = record.bench_table(run.read_jsonl(record.MEASUREMENTS))
    path = run.write_table("benchmarks", frame)
    finished = code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)
    run.mark(record.INTERRUPTED if interrupted else record.COMPLETE if finished else f"failed: pytest exit {int(code)}")
    print()
    print(summary.summary(frame))
    print()
    if warning:
        print(warning)
    clocks = sorted(set(frame["clock"].dropna()))
    print(f"threads: {why}" + (f"; clock: {', '.join(clocks)}" if clocks else "")
          + (" (cpu: the process's CPU time, one thread on the CPU)" if "cpu" in clocks else ""))
    if interrupted:
        print(f"interrupted: kept the {len(frame)} finished measurements; the run is marked partial")
    print(f"tidy table {path.name}, pytest-benchmark JSON {run.benchmark_json.name}, environment.json")
    announce(run)
    if interrupted:
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
