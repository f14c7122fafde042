"""``python -m benchmarks.studies.targets``: the fast B-spline KAN against its acceptance targets.

    python -m benchmarks.studies.targets [--repeats 15] [--threads N] [--device cpu|cuda]
                                          [--grids 5,50] [--batch 1024] [--quick --widths 6,5,3]

One run, float32, widths [784, 64, 10], batch 1024, measures ``kan-fast`` (``kan.zoo``)
against the reference ``kan``, the PyPI KANs flashkan and inkan (the "peers", compared
only: not dependencies of this project) and a dense floor, and judges five targets:

1. forward+backward, grid 5: >= 8x faster than the reference;
2. forward+backward, grid 5: >= 1.25x faster than the faster peer;
3. forward, grid 5: at most 1.5x the dense floor, one ``torch.mm`` of a
   (batch, in * (grid_size + spline_order + 1)) by (in * (grid_size + spline_order + 1), hidden)
   matrix: the operand sizes of the first layer's combined spline + base product;
4. forward+backward, grid 50: >= 4x faster than the faster peer;
5. bytes autograd saves for backward after one forward, grid 5 (parameters left out):
   at most 1/3 of the reference's.

A "x faster" ratio is other's median / kan-fast's median; an "at most" ratio is kan-fast's
figure / other's. A target on the faster peer needs both peers measured; with one missing
it says "not measured" and notes the ratio to the other.

Phases are the core's (:mod:`benchmarks.core.case`): ``forward+backward`` is the forward,
the loss and its backward, timed together (gradients of the parameters; the input needs
none); ``forward`` is one forward pass with autograd recording, as in training.
Every grid measures the forward+backward of kan-fast and the peers; a grid that a target
names adds that target's other rows (grid 5: the reference, the forward against the
dense floor, the saved bytes).

How it times (:func:`benchmarks.core.protocol.turns`): the candidates of one phase and
grid take turns, call by call (A B C A B C ...), so that the machine's noise falls on all alike; an untimed
setup (gradients set to None, a device wait) precedes every call, and the clock waits
for the device before its stop reading. Each candidate's first call is timed apart
(``first_call_s``: kan-fast and the peers compile kernels with ``torch.compile`` there;
a kernel is compiled once per process and shape, so a later phase's first call is
warmer, and Inductor's on-disk cache makes a second run's first calls shorter), then
warm-up calls, then ``--repeats`` timed calls: the median and IQR of those. NaN or inf
in an output or gradient makes the row ``nonfinite``, never a timing.

The run folder (``results/<run-id>/``, or under ``$KAN_RESULTS``; :mod:`benchmarks.core.record`):
``environment.json``; ``fast_targets.jsonl``, one line per finished row as it ends, so
Ctrl-C keeps what finished (exit 130); ``fast_targets.csv``, the rows (``record.TABLES``, raw
samples in seconds as a JSON list in ``samples_s``); ``fast_targets_verdicts.csv``,
one row per target; ``fast_targets.json``, the settings and peers'
versions. Bad input: one line and exit 2.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from benchmarks.core.case import Case, make_batch, make_step, zoo
from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError, one_line
from benchmarks.core.command import Command, run_command
from benchmarks.core.protocol import Candidate, turns
from benchmarks.core.timer import DEVICE_TYPES
from benchmarks.core.units import format_seconds
from benchmarks.peers.catalog import PEERS as CATALOG
from benchmarks.peers.catalog import REFERENCE_PEERS

FORWARD_BACKWARD = "forward+backward"
FORWARD = "forward"
SAVED = "saved for backward"

FAST = "kan-fast"
REFERENCE = "kan"
DENSE_FLOOR = "dense floor"
# The peers: PyPI KANs measured for comparison only (module holding KANNetwork, pip spec), as
# pinned in the peers' catalog: those that compute our function (pykan does not).
PEERS = {name: (CATALOG[name].module, CATALOG[name].spec) for name in REFERENCE_PEERS}
FASTER_PEER = "the faster peer"

SPLINE_ORDER = 3  # every model here is built with its default cubic splines
WIDTHS = (784, 64, 10)
BATCH = 1024
GRIDS = (5, 50)
REPEATS = 15
MIN_REPEATS = 10
WARMUP = 3  # untimed calls after the first call (1 with --quick)
DEVICES = tuple(d for d in DEVICE_TYPES if d != "mps")  # the targets are set for CPU and CUDA
DTYPE = "float32"

@dataclass(frozen=True)
class Target:
    """kan-fast against ``other`` in ``phase`` at ``grid_size``: ratio ``direction`` ``bound``."""

    name: str
    phase: str
    grid_size: int
    other: str  # a model name, DENSE_FLOOR or FASTER_PEER
    direction: str  # ">=": other / kan-fast at least bound; "<=": kan-fast / other at most bound
    bound: float

    def holds(self, ratio: float) -> bool:
        return ratio >= self.bound if self.direction == ">=" else ratio <= self.bound

    def describe(self) -> str:
        return f"{self.direction} {self.bound:.3g}"


TARGETS = (
    Target("fwd+bwd: x faster than the reference", FORWARD_BACKWARD, 5, REFERENCE, ">=", 8.0),
    Target("fwd+bwd: x faster than the faster peer", FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 1.25),
    Target("forward: time / dense floor's", FORWARD, 5, DENSE_FLOOR, "<=", 1.5),
    Target("fwd+bwd: x faster than the faster peer", FORWARD_BACKWARD, 50, FASTER_PEER, ">=", 4.0),
    Target("saved bytes / the reference's", SAVED, 5, REFERENCE, "<=", 1 / 3),
)


class Unavailable(Exception):
    """A model that cannot be built here; ``status`` says why ("not installed" or "error")."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# --- the models ---------------------------------------------------------------------------

