"""Knot geometry and the local B-spline bases of kan-fast, apart from the kernels that use them.

Only ``spline_order + 1`` of a feature's ``grid_size + spline_order`` B-spline bases are
non-zero at any point. :func:`local_b_splines` evaluates those:

* find the knot span ``m`` with ``t_m <= x < t_(m+1)`` (the reference's half-open
  intervals): on a uniform grid one ``floor`` corrected against the stored knots, on
  any other grid a vectorised binary search (:func:`knot_span`);
* evaluate the ``spline_order + 1`` bases ``m - spline_order .. m`` that live on that
  span: on a cardinal grid (uniform to the dtype's rounding, :func:`is_cardinal`) by the
  closed-form cardinal recursion in the local coordinate
  ``u = (x - t_m) / (t_(m+1) - t_m)`` of the stored knots, on any other grid by de
  Boor's triangle over the ``2 * spline_order`` knots around the span (the reference's
  formulas, restricted to the bases that are not zero), so that float32 knots, evenly
  spaced only to their rounding, get their own B-splines as in the reference.

:class:`KnotGeometry` is what every kernel needs to know about one layer's knots. The
PyTorch paths (``kan.fast``) and the C++ kernels' self-test (``kan.native``) both read this
module, which imports neither of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KnotGeometry:
    """What the kernels need to know about one layer's knots, computed once per grid.

    ``knots_ext``: (in, knots + 2), the knots with -inf and +inf appended at either
    end, so that ``knots_ext[:, m + 1]`` is ``t_m`` for every span ``m`` in
    ``[-1, knots - 1]``. ``knots_padded``: (in, knots + 2 * order), the knots with
    ``order`` knots extrapolated at each end, for de Boor's triangle near the ends.
    ``origin`` and ``inv_step``: (in,), first knot and reciprocal mean step when the
    grid is uniform (the knot span is then a ``floor``), else None. ``cardinal``: whether
    the grid is uniform closely enough that the cardinal recursion in the local
    coordinate ``u = (x - t_m) / (t_(m+1) - t_m)`` gives the B-splines of the stored
    knots to the dtype's rounding (see ``is_cardinal``); where it is not (float32 knots
    of a large grid are evenly spaced only to their rounding, a few units in the last
    place of the knot, a growing share of the step), the bases come from de Boor's
    triangle over the stored knots, as on any grid.
    """

    order: int
    coeff: int
    knots: int
    knots_ext: torch.Tensor
    knots_padded: torch.Tensor
    origin: torch.Tensor | None
    inv_step: torch.Tensor | None
    cardinal: bool = False

    @property
    def uniform(self) -> bool:
        return self.origin is not None


def is_uniform(grid: torch.Tensor) -> bool:
    """Whether every row of ``grid`` (in, knots) is evenly spaced to within rounding.

    The tolerance is a few units in the last place of the largest knot, so knots made
    by ``arange * step + start`` in the grid's own dtype pass, and float32 knots cast
    to float64 (uneven at float64 precision) do not.
    """
    knots = grid.size(1)
    if knots < 2:
        return False
    step = (grid[:, -1] - grid[:, 0]) / (knots - 1)  # (in,)
    if not bool((step > 0).all()):
        return False
    positions = torch.arange(knots, dtype=grid.dtype, device=grid.device)
    straight = grid[:, :1] + positions * step.unsqueeze(1)  # (in, knots)
    scale = grid.abs().amax(dim=1) + step  # (in,)
    tolerance = 8 * torch.finfo(grid.dtype).eps * scale
    return bool(((grid - straight).abs().amax(dim=1) <= tolerance).all())


# How far the steps of a uniform grid may differ from each other, relative to the step and in
# units of the dtype's epsilon, for the cardinal recursion to stand for the B-splines of the
# stored knots: a basis moves by about the relative difference of the steps around it, and
# beyond this the move would outgrow the reference's own rounding (tests/test_float32.py).
CARDINAL_STEP_SPREAD = 5


def is_cardinal(grid: torch.Tensor) -> bool:
    """Whether the steps of ``grid`` (in, knots), a uniform grid, differ from each other by at
    most ``CARDINAL_STEP_SPREAD`` epsilons of its dtype, relative to the step (measured in
    float64, exactly for float32 knots)."""
    steps = grid.double().diff(dim=1)  # (in, knots - 1)
    spread = (steps.amax(dim=1) - steps.amin(dim=1)) / steps.mean(dim=1)  # (in,)
    return bool((spread <= CARDINAL_STEP_SPREAD * torch.finfo(grid.dtype).eps).all())


def knot_geometry(grid: torch.Tensor, order: int) -> KnotGeometry:
    """Analyse ``grid`` (in, knots): padded knot tables, and the uniform step if any."""
    in_features, knots = grid.shape
    infinity = torch.full((in_features, 1), math.inf, dtype=grid.dtype, device=grid.device)
    knots_ext = torch.cat([-infinity, grid, infinity], dim=1)  # (in, knots + 2)
    if order > 0:
        first_step = (grid[:, 1] - grid[:, 0]).unsqueeze(1)  # (in, 1)
        last_step = (grid[:, -1] - grid[:, -2]).unsqueeze(1)
        ramp = torch.arange(1, order + 1, dtype=grid.dtype, device=grid.device)  # (order,)
        knots_padded = torch.cat(
            [grid[:, :1] - first_step * ramp.flip(0), grid, grid[:, -1:] + last_step * ramp], dim=1
        )  # (in, knots + 2 * order)
    else:
        knots_padded = grid
    origin = inv_step = None
    if is_uniform(grid):
        origin = grid[:, 0].contiguous()  # (in,)
        inv_step = ((knots - 1) / (grid[:, -1] - grid[:, 0])).contiguous()  # (in,)
    cardinal = origin is not None and is_cardinal(grid)
    return KnotGeometry(
        order=order,
        coeff=knots - 1 - order,
        knots=knots,
        knots_ext=knots_ext.contiguous(),
        knots_padded=knots_padded.contiguous(),
        origin=origin,
        inv_step=inv_step,
        cardinal=cardinal,
    )


def row_gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[i, index[..., i]]`` for a table (in, n) and an index (..., in)."""
    in_features, n = table.shape
    rows = torch.arange(in_features, device=index.device) * n  # (in,)
    return table.reshape(-1)[index + rows]


