"""``python -m benchmarks.studies.busy``: does the bench tell the truth on a busy machine?

    python -m benchmarks.studies.busy [--suite quick] [--hogs 2] [-- BENCH-ARGS]

Runs the suite twice, one after the other: as the machine is, then with ``--hogs``
CPU-bound processes running beside it (started and stopped here: each spins on one
core). It compares the two runs row by row (model, phase, shape) and checks what a
user relies on:

- every row the busy run does not flag unstable keeps its time ratio to the width-matched
  MLP within 15% of the quiet run's;
- no headline changes direction: no model and phase said to be slower than the MLP in one
  run is said to be faster in the other;
- at most a quarter of the busy run's rows are flagged unstable;
- the quiet run of the quick suite takes at most 3 minutes.

It writes the comparison (``busy.csv``, derived from the two runs' measurements) and the two
runs' folders (``busy.json``; their samples stay there) into a new run folder and prints both
runs' ratios side by side. Exit status 0 when every check holds, 1 when
one does not, 2 on bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.core import record, stats
from benchmarks.core.machine import load_average
from benchmarks.core import cli
from benchmarks.core.cli import RUN_FILE, Parser, UsageError
from benchmarks.core.command import Command, run_command

ROOT = Path(__file__).resolve().parents[2]
KEEPS = 0.15  # a stable row's ratio may move this much between the runs
FLAGGED = 0.25  # the share of rows that may be flagged unstable on the busy machine
QUICK_LIMIT_S = 180.0  # the quick suite on a quiet machine
SPIN = "while True:\n    pass\n"


def bench(args: list[str]) -> tuple[Path, float]:
    """Run ``python -m benchmarks ARGS``; the run folder it wrote and the seconds it took."""
    with tempfile.TemporaryDirectory() as scratch:
        run_file = Path(scratch) / "run"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                              env={**os.environ, RUN_FILE: str(run_file)})
        took = time.perf_counter() - started
        if done.returncode not in (0, 1) or not run_file.exists():
            raise UsageError(f"python -m benchmarks {' '.join(args)} failed (exit {done.returncode})")
        return Path(run_file.read_text().strip()), took


def bench_of(path: Path):
    """The bench table of the run at ``path``, derived from its measurements (measurements.jsonl, where
    the bench keeps its samples; this study keeps none of its own)."""
    return record.bench_table(record.Run(path).measurements())


def direction(row, side: str) -> str:
    """"slower", "faster" or "" (no clear difference, unstable, not measured): what ``side`` said."""
    if row[f"stable_{side}"] == "unstable":
        return ""
    said = stats.direction(row[f"x_mlp_{side}"], row[f"x_mlp_low_{side}"], row[f"x_mlp_high_{side}"])
    return said if said in ("slower", "faster") else ""


def compare(quiet, busy):
    """One row per model, phase and shape in both runs, with the checks' columns."""
    keys = ["model", "phase", "widths", "batch", "grid_size"]
    both = quiet.merge(busy, on=keys, suffixes=("_quiet", "_busy"))
    both = both[(both["status_quiet"] == "ok") & (both["status_busy"] == "ok") & (both["model"] != "mlp")]
    out = both[keys].copy()
    for side in ("quiet", "busy"):
        out[f"x_mlp_{side}"] = both[f"x_mlp_{side}"]
        out[f"interval_{side}"] = [f"[{stats.plain(lo)}, {stats.plain(hi)}]" for lo, hi in
                                   zip(both[f"x_mlp_low_{side}"], both[f"x_mlp_high_{side}"])]
        out[f"stable_{side}"] = both[f"stable_{side}"]
        out[f"said_{side}"] = [direction(r, side) for _, r in both.iterrows()]
        out[f"disturbed_{side}"] = both[f"disturbed_{side}"]
    out["change"] = out["x_mlp_busy"] / out["x_mlp_quiet"] - 1
    out["kept"] = (out["stable_busy"] == "unstable") | (out["change"].abs() <= KEEPS)
    out["flipped"] = ((out["said_quiet"] != "") & (out["said_busy"] != "") & (out["said_quiet"] != out["said_busy"]))
    return out


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.studies.busy", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="quick", help="the suite both runs take (default: quick)")
    p.add_argument("--hogs", type=cli.count(1), default=2,
                   help="CPU-bound processes beside the second run (default: 2)")
    p.add_argument("bench_args", nargs="*", help="more arguments for python -m benchmarks (after --)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("busy", parser(), argv, _busy)


def _busy(args, cmd: Command) -> int:
    run = cmd.open(label="busy", settings={"suite": args.suite, "hogs": args.hogs, "bench_args": args.bench_args})
    common = ["--suite", args.suite, *args.bench_args]
    print(f"busy: the {args.suite} suite as the machine is (load average {load_average()})", flush=True)
    quiet_path, quiet_s = bench([*common, "--label", "quiet"])
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.hogs)]
    try:
        time.sleep(2)  # let the load settle in, as a machine already busy would be
        print(f"busy: again with {args.hogs} CPU-bound processes beside it", flush=True)
        busy_path, busy_s = bench([*common, "--label", "busy"])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    quiet, busy = bench_of(quiet_path), bench_of(busy_path)
    table = compare(quiet, busy)
    run.write_rows(record.BUSY, table.to_dict("records"))
    run.write_json(record.BUSY + ".json", {"quiet": str(quiet_path), "busy": str(busy_path), "quiet_s": quiet_s,
                                           "busy_s": busy_s, "hogs": args.hogs, "suite": args.suite})
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
        shown = table.assign(change=(table["change"] * 100).round(1)).drop(columns=["widths"])
        print(shown.to_string(index=False, float_format=lambda v: stats.plain(v)))
    checks = judge(table, busy, args.suite, quiet_s)
    print()
    for what, held in checks.items():
        print(f"{'PASS' if held else 'MISS'}  {what}")
    for _, r in table[~table["kept"]].iterrows():
        print(f"  moved: {r['model']} {r['phase']} {r['widths']} batch {r['batch']}: "
              f"x{stats.plain(r['x_mlp_quiet'])} -> x{stats.plain(r['x_mlp_busy'])}")
    print(f"quiet run {quiet_s:.0f} s ({quiet_path.name}), busy run {busy_s:.0f} s ({busy_path.name})")
    return 0 if all(checks.values()) else 1


def judge(table, busy, suite: str, quiet_s: float) -> dict[str, bool]:
    """Each check of the study (what it says, whether it held)."""
    flagged = (busy[(busy["status"] == "ok") & (busy["model"] != "mlp")]["stable"] == "unstable").mean()
    checks = {
        f"stable rows keep their ratio within {KEEPS:.0%}": bool(table["kept"].all()),
        "no headline changes direction": not bool(table["flipped"].any()),
        f"at most {FLAGGED:.0%} of the busy rows flagged ({flagged:.0%})": bool(flagged <= FLAGGED),
    }
    if suite == "quick":
        checks[f"the quiet quick suite within {QUICK_LIMIT_S:.0f} s ({quiet_s:.0f} s)"] = quiet_s <= QUICK_LIMIT_S
    return checks


if __name__ == "__main__":
    sys.exit(main())
