"""How well the speed gate tells a slowdown from noise, measured on this machine.

    python -m benchmarks.gate.evidence --runs 10                    # A/A: nothing changed
    python -m benchmarks.gate.evidence --runs 10 --slowdown 0.30    # the reference KAN's forward 30% slower

Each run checks the committed HEAD out into a temporary worktree, copies this working
tree's harness (``benchmarks/*.py``) over it, optionally makes the reference KAN's forward
slower there (an uncommitted edit of that worktree's ``kan/reference.py``: after each
``KAN.forward`` it spins on the clock for ``slowdown`` times the forward's own elapsed
time, so the forward takes 1 + slowdown times as long whatever the machine's load), and
runs ``python -m benchmarks.gate --base HEAD`` in that worktree: the edited working tree
against the untouched commit. The shipped models are never changed. It prints one line per run and the count of gates that failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.core import git
from benchmarks.core.cli import RUN_FILE, Parser, count
from benchmarks.core.command import run_command

ROOT = Path(__file__).resolve().parents[2]

SLOWDOWN = '''

# --- injected by benchmarks/gate/evidence.py in a temporary worktree, never committed ---
import time as _evidence_time

_evidence_forward = KAN.forward


def _slowed_forward(self, x, update_grid=False):
    start = _evidence_time.perf_counter()
    out = _evidence_forward(self, x, update_grid)
    until = _evidence_time.perf_counter() + {slowdown!r} * (_evidence_time.perf_counter() - start)
    while _evidence_time.perf_counter() < until:  # busy, as extra work would be
        pass
    return out


KAN.forward = _slowed_forward
'''


def one_run(slowdown: float, results: Path, gate_args: list[str], harness: Path) -> dict:
    with git.worktree("HEAD", ROOT, prefix="kan-gate-evidence-") as tree:
        shutil.copytree(harness, tree / "benchmarks", dirs_exist_ok=True)
        if slowdown:
            with open(tree / "kan" / "reference.py", "a") as f:
                f.write(SLOWDOWN.format(slowdown=slowdown))
        start = time.perf_counter()
        run_file = tree.parent / "run"  # beside the worktree: removed with it
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.gate", "--base", "HEAD", *gate_args],
            cwd=tree, env={**os.environ, "KAN_RESULTS": str(results), RUN_FILE: str(run_file)},
            capture_output=True, text=True,
        )
        wall = time.perf_counter() - start
        verdict = Path(run_file.read_text().strip()) / "gate.json" if run_file.exists() else None
    doc = json.loads(verdict.read_text()) if verdict is not None and verdict.exists() else {}
    return {"exit": out.returncode, "wall_s": wall, "doc": doc, "output": out.stdout + out.stderr}


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.gate.evidence", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=count(1), default=10, help="gates to run (default: 10)")
    p.add_argument("--slowdown", type=float, default=0.0, help="extra share of the reference KAN's forward time")
    p.add_argument("--results", type=Path, default=None, help="where the gates' run folders go (default: a temp dir)")
    p.add_argument("gate_args", nargs="*", help="options passed to the gate (after --)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("gate-evidence", parser(), argv, _evidence)  # each gate writes its own run folder


def _evidence(args, cmd) -> int:
    results = args.results or Path(tempfile.mkdtemp(prefix="kan-gate-evidence-results-"))
    label = f"{args.slowdown:.0%} slower reference KAN forward" if args.slowdown else "A/A (nothing changed)"
    print(f"{label}: {args.runs} gates against HEAD, run folders in {results}", flush=True)
    harness = results / "harness"  # this working tree's harness as it is now, the same for every run
    harness.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "benchmarks", harness, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    failed = 0
    for i in range(args.runs):
        r = one_run(args.slowdown, results, args.gate_args, harness)
        rows = {b["benchmark"]: b for b in r["doc"].get("benchmarks", [])}
        flagged = [n for n, b in rows.items() if b["status"] in ("regression", "improvement")]
        ratios = " ".join(f"{n} {b['ratio']:.3f}" for n, b in rows.items() if b.get("ratio") is not None)
        failed += r["exit"] == 1
        print(f"run {i + 1:2}: exit {r['exit']}  {r['wall_s']:5.0f} s  flagged: {', '.join(flagged) or '-':30}  "
              f"ratios: {ratios}", flush=True)
        if r["exit"] not in (0, 1):
            print(r["output"][-2000:], flush=True)
    print(f"{label}: {failed} of {args.runs} gates failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