def knot_span(x: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """The span ``m`` with ``t_m <= x < t_(m+1)`` of each input, in ``[-1, knots - 1]``.

    x: (batch, in) -> (batch, in) int64. ``-1`` and ``knots - 1`` mean below the first
    and at or above the last knot. On a uniform grid the span is a ``floor`` corrected
    by one comparison either side with the stored knots (exact on knots); otherwise a
    binary search over the knots.
    """
    g = geometry
    if g.uniform:
        t = ((x - g.origin) * g.inv_step).clamp(-1, g.knots - 1)  # (batch, in)
        guess = t.floor().long()
        lower = row_gather(g.knots_ext, guess + 1)  # t_guess
        upper = row_gather(g.knots_ext, guess + 2)  # t_(guess+1)
        return guess - (x < lower).long() + (x >= upper).long()
    low = torch.full_like(x, -1, dtype=torch.long)
    high = torch.full_like(x, g.knots, dtype=torch.long)
    for _ in range(math.ceil(math.log2(g.knots + 1))):
        middle = (low + high) // 2
        above = x >= row_gather(g.knots_ext, middle + 1)
        low = torch.where(above, middle, low)
        high = torch.where(above, high, middle)
    return low


def uniform_local(u: torch.Tensor, order: int, derivative: bool):
    """Cardinal B-spline values at local coordinate ``u`` in [0, 1).

    u: (...) -> list of ``order + 1`` tensors (...): the bases ``m - order .. m`` of
    span ``m``; with ``derivative``, also their derivatives with respect to ``u``.
    """
    values = [torch.ones_like(u)]
    below = values
    for r in range(1, order + 1):
        below = values
        nxt = []
        for d in range(r + 1):
            term = None
            if d >= 1:
                term = below[d - 1] * ((u + (r - d)) / r)
            if d <= r - 1:
                right = below[d] * ((d + 1 - u) / r)
                term = right if term is None else term + right
            nxt.append(term)
        values = nxt
    if not derivative:
        return values, None
    if order == 0:
        return values, [torch.zeros_like(u)]
    slopes = []
    for d in range(order + 1):
        left = below[d - 1] if d >= 1 else 0
        right = below[d] if d <= order - 1 else 0
        slopes.append(left - right)
    return values, slopes


def de_boor_local(x: torch.Tensor, span: torch.Tensor, geometry: KnotGeometry, derivative: bool):
    """Local bases of span ``span`` on any grid, by de Boor's triangle over the stored knots.

    x, span: (batch, in) -> list of ``order + 1`` tensors (batch, in), and their
    derivatives with respect to x when asked. The reference's Cox-de Boor formulas,
    restricted to the bases that are not zero on the span, in the arrangement of the
    C++ kernels (de Boor's BSPLVB: one division per knot interval and level, shared by
    the two bases that meet there), which rounds no worse than the reference.
    """
    k = geometry.order
    clamped = span.clamp(0, geometry.knots - 2)
    # knots[q] = t_(span - k + 1 + q), q = 0 .. 2k - 1 (the padded table starts k knots early,
    # and its extrapolated knots keep the triangle finite at the ends)
    knots = [row_gather(geometry.knots_padded, clamped + 1 + q) for q in range(2 * k)]
    values = [torch.ones_like(x)]
    shares = []
    for j in range(1, k + 1):
        carried = None
        level = []
        for r in range(j):  # values[r]: order j - 1 basis span - j + 1 + r, on t_(span+1-j+r) .. t_(span+1+r)
            low, high = knots[k - j + r], knots[k + r]
            share = values[r] / (high - low)
            if j == k:
                shares.append(share)
            right = (high - x) * share
            level.append(right if carried is None else carried + right)
            carried = (x - low) * share
        level.append(carried)
        values = level
    if not derivative:
        return values, None
    if k == 0:
        return values, [torch.zeros_like(x)]
    # d/dx of basis d: k * (its left order k - 1 basis / its support - the right one's)
    slopes = [k * ((shares[d - 1] if d >= 1 else 0) - (shares[d] if d < k else 0)) for d in range(k + 1)]
    return values, slopes


def local_b_splines(x: torch.Tensor, geometry: KnotGeometry, derivative: bool = False):
    """The ``spline_order + 1`` B-spline bases that are non-zero at each input.

    x: (batch, in) -> ``first`` (batch, in) int64, the index of the first of them
    (may lie outside ``[0, coeff)``), ``values`` (batch, in, order + 1), zero where the
    basis index ``first + d`` does not exist, and with ``derivative`` their
    derivatives with respect to x, (batch, in, order + 1); else None.
    """
    g = geometry
    span = knot_span(x, g)  # (batch, in)
    if g.cardinal:
        column = span.clamp(0, g.knots - 2) + 1
        lower = row_gather(g.knots_ext, column)  # t_span
        inv_step = 1 / (row_gather(g.knots_ext, column + 1) - lower)  # 1 / (t_(span+1) - t_span)
        u = (x - lower) * inv_step  # (batch, in)
        values, slopes = uniform_local(u, g.order, derivative)
        if slopes is not None:
            slopes = [s * inv_step for s in slopes]
    else:
        values, slopes = de_boor_local(x, span, g, derivative)
    first = span - g.order
    offsets = torch.arange(g.order + 1, device=x.device)
    index = first.unsqueeze(-1) + offsets  # (batch, in, order + 1)
    valid = (index >= 0) & (index < g.coeff)
    values = torch.stack(values, dim=-1).where(valid, 0)
    if slopes is not None:
        slopes = torch.stack(slopes, dim=-1).where(valid, 0)
    return first, values, slopes
