"""A fast, exact B-spline KAN: the reference's function, parameters and state dicts.

The reference evaluates every one of the ``grid_size + spline_order`` bases of every
feature by the Cox-de Boor recursion over the whole knot vector. Only
``spline_order + 1`` of them are non-zero at any point, so this module evaluates the
*local* bases instead (:func:`local_b_splines`):

* find the knot span ``m`` with ``t_m <= x < t_(m+1)`` (the reference's half-open
  intervals): on a uniform grid one ``floor`` corrected against the stored knots, on
  any other grid a vectorised binary search;
* evaluate the ``spline_order + 1`` bases ``m - spline_order .. m`` that live on that
  span: on a cardinal grid (uniform to the dtype's rounding, ``is_cardinal``) by the
  closed-form cardinal recursion in the local coordinate
  ``u = (x - t_m) / (t_(m+1) - t_m)`` of the stored knots, on any other grid by de
  Boor's triangle over the ``2 * spline_order`` knots around the span (the reference's
  formulas, restricted to the bases that are not zero), so that float32 knots, evenly
  spaced only to their rounding, get their own B-splines as in the reference.

Backward passes compute first-order gradients with these kernels; while autograd records
a backward (``create_graph=True``: Hessians, losses on input gradients) they go through
the reference's differentiable operations instead (``differentiable_grads``).

Two contractions turn local bases into outputs, chosen by the number of
coefficients per feature (measured crossovers, ``NATIVE_GATHER_MIN_COEFF`` and
``GATHER_MIN_COEFF``; ``python -m benchmarks.studies.crossover`` measures them), or
by the layer's ``contraction`` option (``"auto"``, ``"dense"``, ``"gather"``):

* dense (small grids): the layer's combined spline + base product
  ``[bases(x), silu(x)] @ [scaled spline weights; base weights]``, one matrix
  product with ``in * (grid_size + spline_order + 1)`` columns, computed over row
  chunks sized to stay in the CPU's cache so the basis never goes to memory;
* gather (large grids): each input reads only the ``spline_order + 1`` coefficient
  rows its local bases touch; the weight gradient sums, for each coefficient row,
  the samples whose knot span uses it.

Two implementations compute them. On the CPU, for float32 and float64, the C++
kernels of ``kan.native`` (built with the system's C++ compiler on first use):
vectorised local bases that never leave the cache, the dense operand written
straight from vector registers for PyTorch's matrix product, and a gather whose
weight gradient sorts each feature's samples by knot span so that a coefficient
row's sum stays in registers (and writes the spline weight and scaler gradients
from those sums); the default SiLU base activation in C++ as well. Elsewhere (CUDA,
MPS, or no compiler) PyTorch: on a uniform grid one float-only expression per chunk,
fused by ``torch.compile`` where that is on (eagerly otherwise), on other grids the
exact local bases scattered; the gather as an ``embedding_bag`` with per-sample weights.
The layer's ``backend`` option chooses: ``"auto"`` (the default) the C++ kernels where
they are available and take the tensor, else PyTorch; ``"native"`` the C++ kernels or an
error saying why they cannot run; ``"triton"`` the Triton kernels of ``kan.triton_spline``
(CUDA; uniform grids, spline orders 1 to 5; see ``docs/triton.md``), or an error saying why
they cannot run; ``"torch"`` PyTorch. ``"auto"`` does not take the Triton kernels yet: they
have been checked for correctness (Triton's interpreter, a compile for sm_90) but not yet
timed on a GPU, and the default waits for that measurement.

All of them run inside custom autograd functions that save the input (and the
combined weights, or the base activation) and recompute the bases in backward,
instead of keeping ``(batch, in, coeff)`` tensors alive; the C++ gather on a uniform
grid saves each input's knot span and local coordinate instead of the input, where
only the weights need gradients.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from kan import native
from kan.reference import KAN, KANLinear, b_splines, check_dtype, check_features, differentiable_grads
from kan.regions import BASE_BRANCH, BASIS, SPLINE_PRODUCT, region

# Contraction crossovers of contraction="auto": the gather contraction is used from this
# many coefficients per feature (grid_size + spline_order) on; below it the dense product.
# Measured apart for the PyTorch paths and for the C++ kernels
# (python -m benchmarks.studies.crossover). Read-only defaults: a layer's ``contraction``
# option forces either contraction.
GATHER_MIN_COEFF = 24
NATIVE_GATHER_MIN_COEFF = 5
# Bytes of dense basis per row chunk on the CPU: small enough to stay in the last-level
# cache between the kernel that writes it and the matrix product that reads it.
CHUNK_BYTES = 4 << 20
# Features per block in the gather forward: a block's coefficient rows stay in cache
# while every sample of the batch reads them.
GATHER_BLOCK_FEATURES = 16
# The layers' choices (constructor options of FastBSplineKANLinear and FastBSplineKAN).
BACKENDS = ("auto", "native", "torch", "triton")
CONTRACTIONS = ("auto", "dense", "gather")


def check_choice(option: str, value: str, valid: Sequence[str]) -> str:
    """``value`` if it is one of ``valid``; a one-line ValueError naming them otherwise."""
    if value not in valid:
        raise ValueError(f"{option} must be one of {', '.join(valid)}; got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def triton_kernels():
    """``kan.triton_spline`` (the Triton kernels), or None where Triton does not import."""
    try:
        from kan import triton_spline
    except Exception:  # not installed, or an install that fails to import: the other paths run
        return None
    return triton_spline


def gather_min_coeff(native_kernels: bool) -> int:
    """The crossover (coefficients per feature) for the C++ kernels or for the PyTorch paths."""
    return NATIVE_GATHER_MIN_COEFF if native_kernels else GATHER_MIN_COEFF


# --------------------------------------------------------------------------- non-finite values
#
# The local bases and the gathers skip what the reference's dense products multiply by
# zero, and 0 * inf and 0 * NaN are NaN: on NaN or infinite values the reference's
# outputs and gradients have NaN where the fast paths' would not. So a layer whose
# input is not all finite is computed by the reference's own forward (kan.reference:
# the same operations, the same NaN and inf), and a product whose upstream gradient is
# not all finite takes its gradients by autograd through those operations. One sum
# per tensor finds them, outside the kernels' loops.


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite: NaN and inf reach its sum. A sum that
    overflows from finite values also says no, which only sends them down the exact path;
    half-precision tensors are summed in float32, whose range their sums stay within."""
    wide = t.dtype in (torch.float32, torch.float64)
    return bool(torch.isfinite(t.sum() if wide else t.sum(dtype=torch.float32)))


