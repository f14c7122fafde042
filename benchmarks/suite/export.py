"""pytest-benchmark's JSON (``benchmark.json``) exported from a bench run's measurements.

The bench measures through its own core (:mod:`benchmarks.core.measure`) and keeps every
sample once, in ``measurements.jsonl``; this file is written for the tools people already
use on pytest-benchmark's results (``pytest-benchmark compare results/*/benchmark.json``)
and is never read back. Each "ok" measurement is one benchmark, named as the pytest suite
names it (``test_case[<case id>]``), its statistics computed by pytest-benchmark's own
``Stats`` from the samples, which the file leaves out (they are kept once); what
pytest-benchmark has no field for goes in ``extra_info`` and ``machine_info``, as the
design asks.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from typing import Any, Iterable

FULLNAME = "benchmarks/suite/test_bench.py::{}"


def benchmark_name(case) -> str:
    """A case's benchmark name: pytest's name of the suite's test for it."""
    return f"test_case[{case.id}]"


def timer_name(device: str, clock: str | None) -> str:
    """How pytest-benchmark's ``options.timer`` names the clock that took a measurement's samples."""
    return f"{'CpuTimer' if clock == 'cpu' else 'DeviceTimer'}({device}), in turns"


def machine_info(env: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine fields, and what changes numbers here (from environment.json)."""
    return {
        "node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
        "python_implementation": platform.python_implementation(), "python_version": platform.python_version(),
        "release": platform.release(), "system": platform.system(),
        "torch": env.get("torch"), "devices": env.get("devices"), "cpu_model": env.get("cpu"),
        "cpu_count": env.get("cpu_count"), "threads": env.get("threads"),
        "interop_threads": env.get("interop_threads"), "machine_label": env.get("machine"),
        "load_average": env.get("load_average"),
    }


def _plain(v: Any) -> Any:
    """A value JSON writes as itself (NaN as null)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def benchmark_entry(m, suite=None) -> dict[str, Any]:
    """One measurement as one entry of pytest-benchmark's "benchmarks" list."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for s in m.samples:
        stats.update(s)
    row = m.row()
    options = {"disable_gc": False, "timer": timer_name(m.case.device, m.clock), "warmup": False}
    if suite is not None:
        options.update(min_rounds=suite.min_rounds, max_time=suite.max_time)
    return {
        "group": m.case.workload, "name": m.name, "fullname": FULLNAME.format(m.name),
        "params": {"case": m.case.id}, "param": m.case.id,
        "extra_info": {k: _plain(v) for k, v in row.items() if k != "benchmark"},
        "options": options,
        # no "data": the samples are kept once, in measurements.jsonl (pytest-benchmark's own
        # --benchmark-save leaves them out too unless asked)
        "stats": {**stats.as_dict(), "iterations": 1},
    }


def document(measurements: Iterable, env: dict[str, Any], suite=None) -> dict[str, Any]:
    """pytest-benchmark's whole JSON document: the "ok" measurements with samples, in name order."""
    from pytest_benchmark import __version__

    commit = env.get("commit") or {}
    timed = sorted((m for m in measurements if m.status == "ok" and m.samples and m.case is not None),
                   key=lambda m: m.name)
    return {
        "machine_info": machine_info(env),
        "commit_info": {"id": commit.get("id"), "time": commit.get("time"), "dirty": commit.get("dirty"),
                        "project": "kan-harness", "branch": commit.get("branch")},
        "benchmarks": [benchmark_entry(m, suite) for m in timed],
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "version": __version__,
    }


def write(run, measurements: Iterable, suite=None) -> bool:
    """Write ``benchmark.json`` into ``run``; False (nothing written) where pytest-benchmark is not installed."""
    try:
        doc = document(measurements, run.environment(), suite)
    except ImportError:
        return False
    run.write_json(run.benchmark_json.name, doc)
    return True
