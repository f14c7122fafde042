"""kan-fast's float32 accuracy against the float32 reference, both measured against the float64 truth.

A layer [4 -> 3] built in float32 (its knots made in float32, evenly spaced only to their
rounding), spline weights N(0, 1), base weights 0 or N(0, 1), inputs uniform in +-0.95.
The truth is the reference layer (kan.reference) in float64 on the same state dict (the
same float32 knots, cast exactly); the error of an output is its largest deviation from
the truth relative to the truth's largest magnitude, as a root mean square (the measure of rounding that
a ratio compares stably) and as the largest (an extreme value, which a ratio of two
compares noisily: seen up to about 2.2 where the root-mean-square ratio is 1.2). kan-fast's
root-mean-square error must stay within twice the float32 reference's (or under float32's
unit roundoff, the outputs' own rounding), and its largest within three times, at every grid and spline order, on every path (C++ kernels
and PyTorch, dense and gather contractions). The quick suite takes a sample of the sweep;
``-m slow`` runs the whole of it.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import kan.fast
import kan.native
from kan.fast import FastBSplineKANLinear
from kan.reference import KANLinear

ALL_GRIDS = [*range(1, 21), 25, 30, 40, 50, 64, 75, 100, 128, 150, 200, 256, 300, 400, 500, 512, 600, 700, 800, 900,
             1000]
SAMPLE = [(5, 3), (10, 2), (50, 1), (200, 4), (1000, 5)]  # (grid, order)
ROWS = 4000


class Error(NamedTuple):
    """Deviations from the truth relative to its largest magnitude: the root mean square, a
    stable measure of rounding, and the largest, an extreme value of it."""

    rms: float
    max: float


def paths() -> list[dict]:
    """Every path's kan-fast options: dense and gather, by the C++ kernels (where they build) and by PyTorch
    (its kernels not compiled)."""
    return [{"contraction": c, "backend": b, "compile": "off"} for c in ("dense", "gather") for b in ("native", "torch")
            if b == "torch" or kan.native.available()]


def errors(grid: int, order: int, base: bool) -> tuple[Error, list[tuple[dict, Error]]]:
    """The float32 reference's error and each path's, against the float64 truth."""
    generator = torch.Generator().manual_seed(1000 * grid + 10 * order + base)
    reference = KANLinear(4, 3, grid_size=grid, spline_order=order)
    with torch.no_grad():
        reference.spline_weight.copy_(torch.randn(reference.spline_weight.shape, generator=generator))
        reference.spline_scaler.fill_(1.0)
        reference.base_weight.copy_(torch.randn(3, 4, generator=generator) if base else torch.zeros(3, 4))
    truth = KANLinear(4, 3, grid_size=grid, spline_order=order).double()
    truth.load_state_dict(reference.state_dict())  # the float32 knots and weights, exactly
    x = (torch.rand(ROWS, 4, generator=generator) * 2 - 1) * 0.95
    with torch.no_grad():
        expected = truth(x.double())  # (rows, 3)
        scale = expected.abs().max().item()

        def error(layer) -> Error:
            deviation = layer(x).double() - expected
            return Error(deviation.pow(2).mean().sqrt().item() / scale, deviation.abs().max().item() / scale)

        found = []
        for options in paths():
            fast = FastBSplineKANLinear(4, 3, grid_size=grid, spline_order=order, **options)
            fast.load_state_dict(reference.state_dict())
            found.append((options, error(fast)))
        return error(reference), found


# float32's unit roundoff: a root-mean-square error under it, relative to the outputs' scale, is
# the rounding of the outputs themselves, where a ratio of two such errors is noise (seen: 2.05
# at grid 10, order 3, both under it), not the growth with the grid this file guards against.
UNIT_ROUNDOFF = 2.0**-24


def check(grid: int, order: int, base: bool) -> None:
    """kan-fast's root-mean-square error within twice the reference's on every path (or within
    float32's unit roundoff, the outputs' own rounding), and its largest within three times (an
    extreme value of rounding noise, which varies more)."""
    reference, found = errors(grid, order, base)
    bound = max(2 * reference.rms, UNIT_ROUNDOFF)
    for options, fast in found:
        where = f"grid {grid}, order {order}, base {'on' if base else 'off'}, {options}"
        assert fast.rms <= bound, f"{where}: rms {fast.rms:.3g} > 2 x reference {reference.rms:.3g} and unit roundoff"
        assert fast.max <= 3 * reference.max, f"{where}: max {fast.max:.3g} > 3 x reference {reference.max:.3g}"


@pytest.mark.parametrize("base", [False, True], ids=["spline-only", "with-base"])
@pytest.mark.parametrize("grid, order", SAMPLE, ids=[f"grid{g}-order{o}" for g, o in SAMPLE])
def test_float32_error_within_twice_the_reference(grid, order, base):
    check(grid, order, base)


@pytest.mark.slow
@pytest.mark.parametrize("base", [False, True], ids=["spline-only", "with-base"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5], ids=lambda v: f"order{v}")
@pytest.mark.parametrize("grid", ALL_GRIDS, ids=lambda v: f"grid{v}")
def test_float32_error_within_twice_the_reference_over_the_sweep(grid, order, base):
    check(grid, order, base)


@pytest.mark.parametrize("grid, cardinal", [(4, True), (5, True), (1000, False)])
def test_knots_uneven_by_rounding_leave_the_cardinal_recursion(grid, cardinal):
    # grid 4 on (-1, 1): steps of 0.5, exact; grid 5: steps of 0.4 rounded, a few epsilons
    # apart; grid 1000: steps apart by a hundred epsilons and more, de Boor's triangle instead
    layer = KANLinear(2, 1, grid_size=grid)
    geometry = kan.fast.knot_geometry(layer.grid, 3)
    assert geometry.uniform and geometry.cardinal == cardinal
    assert kan.native.can_save(geometry) == cardinal
