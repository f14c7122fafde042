"""The speed gate's suite, and the child process that times it for one side of a comparison.

The suite is small on purpose (it runs in CI on two cores): the reference KAN, the fast
KAN and the width-matched MLP, forward and training step, on the CPU in float32 with
widths [784, 64, 10], batch 256, grid_size 5.

Each side of a comparison (base commit, working tree) is timed by a child process of
its own, started by ``benchmarks.gate`` with an import path on which ``kan`` is that
side's package and ``benchmarks`` is the working tree's harness. The child speaks JSON
lines: it greets with what it could build, then answers commands on stdin::

    child  -> {"hello": {"kan_file", "kan_modules", "models", "torch", "threads", "clock",
                         "cases": {name: {"status": "ok" | "missing" | "error" | "nonfinite", "reason"}}}}
    parent -> {"cmd": "warmup"}
    child  -> {"per_call_s": {name: seconds}, "failed": {name: {"status", "reason"}}}
    parent -> {"cmd": "round", "samples": k, "number": {name: calls per turn}}
    child  -> {"samples": {name: [[[seconds, disturbed] of each call of a turn], ... k turns]}}
    parent -> {"cmd": "quit"}

A round times only the cases named in "number", so that the parent can interleave the two
sides benchmark by benchmark, and only one side runs at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from benchmarks.core.phases import GATE_PHASES

MODELS = ("kan", "kan-fast", "mlp")
PHASES = GATE_PHASES  # the phases a gate times unless --phases says otherwise
WIDTHS = (784, 64, 10)
BATCH = 256
GRID_SIZE = 5
DEVICE = "cpu"
DTYPE = "float32"
BASELINE_MODEL = "mlp"  # what a committed baseline's ratios are relative to


def suite(models=MODELS, phases=PHASES) -> list:
    """The gate's cases (``benchmarks.core.case.Case``), model by model, at the suite's shapes.

    Every case carries the suite's grid size; a side drops it for a model without a grid
    when it builds the case (``prepare``), since only that side's registry knows.
    """
    from benchmarks.core.case import Case

    return [Case(m, p, DEVICE, DTYPE, WIDTHS, BATCH, GRID_SIZE) for m in models for p in phases]


def name(case) -> str:
    """The gate's name of a case: ``kan-forward`` (model and phase; the shapes are the suite's)."""
    return f"{case.model}-{case.phase}"


def fields(case) -> dict:
    """The case as JSON fields (the child's configuration, and the first columns of a verdict row)."""
    return {"benchmark": name(case), "model": case.model, "phase": case.phase, "widths": list(case.widths),
            "batch": case.batch, "grid_size": case.grid_size, "device": case.device, "dtype": case.dtype}


def settings() -> dict:
    """The suite's shapes, recorded with every verdict and baseline."""
    return {"widths": list(WIDTHS), "batch": BATCH, "grid_size": GRID_SIZE, "device": DEVICE, "dtype": DTYPE}


# --- the child side -------------------------------------------------------------------


@dataclass
class _Prepared:
    case: object  # benchmarks.core.case.Case
    status: str  # "ok", "missing" (the model does not exist on this side), "error", "nonfinite"
    reason: str = ""
    step: object = field(default=None, repr=False)  # benchmarks.core.case.Step
    first_call_s: float | None = None
    clock: object = field(default=None, repr=False)


def prepare(case, clock_name: str = "wall") -> _Prepared:
    """Build ``case`` with the harness's case builder on this side, and make its first, cold call.

    A model absent from this side's registry, or whose module is absent, is "missing",
    which the gate reports as new or removed. A model whose module is there but cannot be
    imported (a syntax error, say) or built is an "error": on the working tree's side that
    fails the gate.
    """
    import dataclasses
    import importlib.util

    from benchmarks.core import case as cases, protocol
    from benchmarks.core.timer import make_clock
    from kan import zoo

    if case.model not in zoo.available():
        return _Prepared(case, "missing", f"no model {case.model!r} in this side's registry")
    module = zoo.entry(case.model).model.split(":")[0]
    try:
        absent = importlib.util.find_spec(module) is None
    except ImportError:  # a package above it that is absent
        absent = True
    if absent:
        return _Prepared(case, "missing", f"model {case.model!r} is registered but {module} is absent on this side")
    try:
        grid = case.grid_size if cases.has_grid(case.model) else None
        step = cases.make_step(dataclasses.replace(case, grid_size=grid))
        timing = make_clock(clock_name, case.device)
        first = protocol.first_call(step.fn, timing, setup=step.setup)
    except Exception as e:  # cases.ModelUnavailable too: registered, so it should import
        return _Prepared(case, "error", f"{type(e).__name__}: {e}")
    bad = step.nonfinite()
    if bad:
        return _Prepared(case, "nonfinite", bad)
    return _Prepared(case, "ok", step=step, first_call_s=first, clock=timing)


def turn(prepared: _Prepared, calls: int, threads: int) -> list[tuple[float, bool]]:
    """(seconds, disturbed) of each of ``calls`` calls, each timed alone after its untimed ``setup``
    (the protocol of the pytest-benchmark suites), with the side's ``threads`` (which the
    disturbed-sample test needs). The parent makes one sample of them."""
    from benchmarks.core import protocol

    c = protocol.Candidate(name(prepared.case), prepared.step)
    protocol.calls(c, prepared.clock, calls)
    if c.status != "ok":
        raise FloatingPointError(c.reason) if c.status == "nonfinite" else RuntimeError(c.reason)
    return list(zip(c.samples, protocol.disturbed(c, threads)))


def warmup(prepared: _Prepared, seconds: float = 0.3, max_calls: int = 50) -> float:
    """Run the case for about ``seconds`` (at least 3 calls); the median seconds per call."""
    from benchmarks.core import protocol

    step = prepared.step
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_calls and (len(times) < 3 or time.perf_counter() < deadline):
        times += protocol.rounds(step.fn, prepared.clock, 1, warmup=0, setup=step.setup)
    bad = step.nonfinite()
    if bad:
        raise FloatingPointError(bad)
    return statistics.median(times)


def _drop_editable_finders() -> None:
    """Forget editable installs (``pip install -e .``) of any ``kan``.

    Their import hook sits after the path finder, so it cannot shadow the ``kan`` found on
    sys.path, but it still answers for submodules that package lacks: without this, a base
    commit without ``kan/fast.py`` would silently import the working tree's.
    """
    editable = lambda hook: getattr(hook, "__module__", "").startswith("__editable__")  # noqa: E731
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path_importer_cache.clear()


def serve(argv: list[str] | None = None) -> None:
    """The child's main loop. argv[0] is a JSON object:
    {"cases": [fields(case)], "threads": n, "clock": "wall" | "cpu", "warmup_s": s, "cpus": [ids] | null}.

    The parent decides the threads and the clock once and sends the same to both sides, so that
    base and head are timed alike."""
    from benchmarks.core.process import channel

    config = json.loads((argv if argv is not None else sys.argv[1:])[0])
    say = channel()
    if config.get("cpus") and hasattr(os, "sched_setaffinity"):  # before torch starts its threads
        os.sched_setaffinity(0, config["cpus"])
    from benchmarks.core.timer import using_threads  # imports torch: after the affinity is set

    threads = int(config["threads"])
    with using_threads(threads):
        _serve(config, threads, say)


def _serve(config: dict, threads: int, say) -> None:
    import torch

    from benchmarks.core.process import commands

    _drop_editable_finders()
    import kan

    from benchmarks.core.case import Case

    cases = [Case(c["model"], c["phase"], c["device"], c["dtype"], tuple(c["widths"]), c["batch"], c["grid_size"])
             for c in config["cases"]]
    try:
        from kan import zoo
    except Exception as e:  # noqa: BLE001 - a broken registry is told, not raised
        if os.path.exists(os.path.join(os.path.dirname(kan.__file__ or ""), "zoo.py")):
            status, reason = "error", f"kan.zoo cannot be imported: {type(e).__name__}: {e}"
        else:  # a commit from before the registry: nothing to time on this side
            status, reason = "missing", f"no kan.zoo ({e})"
        models, prepared = [], {name(c): _Prepared(c, status, reason) for c in cases}
    else:
        models, prepared = list(zoo.available()), {name(c): prepare(c, config["clock"]) for c in cases}
    say({"hello": {
        "kan_file": getattr(kan, "__file__", None),
        "kan_modules": {n: getattr(m, "__file__", None) for n, m in sorted(sys.modules.items())
                        if n == "kan" or n.startswith("kan.")},
        "models": models,
        "torch": torch.__version__,
        "threads": threads,
        "clock": config["clock"],
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cases": {n: {"status": p.status, "reason": p.reason, "first_call_s": p.first_call_s}
                  for n, p in prepared.items()},
    }})
    ready = {n: p for n, p in prepared.items() if p.status == "ok"}

    def warm(command: dict) -> dict:
        per_call, failed = {}, {}
        for n, p in list(ready.items()):
            try:
                per_call[n] = warmup(p, float(config.get("warmup_s", 0.3)))
            except Exception as e:  # NaN/inf in steady state, or a call that fails
                failed[n] = {"status": "nonfinite" if isinstance(e, FloatingPointError) else "error",
                             "reason": str(e) if isinstance(e, FloatingPointError) else f"{type(e).__name__}: {e}"}
                del ready[n]
        return {"per_call_s": per_call, "failed": failed}

    def take(command: dict) -> dict:
        k, number = int(command["samples"]), command["number"]  # number: {case: calls per sample}
        return {"samples": {n: [turn(ready[n], int(calls), threads) for _ in range(k)]
                            for n, calls in number.items() if n in ready}}

    commands(say, {"warmup": warm, "round": take})


def child_main() -> None:
    """Entry point of the child process (see ``benchmarks.core.process.child_main``)."""
    from benchmarks.core import process

    process.child_main(serve)