def peer_class(name: str) -> type[torch.nn.Module]:
    """The peer's ``KANNetwork`` class; :class:`Unavailable` when it cannot be imported."""
    module, spec = PEERS[name]
    try:
        return importlib.import_module(module).KANNetwork
    except ImportError:
        raise Unavailable("not installed", f"not installed (pip install --no-deps {spec})") from None
    except Exception as e:  # a broken install: say what broke, measure the others
        raise Unavailable("error", f"cannot import {module}: {one_line(e)}") from None


def peer_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build_model(name: str, widths: tuple[int, ...], grid_size: int, device: str) -> torch.nn.Module:
    """``name`` (a registered model, a peer or the dense floor) in float32 on ``device``, in training mode."""
    if name == DENSE_FLOOR:
        model = DenseFloor(*dense_floor_case(widths, 1, grid_size, device).widths)
    elif name in PEERS:
        model = peer_class(name)(list(widths), grid_size=grid_size)
    else:
        try:
            model = zoo().build(name, widths, grid_size=grid_size)
        except Exception as e:  # kan/ broken or mid-edit: this row fails, the others run
            raise Unavailable("error", f"cannot build {name!r}: {one_line(e)}") from None
    return model.to(device=device, dtype=torch.float32).train()


# --- the timed calls ------------------------------------------------------------------------

class DenseFloor(torch.nn.Module):
    """One ``torch.mm`` at the operand sizes of the first layer's combined spline + base product:
    x (batch, in * (coeff + 1)), the bases and silu(x), by (in * (coeff + 1), hidden), the spline
    and base weights. Its weights need no gradient: it stands for the forward's floor only."""

    def __init__(self, columns: int, hidden: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(columns, hidden), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, self.weight)  # (batch, hidden)


def dense_floor_case(widths, batch, grid_size, device) -> Case:
    columns = widths[0] * (grid_size + SPLINE_ORDER + 1)
    return Case(DENSE_FLOOR, FORWARD, device, DTYPE, (columns, widths[1]), batch, grid_size)


def candidate(name: str, phase: str, model, s: Settings, grid_size: int) -> Candidate:
    """``name`` in ``phase``, as the core's step of that phase (``model``: built, or Unavailable)."""
    if isinstance(model, Unavailable):
        return Candidate(name, status=model.status, reason=model.reason)
    if name == DENSE_FLOOR:
        case = dense_floor_case(s.widths, s.batch, grid_size, s.device)
    else:
        case = Case(name, phase, s.device, DTYPE, s.widths, s.batch, grid_size)
    return Candidate(name, make_step(case, model=model))


