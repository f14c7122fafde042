"""``python -m benchmarks.studies.targets``: the fast B-spline KAN against its acceptance targets.

    python -m benchmarks.studies.targets [--repeats 15] [--threads N] [--device cpu|cuda]
                                          [--grids G,G] [--batch N] [--quick --widths 6,5,3]

One run, float32, measures ``kan-fast`` (``kan.zoo``) against the reference ``kan``, the
PyPI KANs flashkan and inkan (the "peers", compared only: not dependencies of this
project), the parameter-matched MLP and a dense floor, and judges the targets of the
device it runs on (``TARGETS``; the help lists them). Each target names its widths, batch
and grid:

- on the CPU, at [784, 64, 10], batch 1024: forward+backward at least 8x faster than the
  reference at grid 5; at least 1.5x faster than the faster peer at grid 5 and 6x at grid 50;
  the training step at most 0.8x the parameter-matched MLP's at grid 5; forward at most 1.5x
  the dense floor at grid 5; bytes saved for backward at most 1/3 of the reference's;
- on CUDA: forward+backward at least 2x faster than the faster peer at five shapes from
  [2, 5, 1] to [256, 256, 256, 256] (1.2x at [1024, 1024, 1024], batch 8192); faster than the
  parameter-matched MLP at [1024, 1024, 1024], batch 8192, grids 20 and 50; forward at most
  1.5x the dense floor and saved bytes at most 1/3 of the reference's at [784, 64, 10], batch 4096.

The dense floor is one ``torch.mm`` of a (batch, in * (grid_size + spline_order + 1)) by
(in * (grid_size + spline_order + 1), hidden) matrix: the operand sizes of the first layer's
combined spline + base product.

A "x faster" ratio is other's median / kan-fast's median; an "at most" ratio is kan-fast's
figure / other's. The verdict (PASS or MISS) judges that ratio; beside it, ``clear`` says
whether the ratio's 95% interval lies wholly on the verdict's side of the bound ("no": the
interval holds the bound, and another run may judge the other way; the note says so). A target on the faster peer needs both peers measured; with one missing
it says "not measured" and notes the ratio to the other.

Phases are the core's (:mod:`benchmarks.core.case`): ``forward+backward`` is the forward,
the loss and its backward, timed together (gradients of the parameters; the input needs
none); ``forward`` is one forward pass with autograd recording, as in training; ``train``
adds the optimizer's step. Every shape and grid that a target names measures the
forward+backward of kan-fast and the peers, and the rows its targets compare.

How it times (:func:`benchmarks.core.protocol.turns`): the candidates of one phase and
grid take turns, call by call (A B C A B C ...), so that the machine's noise falls on all alike; an untimed
setup (gradients set to None, a device wait) precedes every call, and the clock waits
for the device before its stop reading. Each candidate's first call is timed apart
(``first_call_s``: kan-fast and the peers compile kernels with ``torch.compile`` there;
a kernel is compiled once per process and shape, so a later phase's first call is
warmer, and Inductor's on-disk cache makes a second run's first calls shorter), then
warm-up calls, then ``--repeats`` timed calls, which make the row's
:class:`benchmarks.core.measurement.Measurement`: its median and IQR are the measurement's
(the samples the machine disturbed left out while enough others remain, as in every table
of the harness), and a target's interval is the bootstrap interval of the ratio of those
medians. NaN or inf in an output or gradient makes the row ``nonfinite``, never a timing.

The run folder (``results/<run-id>/``, or under ``$KAN_RESULTS``; :mod:`benchmarks.core.record`):
``environment.json``; ``measurements.jsonl``, one measurement per finished row as it ends
(the saved bytes too, as the ``saved_bytes`` of a measurement without samples), the one place
the raw samples are kept, so that Ctrl-C keeps what finished (exit 130); ``fast_targets.csv``,
the rows, and ``fast_targets_verdicts.csv``, one row per target, both derived from the
measurements (:func:`tables`; ``record.TABLES``); ``fast_targets.json``, the settings and peers'
versions. Bad input: one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from benchmarks.core.case import Case, make_batch, make_step, widths_label, zoo
from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError, one_line
from benchmarks.core.command import Command, run_command
from benchmarks.core.measurement import Measurement
from benchmarks.core.protocol import Candidate, turns
from benchmarks.core.timer import DEVICE_TYPES
from benchmarks.core.units import format_seconds, text_table
from benchmarks.peers.catalog import PEERS as CATALOG
from benchmarks.peers.catalog import REFERENCE_PEERS
from kan.fast.options import BACKENDS

FORWARD_BACKWARD = "forward+backward"
FORWARD = "forward"
TRAIN = "train"
SAVED = "saved for backward"
TIMED_PHASES = (FORWARD_BACKWARD, FORWARD, TRAIN)  # in the order a shape measures them

FAST = "kan-fast"
REFERENCE = "kan"
MLP = "mlp-param"  # the parameter-matched MLP of the registry
DENSE_FLOOR = "dense floor"
# The peers: PyPI KANs measured for comparison only (module holding KANNetwork, pip spec), as
# pinned in the peers' catalog: those that compute our function (pykan does not).
PEERS = {name: (CATALOG[name].module, CATALOG[name].spec) for name in REFERENCE_PEERS}
FASTER_PEER = "the faster peer"

SPLINE_ORDER = 3  # every model here is built with its default cubic splines
REPEATS = 15
MIN_REPEATS = 10
WARMUP = 3  # untimed calls after the first call (1 with --quick)
DEVICES = tuple(d for d in DEVICE_TYPES if d != "mps")  # the targets are set for CPU and CUDA
DTYPE = "float32"

@dataclass(frozen=True)
class Shape:
    """Where a target is judged: the layer widths (input first) and the batch."""

    widths: tuple[int, ...]
    batch: int

    def __str__(self) -> str:
        return f"{widths_label(self.widths)} b{self.batch}"


@dataclass(frozen=True)
class Target:
    """kan-fast against ``other`` in ``phase`` at ``shape`` and ``grid_size``: ratio ``direction`` ``bound``."""

    name: str
    phase: str
    grid_size: int
    other: str  # a model name, DENSE_FLOOR or FASTER_PEER
    direction: str  # ">=": other / kan-fast at least bound; "<=": kan-fast / other at most bound
    bound: float
    shape: Shape

    def ratio(self, fast: float, other: float) -> float:
        """The figure judged, from kan-fast's and the other's: other / kan-fast where "x faster" (">="),
        kan-fast / other where "at most" ("<=")."""
        return other / fast if self.direction == ">=" else fast / other

    def holds(self, ratio: float) -> bool:
        return ratio >= self.bound if self.direction == ">=" else ratio <= self.bound

    def describe(self) -> str:
        return f"{self.direction} {self.bound:.3g}"


PEER_RATIO = "fwd+bwd: x faster than the faster peer"
MNIST = (784, 64, 10)
_CPU = Shape(MNIST, 1024)
_LARGE = Shape((1024, 1024, 1024), 8192)
_CUDA_MNIST = Shape(MNIST, 4096)

# The targets of each device. The CPU's: [784, 64, 10] at batch 1024. CUDA's: the shapes of the
# GPU comparison the kernels are judged by, from launch-bound ones to a busy [1024]^3.
TARGETS = {
    "cpu": (
        Target("fwd+bwd: x faster than the reference", FORWARD_BACKWARD, 5, REFERENCE, ">=", 8.0, _CPU),
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 1.5, _CPU),
        Target("train: time / the parameter-matched MLP's", TRAIN, 5, MLP, "<=", 0.8, _CPU),
        Target("forward: time / dense floor's", FORWARD, 5, DENSE_FLOOR, "<=", 1.5, _CPU),
        Target(PEER_RATIO, FORWARD_BACKWARD, 50, FASTER_PEER, ">=", 6.0, _CPU),
        Target("saved bytes / the reference's", SAVED, 5, REFERENCE, "<=", 1 / 3, _CPU),
    ),
    "cuda": (
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 2.0, Shape((2, 5, 1), 1024)),
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 2.0, Shape(MNIST, 256)),
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 2.0, _CUDA_MNIST),
        Target(PEER_RATIO, FORWARD_BACKWARD, 50, FASTER_PEER, ">=", 2.0, _CUDA_MNIST),
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 2.0, Shape((256, 256, 256, 256), 4096)),
        Target(PEER_RATIO, FORWARD_BACKWARD, 5, FASTER_PEER, ">=", 1.2, _LARGE),
        Target("fwd+bwd: x faster than the parameter-matched MLP", FORWARD_BACKWARD, 20, MLP, ">=", 1.0, _LARGE),
        Target("fwd+bwd: x faster than the parameter-matched MLP", FORWARD_BACKWARD, 50, MLP, ">=", 1.0, _LARGE),
        Target("forward: time / dense floor's", FORWARD, 5, DENSE_FLOOR, "<=", 1.5, _CUDA_MNIST),
        Target("saved bytes / the reference's", SAVED, 5, REFERENCE, "<=", 1 / 3, _CUDA_MNIST),
    ),
}


def targets_for(device: str, widths: tuple[int, ...] | None = None, batch: int | None = None) -> tuple[Target, ...]:
    """``device``'s targets, each at ``widths`` and ``batch`` where given (a check of the script, or
    another batch) rather than its own."""
    return tuple(dataclasses.replace(t, shape=Shape(tuple(widths or t.shape.widths), batch or t.shape.batch))
                 for t in TARGETS[device])


def points(targets: tuple[Target, ...], grids: tuple[int, ...]) -> list[tuple[Shape, int]]:
    """The (shape, grid) pairs the targets name, in their order, those of ``grids`` only."""
    return list(dict.fromkeys((t.shape, t.grid_size) for t in targets if t.grid_size in grids))


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


def build_model(name: str, widths: tuple[int, ...], grid_size: int, device: str,
                backend: str = "auto") -> torch.nn.Module:
    """``name`` (a registered model, a peer or the dense floor) in float32 on ``device``, in training mode;
    kan-fast with ``backend``."""
    if name == DENSE_FLOOR:
        model = DenseFloor(*dense_floor_case(widths, 1, grid_size, device).widths)
    elif name in PEERS:
        model = peer_class(name)(list(widths), grid_size=grid_size)
    else:
        options = {"backend": backend} if name == FAST else {}
        try:
            model = zoo().build(name, widths, grid_size=grid_size, **options)
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


def case_of(name: str, phase: str, shape: Shape, grid_size: int, device: str) -> Case:
    """The case ``name`` is timed as in ``phase`` at ``shape`` (the dense floor's: its own matrix
    product; the saved bytes are counted on a forward)."""
    if name == DENSE_FLOOR:
        return dense_floor_case(shape.widths, shape.batch, grid_size, device)
    return Case(name, FORWARD if phase == SAVED else phase, device, DTYPE, shape.widths, shape.batch, grid_size)


def name_of(phase: str, case: Case) -> str:
    """A measurement's name in the run: the study's phase and the case, ``forward[kan-fast-forward-...]``
    (the saved bytes are a forward's: their phase is only in the name)."""
    return f"{phase}[{case.id}]"


def phase_of(m: Measurement) -> str:
    return m.name.split("[", 1)[0]


def candidate(name: str, case: Case, model) -> Candidate:
    """``name`` as the core's step of ``case`` (``model``: built, or Unavailable)."""
    if isinstance(model, Unavailable):
        return Candidate(name, status=model.status, reason=model.reason)
    return Candidate(name, make_step(case, model=model))


def saved_bytes(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward, the parameters' storages left out."""
    from benchmarks.core.memory import saved_tensor_bytes

    model.zero_grad(set_to_none=True)
    return saved_tensor_bytes(lambda: model(inputs), exclude=list(model.parameters()))


# --- what one grid measures -----------------------------------------------------------------

def models_at(targets: tuple[Target, ...], shape: Shape, grid_size: int) -> dict[str, list[str]]:
    """Model names per phase at ``shape`` and ``grid_size``: kan-fast and the peers' forward+backward,
    plus the rows of the targets there."""
    plan = {FORWARD_BACKWARD: [FAST, *PEERS], FORWARD: [], TRAIN: [], SAVED: []}
    for t in targets:
        if (t.shape, t.grid_size) != (shape, grid_size):
            continue
        others = list(PEERS) if t.other == FASTER_PEER else [t.other]
        for name in [FAST, *others]:
            if name not in plan[t.phase]:
                plan[t.phase].append(name)
    return plan


@dataclass
class Settings:
    targets: tuple[Target, ...]  # the device's, at the shapes asked for
    grids: tuple[int, ...]
    repeats: int
    warmup: int
    device: str
    threads: int
    backend: str = "auto"  # kan-fast's


def measure_point(shape: Shape, grid_size: int, s: Settings, timer, emit: Callable[[Measurement], None]) -> None:
    """Measure every row of ``shape`` and ``grid_size`` and ``emit`` the measurement of each as it finishes."""
    from benchmarks.core.measure import measured

    plan = models_at(s.targets, shape, grid_size)
    models: dict[str, torch.nn.Module | Unavailable] = {}
    for name in dict.fromkeys(name for names in plan.values() for name in names):
        try:
            torch.manual_seed(0)
            models[name] = build_model(name, shape.widths, grid_size, s.device, s.backend)
        except Unavailable as e:
            models[name] = e

    for phase in TIMED_PHASES:
        if plan[phase]:
            cases = {name: case_of(name, phase, shape, grid_size, s.device) for name in plan[phase]}
            group = [candidate(name, cases[name], models[name]) for name in plan[phase]]
            turns(group, timer, s.repeats, s.warmup)
            for c in group:
                m = measured(c, cases[c.name], clock=timer.clock, threads=s.threads, min_rounds=MIN_REPEATS,
                             name=name_of(phase, cases[c.name]))
                facts = {"math": math_of(s.device)}
                if c.name == DENSE_FLOOR:  # its case has its own widths: keep those of the KAN it stands for
                    facts["stands_for"] = list(shape.widths)
                emit(dataclasses.replace(m, facts={**m.facts, **facts}))
    inputs, _ = make_batch(Case(FAST, FORWARD, s.device, DTYPE, shape.widths, shape.batch, grid_size))
    for name in plan[SAVED]:
        emit(saved_measurement(name, models[name], case_of(name, SAVED, shape, grid_size, s.device), inputs,
                               s.threads))


def math_of(device: str) -> str:
    """The math float32 matrix products run on ``device`` now: TF32 on CUDA only where torch's own flag
    allows it."""
    from benchmarks.core import device as devices

    return devices.math_of(DTYPE) if device.startswith("cuda") else "fp32"


def saved_measurement(name: str, model, case: Case, inputs: torch.Tensor, threads: int) -> Measurement:
    """The bytes ``model`` (built, or Unavailable) saves for backward after one forward, as a measurement
    without samples."""
    m = Measurement(case, name=name_of(SAVED, case), threads=threads)
    if isinstance(model, Unavailable):
        return dataclasses.replace(m, status=model.status, reason=model.reason)
    try:
        return dataclasses.replace(m, facts={"saved_bytes": saved_bytes(model, inputs)})
    except Exception as e:
        return dataclasses.replace(m, status="error", reason=one_line(e))


def shape_of(m: Measurement) -> Shape:
    """The shape a measurement was taken for: its case's, or, for the dense floor, the KAN's it stands for."""
    return Shape(tuple(m.facts.get("stands_for", m.case.widths)), m.case.batch)


def context(m: Measurement) -> dict:
    """The columns every row has: the widths of the shape measured (the dense floor's, those of the KAN
    it stands for), the case's batch, device and dtype, the math its matrix products ran, the run's threads."""
    return {"widths": widths_label(shape_of(m).widths), "batch": m.case.batch, "device": m.case.device,
            "dtype": m.case.dtype, "math": m.facts.get("math", ""), "threads": m.threads}


def table_row(m: Measurement) -> dict:
    """A row of fast_targets.csv, derived from ``m``: its figures are the measurement's (the median
    and IQR of the samples it uses, :class:`benchmarks.core.measurement.Measurement`)."""
    row = {**context(m), "model": m.case.model, "phase": phase_of(m), "grid_size": m.case.grid_size,
           "status": m.status, "reason": m.reason}
    if m.first_call_s is not None:
        row["first_call_s"] = m.first_call_s
    if m.status == "ok" and m.samples:
        row.update(median_s=m.median_s, iqr_s=m.iqr_s, rounds=len(m.samples))
    if "saved_bytes" in m.facts:
        row["saved_bytes"] = m.facts["saved_bytes"]
    return row


# --- verdicts -------------------------------------------------------------------------------

def _find(measured: list[Measurement], model: str, target: Target) -> Measurement | None:
    """The measurement of ``model`` in ``target``'s phase, shape and grid, or None."""
    for m in measured:
        if (m.case.model == model and phase_of(m) == target.phase and m.case.grid_size == target.grid_size
                and shape_of(m) == target.shape):
            return m
    return None


def _ok(m: Measurement | None) -> bool:
    return m is not None and m.status == "ok"


def _value(m: Measurement) -> float:
    return float(m.facts["saved_bytes"] if phase_of(m) == SAVED else m.median_s)


def _why(m: Measurement | None, name: str) -> str:
    return f"{name} not measured" if m is None else f"{name} {m.status}: {m.reason}".strip()


def verdict(target: Target, measured: list[Measurement], grids: tuple[int, ...]) -> dict:
    """The verdict row of ``target`` from the ``measured`` rows' measurements."""
    out = {"target": target.name, "phase": target.phase, "widths": widths_label(target.shape.widths),
           "batch": target.shape.batch, "grid_size": target.grid_size,
           "other": target.other, "bound": target.bound, "direction": target.direction,
           "ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "verdict": "not measured", "clear": "",
           "note": ""}
    if target.grid_size not in grids:
        out["note"] = f"grid {target.grid_size} not in --grids"
        return out
    fast = _find(measured, FAST, target)
    if target.other == FASTER_PEER:
        peers = {name: _find(measured, name, target) for name in PEERS}
        ok = {name: m for name, m in peers.items() if _ok(m)}
        if not _ok(fast):
            out["note"] = _why(fast, FAST)
            return out
        if len(ok) < len(peers):
            missing = "; ".join(_why(m, name) for name, m in peers.items() if name not in ok)
            partial = ", ".join(f"x{target.ratio(_value(fast), _value(m)):.2f} against {name} alone" for name, m in ok.items())
            out["note"] = missing + (f" ({partial})" if partial else "")
            return out
        name, other = min(ok.items(), key=lambda item: _value(item[1]))
        out["note"] = f"the faster peer: {name}"
    else:
        other = _find(measured, target.other, target)
        if not (_ok(fast) and _ok(other)):
            out["note"] = "; ".join(_why(m, n) for n, m in ((FAST, fast), (target.other, other)) if not _ok(m))
            return out
    out["ratio"] = target.ratio(_value(fast), _value(other))
    if target.phase != SAVED:
        from benchmarks.core.stats import bootstrap_ratio_ci

        num, den = (other, fast) if target.direction == ">=" else (fast, other)
        out["ci_low"], out["ci_high"] = bootstrap_ratio_ci(num.used, den.used)
    out["verdict"] = "PASS" if target.holds(out["ratio"]) else "MISS"
    out["clear"] = clear(target, out)
    if out["clear"] == "no":
        out["note"] = "; ".join(filter(None, (out["note"], f"not clear: the 95% interval holds {target.bound:.3g}")))
    return out


def clear(target: Target, row: dict) -> str:
    """Whether ``row``'s verdict holds across the ratio's 95% interval: "yes" where the whole
    interval lies on the verdict's side of the bound, "no" where it holds the bound (a rerun may
    judge the other way), "exact" for a figure without sampling noise (bytes saved)."""
    low, high = row["ci_low"], row["ci_high"]
    if math.isnan(low) or math.isnan(high):
        return "exact"
    return "yes" if target.holds(low) == target.holds(high) else "no"


def tables(measured: list[Measurement], targets: tuple[Target, ...], grids: tuple[int, ...]) -> tuple[list, list]:
    """(rows, verdicts) of the run, derived from its measurements."""
    return [table_row(m) for m in measured], [verdict(t, measured, grids) for t in targets]


# --- tables ---------------------------------------------------------------------------------

_ms = functools.partial(format_seconds, unit="ms", spec=".2f", missing="", suffix=False)  # the header says "ms"


def _nan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def format_rows(rows: list[dict]) -> str:
    shown = [{
        "model": r["model"], "phase": r["phase"], "widths": r["widths"], "batch": str(r["batch"]),
        "grid": str(r["grid_size"]),
        "median ms": _ms(r.get("median_s")), "IQR ms": _ms(r.get("iqr_s")),
        "first call ms": _ms(r.get("first_call_s")),
        "saved MiB": "" if _nan(r.get("saved_bytes")) else f"{r['saved_bytes'] / 2**20:.3g}",
        "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}",
    } for r in rows]
    return text_table(shown, right=("batch", "grid", "median ms", "IQR ms", "first call ms", "saved MiB"))


def format_verdicts(verdicts: list[dict]) -> str:
    shown = [{
        "target": v["target"], "widths": v["widths"], "batch": str(v["batch"]), "grid": str(v["grid_size"]),
        "ratio": "" if _nan(v["ratio"]) else f"{v['ratio']:.3g}",
        "95% CI": "" if _nan(v["ci_low"]) else f"{v['ci_low']:.3g}-{v['ci_high']:.3g}",
        "target ratio": f"{v['direction']} {v['bound']:.3g}",
        "verdict": v["verdict"], "note": v["note"],
    } for v in verdicts]
    return text_table(shown, right=("batch", "grid", "ratio", "95% CI"))


# --- the command ----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m benchmarks.studies.targets",
        description="Measure kan-fast against its acceptance targets (the reference KAN, flashkan, inkan, "
        "a dense matrix product) in one run, and keep it in a new folder under results/ (or $KAN_RESULTS).",
        epilog="\n".join(f"targets on {device}:\n" + "\n".join(
            f"  {str(t.shape):<22} grid {t.grid_size:<3} {t.name} {t.describe()}" for t in targets)
            for device, targets in TARGETS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeats", type=cli.count(MIN_REPEATS), default=REPEATS, metavar="N",
                   help=f"timed calls per row, at least {MIN_REPEATS} (a median of fewer calls is too noisy to "
                   f"judge a target; default: {REPEATS})")
    cli.add_threads(p)
    cli.add_devices(p, default="cpu", valid=DEVICES, multiple=False)
    p.add_argument("--grids", type=cli.int_list("--grids"), default=None, metavar="G,G",
                   help="grid sizes, comma-separated: the targets at these grids only (default: every grid the "
                   "device's targets name)")
    p.add_argument("--batch", type=cli.count(1), default=None, metavar="N",
                   help="batch size of every target (default: each target's own)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kan-fast's backend (default: auto, the one it takes on the device; triton: its Triton "
                   "kernels, on CUDA)")
    p.add_argument("--quick", action="store_true",
                   help=f"a check of the script, not of the targets: 1 warm-up call instead of {WARMUP}, "
                   "and --widths allowed")
    p.add_argument("--widths", type=cli.widths, default=None, metavar="W,W,W",
                   help="layer widths of every target, input first; only with --quick (each target names its own)")
    return p


def settings(args) -> Settings:
    """The run's settings from the parsed arguments; :class:`UsageError` in one line where they clash."""
    from benchmarks.core.timer import torch_threads

    if args.widths is not None and not args.quick:
        raise UsageError("--widths needs --quick: each target is defined at its own widths")
    threads = torch_threads() if args.threads is None else args.threads
    targets = targets_for(args.device, args.widths, args.batch)
    grids = tuple(dict.fromkeys(args.grids)) if args.grids else tuple(sorted({t.grid_size for t in targets}))
    return Settings(targets, grids, args.repeats, 1 if args.quick else WARMUP, args.device, threads, args.backend)


def main(argv: list[str] | None = None) -> int:
    return run_command("targets", parser(), argv, _targets)


def _targets(args, cmd: Command) -> int:
    from benchmarks.core import record
    from benchmarks.core.timer import DeviceTimer, using_threads

    s = settings(args)
    run = cmd.open(label="fast-targets-quick" if args.quick else "fast-targets", settings={
        "widths": None if args.widths is None else list(args.widths), "batch": args.batch,
        "grids": list(s.grids), "repeats": s.repeats,
        "warmup": s.warmup, "device": s.device, "dtype": DTYPE, "threads": s.threads, "quick": args.quick,
        "backend": s.backend,
        "peers": {name: peer_version(name) for name in PEERS},
        "targets": [dataclasses.asdict(t) for t in s.targets],
    })
    run.write_json(record.TARGETS + ".json", run.settings())  # fast_targets.json, as readers of older runs expect
    measuring = points(s.targets, s.grids)
    print(f"targets: {len(measuring)} shapes and grids ({'; '.join(f'{shape} g{g}' for shape, g in measuring)}), "
          f"{s.repeats} repeats, {s.device}, kan-fast's backend {s.backend}, {s.threads} threads; "
          f"run folder {run.path}", flush=True)

    measured: list[Measurement] = []

    def emit(m: Measurement) -> None:
        measured.append(m)
        run.append_jsonl(record.MEASUREMENTS, m.to_json())  # the one place the samples are kept
        row = table_row(m)
        print(f"  {row['model']:>11} {row['phase']:<18} {row['widths']} b{row['batch']} grid {row['grid_size']:<3} "
              f"{_shown(row)}", flush=True)

    started = time.perf_counter()
    with using_threads(s.threads), cmd.interruptible():  # the run's count while it measures, restored after
        timer = DeviceTimer(s.device)
        for shape, grid_size in measuring:
            measure_point(shape, grid_size, s, timer, emit)
    wall = time.perf_counter() - started

    rows, verdicts = tables(measured, s.targets, s.grids)
    run.write_rows(record.TARGETS, rows)
    run.write_rows(record.TARGET_VERDICTS, verdicts)
    print()
    print(format_rows(rows))
    print()
    print(format_verdicts(verdicts))
    if args.widths is not None or args.batch is not None:
        asked = [f"widths {widths_label(args.widths)}"] if args.widths else []
        asked += [f"batch {args.batch}"] if args.batch else []
        print(f"note: measured at {', '.join(asked)}; each target is defined at its own (see --help)")
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
