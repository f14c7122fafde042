"""The speed gate: did this change make it slower?

    nox -s gate -- --base HEAD~1          # the working tree against the previous commit
    nox -s gate -- --base main --threshold 1.10
    nox -s gate -- --baseline benchmarks/baseline.json     # against recorded KAN/MLP ratios
    nox -s gate -- --write-baseline benchmarks/baseline.json

The base commit is checked out into a temporary git worktree, and each side is timed by a
child process (``benchmarks.gate.child``) whose import path holds, first, a directory
containing only a link to that side's ``kan`` package and then the working tree, so that
``import kan`` gives that side's models and ``import benchmarks`` always gives the working
tree's harness: the same timer, suite and statistics judge both sides, even when the base
predates the harness. The children are asked for samples in turn, benchmark by benchmark
(A B, B A, A B, ...), so that slow drifts of the machine fall on both sides alike; only
one side runs at a time, and both run on the same core(s) (``--no-pin`` to let them roam).

A sample is the fastest call of one turn (the call least disturbed by other work on the
machine), and the two sides' samples of one benchmark are taken in pairs, side by side.
Per benchmark, the verdict is :func:`benchmarks.core.stats.compare` on those samples, pair by
pair: the median ratio head/base with a bootstrap interval, a regression only when the
ratio exceeds the threshold AND a one-sided Wilcoxon signed-rank test on the pairs says
head is slower (p < alpha). Pairing cancels the slow drifts of a shared machine, which
pooling the samples would leave in as noise. A model that exists on one side only (in
its registry, with its module) is "new" or "removed"; one whose module is there but cannot
be imported, or that cannot be built, is an error, and on the working tree's side it fails
the gate.

With ``--baseline FILE`` (alone, or as the fallback when the base commit does not exist),
only the working tree is timed and each KAN's time over the MLP's, measured in the same run,
is judged against the ratio recorded in FILE by :func:`benchmarks.core.stats.compare_to_reference`.

Where ``kan/`` is the same at the base commit and in the working tree (tracked and untracked
files), the two sides would run the same models, and any verdict would be the machine's noise:
the gate says so and passes without timing (``--even-if-unchanged`` times them anyway).

Exit status: 0 pass (also when there is no base commit to compare with: first commit,
shallow clone; or kan/ is unchanged), 1 a regression (or the working tree's model failed to run or gave NaN/inf),
2 the gate could not run (unknown git ref, unreadable baseline file, bad option, a timing
process that died).

The samples go to ``measurements.jsonl`` in a new run folder (see ``benchmarks.core.record``),
one :class:`benchmarks.core.measurement.Measurement` per benchmark and side (its ``side`` fact:
"head" or "base"), the one place they are kept; the verdict derived from them
(:mod:`benchmarks.gate.verdict`) goes to ``gate.json`` beside them::

    {"schema": 1, "mode": "base" | "baseline", "verdict": "pass" | "fail", "exit_status": 0 | 1,
     "summary": "...", "base": {...}, "head": {...}, "settings": {...}, "wall_s": ...,
     "benchmarks": [{<ROW_COLUMNS>}, ...]}        # one flat row per benchmark, for tables

(gate.json of earlier harnesses held the samples too, under "samples"; nothing reads them.)

A row's status is "regression", "improvement", "unchanged" or "insufficient samples" (a
comparison was made), "new" / "removed" (the model exists in the working tree / the base
only), "absent" (on neither side), "error" (``failed_side`` could not import, build or
run it, or it gave NaN/inf) or "reference" (the MLP, in baseline mode). In baseline mode ``median_head`` is the
measured ratio to the MLP and ``median_base`` the recorded one (``base.ratios``: the baseline
file's ratios, so that the folder holds all its verdict was derived from).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from benchmarks.core import git, protocol, record, schema, stats
from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError
from benchmarks.core.command import Command, run_command
from benchmarks.core.process import Child
from benchmarks.core.timer import CLOCKS
from benchmarks.gate import child as suite, verdict
from benchmarks.gate.verdict import EXIT_PASS, EXIT_REGRESSION, format_table, overall  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]  # the working tree: its harness times both sides

EXIT_ERROR = 2
SCHEMA = 1


ROW_COLUMNS = schema.GATE_COLUMNS


class GateError(UsageError):
    """Something the user can fix, or a state the gate cannot use: one line ``gate: ...``, exit status 2."""


# --- git: the base commit and its worktree ---------------------------------------------------


def resolve_base(ref: str) -> str | None:
    """The commit id ``ref`` names; None when it points before the start of the available history
    (``HEAD~1`` on the first commit or in a shallow clone); ``GateError`` for an unknown ref."""
    if git.run("rev-parse", "--git-dir", cwd=ROOT, error=GateError).returncode != 0:
        raise GateError(f"{ROOT} is not a git repository; the gate compares against a git commit")
    if ref.startswith("-"):
        raise GateError(f"unknown git ref {ref!r}: a ref cannot start with '-'")
    commit = git.commit_of(ref, ROOT)
    if commit is not None:
        return commit
    if git.commit_of("HEAD", ROOT) is None:
        return None  # no commits at all yet
    stem = re.sub(r"(?:~\d*|\^\d*)+$", "", ref)
    if stem != ref and stem and git.commit_of(stem, ROOT) is not None:
        return None  # e.g. HEAD~1 where HEAD has no parent (here)
    raise GateError(
        f"unknown git ref {ref!r}: not a branch, tag or commit of {ROOT} "
        f"(try --base HEAD~1, --base main or a commit id)"
    )


def same_models(commit: str) -> bool:
    """Whether ``kan/`` in the working tree is ``commit``'s, tracked files and untracked ones alike:
    the only code the two sides do not share (each side imports its own ``kan`` and the working
    tree's harness), so that the gate would time one code against itself."""
    diff = git.run("diff", "--quiet", commit, "--", "kan", cwd=ROOT, error=GateError)
    if diff.returncode != 0:
        return False  # a difference (1), or git could not tell (>1): time them
    untracked = git.run("ls-files", "--others", "--exclude-standard", "--", "kan", cwd=ROOT, error=GateError)
    return untracked.returncode == 0 and not untracked.stdout.strip()


def is_shallow() -> bool:
    return git.is_shallow(ROOT)


def worktree(commit: str) -> contextlib.AbstractContextManager[Path]:
    """``commit`` checked out (detached) into a temporary git worktree, removed afterwards."""
    return git.worktree(commit, ROOT, prefix="kan-gate-", error=GateError)


@contextlib.contextmanager
def kan_only(tree: Path) -> Iterator[Path]:
    """A temporary directory holding only ``kan`` (a link to, or copy of, ``tree/kan``)."""
    scratch = Path(tempfile.mkdtemp(prefix="kan-gate-path-"))
    try:
        try:
            (scratch / "kan").symlink_to(tree / "kan", target_is_directory=True)
        except OSError:  # no symlinks here (Windows without the privilege): copy instead
            shutil.copytree(tree / "kan", scratch / "kan")
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- one side: a child process that times the suite on command --------------------------------


# glibc returns large freed blocks to the kernel at once and maps them afresh on the next
# call, so every forward pass of a KAN (tens of MB of temporaries at the gate's shapes)
# pays for page faults whose cost swings with the machine's memory state: on a shared
# 2-core machine the same forward took 45 to 90 ms from call to call. Keeping freed
# memory in the process (the same setting on both sides) makes calls steady (41-46 ms
# there) so that the comparison sees the models, not the kernel. Set these variables
# yourself to override them; other C libraries ignore them.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def shared_cpus(threads: int) -> list[int] | None:
    """The cores both sides are pinned to: the last ``threads`` this process may use.

    The two sides never run at once, so sharing cores costs nothing; pinned to the same
    ones they meet the same neighbours there (other processes, a busy hyperthread
    sibling), where the scheduler would otherwise keep each on a core of its own for
    seconds at a time and give one side the quieter core. None where the platform cannot
    pin (not Linux) or has too few cores.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if len(allowed) >= threads else None


class Side(Child):
    """A child process timing ``cases`` with ``kan`` imported from ``kan_dir`` (it holds ``kan/``)."""

    def __init__(self, label: str, kan_dir: Path, cases: list, threads: int,
                 clock: str = "wall", warmup_s: float = 0.3, cpus: list[int] | None = None):
        self.kan_dir = Path(kan_dir)
        path = [str(self.kan_dir), str(ROOT)]
        code = (
            f"import sys; sys.path[:0] = {path!r}; "
            "from benchmarks.gate.child import child_main; child_main()"
        )
        config = {"cases": [suite.fields(c) for c in cases], "threads": threads, "clock": clock, "warmup_s": warmup_s,
                  "cpus": cpus}
        # -I: the child's sys.path is exactly ours (no working directory, no PYTHONPATH).
        super().__init__(f"{label} side's timing", [sys.executable, "-I", "-c", code, json.dumps(config)],
                         cwd=ROOT, env={**KEEP_FREED_MEMORY, **os.environ}, error=GateError)
        self.label = label
        self.hello: dict = {}

    def warm_up(self) -> dict[str, float]:
        """Seconds per call of each benchmark this side could run (a failure is noted in its status)."""
        reply = self.ask({"cmd": "warmup"})
        self.hello["cases"].update(reply.get("failed", {}))
        return reply["per_call_s"]

    def take_turns(self, name: str, count: int, calls: int) -> list[list]:
        reply = self.ask({"cmd": "round", "samples": count, "number": {name: calls}})
        return [[(s, bool(bad)) for s, bad in turn] for turn in reply["samples"].get(name, [])]

    def greet(self) -> dict:
        """Wait for the child's greeting, and check it imported ``kan`` from where it should."""
        self.hello = self.receive()["hello"]
        expected = (self.kan_dir / "kan").resolve()
        modules = self.hello.get("kan_modules") or {"kan": self.hello.get("kan_file")}
        for name, file in modules.items():
            if file is not None and expected not in Path(file).resolve().parents:
                raise GateError(f"the {self.label} side imported {name} from {file}, not from {expected}; "
                                "something on the import path shadows it")
        if not self.hello.get("kan_file"):
            raise GateError(f"the {self.label} side found no kan package in {expected}")
        return self.hello

    def status(self, name: str) -> tuple[str, str]:
        case = self.hello["cases"].get(name, {"status": "missing", "reason": "not in the suite"})
        return case["status"], case.get("reason", "")


@contextlib.contextmanager
def started(sides: list[Side]) -> Iterator[list[Side]]:
    try:
        for side in sides:
            side.greet()
        yield sides
    finally:
        for side in sides:
            side.close()


# --- the baseline file -----------------------------------------------------------------------


def read_baseline(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GateError(f"baseline file {path} does not exist; write one with --write-baseline {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise GateError(f"cannot read baseline file {path}: {e}") from None
    ratios = doc.get("ratios") if isinstance(doc, dict) else None
    if not isinstance(ratios, dict) or not all(
        isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in ratios.values()
    ):
        raise GateError(f"baseline file {path} has no valid 'ratios' (benchmark -> positive number)")
    if doc.get("settings") != suite.settings():
        raise GateError(f"baseline file {path} was recorded for {doc.get('settings')}, the suite is now "
                        f"{suite.settings()}; record it again with --write-baseline {path}")
    return doc


def baseline_document(head: dict, threads: int) -> dict:
    """Median time of each KAN case over the MLP's, same phase, from one run of the working tree
    (``head``: its measurements by benchmark name)."""
    env = record.environment()
    return {
        "schema": SCHEMA,
        "what": f"time of each gate benchmark over the time of '{suite.BASELINE_MODEL}' "
                f"in the same phase, the median over the rounds of one run",
        "settings": suite.settings(),
        "recorded": {"commit": env["commit"].get("id"), "dirty": env["commit"].get("dirty"),
                     "machine": env["machine"], "cpu": env["cpu"], "torch": env["torch"]["version"],
                     "threads": threads, "time": env["time"]},
        "ratios": verdict.baseline_ratios(head),
    }


# --- the command line ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = Parser(
        error_prefix="gate: ",
        prog="nox -s gate --",
        description="Speed gate: time the working tree against a base commit (or a baseline file) "
                    "on a small CPU suite and fail on a significant slowdown.",
    )
    p.add_argument("--base", metavar="REF", help="git ref to compare with (default: HEAD when no --baseline)")
    p.add_argument("--baseline", metavar="FILE", type=Path,
                   help="recorded KAN/MLP ratios; used alone, or when --base names no commit")
    p.add_argument("--write-baseline", metavar="FILE", type=Path, help="time the working tree and write FILE")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD,
                   help="smallest slowdown (ratio of medians) that counts (default %(default)s)")
    p.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA,
                   help="significance level of the one-sided test (default %(default)s)")
    p.add_argument("--rounds", type=cli.count(1), default=24, help="turns per side (default %(default)s)")
    p.add_argument("--samples-per-round", type=cli.count(1), default=1, help="samples per turn (default %(default)s)")
    p.add_argument("--sample-time", type=float, default=0.05,
                   help="seconds one sample lasts at least (default %(default)s)")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="wall: elapsed time (the harness's timer); cpu: this process's CPU time, "
                        "steadier on a machine shared with other work (default %(default)s)")
    p.add_argument("--even-if-unchanged", action="store_true",
                   help="time both sides even where kan/ is the same at the base and in the working tree "
                        "(by default the gate then passes without timing: the sides would run the same models)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="run both sides on the same core(s) (Linux; default: pinned)")
    cli.add_threads(p, default=1, help="torch threads in each side (default %(default)s)")
    # the models are checked once the sides start: a model may exist on one side only
    p.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated (default %(default)s)")
    cli.add_phases(p, suite.PHASES, default=list(suite.PHASES), flag="--phases",
                   help=f"comma-separated (default {','.join(suite.PHASES)})")
    cli.add_label(p, default="gate", help="label of the run folder (default %(default)s)")
    return p


def _check_args(args) -> None:
    """GateError, in one line, for settings that clash or could never judge a slowdown."""
    if not args.threshold >= 1:
        raise GateError(f"--threshold must be a ratio >= 1 (for example 1.15), got {args.threshold}")
    if not 0 < args.alpha < 1:
        raise GateError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.write_baseline is not None and not Path(args.write_baseline).parent.is_dir():
        raise GateError(f"cannot write the baseline {args.write_baseline}: the folder "
                        f"{Path(args.write_baseline).parent} does not exist")
    if not args.sample_time > 0:
        raise GateError(f"--sample-time must be positive, got {args.sample_time}")
    pairs, needed = args.rounds * args.samples_per_round, stats.min_pairs(args.alpha)
    if pairs < needed:
        raise GateError(
            f"--rounds {args.rounds} x --samples-per-round {args.samples_per_round} gives {pairs} pairs, "
            f"which can never show a regression at --alpha {args.alpha:g} (the smallest p-value of {pairs} "
            f"pairs is {0.5 ** pairs:.2g}); use --rounds {math.ceil(needed / args.samples_per_round)} or more"
        )


def _say(message: str) -> None:
    print(f"gate: {message}", flush=True)


def _check_models(cases, sides: list[Side]) -> None:
    known = set().union(*(side.hello.get("models", []) for side in sides))
    unknown = sorted({c.model for c in cases} - known)
    if unknown:
        raise GateError(f"unknown model(s) {', '.join(unknown)}; valid models: "
                        f"{', '.join(sides[-1].hello.get('models', []))}")


def _plan(args) -> tuple[str, str | None, dict | None]:
    """(mode, base commit, baseline document) for the arguments; GateError when unusable.

    Mode "none" means there is no base commit and no baseline to fall back on."""
    if args.write_baseline is not None:
        return "record", None, None
    if args.base is not None or args.baseline is None:
        base_commit = resolve_base(args.base or "HEAD")
        if base_commit is not None:
            return "base", base_commit, None
        if args.baseline is None:
            return "none", None, None
    return "baseline", None, read_baseline(args.baseline)


def _settings(args, models: list[str], phases: list[str], cpus: list[int] | None) -> dict:
    """How the sides are timed, as gate.json records it."""
    return {**suite.settings(), "threshold": args.threshold, "alpha": args.alpha, "confidence": 0.95,
            "rounds": args.rounds, "samples_per_round": args.samples_per_round,
            "sample_time_s": args.sample_time, "threads": args.threads, "clock": args.clock,
            "models": models, "phases": phases, "sample": "the fastest call of a turn",
            "pairs": "the two sides' turns at one benchmark, taken one after the other",
            "cpus": cpus, "malloc": {k: os.environ.get(k, v) for k, v in KEEP_FREED_MEMORY.items()}}


def _record_baseline(path: str, measurements: list, threads: int) -> int:
    """Write the working tree's KAN/MLP ratios to ``path`` (--write-baseline)."""
    doc = baseline_document(verdict.by_side(measurements)[verdict.HEAD], threads)
    if not doc["ratios"]:
        raise GateError("nothing to write: no KAN benchmark and its MLP reference were both measured")
    try:
        Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as e:
        raise GateError(f"cannot write the baseline {path}: {e.strerror or e}") from None
    _say(f"wrote {path}: " + ", ".join(f"{k} {v:.2f}x mlp" for k, v in doc["ratios"].items()))
    return EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    # a terminated gate still removes its worktree and children: SIGTERM is Ctrl-C there
    return run_command("gate", parser(), argv, run)


def run(args, cmd: Command) -> int:
    _check_args(args)
    start = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    mode, base_commit, baseline = _plan(args)
    if mode == "none":
        why = "this is a shallow clone" if is_shallow() else "it reaches before the first commit"
        _say(f"no base commit to compare with: {args.base or 'HEAD'!r} names none ({why}); passing")
        return EXIT_PASS
    if mode == "base" and not args.even_if_unchanged and same_models(base_commit):
        _say(f"kan/ is the same at {args.base or 'HEAD'} ({base_commit[:9]}) and in the working tree: the two sides "
             "would time the same models, so there is nothing to judge; passing (--even-if-unchanged to time them)")
        return EXIT_PASS
    if mode in ("baseline", "record") and suite.BASELINE_MODEL not in models:
        models.append(suite.BASELINE_MODEL)
    cases = suite.suite(models, args.phases)
    settings = _settings(args, models, args.phases, shared_cpus(args.threads) if args.pin else None)
    try:
        head, base, turns = _time_sides(args, cmd, mode, base_commit, cases, settings)
        measurements = measured(cases, head, base, turns, args, with_base=mode == "base")
        if mode == "record":
            return _record_baseline(args.write_baseline, measurements, args.threads)
        for m in measurements:  # the one place the gate keeps its samples
            cmd.run.append_jsonl(record.MEASUREMENTS, m.to_json())
        doc, rows = _verdict(args, mode, base_commit, baseline, head, base, measurements)
        doc.update(settings=settings, wall_s=round(time.perf_counter() - start, 2))
        path = cmd.run.write_json("gate.json", doc)
    finally:
        if cmd.run is not None and not cmd.run.has("gate.json"):
            cmd.discard()  # the gate stopped before it had a verdict: nothing to keep
    print(format_table(rows, baseline_mode=mode == "baseline"))
    _say(f"{doc['verdict'].upper()}: {doc['summary']} ({doc['wall_s']:.0f} s; {path.name})")
    return doc["exit_status"]


def _time_sides(args, cmd: Command, mode: str, base_commit: str | None, cases, settings: dict):
    """Start the sides (the base's where it has a kan package), open the run folder, and take the
    turns: (head, base or None, turns)."""
    progress = (lambda r, n: _say(f"round {r}/{n}")) if os.environ.get("KAN_GATE_VERBOSE") else None
    cpus = settings["cpus"]
    with contextlib.ExitStack() as stack:
        base = None
        if mode == "base":
            tree = stack.enter_context(worktree(base_commit))
            if (tree / "kan").is_dir():
                base = Side("base", stack.enter_context(kan_only(tree)), cases, args.threads, args.clock, cpus=cpus)
        head = Side("head", ROOT, cases, args.threads, args.clock, cpus=cpus)
        sides = [s for s in (base, head) if s is not None]
        if mode != "record":  # while the sides start up (it reads torch's build too)
            cmd.open(label=args.label, settings={**settings, "mode": mode, "base": args.base,
                                                 "base_commit": base_commit})
        stack.enter_context(started(sides))
        _check_models(cases, sides)
        what = {"base": f"against {args.base or 'HEAD'} ({(base_commit or '')[:9]})",
                "baseline": f"against the baseline file {args.baseline}",
                "record": "to record a baseline"}[mode]
        where = f" on cpu {','.join(map(str, cpus))}" if cpus else ""
        _say(f"timing the working tree {what}: {len(cases)} benchmarks, "
             f"{args.rounds * args.samples_per_round} samples a side, "
             f"{args.threads} thread(s){where}, {args.clock} clock")
        turns = protocol.paired_turns(sides, args.rounds, args.samples_per_round, args.sample_time, progress)
    return head, base, turns


def measured(cases, head: Side, base: Side | None, turns: dict, args, with_base: bool) -> list:
    """The measurements of the working tree's side, then (``with_base``: comparing with a base commit,
    which may have no kan package) the base's: a :class:`benchmarks.core.measurement.Measurement`
    per case and side (:mod:`benchmarks.gate.verdict`)."""
    sides = [(verdict.HEAD, head)] + ([(verdict.BASE, base)] if with_base else [])
    return [m for label, side in sides
            for m in verdict.side_measurements(cases, label, side, turns.get(label, {}), clock=args.clock,
                                               threads=args.threads)]


def verdict_rows(measurements: list, mode: str, threshold: float, alpha: float, baseline: dict | None = None):
    """gate.json's rows (ROW_COLUMNS), derived from the measurements."""
    rows = verdict.judge(measurements, mode, threshold, alpha, baseline)
    return [{column: row.get(column) for column in ROW_COLUMNS} for row in rows]


def _verdict(args, mode, base_commit, baseline, head: Side, base: Side | None,
             measurements: list) -> tuple[dict, list[dict]]:
    """gate.json's document (its settings and wall time left to the caller), and its rows."""
    ref = args.base or "HEAD"
    if mode == "base":
        base_info = {"ref": ref, "commit": base_commit, "kan_file": base.hello.get("kan_file") if base else None}
    else:
        base_info = {"baseline": str(args.baseline), "recorded": baseline.get("recorded"),
                     "ratios": baseline["ratios"], "ref": args.base,
                     "note": "the base ref names no commit" if args.base else None}
    rows = verdict_rows(measurements, mode, args.threshold, args.alpha, baseline)
    said, status, summary = overall(rows)
    doc = {
        "schema": SCHEMA, "mode": mode, "verdict": said, "exit_status": status, "summary": summary,
        "base": base_info, "head": {**git.commit_info(ROOT), "kan_file": head.hello.get("kan_file")},
        "settings": None, "wall_s": None, "benchmarks": rows,
    }
    return doc, rows


if __name__ == "__main__":
    sys.exit(main())
