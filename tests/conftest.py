"""Shared test setup: kan-fast's C++ kernels are built (or found built) once per test session
(once per worker process under pytest-xdist, whose build lock lets one of them build), and the
large parametrised sweeps are sampled in the quick run.

Tests that need their own build use a temporary ``KAN_NATIVE_CACHE`` in a subprocess
and are marked ``slow`` (``pytest -m "not slow"`` skips them).

A test marked ``sweep`` is a parametrised sweep whose whole product is too slow for the
quick run: there, a covering sample of its cases runs (every value of every parameter in
at least one case, chosen the same way on every run), and the other cases are marked
``slow``, so the whole suite still runs every case and each sampled case checks the same
thing as before.
"""

import os

import pytest
import torch

# Where there is no GPU, the Triton kernels' tests (test_triton.py) run them in Triton's
# interpreter, which kan.triton_spline chooses when it is first imported: set before any test
# module is collected, so that no module imported earlier can choose otherwise (test_triton.py
# would then skip every test).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def native_kernels():
    """Build the kernels before the first test, so that no test pays for (or times) the build."""
    import kan.native

    if kan.native.ENABLED:
        kan.native.available()  # builds, checks and loads once; a warning says why where it cannot


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Out of the environment: pytest-xdist's marks of a worker process (``PYTEST_XDIST_WORKER``).
    pytest-benchmark reads them and turns itself off: in this process (the test of its rounds in
    test_bench_timer.py would skip) and in every bench that a test runs here or in a child that
    inherits them (which would write no benchmark.json). A worker runs its tests as one process
    would; xdist itself goes by ``config.workerinput``."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        os.environ.pop(name, None)


def covering_sample(cases: list[dict[str, str]]) -> list[int]:
    """Indices of a small deterministic subset of ``cases`` (each a {parameter: value} mapping)
    in which every value of every parameter occurs at least once: greedily the case that adds
    the most values not yet seen, the earliest on a tie."""
    unseen = set().union(*(c.items() for c in cases)) if cases else set()
    chosen: list[int] = []
    while unseen:
        best = max(range(len(cases)), key=lambda i: (len(unseen & cases[i].items()), -i))
        chosen.append(best)
        unseen -= cases[best].items()
    return sorted(chosen)


# tryfirst: the slow marks must be on before `-m "not slow"` deselects
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    sweeps: dict[tuple, list] = {}
    for item in items:
        if item.get_closest_marker("sweep") is not None and hasattr(item, "callspec"):
            sweeps.setdefault((item.path, item.originalname), []).append(item)
    for cases in sweeps.values():
        # a value by its repr: the same object (a dtype, a fixture's param) in two cases is one value
        keep = set(covering_sample([{k: repr(v) for k, v in c.callspec.params.items()} for c in cases]))
        for i, item in enumerate(cases):
            if i not in keep:
                item.add_marker(pytest.mark.slow)
