"""One measurement: build a case, time its first call, time its steady state, check its output.

:func:`measure` is the body of every benchmark in ``test_bench.py``. It fills one row of
the run's measurements (the tidy table's raw material) and hands the timing to
pytest-benchmark through ``benchmark.pedantic``, so that pytest-benchmark keeps the raw
samples and writes its own JSON.

Order of work for one case:

1. build the model and inputs (:func:`benchmarks.core.case.make_step`); parameter bytes and the
   bytes autograd saves for backward are counted on an untimed forward;
2. time the first, cold call on its own (``first_call_s``); a NaN or inf in what it
   produced ends the measurement as ``nonfinite``, untimed;
3. time one more call to choose the number of rounds, reset the device's peak memory,
   then ``benchmark.pedantic`` (warm-up rounds, then timed rounds, ``setup`` untimed);
4. check the last timed call's output again: NaN or inf there discards the timing.
"""

from __future__ import annotations

from benchmarks.core import memory
from benchmarks.core.case import Case, Step, make_step, phase_flops, zoo
from benchmarks.suite.suites import Suite
from benchmarks.core.protocol import first_call
from benchmarks.core.timer import DeviceTimer, set_threads


def _forward_flops(case: Case) -> int | None:
    """The registry's FLOP count of one forward, or None where the model's module has no FLOP function."""
    try:
        zoo().entry(case.model).flops_function()
    except (ImportError, AttributeError):
        return None
    return case.forward_flops()


def measure(benchmark, case: Case, suite: Suite, row: dict, step: Step | None = None) -> dict:
    """Measure ``case`` with the pytest-benchmark fixture ``benchmark``, filling ``row``.

    ``row["status"]`` ends "ok" or "nonfinite" (with ``row["reason"]``); exceptions
    (including :class:`benchmarks.core.case.ModelUnavailable`) propagate to the caller.
    ``step``: a prepared step to time instead of building one (tests pass odd models).
    """
    step = step if step is not None else make_step(case)
    parameters = zoo().parameter_count(step.model)
    forward_flops = _forward_flops(case)
    row.update(
        parameters=parameters,
        param_bytes=memory.param_bytes(step.model),
        saved_bytes=memory.saved_tensor_bytes(step.forward, exclude=step.model.parameters()),
        flops=None if forward_flops is None else phase_flops(forward_flops, case.phase, parameters),
        threads=set_threads(None),
    )
    timer = DeviceTimer(case.device)

    row["first_call_s"] = first_call(step.fn, timer, setup=step.setup)
    if (bad := step.nonfinite()) is not None:
        row.update(status="nonfinite", reason=bad)
        return row

    estimate = first_call(step.fn, timer, setup=step.setup)
    rounds = suite.rounds(estimate)
    device_memory = memory.DeviceMemory(case.device)
    device_memory.reset()
    benchmark.pedantic(step.fn, setup=step.setup, rounds=rounds, warmup_rounds=suite.warmup_rounds)
    row["peak_bytes"] = device_memory.read()
    if (bad := step.nonfinite()) is not None:
        row.update(status="nonfinite", reason=f"{bad} after {rounds} timed rounds; timing discarded")
        return row

    stats = benchmark.stats.stats
    row.update(
        status="ok",
        median_s=stats.median, iqr_s=stats.iqr, mean_s=stats.mean, min_s=stats.min, max_s=stats.max,
        rounds=stats.rounds, samples=list(stats.data),
    )
    return row
