"""Shared test setup: kan-fast's C++ kernels are built (or found built) once per test session.

Tests that need their own build use a temporary ``KAN_NATIVE_CACHE`` in a subprocess
and are marked ``slow`` (``pytest -m "not slow"`` skips them).
"""

import pytest


@pytest.fixture(scope="session", autouse=True)
def native_kernels():
    """Build the kernels before the first test, so that no test pays for (or times) the build."""
    import kan.native

    if kan.native.ENABLED:
        kan.native.available()  # builds, checks and loads once; a warning says why where it cannot