def reference_layer(x, spline_weight, scaler, base_weight, geometry: KnotGeometry, activation) -> torch.Tensor:
    """The reference layer's forward (``KANLinear.forward``'s operations) on these weights and knots.

    x: (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None, base_weight (out, in) -> (batch, out).
    """
    bases = b_splines(x, geometry.knots_ext[:, 1:-1], geometry.order)  # (batch, in, coeff)
    scaled = spline_weight if scaler is None else spline_weight * scaler.unsqueeze(-1)
    spline = F.linear(bases.view(x.size(0), bases.size(1) * bases.size(2)), scaled.view(scaled.size(0), -1))
    return F.linear(activation(x), base_weight) + spline


def reference_grads(function, inputs: Sequence, needs: Sequence[bool], grad_out: torch.Tensor) -> list:
    """Gradients of ``function(*inputs)`` against ``grad_out``, by autograd, for the inputs
    whose flag in ``needs`` is set (None for the others); non-tensor inputs pass as they are."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(n)) if isinstance(t, torch.Tensor) else t for t, n in zip(inputs, needs)]
        wanted = [t for t, n in zip(leaves, needs) if n and isinstance(t, torch.Tensor)]
        found = iter(torch.autograd.grad(function(*leaves), wanted, grad_out, allow_unused=True) if wanted else ())
        grads = [next(found) if n and isinstance(t, torch.Tensor) else None for t, n in zip(leaves, needs)]
    return [torch.zeros_like(t) if g is None and n and isinstance(t, torch.Tensor) else g
            for g, t, n in zip(grads, inputs, needs)]


# --------------------------------------------------------------------------- geometry


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


def _row_gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
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
        lower = _row_gather(g.knots_ext, guess + 1)  # t_guess
        upper = _row_gather(g.knots_ext, guess + 2)  # t_(guess+1)
        return guess - (x < lower).long() + (x >= upper).long()
    low = torch.full_like(x, -1, dtype=torch.long)
    high = torch.full_like(x, g.knots, dtype=torch.long)
    for _ in range(math.ceil(math.log2(g.knots + 1))):
        middle = (low + high) // 2
        above = x >= _row_gather(g.knots_ext, middle + 1)
        low = torch.where(above, middle, low)
        high = torch.where(above, high, middle)
    return low


def _uniform_local(u: torch.Tensor, order: int, derivative: bool):
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


def _de_boor_local(x: torch.Tensor, span: torch.Tensor, geometry: KnotGeometry, derivative: bool):
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
    knots = [_row_gather(geometry.knots_padded, clamped + 1 + q) for q in range(2 * k)]
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
        lower = _row_gather(g.knots_ext, column)  # t_span
        inv_step = 1 / (_row_gather(g.knots_ext, column + 1) - lower)  # 1 / (t_(span+1) - t_span)
        u = (x - lower) * inv_step  # (batch, in)
        values, slopes = _uniform_local(u, g.order, derivative)
        if slopes is not None:
            slopes = [s * inv_step for s in slopes]
    else:
        values, slopes = _de_boor_local(x, span, g, derivative)
    first = span - g.order
    offsets = torch.arange(g.order + 1, device=x.device)
    index = first.unsqueeze(-1) + offsets  # (batch, in, order + 1)
    valid = (index >= 0) & (index < g.coeff)
    values = torch.stack(values, dim=-1).where(valid, 0)
    if slopes is not None:
        slopes = torch.stack(slopes, dim=-1).where(valid, 0)
    return first, values, slopes


# --------------------------------------------------------------------------- uniform kernels
#
# On a uniform grid every kernel below is one elementwise expression over float
# tensors: the knot span is ``floor`` of the knot coordinate, and one lookup in the knot
# table gives the local coordinate from the span's stored knot (``_uniform_span``).
# ``torch.compile`` fuses each into a single vectorised loop. They serve cardinal grids only
# (``KnotGeometry.cardinal``). Where that floor lands on the wrong side of a knot by rounding, the bases are continuous there
# (orders >= 1), so values move by rounding only; derivatives are continuous from
# order 2 on, and order 1's input gradient takes the exact path.


def _uniform_floor(x: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor, knots: int) -> torch.Tensor:
    """Knot span as a float in ``[-1, knots - 1]``: the floor of the knot coordinate."""
    return ((x - origin) * inv_step).clamp(-1, knots - 1).floor()


def _uniform_span(x: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor, knots_ext: torch.Tensor):
    """Knot span as a float in ``[-1, knots - 1]``, the local coordinate
    ``u = (x - t_span) / (t_(span+1) - t_span)`` and that interval's reciprocal length.

    x: (..., features), knots_ext: (features, knots + 2) (``KnotGeometry.knots_ext``).
    Both knots are the stored ones, as in the C++ kernels: knots made in float32 are
    evenly spaced only to their rounding, and the knot coordinate's fraction, or the
    mean step, would add that rounding, which grows with the grid (at grid 1000 hundreds
    of times the float32 reference's own error).
    """
    features, knots = knots_ext.size(0), knots_ext.size(1) - 2
    span = _uniform_floor(x, origin, inv_step, knots)
    column = span.clamp(0, knots - 2).long().reshape(-1, features) + 1  # t_span's column in knots_ext
    lower = _row_gather(knots_ext, column).view(x.shape)
    interval = 1 / (_row_gather(knots_ext, column + 1).view(x.shape) - lower)
    return span, (x - lower) * interval, interval


def _uniform_dense_bases(
    x: torch.Tensor, base: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor, knots_ext: torch.Tensor,
    order: int, coeff: int,
) -> torch.Tensor:
    """One row chunk of the combined product's left operand on a uniform grid.

    x, base: (rows, in) -> (rows, coeff + 1, in): the ``coeff`` B-spline bases of
    every feature, then ``base`` (the base activation). Features are innermost, so
    the fused loop vectorises over them.
    """
    span, u, _ = _uniform_span(x, origin, inv_step, knots_ext)
    values, _ = _uniform_local(u, order, derivative=False)  # order + 1 of (rows, in)
    position = torch.arange(coeff, device=x.device, dtype=x.dtype).view(1, coeff, 1) - (
        span - order
    ).unsqueeze(1)  # (rows, coeff, in): which local basis each dense basis is
    dense = torch.zeros((), device=x.device, dtype=x.dtype)
    for d, value in enumerate(values):
        dense = torch.where(position == d, value.unsqueeze(1), dense)
    return torch.cat([dense, base.unsqueeze(1)], dim=1)


def _uniform_input_grad(
    x: torch.Tensor, grad_columns: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor,
    knots_ext: torch.Tensor, order: int,
) -> torch.Tensor:
    """sum_c grad_columns[:, c, :] * d basis_c / dx on a uniform grid (order >= 2).

    x: (rows, in), grad_columns: (rows, coeff, in) -> (rows, in).
    """
    coeff = grad_columns.size(1)
    span, u, interval = _uniform_span(x, origin, inv_step, knots_ext)
    _, slopes = _uniform_local(u, order, derivative=True)
    position = torch.arange(coeff, device=x.device, dtype=x.dtype).view(1, coeff, 1) - (
        span - order
    ).unsqueeze(1)  # (rows, coeff, in)
    slope = torch.zeros((), device=x.device, dtype=x.dtype)
    for d, s in enumerate(slopes):
        slope = torch.where(position == d, s.unsqueeze(1), slope)
    return (grad_columns * slope).sum(1) * interval


def _uniform_bags(
    x: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor, knots_ext: torch.Tensor, order: int, coeff: int
):
    """Bag indices and weights of the gather forward on a uniform grid.

    x: (batch, blocks, block); origin, inv_step: (blocks, block), padding features
    with ``inv_step == 0``; knots_ext: (blocks * block, knots + 2) -> index
    (blocks * batch, block * (order + 1)) into the (in * coeff, out) table, weight of
    the same shape. Bag (blk, b) holds sample b's
    local bases of the features in block blk; bases that do not exist get weight 0.
    """
    batch, blocks, block = x.shape
    span, u, _ = _uniform_span(x, origin, inv_step, knots_ext)
    values, _ = _uniform_local(u, order, derivative=False)
    row = torch.arange(blocks * block, device=x.device).view(blocks, block) * coeff  # (blocks, block)
    index, weight = [], []
    for d, value in enumerate(values):
        position = span - order + d  # (batch, blocks, block)
        valid = (position >= 0) & (position < coeff) & (inv_step > 0)
        index.append(torch.where(valid, position.long() + row, 0))
        weight.append(torch.where(valid, value, 0))
    index = torch.stack(index, dim=-1).transpose(0, 1).reshape(blocks * batch, block * (order + 1))
    weight = torch.stack(weight, dim=-1).transpose(0, 1).reshape(blocks * batch, block * (order + 1))
    return index, weight


def _uniform_span_key(x: torch.Tensor, origin: torch.Tensor, inv_step: torch.Tensor, knots: int) -> torch.Tensor:
    """x: (batch, in) -> (in, batch) int64: span + 1, in ``[0, knots]``, features first."""
    return (_uniform_floor(x, origin, inv_step, knots) + 1).long().t()


def _uniform_sorted_values(
    xs: torch.Tensor, key: torch.Tensor, inv_step: torch.Tensor, knots_ext: torch.Tensor, order: int, coeff: int
) -> torch.Tensor:
    """Local bases of inputs sorted per feature. xs, key: (in, batch) -> (order + 1, in, batch)."""
    span = key.to(xs.dtype) - 1
    column = key.clamp(1, knots_ext.size(1) - 3)  # t_span's column, span in [0, knots - 2]
    lower = knots_ext.gather(1, column)  # (in, batch)
    u = (xs - lower) / (knots_ext.gather(1, column + 1) - lower)
    values, _ = _uniform_local(u, order, derivative=False)
    out = []
    for d, value in enumerate(values):
        position = span - order + d
        out.append(torch.where((position >= 0) & (position < coeff), value, 0))
    return torch.stack(out)


# --------------------------------------------------------------------------- compilation

_NO = ("0", "false", "no", "off")
_compile: dict = {"enabled": os.environ.get("KAN_FAST_COMPILE", "1").lower() not in _NO, "kernels": {}}


def set_compile(enabled: bool) -> None:
    """Turn the fused ``torch.compile`` kernels for uniform grids on or off.

    They are on by default (``KAN_FAST_COMPILE=0`` turns them off) wherever they can
    build: on the CPU with a C++ compiler, on CUDA with Triton. Off, or where a
    kernel fails to build, the same expressions run eagerly.
    """
    _compile["enabled"] = bool(enabled)


def compile_enabled(device: torch.device | str = "cpu") -> bool:
    """Whether uniform-grid kernels on ``device`` go through ``torch.compile``."""
    if not _compile["enabled"]:
        return False
    kind = torch.device(device).type
    if kind == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))
    if kind == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def _run(kernel, *args):
    """``kernel(*args)``, through ``torch.compile`` where that is on for the first argument's device."""
    if not compile_enabled(args[0].device) or torch.compiler.is_compiling():
        return kernel(*args)
    compiled = _compile["kernels"].get(kernel)
    if compiled is None:
        compiled = _compile["kernels"][kernel] = torch.compile(kernel)
    try:
        return compiled(*args)
    except Exception as error:  # a missing or broken toolchain: fall back for good
        warnings.warn(f"kan.fast: torch.compile failed ({type(error).__name__}: {error}); running eagerly")
        _compile["enabled"] = False
        return kernel(*args)


def _fused(geometry: KnotGeometry) -> bool:
    """Whether the uniform kernels apply: a cardinal grid and a continuous basis (order >= 1)."""
    return geometry.cardinal and geometry.order >= 1


# --------------------------------------------------------------------------- dense contraction


def _scatter_dense_bases(x: torch.Tensor, base: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """The same chunk as ``_uniform_dense_bases`` for any grid, from the exact local bases.

    x, base: (rows, in) -> (rows, (coeff + 1) * in), a strided view of a buffer
    (rows, coeff + 2, in). Local bases that do not exist (zero) land on the buffer's
    first row, which the view skips, or on the base row, which is written last, so
    the scatter needs no mask.
    """
    rows, in_features = x.shape
    g = geometry
    first, values, _ = local_b_splines(x, g)  # (rows, in), (rows, in, order + 1)
    buffer = x.new_empty(rows, g.coeff + 2, in_features)
    buffer[:, 1 : g.coeff + 1].zero_()
    index = first.unsqueeze(1) + torch.arange(g.order + 1, device=x.device).view(1, -1, 1)
    index = index.clamp(-1, g.coeff) + 1  # (rows, order + 1, in)
    buffer.scatter_(1, index, values.transpose(1, 2))
    buffer[:, g.coeff + 1].copy_(base)
    rows, depth, in_features = buffer.shape
    return buffer.as_strided(
        (rows, (g.coeff + 1) * in_features), (depth * in_features, 1), buffer.storage_offset() + in_features
    )


def dense_bases(x: torch.Tensor, base: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """(rows, in), (rows, in) -> (rows, (coeff + 1) * in): the combined product's left operand."""
    g = geometry
    if _fused(g):
        chunk = _run(_uniform_dense_bases, x, base, g.origin, g.inv_step, g.knots_ext, g.order, g.coeff)
        return chunk.view(x.size(0), -1)
    return _scatter_dense_bases(x, base, g)


def _chunk_rows(x: torch.Tensor, width: int) -> int:
    """Rows per chunk of a (rows, width) operand: cache-sized on the CPU, everything elsewhere."""
    if x.device.type != "cpu":
        return max(1, x.size(0))
    return max(8, min(x.size(0), CHUNK_BYTES // max(1, width * x.element_size())))


def _activate(activation: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """activation(x), no autograd, on the C++ paths: SiLU (the default) by the C++ kernel."""
    return native.silu(x) if type(activation) is torch.nn.SiLU else activation(x)


def _base_and_grad(activation: torch.nn.Module, x: torch.Tensor, grad_base: torch.Tensor,
                   native_kernels: bool) -> torch.Tensor:
    """d(activation(x))/dx applied to ``grad_base``, for any activation module; SiLU by the
    C++ kernel on the C++ paths."""
    if native_kernels and type(activation) is torch.nn.SiLU:
        return native.silu_grad(x, grad_base)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(activation(leaf), leaf, grad_base)
    return grad


def _local_input_grad(x: torch.Tensor, grad_columns: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """sum_c grad_columns[:, c, :] * d basis_c / dx over the local bases only.

    x: (rows, in), grad_columns: (rows, coeff, in) (a view) -> (rows, in).
    """
    g = geometry
    if _fused(g) and g.order >= 2:
        return _run(_uniform_input_grad, x, grad_columns, g.origin, g.inv_step, g.knots_ext, g.order)
    first, _, slopes = local_b_splines(x, g, derivative=True)  # slopes (rows, in, order + 1)
    index = first.unsqueeze(1) + torch.arange(g.order + 1, device=x.device).view(1, -1, 1)
    index = index.clamp(0, g.coeff - 1)  # (rows, order + 1, in); invalid slopes are zero
    return (grad_columns.gather(1, index) * slopes.transpose(1, 2)).sum(1)


class DenseSplineProduct(torch.autograd.Function):
    """``[bases(x), act(x)] @ weight_t`` by cache-sized row chunks, bases recomputed in backward.

    x: (batch, in), weight_t: ((coeff + 1) * in, out) -> (batch, out). Saves x and
    weight_t only.
    """

    @staticmethod
    def forward(ctx, x, weight_t, geometry, activation):
        batch, in_features = x.shape
        out = x.new_empty(batch, weight_t.size(1))
        rows = _chunk_rows(x, weight_t.size(0))
        for start in range(0, batch, rows):
            xc = x[start : start + rows]
            with region(BASE_BRANCH):
                base = activation(xc)
            with region(BASIS):
                chunk = dense_bases(xc, base, geometry)  # (rows, (coeff + 1) * in)
            with region(SPLINE_PRODUCT):
                torch.mm(chunk, weight_t, out=out[start : start + rows])
        ctx.save_for_backward(x, weight_t)
        ctx.geometry = geometry
        ctx.activation = activation
        return out

    @staticmethod
    def reference(x, weight_t, geometry, activation):
        """The same product from the reference's dense bases (for non-finite upstream gradients)."""
        bases = b_splines(x, geometry.knots_ext[:, 1:-1], geometry.order)  # (batch, in, coeff)
        cells = torch.cat([bases.transpose(1, 2), activation(x).unsqueeze(1)], dim=1)  # (batch, coeff + 1, in)
        return cells.reshape(x.size(0), weight_t.size(0)) @ weight_t

    @staticmethod
    def backward(ctx, grad_out):
        x, weight_t = ctx.saved_tensors
        g = ctx.geometry
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        function = lambda x, w: DenseSplineProduct.reference(x, w, g, ctx.activation)  # noqa: E731
        if torch.is_grad_enabled():  # create_graph: a backward that can itself be differentiated
            return (*differentiable_grads(function, (x, weight_t), (need_x, need_w), grad_out), None, None)
        if not all_finite(grad_out):
            return (*reference_grads(function, (x, weight_t), (need_x, need_w), grad_out), None, None)
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight_t) if need_w else None
        batch, in_features = x.shape
        rows = _chunk_rows(x, weight_t.size(0))
        for start in range(0, batch, rows):
            xc = x[start : start + rows]
            gc = grad_out[start : start + rows]
            if need_w:
                with region(BASIS):
                    chunk = dense_bases(xc, ctx.activation(xc), g)
                with region(SPLINE_PRODUCT):
                    grad_w.addmm_(chunk.t(), gc)
            if need_x:
                with region(SPLINE_PRODUCT):
                    grad_chunk = torch.mm(gc, weight_t.t()).view(-1, g.coeff + 1, in_features)
                with region(BASIS):
                    grad = _local_input_grad(xc, grad_chunk[:, : g.coeff], g)
                with region(BASE_BRANCH):
                    grad += _base_and_grad(ctx.activation, xc, grad_chunk[:, g.coeff], False)
                grad_x[start : start + rows] = grad
        return grad_x, grad_w, None, None


# --------------------------------------------------------------------------- gather contraction


def _table_rows(first: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """Rows of the (in * coeff, out) table that the local bases read.

    first: (batch, in) -> (batch, in, order + 1); bases that do not exist are clamped
    to a row of their feature (their weights are zero).
    """
    g = geometry
    index = first.unsqueeze(-1) + torch.arange(g.order + 1, device=first.device)
    rows = torch.arange(first.size(-1), device=first.device).unsqueeze(1) * g.coeff  # (in, 1)
    return index.clamp(0, g.coeff - 1) + rows


def _gather_bags(x: torch.Tensor, geometry: KnotGeometry, block: int):
    """Bag indices and weights for the gather forward, in feature blocks.

    x: (batch, in) -> index, weight: (blocks * batch, block * (order + 1)), and the
    number of blocks; bag (blk, b) holds sample b's local bases of the features in
    block blk, so one block's coefficient rows stay in cache across the batch.
    """
    g = geometry
    batch, in_features = x.shape
    blocks = -(-in_features // block)
    pad = blocks * block - in_features
    if _fused(g):
        origin, inv_step = F.pad(g.origin, (0, pad)), F.pad(g.inv_step, (0, pad))  # padding: step 0
        index, weight = _run(
            _uniform_bags,
            F.pad(x, (0, pad)).view(batch, blocks, block),
            origin.view(blocks, block),
            inv_step.view(blocks, block),
            F.pad(g.knots_ext, (0, 0, 0, pad)),
            g.order,
            g.coeff,
        )
        return index, weight, blocks
    first, values, _ = local_b_splines(x, g)  # (batch, in), (batch, in, order + 1)
    width = g.order + 1
    index = _table_rows(first, g)
    if pad:
        index = F.pad(index, (0, 0, 0, pad))
        values = F.pad(values, (0, 0, 0, pad))
    index = index.view(batch, blocks, block * width).transpose(0, 1).reshape(blocks * batch, -1)
    values = values.view(batch, blocks, block * width).transpose(0, 1).reshape(blocks * batch, -1)
    return index, values, blocks


def _gather_table_grad(x: torch.Tensor, grad_out: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """d table: for each coefficient row, the weighted sum of grad_out over the samples using it.

    x: (batch, in), grad_out: (batch, out) -> (in * coeff, out). Each feature's samples
    are sorted by knot span; the samples sharing a span form one bag per local
    position d (an ``embedding_bag`` over the rows of grad_out, which stays in cache).
    """
    g = geometry
    batch, in_features = x.shape
    buckets = g.knots + 1  # key = span + 1 in [0, knots]
    if _fused(g):
        key = _run(_uniform_span_key, x, g.origin, g.inv_step, g.knots)  # (in, batch)
    else:
        key = (knot_span(x, g) + 1).t()
    key, sample = torch.sort(key, dim=1)  # (in, batch), sample: which row of grad_out
    xs = x.t().gather(1, sample)  # (in, batch)
    if _fused(g):
        values = _run(_uniform_sorted_values, xs, key, g.inv_step, g.knots_ext, g.order, g.coeff)
    else:
        span = key - 1
        local, _ = _de_boor_local(xs.t(), span.t(), g, derivative=False)  # order + 1 of (batch, in)
        position = (span - g.order).unsqueeze(0) + torch.arange(g.order + 1, device=x.device).view(-1, 1, 1)
        values = torch.stack(local).transpose(1, 2).where((position >= 0) & (position < g.coeff), 0)
    # values: (order + 1, in, batch)
    counts = torch.bincount(
        (key + (torch.arange(in_features, device=x.device) * buckets).unsqueeze(1)).reshape(-1),
        minlength=in_features * buckets,
    )
    offsets = counts.cumsum(0) - counts
    sample = sample.reshape(-1)
    grad_t = grad_out.new_zeros(in_features, g.coeff, grad_out.size(1))
    for d in range(g.order + 1):
        bags = F.embedding_bag(
            sample, grad_out, offsets, per_sample_weights=values[d].reshape(-1), mode="sum"
        ).view(in_features, buckets, -1)  # bag (i, s) feeds coefficient s - 1 - order + d
        shift = 1 + g.order - d
        grad_t += bags[:, shift : shift + g.coeff]
    return grad_t.view(in_features * g.coeff, -1)


class GatherSplineProduct(torch.autograd.Function):
    """``sum_i sum_d values[b, i, d] * table[i, first[b, i] + d]`` without a dense basis.

    x: (batch, in), table: (in * coeff, out) -> (batch, out). Forward: one
    ``embedding_bag`` with per-sample weights over feature blocks. Backward: the
    table's gradient as transposed bags (samples sorted by knot span, one bag per
    coefficient row, reading rows of grad_out); the input's gradient from per-index
    dot products. Saves x and the table only.
    """

    @staticmethod
    def forward(ctx, x, table, geometry):
        batch = x.size(0)
        with region(BASIS):
            index, weight, blocks = _gather_bags(x, geometry, GATHER_BLOCK_FEATURES)
        with region(SPLINE_PRODUCT):
            out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
            out = out.view(blocks, batch, -1).sum(0)
        ctx.save_for_backward(x, table)
        ctx.geometry = geometry
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, table = ctx.saved_tensors
        g = ctx.geometry
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]

        def function(x, table):  # the reference's dense bases times the table
            return b_splines(x, g.knots_ext[:, 1:-1], g.order).reshape(x.size(0), table.size(0)) @ table

        if torch.is_grad_enabled():  # create_graph: a backward that can itself be differentiated
            return (*differentiable_grads(function, (x, table), (need_x, need_t), grad_out), None)
        if not all_finite(grad_out):
            return (*reference_grads(function, (x, table), (need_x, need_t), grad_out), None)
        grad_out = grad_out.contiguous()
        batch, in_features = x.shape
        grad_x = grad_t = None
        if need_t:
            with region(SPLINE_PRODUCT):
                grad_t = _gather_table_grad(x, grad_out, g)
        if need_x:
            width = g.order + 1
            with region(BASIS):
                first, _, slopes = local_b_splines(x, g, derivative=True)  # (batch, in), (batch, in, width)
            with region(SPLINE_PRODUCT):
                flat = _table_rows(first, g).reshape(-1)  # invalid slopes are zero
                bag = torch.arange(batch, device=x.device).repeat_interleave(in_features * width)
                offsets = torch.arange(0, flat.numel(), in_features * width, device=x.device)
                dots = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                    grad_out, table, flat, offsets, bag, 0
                ).view(batch, in_features, width)  # grad_out[b] . table[index[b, i, d]]
            with region(BASIS):
                grad_x = (dots * slopes).sum(-1)
        return grad_x, grad_t, None

# --------------------------------------------------------------------------- C++ kernels (CPU)
#
# On the CPU, where kan.native's kernels build, both contractions run there: the
# local bases are evaluated inside each kernel, vectorised over features, and never
# stored for the whole batch. The dense product keeps its matrix product in PyTorch
# (the BLAS), over row chunks of a cache-sized buffer that the C++ writes. The dense
# weight is (out, (coeff + 1) * in), basis-major like the chunks, whose every column
# the C++ writes straight from vector registers; the gather table is (in, coeff, out).


def _remember(ctx, geometry: KnotGeometry, activation: torch.nn.Module) -> None:
    """What a native product's backward reads besides its saved tensors; inputs 1 and 2 are
    spline_weight and its scaler."""
    ctx.geometry = geometry
    ctx.activation = activation
    ctx.needs_weight, ctx.needs_scaler = ctx.needs_input_grad[1], ctx.needs_input_grad[2]


def _reference_product_grads(ctx, grad_out, x, spline_weight, scaler, base_weight) -> tuple:
    """A native product's backward by autograd through the reference layer: differentiable
    (``differentiable_grads``) while autograd records the backward, else for a non-finite grad_out."""
    function = lambda *a: reference_layer(*a, ctx.geometry, ctx.activation)  # noqa: E731
    inputs = (x, spline_weight, scaler, base_weight)
    grads = differentiable_grads if torch.is_grad_enabled() else reference_grads
    return (*grads(function, inputs, ctx.needs_input_grad[:4], grad_out), None, None)


def _spline_grads(ctx, grad_scaled: torch.Tensor, spline_weight, scaler):
    """Gradients of spline_weight and its scaler from that of their product, grad_scaled (out, in, coeff)."""
    if not (ctx.needs_weight or ctx.needs_scaler):
        return None, None
    grad_weight, grad_scaler = native.spline_grads(grad_scaled, spline_weight, scaler, ctx.needs_scaler)
    return (grad_weight if ctx.needs_weight else None), grad_scaler


def _native_dense_chunks(x: torch.Tensor, base: torch.Tensor, geometry: KnotGeometry, width: int):
    """(rows, chunk) over cache-sized row slices of x: chunk (len(rows), width) is the dense operand
    ``[bases, base]`` of those rows, written by C++ into one buffer that every chunk reuses."""
    step = _chunk_rows(x, width)
    buffer = x.new_empty(step * width)
    for start in range(0, x.size(0), step):
        rows = slice(start, min(start + step, x.size(0)))
        chunk = buffer[: (rows.stop - start) * width].view(-1, width)
        with region(BASIS):
            native.dense_bases(x[rows], base[rows], geometry, out=chunk)
        yield rows, chunk  # outside the region: the caller's product is not basis work


class NativeDenseProduct(torch.autograd.Function):
    """The layer's output by the combined dense product, with the bases written by C++.

    ``[bases(x), act(x)] @ W.T`` over row chunks of a cache-sized buffer, where
    W (out, coeff + 1, in) holds the scaled spline weights, then the base weights.
    x: (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None,
    base_weight (out, in) -> (batch, out). Saves x, act(x) and W; the bases are
    recomputed in backward. Gradients of the three weights come out directly, so
    autograd does no work on (out, in, coeff) tensors of its own.
    """

    @staticmethod
    def forward(ctx, x, spline_weight, scaler, base_weight, geometry, activation):
        batch, in_features = x.shape
        out_features, coeff = spline_weight.size(0), geometry.coeff
        weight = x.new_empty(out_features, coeff + 1, in_features)
        native.scale_spline(spline_weight, scaler, weight[:, :coeff].transpose(1, 2))
        weight[:, coeff] = base_weight
        weight = weight.view(out_features, -1)  # (out, (coeff + 1) * in), basis-major like the chunks
        with region(BASE_BRANCH):
            base = _activate(activation, x)
        out = x.new_empty(batch, out_features)
        for rows, chunk in _native_dense_chunks(x, base, geometry, weight.size(1)):
            with region(SPLINE_PRODUCT):
                torch.mm(chunk, weight.t(), out=out[rows])
        ctx.save_for_backward(x, base, weight, spline_weight, scaler, base_weight)
        _remember(ctx, geometry, activation)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, base, weight, spline_weight, scaler, base_weight = ctx.saved_tensors
        g = ctx.geometry
        if torch.is_grad_enabled() or not all_finite(grad_out):
            return _reference_product_grads(ctx, grad_out, x, spline_weight, scaler, base_weight)
        need_x = ctx.needs_input_grad[0]
        need_w = any(ctx.needs_input_grad[1:4])
        grad_out = grad_out.contiguous()
        in_features = x.size(1)
        out_features, width = weight.shape
        grad_x = grad_spline = grad_scaler = grad_base_weight = None
        if need_w:
            grad_w_t = weight.new_empty(width, out_features)  # ((coeff + 1) * in, out)
            for rows, chunk in _native_dense_chunks(x, base, g, width):
                with region(SPLINE_PRODUCT):
                    if rows.start == 0:
                        torch.mm(chunk.t(), grad_out[rows], out=grad_w_t)
                    else:
                        grad_w_t.addmm_(chunk.t(), grad_out[rows])
            grad_w_t = grad_w_t.view(g.coeff + 1, in_features, out_features)
            grad_spline, grad_scaler = _spline_grads(ctx, grad_w_t[: g.coeff].permute(2, 1, 0), spline_weight, scaler)
            if ctx.needs_input_grad[3]:
                grad_base_weight = grad_w_t[g.coeff].t().contiguous()
        if need_x:
            weight = weight.view(out_features, g.coeff + 1, in_features)
            table = weight[:, : g.coeff].permute(2, 1, 0).contiguous()  # (in, coeff, out)
            with region(BASIS):
                grad_x = native.gather_input_grad(x, table, grad_out, g)
            with region(BASE_BRANCH):
                grad_x += _base_and_grad(ctx.activation, x, grad_out @ weight[:, g.coeff], True)
        return grad_x, grad_spline, grad_scaler, grad_base_weight, None, None


class NativeGatherProduct(torch.autograd.Function):
    """The layer's output: the spline part by gathering table rows in C++, plus the base branch.

    ``sum_i sum_d values[b, i, d] * table[i, first[b, i] + d] + act(x) @ base_weight.T``.
    x: (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None,
    base_weight (out, in) -> (batch, out); the table (in, coeff, out) holds the scaled
    spline weights. No dense basis: backward sums each feature's samples, sorted by knot
    span, straight into the spline weight and scaler gradients (the table's own gradient
    is never formed), and forms the input's from the bases' slopes. Saves x and act(x);
    the table only where the input's gradient is wanted. On a uniform grid, when the spline weights need gradients,
    the forward also saves each input's knot span and local coordinate
    (``native.SavedSpans``, 6 bytes per float32 input), so that backward does not find
    them again: the table gradient then gains more than saving costs the forward.
    """

    @staticmethod
    def forward(ctx, x, spline_weight, scaler, base_weight, geometry, activation):
        out_features, in_features, coeff = spline_weight.shape
        _remember(ctx, geometry, activation)
        table = x.new_empty(in_features, coeff, out_features)
        native.scale_spline(spline_weight, scaler, table.permute(2, 0, 1))
        with region(BASE_BRANCH):
            base = _activate(activation, x)
        save = (ctx.needs_weight or ctx.needs_scaler) and native.can_save(geometry)
        with region(SPLINE_PRODUCT):
            out, spans = native.gather_forward(x, table, geometry, save=True) if save else (
                native.gather_forward(x, table, geometry), None)
        with region(BASE_BRANCH):
            out.addmm_(base, base_weight.t())
        keep_x = True  # also read by the backward of a non-finite grad_out
        u, span = spans if spans is not None else (None, None)
        keep_table = ctx.needs_input_grad[0]  # only the input's gradient reads the table
        ctx.save_for_backward(x if keep_x else None, base, table if keep_table else None, spline_weight, scaler,
                              base_weight, u, span)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, base, table, spline_weight, scaler, base_weight, u, span = ctx.saved_tensors
        g = ctx.geometry
        if torch.is_grad_enabled() or not all_finite(grad_out):
            return _reference_product_grads(ctx, grad_out, x, spline_weight, scaler, base_weight)
        grad_out = grad_out.contiguous()
        grad_x = grad_spline = grad_scaler = grad_base_weight = None
        if ctx.needs_weight or ctx.needs_scaler:
            saved = None if u is None else native.SavedSpans(u, span)
            with region(SPLINE_PRODUCT):  # through the table's gradient, which is not kept
                grad_spline, grad_scaler = native.gather_weight_grads(
                    x, grad_out, g, spline_weight, scaler, ctx.needs_scaler, saved=saved
                )
            grad_spline = grad_spline if ctx.needs_weight else None
        if ctx.needs_input_grad[3]:
            with region(BASE_BRANCH):
                grad_base_weight = grad_out.t() @ base
        if ctx.needs_input_grad[0]:
            with region(BASIS):
                grad_x = native.gather_input_grad(x, table, grad_out, g)
            with region(BASE_BRANCH):
                grad_x += _base_and_grad(ctx.activation, x, grad_out @ base_weight, True)
        return grad_x, grad_spline, grad_scaler, grad_base_weight, None, None


# --------------------------------------------------------------------------- models


class FastBSplineKANLinear(KANLinear):
    """``KANLinear`` with the same parameters, buffers and function, computed from local bases.

    Construction, ``update_grid``, ``curve2coeff``, ``regularization_loss`` and the
    dense ``b_splines`` are the reference's own; only ``forward`` differs, and it too is
    the reference's on an input with NaN or inf (whose pattern of NaN and inf in outputs
    and gradients the local bases would not reproduce) or with no rows. Two options
    choose how forward computes, and are not part of the state dict:

    * ``backend``: ``"auto"`` (default) the C++ kernels of ``kan.native`` where they are
      available (built, not turned off by ``KAN_NATIVE=0``) and take the input (CPU,
      float32/float64, spline order up to ``native.MAX_ORDER``), else PyTorch;
      ``"native"`` the C++ kernels, or a ValueError saying why they cannot run;
      ``"torch"`` PyTorch (as on CUDA or without a compiler); ``"triton"`` the Triton
      kernels (see ``uses_triton``).
    * ``contraction``: ``"auto"`` (default) dense below the backend's crossover
      (``NATIVE_GATHER_MIN_COEFF`` or ``GATHER_MIN_COEFF`` coefficients per feature),
      gather from it on; ``"dense"`` or ``"gather"`` that contraction at any grid.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        enable_standalone_scale_spline: bool = True,
        base_activation: type[torch.nn.Module] = torch.nn.SiLU,
        grid_eps: float = 0.02,
        grid_range: Sequence[float] = (-1, 1),
        backend: str = "auto",
        contraction: str = "auto",
    ):
        check_choice("backend", backend, BACKENDS)
        check_choice("contraction", contraction, CONTRACTIONS)
        super().__init__(in_features, out_features, grid_size, spline_order, scale_noise, scale_base, scale_spline,
                         enable_standalone_scale_spline, base_activation, grid_eps, grid_range)
        self.backend, self.contraction = backend, contraction

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, contraction={self.contraction!r}"

    def knot_geometry(self) -> KnotGeometry:
        """The grid's analysis, recomputed whenever the grid buffer changes.

        Cached on the buffer's identity, version counter and storage; on the CPU also
        checked against a copy of the knots, so an edit that bypasses the version
        counter (``grid.data.copy_``) cannot leave a stale uniform flag behind.
        """
        grid = self.grid
        key = (grid._version, grid.data_ptr(), grid.dtype, grid.device, tuple(grid.shape), self.spline_order)
        cached = self.__dict__.get("_knot_cache")
        if (
            cached is not None
            and cached[0] is grid
            and cached[1] == key
            and (grid.device.type != "cpu" or torch.equal(cached[2], grid))
        ):
            return cached[3]
        geometry = knot_geometry(grid, self.spline_order)
        self.__dict__["_knot_cache"] = (grid, key, grid.clone(), geometry)
        return geometry

    def uses_native(self, x: torch.Tensor) -> bool:
        """Whether forward on a tensor like ``x`` runs the C++ kernels (see ``backend``)."""
        if self.backend in ("torch", "triton"):
            return False
        if native.supports(x, self.spline_order):
            return True
        if self.backend == "native":
            raise ValueError(f"backend='native' cannot run here: {self._why_not_native(x)}; "
                             "use backend='auto' or 'torch'")
        return False

    def _why_not_native(self, x: torch.Tensor) -> str:
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return f"the C++ kernels take float32 or float64 CPU tensors, not {x.dtype} on {x.device.type}"
        if not native.available():
            return f"the C++ kernels are unavailable ({native.error()})"
        return f"the C++ kernels take spline orders 0 to {native.MAX_ORDER}, not {self.spline_order}"

    def uses_triton(self, x: torch.Tensor) -> bool:
        """Whether forward on a tensor like ``x`` runs the Triton kernels (``kan.triton_spline``).

        Only ``backend="triton"`` takes them, wherever they can run (CUDA, or CPU tensors
        under ``TRITON_INTERPRET=1``), else a ValueError saying why; ``"auto"`` keeps the
        PyTorch path on CUDA until the kernels' speed has been measured on a GPU. A layer they do not compute (adapted grid, spline order
        outside 1..5, another base activation, a dtype other than float32 and float64) takes the PyTorch path,
        with a warning said once per layer.
        """
        if self.backend != "triton":
            return False
        kernels = triton_kernels()
        if kernels is None:
            if self.backend == "triton":
                raise ValueError("backend='triton' cannot run here: Triton is not installed; "
                                 "use backend='auto' or 'torch'")
            return False
        device_reason = kernels.why_not_device(x)
        if device_reason is not None:
            if self.backend == "triton":
                raise ValueError(f"backend='triton' cannot run here: {device_reason}; use backend='auto' or 'torch'")
            return False
        geometry = self.knot_geometry()
        reason = kernels.why_not_layer(x, self.spline_order, geometry.uniform,
                                       type(self.base_activation) is torch.nn.SiLU, geometry.cardinal)
        if reason is None:
            return True
        if not self.__dict__.get("_triton_warned"):
            self.__dict__["_triton_warned"] = True
            warnings.warn(f"kan.fast: this layer takes the PyTorch path, not the Triton kernels: {reason}")
        return False

    def uses_gather(self) -> bool:
        """Whether forward contracts by gathering coefficient rows (large grids) or densely.

        ``contraction`` if it names one; else the crossover of the path this layer's
        tensors take: the C++ kernels on the CPU where they build, else the PyTorch paths.
        """
        return self._gathers(self.uses_native(self.grid))

    def _gathers(self, native_kernels: bool) -> bool:
        if self.contraction != "auto":
            return self.contraction == "gather"
        return self.grid_size + self.spline_order >= gather_min_coeff(native_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.in_features)
        check_dtype(x, self.spline_weight)
        if x.numel() == 0:  # the reference's operations: its empty batch
            return super().forward(x)
        original_shape = x.shape
        flat = x.reshape(-1, self.in_features)  # (batch, in)
        if self.uses_triton(flat):  # the kernels give the reference's NaN and inf themselves: no check here
            scaler = self.spline_scaler if self.enable_standalone_scale_spline else None
            output = triton_kernels().layer(flat, self.spline_weight, scaler, self.base_weight, self.grid,
                                            self.spline_order)
            return output.reshape(*original_shape[:-1], self.out_features)
        native_kernels = self.uses_native(flat)
        if native_kernels and type(self.base_activation) is torch.nn.SiLU:
            # The C++ kernels take any input safely, and with SiLU a NaN or inf input always
            # reaches the output through the base branch (silu of NaN or +-inf is NaN or inf, and
            # NaN or inf times any weight is not finite): checking the output (batch, out) finds
            # what checking the input (batch, in) would, for a fraction of the reading.
            output = self._fast(flat, native_kernels)
            if all_finite(output):
                return output.reshape(*original_shape[:-1], self.out_features)
        elif all_finite(flat):
            return self._fast(flat, native_kernels).reshape(*original_shape[:-1], self.out_features)
        return super().forward(x)  # the reference's operations: its NaN and inf

    def _fast(self, x: torch.Tensor, native_kernels: bool) -> torch.Tensor:
        """x (batch, in), all finite -> (batch, out), by the local bases on the chosen path."""
        geometry = self.knot_geometry()
        gather = self._gathers(native_kernels)
        if native_kernels:
            scaler = self.spline_scaler if self.enable_standalone_scale_spline else None
            product = NativeGatherProduct if gather else NativeDenseProduct
            output = product.apply(x, self.spline_weight, scaler, self.base_weight, geometry, self.base_activation)
        elif gather:
            with region(BASE_BRANCH):
                base_output = F.linear(self.base_activation(x), self.base_weight)  # (batch, out)
            table = self.scaled_spline_weight.permute(1, 2, 0).contiguous()  # (in, coeff, out)
            output = base_output + GatherSplineProduct.apply(x, table.view(-1, self.out_features), geometry)
        else:
            weight_t = torch.cat(
                [self.scaled_spline_weight.permute(2, 1, 0), self.base_weight.t().unsqueeze(0)]
            ).reshape(-1, self.out_features)  # ((coeff + 1) * in, out), row c * in + i
            output = DenseSplineProduct.apply(x, weight_t, geometry, self.base_activation)
        return output


class FastBSplineKAN(KAN):
    """``KAN`` built from ``FastBSplineKANLinear`` layers: same options, state dict and seed
    behaviour, plus the layers' ``backend`` and ``contraction`` (see FastBSplineKANLinear)."""

    layer_class = FastBSplineKANLinear

    def __init__(
        self,
        layers_hidden: Sequence[int],
        grid_size: int = 5,
        spline_order: int = 3,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        enable_standalone_scale_spline: bool = True,
        base_activation: type[torch.nn.Module] = torch.nn.SiLU,
        grid_eps: float = 0.02,
        grid_range: Sequence[float] = (-1, 1),
        backend: str = "auto",
        contraction: str = "auto",
    ):
        check_choice("backend", backend, BACKENDS)
        check_choice("contraction", contraction, CONTRACTIONS)
        # every layer built with this model's choices (an instance attribute over the class's)
        self.layer_class = functools.partial(FastBSplineKANLinear, backend=backend, contraction=contraction)
        super().__init__(layers_hidden, grid_size, spline_order, scale_noise, scale_base, scale_spline,
                         enable_standalone_scale_spline, base_activation, grid_eps, grid_range)


# --------------------------------------------------------------------------- FLOPs


def layer_forward_flops(
    in_features: int, out_features: int, batch: int, grid_size: int, spline_order: int, scaled: bool = True,
    native_kernels: bool | None = None, contraction: str = "auto",
) -> int:
    """FLOPs of one ``FastBSplineKANLinear.forward`` on ``batch`` rows (kan.zoo's convention).

    The work this layer does, which is less than the reference's: knot span and local
    coordinate (subtract, multiply, floor, subtract: 4 per element); the local bases
    by the cardinal recursion (per level r, r + 1 bases of at most two multiply-adds
    and a scale: 5 per basis); the base branch (SiLU, 4 per element); the scaler
    multiply; then the contraction: dense, one (batch, in * (coeff + 1)) x
    (in * (coeff + 1), out) product, or gathered, ``spline_order + 1`` multiply-adds
    per input, output and sample plus the base product. Which contraction is
    ``contraction``'s, or with "auto" that of ``native_kernels`` (the C++ kernels or the
    PyTorch paths); None: the one a float32 CPU input takes in this process (the C++
    kernels where they are on and can build; counting does not build them).
    """
    b, i, o = batch, in_features, out_features
    coeff = grid_size + spline_order
    basis = 4 * b * i + sum(5 * (r + 1) * b * i for r in range(1, spline_order + 1))
    base = 4 * b * i
    scaler = o * i * coeff if scaled else 0
    if native_kernels is None:
        native_kernels = native.expected() and spline_order <= native.MAX_ORDER
    gather = contraction == "gather" if contraction != "auto" else coeff >= gather_min_coeff(native_kernels)
    if gather:
        product = 2 * b * i * (spline_order + 1) * o + 2 * b * i * o + b * o
    else:
        product = 2 * b * i * (coeff + 1) * o
    return basis + base + scaler + product


def forward_flops(widths: Sequence[int], batch: int, grid_size: int = 5, spline_order: int = 3,
                  enable_standalone_scale_spline: bool = True, backend: str = "auto", contraction: str = "auto",
                  **_unused) -> int:
    """FLOPs of one ``FastBSplineKAN.forward`` on ``batch`` rows; options that do not change the count are ignored."""
    check_choice("backend", backend, BACKENDS)
    check_choice("contraction", contraction, CONTRACTIONS)
    native_kernels = {"auto": None, "native": True, "torch": False, "triton": False}[backend]
    if backend == "triton":  # the Triton kernels contract densely at every grid
        contraction = "dense"
    return sum(
        layer_forward_flops(i, o, batch, grid_size, spline_order, enable_standalone_scale_spline, native_kernels,
                            contraction)
        for i, o in zip(widths, widths[1:])
    )