def saved_bytes(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward, the parameters' storages left out."""
    from benchmarks.core.memory import saved_tensor_bytes

    model.zero_grad(set_to_none=True)
    return saved_tensor_bytes(lambda: model(inputs), exclude=list(model.parameters()))


# --- what one grid measures -----------------------------------------------------------------

def models_at(grid_size: int) -> dict[str, list[str]]:
    """Model names per phase at ``grid_size``: kan-fast and the peers' forward+backward, plus targets' rows."""
    plan = {FORWARD_BACKWARD: [FAST, *PEERS], FORWARD: [], SAVED: []}
    for t in TARGETS:
        if t.grid_size != grid_size:
            continue
        others = list(PEERS) if t.other == FASTER_PEER else [t.other]
        for name in [FAST, *others]:
            if name not in plan[t.phase]:
                plan[t.phase].append(name)
    return plan


@dataclass
class Settings:
    widths: tuple[int, ...]
    batch: int
    grids: tuple[int, ...]
    repeats: int
    warmup: int
    device: str
    threads: int


def measure_grid(grid_size: int, s: Settings, timer, emit: Callable[[dict], None]) -> None:
    """Measure every row of ``grid_size`` and ``emit`` each as it finishes."""
    plan = models_at(grid_size)
    models: dict[str, torch.nn.Module | Unavailable] = {}
    for name in dict.fromkeys(plan[FORWARD_BACKWARD] + plan[FORWARD] + plan[SAVED]):
        try:
            torch.manual_seed(0)
            models[name] = build_model(name, s.widths, grid_size, s.device)
        except Unavailable as e:
            models[name] = e

    for phase in (FORWARD_BACKWARD, FORWARD):
        if plan[phase]:
            group = [candidate(name, phase, models[name], s, grid_size) for name in plan[phase]]
            turns(group, timer, s.repeats, s.warmup)
            for c in group:
                emit(timing_row(c, phase, grid_size, s))
    inputs, _ = make_batch(Case(FAST, FORWARD, s.device, DTYPE, s.widths, s.batch, grid_size))
    for name in plan[SAVED]:
        model = models[name]
        row = {**context(s), "model": name, "phase": SAVED, "grid_size": grid_size}
        if isinstance(model, Unavailable):
            row.update(status=model.status, reason=model.reason)
        else:
            try:
                row.update(status="ok", saved_bytes=saved_bytes(model, inputs))
            except Exception as e:
                row.update(status="error", reason=one_line(e))
        emit(row)


def context(s: Settings) -> dict:
    from benchmarks.core.case import widths_label

    return {"widths": widths_label(s.widths), "batch": s.batch, "device": s.device, "dtype": DTYPE,
            "threads": s.threads}


def timing_row(c: Candidate, phase: str, grid_size: int, s: Settings) -> dict:
    row = {**context(s), "model": c.name, "phase": phase, "grid_size": grid_size,
           "status": c.status, "reason": c.reason}
    if not math.isnan(c.first_call_s):
        row["first_call_s"] = c.first_call_s
    if c.status == "ok":
        q1, median, q3 = np.percentile(c.samples, [25, 50, 75])
        row.update(median_s=float(median), iqr_s=float(q3 - q1), rounds=len(c.samples), samples_s=c.samples)
    return row


# --- verdicts -------------------------------------------------------------------------------

def _find(rows: list[dict], model: str, phase: str, grid_size: int) -> dict | None:
    for r in rows:
        if r["model"] == model and r["phase"] == phase and r["grid_size"] == grid_size:
            return r
    return None


def _ok(row: dict | None) -> bool:
    return row is not None and row.get("status") == "ok"


def _value(row: dict) -> float:
    return float(row["saved_bytes"] if row["phase"] == SAVED else row["median_s"])


def _why(row: dict | None, name: str) -> str:
    return f"{name} not measured" if row is None else f"{name} {row['status']}: {row.get('reason', '')}".strip()


def verdict(target: Target, rows: list[dict], grids: tuple[int, ...]) -> dict:
    """The verdict row of ``target`` from the measured ``rows``."""
    out = {"target": target.name, "phase": target.phase, "grid_size": target.grid_size,
           "other": target.other, "bound": target.bound, "direction": target.direction,
           "ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "verdict": "not measured", "note": ""}
    if target.grid_size not in grids:
        out["note"] = f"grid {target.grid_size} not in --grids"
        return out
    fast = _find(rows, FAST, target.phase, target.grid_size)
    if target.other == FASTER_PEER:
        peers = {name: _find(rows, name, target.phase, target.grid_size) for name in PEERS}
        measured = {name: r for name, r in peers.items() if _ok(r)}
        if not _ok(fast):
            out["note"] = _why(fast, FAST)
            return out
        if len(measured) < len(peers):
            missing = "; ".join(_why(r, name) for name, r in peers.items() if name not in measured)
            partial = ", ".join(f"x{_ratio(target, fast, r):.2f} against {name} alone"
                                for name, r in measured.items())
            out["note"] = missing + (f" ({partial})" if partial else "")
            return out
        name, other = min(measured.items(), key=lambda item: _value(item[1]))
        out["note"] = f"the faster peer: {name}"
    else:
        other = _find(rows, target.other, target.phase, target.grid_size)
        if not (_ok(fast) and _ok(other)):
            out["note"] = "; ".join(_why(r, n) for n, r in ((FAST, fast), (target.other, other)) if not _ok(r))
            return out
    out["ratio"] = _ratio(target, fast, other)
    if target.phase != SAVED:
        from benchmarks.core.stats import bootstrap_ratio_ci

        num, den = (other, fast) if target.direction == ">=" else (fast, other)
        out["ci_low"], out["ci_high"] = bootstrap_ratio_ci(num["samples_s"], den["samples_s"])
    out["verdict"] = "PASS" if target.holds(out["ratio"]) else "MISS"
    return out


def _ratio(target: Target, fast: dict, other: dict) -> float:
    if target.direction == ">=":
        return _value(other) / _value(fast)
    return _value(fast) / _value(other)


# --- tables ---------------------------------------------------------------------------------

_ms = functools.partial(format_seconds, unit="ms", spec=".2f", missing="", suffix=False)  # the header says "ms"


def _nan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def text_table(records: list[dict], right: tuple[str, ...] = ()) -> str:
    """``records`` (dicts of strings, same keys) as aligned text; columns in ``right`` flush right."""
    if not records:
        return "(no rows)"
    columns = list(records[0])
    cells = [columns] + [[str(r[c]) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                       for c, cell, w in zip(columns, row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> str:
    shown = [{
        "model": r["model"], "phase": r["phase"], "grid": str(r["grid_size"]),
        "median ms": _ms(r.get("median_s")), "IQR ms": _ms(r.get("iqr_s")),
        "first call ms": _ms(r.get("first_call_s")),
        "saved MiB": "" if _nan(r.get("saved_bytes")) else f"{r['saved_bytes'] / 2**20:.3g}",
        "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}",
    } for r in rows]
    return text_table(shown, right=("grid", "median ms", "IQR ms", "first call ms", "saved MiB"))


def format_verdicts(verdicts: list[dict]) -> str:
    shown = [{
        "target": v["target"], "grid": str(v["grid_size"]),
        "ratio": "" if _nan(v["ratio"]) else f"{v['ratio']:.3g}",
        "95% CI": "" if _nan(v["ci_low"]) else f"{v['ci_low']:.3g}-{v['ci_high']:.3g}",
        "target ratio": f"{v['direction']} {v['bound']:.3g}",
        "verdict": v["verdict"], "note": v["note"],
    } for v in verdicts]
    return text_table(shown, right=("grid", "ratio", "95% CI"))


# --- the command ----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m benchmarks.studies.targets",
        description="Measure kan-fast against its acceptance targets (the reference KAN, flashkan, inkan, "
        "a dense matrix product) in one run, and keep it in a new folder under results/ (or $KAN_RESULTS).",
        epilog="targets:\n" + "\n".join(f"  grid {t.grid_size:<3} {t.name} {t.describe()}" for t in TARGETS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeats", type=cli.count(MIN_REPEATS), default=REPEATS, metavar="N",
                   help=f"timed calls per row, at least {MIN_REPEATS} (a median of fewer calls is too noisy to "
                   f"judge a target; default: {REPEATS})")
    cli.add_threads(p)
    cli.add_devices(p, default="cpu", valid=DEVICES, multiple=False)
    p.add_argument("--grids", type=cli.int_list("--grids"), default=GRIDS, metavar="G,G",
                   help="grid sizes, comma-separated (default: 5,50)")
    p.add_argument("--batch", type=cli.count(1), default=BATCH, metavar="N", help=f"batch size (default: {BATCH})")
    p.add_argument("--quick", action="store_true",
                   help=f"a check of the script, not of the targets: 1 warm-up call instead of {WARMUP}, "
                   "and --widths allowed")
    p.add_argument("--widths", type=cli.widths, default=None, metavar="W,W,W",
                   help="layer widths, input first; only with --quick (the targets are defined on 784,64,10)")
    return p


def settings(args) -> Settings:
    """The run's settings from the parsed arguments; :class:`UsageError` in one line where they clash."""
    from benchmarks.core.timer import torch_threads

    if args.widths is not None and not args.quick:
        raise UsageError("--widths needs --quick: the targets are defined on widths 784,64,10")
    threads = torch_threads() if args.threads is None else args.threads
    return Settings(tuple(args.widths or WIDTHS), args.batch, tuple(dict.fromkeys(args.grids)), args.repeats,
                    1 if args.quick else WARMUP, args.device, threads)


def main(argv: list[str] | None = None) -> int:
    return run_command("targets", parser(), argv, _targets)


def _targets(args, cmd: Command) -> int:
    from benchmarks.core import record
    from benchmarks.core.timer import DeviceTimer, using_threads

    s = settings(args)
    run = cmd.open(label="fast-targets-quick" if args.quick else "fast-targets", settings={
        "widths": list(s.widths), "batch": s.batch, "grids": list(s.grids), "repeats": s.repeats,
        "warmup": s.warmup, "device": s.device, "dtype": DTYPE, "threads": s.threads, "quick": args.quick,
        "peers": {name: peer_version(name) for name in PEERS},
        "targets": [t.__dict__ for t in TARGETS],
    })
    run.write_json(record.TARGETS + ".json", run.settings())  # fast_targets.json, as readers of older runs expect
    print(f"targets: widths {'x'.join(map(str, s.widths))}, batch {s.batch}, grids "
          f"{','.join(map(str, s.grids))}, {s.repeats} repeats, {s.device}, {s.threads} threads; "
          f"run folder {run.path}", flush=True)

    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        run.append_jsonl(record.TARGETS + ".jsonl", row)
        print(f"  {row['model']:>11} {row['phase']:<18} grid {row['grid_size']:<3} {_shown(row)}", flush=True)

    started = time.perf_counter()
    with using_threads(s.threads), cmd.interruptible():  # the run's count while it measures, restored after
        timer = DeviceTimer(s.device)
        for grid_size in s.grids:
            measure_grid(grid_size, s, timer, emit)
    wall = time.perf_counter() - started

    verdicts = [verdict(t, rows, s.grids) for t in TARGETS]
    run.write_rows(record.TARGETS, rows)
    run.write_rows(record.TARGET_VERDICTS, verdicts)
    print()
    print(format_rows(rows))
    print()
    print(format_verdicts(verdicts))
    if s.widths != WIDTHS or s.batch != BATCH:
        print(f"note: measured at widths {'x'.join(map(str, s.widths))}, batch {s.batch}; the targets are "
              f"defined at {'x'.join(map(str, WIDTHS))}, batch {BATCH}")
    print()
    if cmd.interrupted:
        print(f"interrupted: kept the {len(rows)} finished rows")
    print(f"measured in {wall:.1f} s")
    return 1 if any(r["status"] in ("error", "nonfinite") for r in rows) else 0


def _shown(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"]
    if row["phase"] == SAVED:
        return f"{row['saved_bytes'] / 2**20:.3g} MiB"
    return f"{_ms(row['median_s'])} ms"


if __name__ == "__main__":
    sys.exit(main())
