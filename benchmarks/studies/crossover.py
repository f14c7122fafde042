"""``python -m benchmarks.studies.crossover``: where kan-fast's gather contraction overtakes the dense one.

    python -m benchmarks.studies.crossover [--grids 2,3,5,8,12,20,30] [--repeats 10] [--threads N]
                                            [--backends native,torch] [--widths 784,64,10] [--batch 1024]

For each backend (``native``: the C++ kernels of kan.native; ``torch``: the PyTorch
paths, as on CUDA or without a compiler) and grid size, times the forward+backward of
``kan-fast`` (float32, CPU, cubic splines) with every layer forced to the dense
contraction and to the gather one (the layers' ``contraction`` and ``backend`` options),
the two taking turns call by call (:func:`benchmarks.core.protocol.turns`), and prints
the medians and the smallest
coefficient count (grid_size + spline_order) from which the gather contraction is
faster at that and every larger grid measured: the value for
``kan.fast.NATIVE_GATHER_MIN_COEFF`` and ``kan.fast.GATHER_MIN_COEFF``. Each contraction's
timing is a :class:`benchmarks.core.measurement.Measurement` in the run folder's
``measurements.jsonl`` (the one place its samples are kept); the rows (``fast_crossover.csv``)
are derived from them, a median being the measurement's. Bad input: one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from benchmarks.core.case import Case, make_step, widths_label, zoo
from benchmarks.core import cli
from benchmarks.core.cli import Parser
from benchmarks.core.command import Command, run_command
from benchmarks.core.measurement import Measurement
from benchmarks.core.protocol import Candidate, turns

SPLINE_ORDER = 3
GRIDS = (2, 3, 5, 8, 12, 20, 30)
BACKENDS = ("native", "torch")
MIN_REPEATS = 3  # timed calls per contraction; disturbed ones are left out while at least this many remain


def forced(widths: list[int], grid: int, contraction: str, backend: str) -> torch.nn.Module:
    """kan-fast with every layer on one contraction and backend (its options); seed 0, so that
    every choice gets the same weights."""
    torch.manual_seed(0)
    return zoo().build("kan-fast", widths, grid_size=grid, spline_order=SPLINE_ORDER, backend=backend,
                       contraction=contraction).float().train()


def crossover(rows: list[dict], backend: str) -> int | None:
    """Smallest coefficient count from which gather is faster at it and every larger grid measured."""
    measured = sorted((r for r in rows if r["backend"] == backend and r["gather_ms"] == r["gather_ms"]),
                      key=lambda r: r["coeff"])
    answer = None
    for r in reversed(measured):
        if r["gather_ms"] < r["dense_ms"]:
            answer = r["coeff"]
        else:
            break
    return answer


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.studies.crossover",
               description="Time kan-fast's dense and gather contractions against each other over grid sizes.")
    p.add_argument("--grids", type=cli.int_list("--grids"), default=GRIDS, metavar="G,G",
                   help=f"grid sizes (default: {','.join(map(str, GRIDS))})")
    p.add_argument("--repeats", type=cli.count(MIN_REPEATS), default=10, metavar="N",
                   help=f"timed calls per row, at least {MIN_REPEATS} (default: 10)")
    cli.add_threads(p)
    p.add_argument("--backends", type=cli.names(BACKENDS, "backend"), action=cli.Names, default=list(BACKENDS),
                   metavar="B,B", help="native, torch (default: both)")
    p.add_argument("--widths", type=cli.widths, default=(784, 64, 10), metavar="W,W,W",
                   help="layer widths (default: 784,64,10)")
    p.add_argument("--batch", type=cli.count(1), default=1024, metavar="N", help="batch size (default: 1024)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("crossover", parser(), argv, _crossover)


def _crossover(args, cmd: Command) -> int:
    import kan.native

    from benchmarks.core import record
    from benchmarks.core.timer import torch_threads, using_threads

    grids, widths, backends = tuple(sorted(set(args.grids))), tuple(args.widths), tuple(args.backends)
    threads = torch_threads() if args.threads is None else args.threads
    if "native" in backends and not kan.native.available():
        print(f"note: the C++ kernels are unavailable ({kan.native.error()}); measuring the torch backend only")
        backends = tuple(b for b in backends if b != "native")
    run = cmd.open(label="fast-crossover", settings={
        "grids": list(grids), "widths": list(widths), "backends": list(backends), "batch": args.batch,
        "repeats": args.repeats, "threads": threads})
    print(f"crossover: widths {'x'.join(map(str, widths))}, batch {args.batch}, {threads} threads, "
          f"{args.repeats} repeats; run folder {run.path}", flush=True)
    measured: list[Measurement] = []
    started = time.perf_counter()
    with using_threads(threads), cmd.interruptible():  # the run's count while it measures, restored after
        for backend in backends:
            for grid in grids:
                pair = measure(backend, grid, widths, args.batch, args.repeats, threads)
                for m in pair:  # the one place the samples are kept
                    run.append_jsonl(record.MEASUREMENTS, m.to_json())
                measured += pair
                say(row_of(pair))
    rows = table(measured)
    run.write_rows(record.CROSSOVER, rows)
    print()
    for backend in backends:
        found = crossover(rows, backend)
        constant = "NATIVE_GATHER_MIN_COEFF" if backend == "native" else "GATHER_MIN_COEFF"
        shown = f"coeff >= {found}" if found is not None else "not within the grids measured"
        print(f"{backend}: gather is faster from {shown} (kan.fast.{constant})")
    if cmd.interrupted:
        print(f"interrupted: kept the {len(rows)} finished rows")
    print(f"measured in {time.perf_counter() - started:.1f} s")
    return 0


def name_of(backend: str, contraction: str, case: Case) -> str:
    """A measurement's name in the run: what the layers were forced to, and the case,
    ``native dense[kan-fast-forward+backward-...]``."""
    return f"{backend} {contraction}[{case.id}]"


def forced_to(m: Measurement) -> tuple[str, str]:
    """(backend, contraction) of a measurement named by :func:`name_of`."""
    backend, contraction = m.name.split("[", 1)[0].split(" ")
    return backend, contraction


def measure(backend: str, grid: int, widths: tuple[int, ...], batch: int, repeats: int,
            threads: int) -> list[Measurement]:
    """The dense and the gather contraction of ``backend`` at ``grid``, in turns: a measurement each."""
    from benchmarks.core.measure import measured
    from benchmarks.core.timer import DeviceTimer

    case = Case("kan-fast", "forward+backward", "cpu", "float32", widths, batch, grid)
    group = [Candidate(contraction, make_step(case, model=forced(widths, grid, contraction, backend)))
             for contraction in ("dense", "gather")]
    timer = DeviceTimer("cpu")
    turns(group, timer, repeats, warmup=2)
    return [measured(c, case, clock=timer.clock, threads=threads, min_rounds=MIN_REPEATS,
                     name=name_of(backend, c.name, case)) for c in group]


def row_of(pair: list[Measurement]) -> dict:
    """A row of fast_crossover.csv from one backend's and grid's two measurements: the medians
    (:class:`benchmarks.core.measurement.Measurement`'s) in milliseconds, NaN where one failed."""
    by = {forced_to(m)[1]: m for m in pair}
    case = pair[0].case
    ms = {c: m.median_s * 1e3 if m.status == "ok" and m.samples else math.nan for c, m in by.items()}
    return {"backend": forced_to(pair[0])[0], "grid_size": case.grid_size, "coeff": case.grid_size + SPLINE_ORDER,
            "dense_ms": ms.get("dense", math.nan), "gather_ms": ms.get("gather", math.nan),
            "threads": pair[0].threads, "widths": widths_label(case.widths), "batch": case.batch}


def table(measured: list[Measurement]) -> list[dict]:
    """fast_crossover.csv's rows, derived from the run's measurements (one row per backend and grid)."""
    pairs: dict[tuple, list[Measurement]] = {}
    for m in measured:
        pairs.setdefault((forced_to(m)[0], m.case.grid_size), []).append(m)
    return [row_of(pair) for pair in pairs.values()]


def say(row: dict) -> None:
    faster = "gather" if row["gather_ms"] < row["dense_ms"] else "dense"
    print(f"  {row['backend']:<6} grid {row['grid_size']:<3} coeff {row['coeff']:<3} dense {row['dense_ms']:8.2f} ms  "
          f"gather {row['gather_ms']:8.2f} ms  faster: {faster}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
