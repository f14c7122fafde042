"""kan-fast's CPU backends against the reference KAN on seeded random configurations.

tests/random_configurations.py draws the cases (all of the reference's options together) and
holds the check: outputs and every gradient against the reference on the same state dict, its
NaN and inf in the same places. Here each case runs on the C++ kernels and on the PyTorch
paths; tests/test_triton.py runs them on the Triton kernels.
"""

from __future__ import annotations

import pytest
import torch

import kan.native
from random_configurations import ACTIVATIONS, CASES, check, draw


@pytest.fixture(params=["native", "torch"])
def backend(request) -> str:
    if request.param == "native" and not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    return request.param


@pytest.mark.parametrize("seed", range(CASES))
def test_random_configuration_equals_reference(seed, backend):
    check(seed, backend)


def test_the_cases_cover_what_they_are_for():
    """The seeds draw every option's values: a check that the draw still covers them."""
    cases = [draw(seed) for seed in range(CASES)]
    assert {c.model for c in cases} == {True, False}
    assert {c.dtype for c in cases} == {torch.float32, torch.float64}
    assert {c.contraction for c in cases} == {"auto", "dense", "gather"}
    assert {c.options["spline_order"] for c in cases} >= {0, 1, 3, 5, 6}
    assert {c.options["grid_size"] for c in cases} >= {1, 5, 20, 50}
    assert {c.options["base_activation"] for c in cases} == set(ACTIVATIONS)
    assert any(c.update and c.options["grid_eps"] < 1 for c in cases)  # an adapted, non-uniform grid
    assert any(c.update and c.options["grid_eps"] == 1 for c in cases)  # uniform, not on [-1, 1]
    assert any(c.specials for c in cases) and any(len(c.leading) > 1 for c in cases)
    assert any(c.options["scale_base"] == 0 for c in cases)
    assert any(not c.options["enable_standalone_scale_spline"] for c in cases)
