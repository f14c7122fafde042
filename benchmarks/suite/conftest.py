"""pytest plumbing of the bench suites: options, parametrisation, the device timer, the record.

``python -m benchmarks`` (and ``nox -s bench``) measures the suites without pytest
(:mod:`benchmarks.suite.runner`); this is for those who run them with pytest-benchmark's
own options::

    pytest benchmarks/suite/test_bench.py --bench-suite smoke --bench-model kan,mlp --benchmark-json=out.json

The same core measures each group (:func:`benchmarks.core.measure.measure_group`); every case
gets ``pytest.mark.benchmark(timer=Recorded(device), group=workload)``, a clock that replays
the samples the core took, so that pytest-benchmark reports exactly those, grouped by workload
in its terminal table. Cases on a device that is not present, or in a dtype
the device does not support, are skipped with the reason.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from benchmarks.core import record
from benchmarks.core.case import device_unavailable, dtype_unsupported
from benchmarks.suite.suites import SUITES, select
from benchmarks.core.timer import check_threads, torch_threads, using_threads
from benchmarks.core.measure import measure_group


def pytest_addoption(parser):
    group = parser.getgroup("kan-bench", "KAN benchmark suites")
    group.addoption("--bench-suite", default="quick", help=f"one of {', '.join(SUITES)} (default quick)")
    group.addoption("--bench-model", action="append", default=[],
                    help="registered model name(s), comma-separated or repeated (default: all)")
    group.addoption("--bench-device", action="append", default=[],
                    help="cpu, cuda, mps (default: every one present; the others are skipped)")
    group.addoption("--bench-dtype", action="append", default=[], help="float32, bfloat16 (default: the suite's)")
    group.addoption("--bench-threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's count at the start)")
    group.addoption("--bench-run", default=None, help="run folder that receives measurements.jsonl")
    group.addoption("--bench-shard", default=None, help="I/N: the I-th of N parts of the suite")
    group.addoption("--bench-graphs", action="store_true", help="on CUDA, also time each step in CUDA graphs")


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("the bench suites need pytest-benchmark (pip install pytest-benchmark)")
    try:
        config._kan_selection = select(
            config.getoption("--bench-suite"), config.getoption("--bench-model"),
            config.getoption("--bench-device"), config.getoption("--bench-dtype"),
            config.getoption("--bench-shard"), config.getoption("--bench-graphs"),
        )
        config._kan_groups = {}
        given = config.getoption("--bench-threads")
        config._kan_threads = torch_threads() if given is None else check_threads(given)
    except (ValueError, ImportError) as e:
        raise pytest.UsageError(str(e)) from None
    # applied while the session runs (the machine info reads it), restored at its end
    config._kan_applied = contextlib.ExitStack()
    config._kan_applied.enter_context(using_threads(config._kan_threads))


def pytest_unconfigure(config):
    applied = getattr(config, "_kan_applied", None)
    if applied is not None:
        applied.close()


class Recorded:
    """A pytest-benchmark clock that reads back samples already taken (in turns, with the
    device-aware timer): call k of a round returns the start, the next the start plus sample k.

    pytest-benchmark's ``pedantic`` with a no-op target, one iteration and ``rounds`` = the
    number of samples then records exactly those samples.
    """

    def __init__(self, device: str):
        self.device = device
        self.__name__ = f"DeviceTimer({device}), in turns"  # how pytest-benchmark names its timer
        self._samples: list[float] = []
        self._calls = 0

    def load(self, samples: list[float], clock: str = "wall") -> int:
        """Take the samples, and the name of the clock that took them ("wall" or "cpu")."""
        self._samples, self._calls = list(samples), 0
        self.__name__ = f"{'CpuTimer' if clock == 'cpu' else 'DeviceTimer'}({self.device}), in turns"
        return len(self._samples)

    def __call__(self) -> float:
        k, end = divmod(self._calls, 2)
        self._calls += 1
        return self._samples[k] if end else 0.0

    def __repr__(self) -> str:
        return self.__name__


def _marks(case) -> list:
    reason = device_unavailable(case.device) or dtype_unsupported(case.device, case.dtype)
    if reason:
        return [pytest.mark.skip(reason=reason)]
    return [pytest.mark.benchmark(timer=Recorded(case.device), group=case.workload)]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = metafunc.config._kan_selection.cases()
        metafunc.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in cases])


@pytest.fixture
def suite(request):
    """The selected :class:`benchmarks.suite.suites.Suite`."""
    return request.config._kan_selection.suite


@pytest.fixture
def measured(request):
    """``measured(case)``: the Measurement of ``case``, its group measured (once) when first asked."""
    config = request.config

    def row_of(case):
        group = config._kan_selection.group_of(case)
        if group not in config._kan_groups:
            config._kan_groups.clear()  # one group's models in memory at a time
            config._kan_groups[group] = measure_group(group, config._kan_selection.suite,
                                                      threads=config._kan_threads)
        return config._kan_groups[group][case.id]

    return row_of


@pytest.fixture
def bench_run(request):
    """The run folder (``--bench-run``) that receives each case's Measurement, or None."""
    path = request.config.getoption("--bench-run")
    return record.Run(Path(path)) if path else None


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add what changes numbers: torch version and build, devices, CPU model, threads, load."""
    env = record.environment()
    machine_info.update(
        torch=env["torch"], devices=env["devices"], cpu_model=env["cpu"], cpu_count=env["cpu_count"],
        threads=env["threads"], interop_threads=env["interop_threads"], machine_label=env["machine"],
        load_average=env["load_average"],
    )


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Keep only valid timings: a case cut short (Ctrl-C) or with NaN/inf output is left out."""
    output_json["benchmarks"] = [
        b for b in output_json["benchmarks"] if (b.get("extra_info") or {}).get("status") == "ok"
    ]
