"""Triton kernels for kan-fast's uniform-grid B-spline layer (``backend="triton"``).

One layer computes ``y = [B(x), silu(x)] @ W`` where ``B(x)`` holds the ``coeff =
grid_size + spline_order`` B-spline bases of every feature and ``W`` stacks, for
feature ``i``, the scaled spline weights ``spline_weight[:, i, c] * scaler[:, i]``
(columns ``c < coeff``) and the base weights ``base_weight[:, i]`` (column ``coeff``).
The contraction index is flattened, ``k = i * (coeff + 1) + c``, so no feature is
padded to a power of two in the forward and in the weight gradient.

Kernels (each launch one of them; ``launches()`` says how many per layer):

* ``_forward_kernel``: tiles (rows, outputs); loops over ``k``; the basis tile is
  built in registers from ``x`` (knot span by ``floor`` against the stored knots,
  corrected by one comparison either side; local coordinate ``u = (x - t_m) /
  (t_(m+1) - t_m)`` from the stored knots of that interval; the cardinal recursion, or
  on a grid whose float knots are not evenly spaced to rounding de Boor's triangle over
  the stored knots; zero outside the ``order + 1`` local bases) and the weight tile is read straight
  from ``spline_weight``, ``scaler`` and ``base_weight``; both meet in ``tl.dot``. At large
  shapes (``stores_bases``) the basis tile is read instead from the buffers of
  ``_local_bases_kernel`` (below), launched once before it: each point's recursion is then
  evaluated once, not once per column of its feature and per tile of outputs.
* ``_weight_grad_kernel``: tiles (k, outputs); loops over rows; the same basis tile
  (evaluated or read, as the forward's), transposed, times ``grad_out``; writes the
  spline-weight and base-weight gradients and, with a scaler, ``grad * spline_weight`` whose
  sum over ``c`` (one reduction launch) is the scaler's gradient.
* ``_input_grad_kernel``: tiles (rows, features); for a block of features the
  columns are padded to a power of two (the reshape that sums each feature's
  columns needs it); ``grad_out @ W^T`` by ``tl.dot`` over the outputs, times the
  bases' derivatives (and SiLU's), summed per feature.

The gather kernels, for large grids (``gather=True``; the layer's ``contraction``), use that a
point touches only ``order + 1`` of the ``coeff`` bases. A coefficient table ``(in, coeff, out)``
(the scaled spline weights, outputs contiguous; one elementwise kernel per call, not saved)
replaces the dense product:

* ``_local_bases_kernel``: each point's span, ``order + 1`` local bases and SiLU, evaluated
  once per point into feature-major buffers (else every thread along a row's outputs in the
  gather forward would repeat the row's recursion);
* ``_gather_forward_kernel``: tiles (rows, outputs); loops over the features; per row
  the span and local bases from those buffers, and as many coalesced reads of the table rows
  the span selects, multiplied and added in registers, plus the base branch;
* ``_gather_input_grad_kernel``: tiles (rows, one feature); loops over the outputs;
  ``grad_out`` times the bases' derivatives dotted with the same table rows, plus SiLU's;
* ``_gather_weight_grad_kernel``: programs (features x blocks of coefficients, outputs); each feature's
  points sorted by span (``torch.sort``), so that coefficient c sums, in order, the contiguous
  range of points whose span lies in [c, c + order] (the only ones its basis touches), found by
  ``torch.searchsorted``; no atomics. SiLU's column is one ``torch`` matrix product. Where the
  rows summed do not make the dense product's NaN themselves (a non-finite input elsewhere in the
  feature; a non-finite ``grad_out`` entry in a row not summed, which the dense product meets
  with an exact 0), it is set from two counts.

No host synchronisation: NaN and infinite inputs are not detected on the host.
The kernels give a non-finite input all-NaN spline bases (the reference's Cox-de
Boor recursion does, from order 1 on) and the same SiLU and SiLU derivative as
torch; the dense products then make of them, and of a non-finite ``grad_out``,
what the reference's dense products make (``0 * inf = NaN`` included), because they
are the same dense products.

``tl.dot`` runs in IEEE float32 unless ``torch.backends.cuda.matmul.allow_tf32`` is
set (then TF32); ``math_mode`` says which. Float64 layers run the same kernels with
float64 dot products (IEEE).

Double backward: the operators' backward computes, when it is itself being
differentiated (``torch.is_grad_enabled()`` inside it), the gradients by autograd
through the reference's operations (``kan.reference.b_splines``), so second-order
gradients are exact.

Triton is imported here; ``kan.fast`` imports this module only when a layer may use
it, so ``import kan`` works without Triton.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import torch.nn.functional as F

import triton
import triton.language as tl

from kan.bspline import is_cardinal
from kan.reference import b_splines, differentiable_grads

MAX_ORDER = 5
# Launch options of every kernel. Eight warps: at four, a thread of the tiles below holds more
# than the 255 registers a thread has (accumulator, basis tile, and the gather kernels' per-row
# bases), and the kernels spill to local memory; python -m benchmarks.studies.triton_compile
# shows each kernel's registers and spills without a GPU. One stage: the loop's loads are
# gathers whose addresses depend on one another (input, span, knots), which the software
# pipeliner would stage in shared memory several times over (float64 at three stages does not
# fit an H100's).
NUM_WARPS = 8
NUM_STAGES = 1
NAN = tl.constexpr(float("nan"))
INF = tl.constexpr(float("inf"))


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's interpreter (TRITON_INTERPRET=1 when it was imported)."""
    return type(_finite).__name__ == "InterpretedFunction"  # any of the jit functions: all or none are interpreted


def math_mode(x: torch.Tensor, gather: bool = False) -> str:
    """Which arithmetic the kernels' products use for a tensor like ``x``: "fp64", "tf32" or "fp32".
    The gather kernels multiply and add in the tensor's own precision (no ``tl.dot``)."""
    if x.dtype == torch.float64:
        return "fp64"
    if x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 and not gather:
        return "tf32"
    return "fp32"


def why_not_device(x: torch.Tensor) -> Optional[str]:
    """None if the kernels can run on ``x``'s device here; else the reason, in a few words."""
    if x.device.type == "cuda" or (x.device.type == "cpu" and interpreted()):
        return None
    return (f"the Triton kernels run on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1 set before "
            f"kan.triton_spline is imported), not on {x.device.type}")


# The kernels index their tensors with 32-bit integers; the gather input gradient launches one
# program per feature in the grid's second dimension, which CUDA bounds.
MAX_ELEMENTS = 2 ** 31 - 1
MAX_FEATURES = 65535


def why_not_layer(x: torch.Tensor, order: int, uniform: bool, silu: bool, out_features: int = 1,
                  coeff: int = 1) -> Optional[str]:
    """None if the kernels compute a layer of this spline order, grid and activation on ``x`` (batch,
    in); else why not.

    Any uniform grid: where its float knots are evenly spaced to rounding (``kan.fast.is_cardinal``)
    the kernels evaluate the cardinal recursion, elsewhere (large float32 grids) de Boor's triangle
    over the stored knots, as the reference does. No tensor the kernels read or write may hold more
    than ``MAX_ELEMENTS`` (the input, the output, the weights, the local bases' buffer), and the
    input at most ``MAX_FEATURES`` features."""
    if not silu:
        return "the kernels compute the default SiLU base activation only"
    if not 1 <= order <= MAX_ORDER:
        return f"the kernels take spline orders 1 to {MAX_ORDER}, not {order}"
    if not uniform:
        return "the grid is not uniform (update_grid adapted it)"
    if x.dtype not in (torch.float32, torch.float64):
        return f"the kernels take float32 or float64, not {x.dtype}"
    batch, in_features = x.shape
    if in_features > MAX_FEATURES:
        return f"{in_features} input features, more than the kernels launch ({MAX_FEATURES})"
    largest = max(batch * in_features * (order + 1), batch * out_features, out_features * in_features * (coeff + 1))
    if largest > MAX_ELEMENTS:
        return f"a tensor of {largest} elements, more than the kernels' 32-bit indices reach ({MAX_ELEMENTS})"
    return None


# The local bases of a point, as tuples (values, x-slopes) over the local index d = 0..ORDER
# (basis span - ORDER + d). Every loop below is unrolled (static_range): each tuple entry is a
# register tensor, and an index is a compile-time constant.


@triton.jit
def _cardinal(u, width, ORDER: tl.constexpr):
    """The cardinal recursion on one knot interval, u in [0, 1): order j from order j - 1 by
    b_j,r = b_j-1,r-1 * (u + j - r) / j + b_j-1,r * (r + 1 - u) / j (terms outside 0..j-1 are zero);
    the slope in u of b_k,r is b_k-1,r-1 - b_k-1,r, divided by ``width`` for the slope in x."""
    a = (1.0 + 0.0 * u,)  # order 0
    for j in tl.static_range(1, ORDER):
        n = ()
        for r in tl.static_range(j + 1):
            if r == 0:
                b = a[0] * ((1.0 - u) / j)
            elif r == j:
                b = a[r - 1] * ((u + 0.0) / j)
            else:
                b = a[r - 1] * ((u + (j - r)) / j) + a[r] * (((r + 1) - u) / j)
            n = n + (b,)
        a = n
    values = ()
    slopes = ()
    for r in tl.static_range(ORDER + 1):
        if r == 0:
            b = a[0] * ((1.0 - u) / ORDER)
            slope = -a[0]
        elif r == ORDER:
            b = a[r - 1] * ((u + 0.0) / ORDER)
            slope = a[r - 1]
        else:
            b = a[r - 1] * ((u + (ORDER - r)) / ORDER) + a[r] * (((r + 1) - u) / ORDER)
            slope = a[r - 1] - a[r]
        values = values + (b,)
        slopes = slopes + (slope / width,)
    return values, slopes


# De Boor's triangle over the stored knots, for uniform grids whose float knots are not evenly
# spaced to rounding (kan.fast.is_cardinal): the reference's recursion, B_(i,j) =
# (x - t_i) / (t_(i+j) - t_i) * B_(i,j-1) + (t_(i+j+1) - x) / (t_(i+j+1) - t_(i+1)) * B_(i+1,j-1),
# on the j + 1 bases span - j .. span of level j.


@triton.jit
def _knots(row, span, inside, first, last, ORDER: tl.constexpr, KNOTS: tl.constexpr):
    """The stored knots span - ORDER .. span + ORDER + 1 of a feature's row (entry o + ORDER is knot
    span + o). Past the stored ones, the end knot moved on by the mean step: the bases that use those
    knots do not exist, and this keeps the triangle's divisions finite."""
    step = (last - first) / (KNOTS - 1)
    w = ()
    for o in tl.static_range(2 * ORDER + 2):
        j = span + (o - ORDER)
        stored = tl.load(row + tl.minimum(tl.maximum(j, 0), KNOTS - 1), mask=inside, other=0.0)
        stored = tl.where(inside, stored, j.to(step.dtype))  # distinct knots on rows that do not exist
        beyond = tl.where(j < 0, first + j.to(step.dtype) * step, last + (j - (KNOTS - 1)).to(step.dtype) * step)
        w = w + (tl.where((j < 0) | (j > KNOTS - 1), beyond, stored),)
    return w


@triton.jit
def _deboor(x, row, span, inside, first, last, ORDER: tl.constexpr, KNOTS: tl.constexpr):
    """(values, x-slopes) of the local bases by de Boor's triangle over the stored knots; the slope of
    B_(i,k) is k * (B_(i,k-1) / (t_(i+k) - t_i) - B_(i+1,k-1) / (t_(i+k+1) - t_(i+1)))."""
    w = _knots(row, span, inside, first, last, ORDER, KNOTS)
    a = (1.0 + 0.0 * x,)  # order 0: the span's own basis
    slopes = ()
    for j in tl.static_range(1, ORDER + 1):
        n = ()
        for r in tl.static_range(j + 1):  # basis i = span - j + r: knots t_i, t_(i+j), t_(i+1), t_(i+j+1)
            t_i = w[r - j + ORDER]
            t_ij = w[r + ORDER]
            t_i1 = w[r - j + 1 + ORDER]
            t_ij1 = w[r + 1 + ORDER]
            if r == 0:
                b = (t_ij1 - x) / (t_ij1 - t_i1) * a[0]
                slope = -a[0] / (t_ij1 - t_i1)
            elif r == j:
                b = (x - t_i) / (t_ij - t_i) * a[r - 1]
                slope = a[r - 1] / (t_ij - t_i)
            else:
                b = (x - t_i) / (t_ij - t_i) * a[r - 1] + (t_ij1 - x) / (t_ij1 - t_i1) * a[r]
                slope = a[r - 1] / (t_ij - t_i) - a[r] / (t_ij1 - t_i1)
            n = n + (b,)
            if j == ORDER:
                slopes = slopes + (slope * ORDER,)
        a = n
    return a, slopes


@triton.jit
def _pick(d, values, ORDER: tl.constexpr):
    """values[d] where d (a tensor of local indices) is in 0..ORDER, else 0."""
    out = tl.where(d == 0, values[0], 0.0)
    for k in tl.static_range(1, ORDER + 1):
        out = tl.where(d == k, values[k], out)
    return out


@triton.jit
def _bases(xs, row, span, u, width, inside, first, last, ORDER: tl.constexpr, KNOTS: tl.constexpr,
           CARDINAL: tl.constexpr):
    """(values, x-slopes) of the local bases at finite xs: the cardinal recursion on a cardinal grid,
    else de Boor's triangle over the stored knots."""
    if CARDINAL:
        values, slopes = _cardinal(u, width, ORDER)
    else:
        values, slopes = _deboor(xs, row, span, inside, first, last, ORDER, KNOTS)
    return values, slopes


@triton.jit
def _silu(x):
    # torch's x * sigmoid(x): NaN at -inf, inf at +inf, -0 for large negative x
    return x * (1.0 / (1.0 + tl.exp(-x)))


@triton.jit
def _silu_slope(x):
    # torch's silu backward: s * (1 + x * (1 - s)), NaN at +-inf
    s = 1.0 / (1.0 + tl.exp(-x))
    return s * (1.0 + x * (1.0 - s))


@triton.jit
def _locate(xs, row, first, last, inside, KNOTS: tl.constexpr):
    """The knot span of each finite input xs on the stored knots at ``row`` (-1 below the first knot,
    KNOTS - 1 from the last on), and the local coordinate and width of that (clamped) interval."""
    t = (xs - first) * ((KNOTS - 1) / (last - first))
    t = tl.minimum(tl.maximum(t, -1.0), KNOTS - 1.0)
    guess = tl.floor(t).to(tl.int32)
    # the floor lands on the right span up to rounding: one comparison either side with the stored knots
    lower = tl.load(row + tl.maximum(guess, 0), mask=inside, other=0.0)
    lower = tl.where(guess >= 0, lower, -INF)
    upper = tl.load(row + tl.minimum(guess + 1, KNOTS - 1), mask=inside, other=0.0)
    upper = tl.where(guess + 1 <= KNOTS - 1, upper, INF)
    span = guess - (xs < lower).to(tl.int32) + (xs >= upper).to(tl.int32)
    clamped = tl.minimum(tl.maximum(span, 0), KNOTS - 2)
    t_m = tl.load(row + clamped, mask=inside, other=0.0)
    t_n = tl.load(row + clamped + 1, mask=inside, other=1.0)
    width = t_n - t_m
    u = (xs - t_m) / width  # this interval's own stored knots
    return span, u, width


@triton.jit
def _finite(xv):
    return (xv == xv) & (tl.abs(xv) < INF)


@triton.jit
def _columns(xv, feat, c, inside, grid_ptr, ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr,
             DERIV: tl.constexpr, CARDINAL: tl.constexpr):
    """Columns of the left operand at inputs xv: basis c of feature feat (c < COEFF) or silu (c == COEFF).

    xv: the input of each element; feat, c: its feature and column (broadcast against
    xv); inside: which elements exist (the others are 0). Returns the values and, with
    DERIV, their derivatives by x (else the values again, unused).
    """
    finite = _finite(xv)
    xs = tl.where(finite, xv, 0.0)
    row = grid_ptr + feat * KNOTS
    first = tl.load(row, mask=inside, other=0.0)
    last = tl.load(row + (KNOTS - 1), mask=inside, other=1.0)
    span, u, width = _locate(xs, row, first, last, inside, KNOTS)
    values, slopes = _bases(xs, row, span, u, width, inside, first, last, ORDER, KNOTS, CARDINAL)
    d = c - span + ORDER  # the local basis index of column c
    value = _pick(d, values, ORDER)
    if DERIV:
        slope = _pick(d, slopes, ORDER)
    is_base = c == COEFF
    value = tl.where(is_base, _silu(xv), tl.where(finite, value, NAN))
    value = tl.where(inside, value, 0.0)
    if DERIV:
        slope = tl.where(is_base, _silu_slope(xv), tl.where(finite, slope, NAN))
        slope = tl.where(inside, slope, 0.0)
    else:
        slope = value
    return value, slope


@triton.jit
def _stored_columns(span_ptr, values_ptr, silu_ptr, rows, feat, c, inside, B, ORDER: tl.constexpr,
                    COEFF: tl.constexpr):
    """The values ``_columns`` computes, read from the local bases' buffers (``_local_bases_kernel``:
    span and silu (IN, B), values (IN, ORDER + 1, B)) instead of evaluated for every column of
    the point. Outside the point's band a basis is 0, or NaN where the point is not finite: its
    stored values are then all NaN, and ``v * 0`` is NaN for those and 0 for finite ones."""
    at = feat * B + rows
    span = tl.load(span_ptr + at, mask=inside, other=0)
    d = c - span + ORDER  # the local basis index of column c
    band = (d >= 0) & (d <= ORDER)
    stored = (feat * (ORDER + 1) + tl.minimum(tl.maximum(d, 0), ORDER)) * B + rows
    v = tl.load(values_ptr + stored, mask=inside & (c < COEFF), other=0.0)
    silu = tl.load(silu_ptr + at, mask=inside & (c == COEFF), other=0.0)
    return tl.where(c == COEFF, silu, tl.where(band, v, v * 0.0))


@triton.jit
def _basis_tile(x_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, rows, feat, c, inside, B, IN,
                ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, CARDINAL: tl.constexpr,
                STORED: tl.constexpr):
    """The dense kernels' basis tile at (rows, columns (feat, c)): read from the local bases' buffers
    (STORED), or evaluated from x for every element."""
    if STORED:
        a = _stored_columns(span_ptr, values_ptr, silu_ptr, rows, feat, c, inside, B, ORDER, COEFF)
    else:
        xv = tl.load(x_ptr + rows * IN + feat, mask=inside, other=0.0)
        a, _ = _columns(xv, feat, c, inside, grid_ptr, ORDER, COEFF, KNOTS, False, CARDINAL)
    return a


@triton.jit
def _weights(sw_ptr, sc_ptr, bw_ptr, out, feat, c, inside, IN, COEFF: tl.constexpr, HAS_SCALER: tl.constexpr):
    """W[(feat, c), out]: spline_weight[out, feat, c] * scaler[out, feat] for c < COEFF, base_weight[out, feat]
    for c == COEFF, 0 elsewhere (all broadcast together)."""
    spline = c < COEFF
    w = tl.load(sw_ptr + (out * IN + feat) * COEFF + c, mask=inside & spline, other=0.0)
    if HAS_SCALER:
        w = w * tl.load(sc_ptr + out * IN + feat, mask=inside & spline, other=0.0)
    base = tl.load(bw_ptr + out * IN + feat, mask=inside & (c == COEFF), other=0.0)
    return tl.where(spline, w, base)


@triton.jit
def _output_tile(B, OUT, BM: tl.constexpr, BN: tl.constexpr):
    """This program's rows and outputs of a (B, OUT) output tiled BM x BN, and which of them exist."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    outs = tl.program_id(1) * BN + tl.arange(0, BN)
    return rows, outs, rows < B, outs < OUT


@triton.jit
def _forward_kernel(x_ptr, sw_ptr, sc_ptr, bw_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, out_ptr, B, IN, OUT,
                    ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, HAS_SCALER: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
                    CARDINAL: tl.constexpr, STORED: tl.constexpr):
    rows, outs, row_in, out_in = _output_tile(B, OUT, BM, BN)
    K = IN * (COEFF + 1)
    acc = tl.zeros((BM, BN), dtype=out_ptr.dtype.element_ty)
    for k0 in range(0, K, BK):
        k = k0 + tl.arange(0, BK)
        k_in = k < K
        feat = k // (COEFF + 1)
        c = k % (COEFF + 1)
        inside = row_in[:, None] & k_in[None, :]
        a = _basis_tile(x_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, rows[:, None], feat[None, :], c[None, :],
                        inside, B, IN, ORDER, COEFF, KNOTS, CARDINAL, STORED)
        w = _weights(sw_ptr, sc_ptr, bw_ptr, outs[None, :], feat[:, None], c[:, None],
                     k_in[:, None] & out_in[None, :], IN, COEFF, HAS_SCALER)
        acc = tl.dot(a, w, acc, input_precision=PRECISION, out_dtype=acc.dtype)
    tl.store(out_ptr + rows[:, None] * OUT + outs[None, :], acc, mask=row_in[:, None] & out_in[None, :])


@triton.jit
def _weight_grad_kernel(x_ptr, g_ptr, sw_ptr, sc_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, gsw_ptr, prod_ptr,
                        gbw_ptr, B, IN, OUT,
                        ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, HAS_SCALER: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
                        CARDINAL: tl.constexpr, STORED: tl.constexpr):
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    k = pid_k * BK + tl.arange(0, BK)
    outs = pid_n * BN + tl.arange(0, BN)
    K = IN * (COEFF + 1)
    k_in = k < K
    out_in = outs < OUT
    feat = k // (COEFF + 1)
    c = k % (COEFF + 1)
    acc = tl.zeros((BK, BN), dtype=g_ptr.dtype.element_ty)
    for m0 in range(0, B, BM):
        rows = m0 + tl.arange(0, BM)
        row_in = rows < B
        inside = row_in[:, None] & k_in[None, :]
        a = _basis_tile(x_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, rows[:, None], feat[None, :], c[None, :],
                        inside, B, IN, ORDER, COEFF, KNOTS, CARDINAL, STORED)
        g = tl.load(g_ptr + rows[:, None] * OUT + outs[None, :], mask=row_in[:, None] & out_in[None, :], other=0.0)
        acc = tl.dot(tl.trans(a), g, acc, input_precision=PRECISION, out_dtype=acc.dtype)
    # acc[(feat, c), out]: the gradient of W; W's spline rows are spline_weight * scaler
    both = k_in[:, None] & out_in[None, :]
    spline = both & (c < COEFF)[:, None]
    at = (outs[None, :] * IN + feat[:, None]) * COEFF + c[:, None]
    if HAS_SCALER:
        scaler = tl.load(sc_ptr + outs[None, :] * IN + feat[:, None], mask=spline, other=0.0)
        tl.store(gsw_ptr + at, acc * scaler, mask=spline)
        weight = tl.load(sw_ptr + at, mask=spline, other=0.0)
        tl.store(prod_ptr + at, acc * weight, mask=spline)
    else:
        tl.store(gsw_ptr + at, acc, mask=spline)
    tl.store(gbw_ptr + outs[None, :] * IN + feat[:, None], acc, mask=both & (c == COEFF)[:, None])


@triton.jit
def _input_grad_kernel(x_ptr, g_ptr, sw_ptr, sc_ptr, bw_ptr, grid_ptr, gx_ptr, B, IN, OUT,
                       ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, HAS_SCALER: tl.constexpr,
                       BM: tl.constexpr, BO: tl.constexpr, FB: tl.constexpr, CC: tl.constexpr,
                       PRECISION: tl.constexpr, CARDINAL: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_f = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    row_in = rows < B
    j = tl.arange(0, FB * CC)
    feat = pid_f * FB + j // CC  # (FB * CC,): FB features, CC columns each
    acc = tl.zeros((BM, FB), dtype=g_ptr.dtype.element_ty)
    for c0 in range(0, COEFF + 1, CC):
        c = c0 + j % CC
        col_in = (feat < IN) & (c <= COEFF)
        h = tl.zeros((BM, FB * CC), dtype=g_ptr.dtype.element_ty)
        for o0 in range(0, OUT, BO):
            outs = o0 + tl.arange(0, BO)
            out_in = outs < OUT
            g = tl.load(g_ptr + rows[:, None] * OUT + outs[None, :], mask=row_in[:, None] & out_in[None, :],
                        other=0.0)
            w = _weights(sw_ptr, sc_ptr, bw_ptr, outs[:, None], feat[None, :], c[None, :],
                         out_in[:, None] & col_in[None, :], IN, COEFF, HAS_SCALER)
            h = tl.dot(g, w, h, input_precision=PRECISION, out_dtype=h.dtype)
        inside = row_in[:, None] & col_in[None, :]
        xv = tl.load(x_ptr + rows[:, None] * IN + feat[None, :], mask=inside, other=0.0)
        _, da = _columns(xv, feat[None, :], c[None, :], inside, grid_ptr, ORDER, COEFF, KNOTS, True, CARDINAL)
        e = tl.where(inside, h * da, 0.0)
        acc += tl.sum(tl.reshape(e, (BM, FB, CC)), axis=2)
    feats = pid_f * FB + tl.arange(0, FB)
    tl.store(gx_ptr + rows[:, None] * IN + feats[None, :], acc, mask=row_in[:, None] & (feats < IN)[None, :])



# The gather kernels (large grids): a point touches only its order + 1 local bases, so the
# contraction reads, per point, the order + 1 rows of a coefficient table (in, coeff, out) that
# its span selects, instead of multiplying all coeff + 1 columns. The table holds the scaled
# spline weights with the outputs contiguous, so that each row's read is one coalesced run.


@triton.jit
def _point(x_ptr, grid_ptr, rows, row_in, i, IN, ORDER: tl.constexpr, KNOTS: tl.constexpr, CARDINAL: tl.constexpr):
    """Feature i of the rows: the input, whether it is finite, its knot span, and the values and
    x-slopes of its local bases d = 0..ORDER (bases span - ORDER + d)."""
    xv = tl.load(x_ptr + rows * IN + i, mask=row_in, other=0.0)
    finite = _finite(xv)
    xs = tl.where(finite, xv, 0.0)
    row = grid_ptr + i * KNOTS + tl.zeros_like(rows)
    first = tl.load(row, mask=row_in, other=0.0)
    last = tl.load(row + (KNOTS - 1), mask=row_in, other=1.0)
    span, u, width = _locate(xs, row, first, last, row_in, KNOTS)
    values, slopes = _bases(xs, row, span, u, width, row_in, first, last, ORDER, KNOTS, CARDINAL)
    return xv, finite, span, values, slopes


@triton.jit
def _local_bases_kernel(x_ptr, grid_ptr, span_ptr, values_ptr, silu_ptr, B, IN, OUT,
                        ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, BM: tl.constexpr,
                        CARDINAL: tl.constexpr):
    """Programs (rows / BM, features): each point's knot span, the values of its ``ORDER + 1`` local
    bases and its SiLU, feature-major (span and silu (IN, B), values (IN, ORDER + 1, B)), so that
    the gather forward reads them instead of evaluating the recursion in every thread of a row."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    i = tl.program_id(1)
    row_in = rows < B
    xv, finite, span, values, _ = _point(x_ptr, grid_ptr, rows, row_in, i, IN, ORDER, KNOTS, CARDINAL)
    tl.store(span_ptr + i * B + rows, span, mask=row_in)
    for d in tl.static_range(ORDER + 1):
        c = span - ORDER + d  # the coefficient of local basis d
        valid = (c >= 0) & (c < COEFF)
        # a basis that does not exist is 0, whatever the recursion made of a point far outside
        value = tl.where(finite, tl.where(valid, values[d], 0.0), NAN)
        tl.store(values_ptr + (i * (ORDER + 1) + d) * B + rows, value, mask=row_in)
    tl.store(silu_ptr + i * B + rows, _silu(xv), mask=row_in)


@triton.jit
def _gather_forward_kernel(span_ptr, values_ptr, silu_ptr, table_ptr, bw_ptr, out_ptr, B, IN, OUT,
                           ORDER: tl.constexpr, COEFF: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    rows, outs, row_in, out_in = _output_tile(B, OUT, BM, BN)
    acc = tl.zeros((BM, BN), dtype=out_ptr.dtype.element_ty)
    for i in range(0, IN):
        span = tl.load(span_ptr + i * B + rows, mask=row_in, other=0)
        for d in tl.static_range(ORDER + 1):
            c = span - ORDER + d
            valid = row_in & (c >= 0) & (c < COEFF)
            value = tl.load(values_ptr + (i * (ORDER + 1) + d) * B + rows, mask=row_in, other=0.0)
            w = tl.load(table_ptr + (i * COEFF + c)[:, None] * OUT + outs[None, :],
                        mask=valid[:, None] & out_in[None, :], other=0.0)
            acc += value[:, None] * w
        base = tl.load(bw_ptr + outs * IN + i, mask=out_in, other=0.0)
        acc += tl.load(silu_ptr + i * B + rows, mask=row_in, other=0.0)[:, None] * base[None, :]
    tl.store(out_ptr + rows[:, None] * OUT + outs[None, :], acc, mask=row_in[:, None] & out_in[None, :])


@triton.jit
def _gather_input_grad_kernel(x_ptr, g_ptr, table_ptr, bw_ptr, grid_ptr, gx_ptr, B, IN, OUT,
                              ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr,
                              BM: tl.constexpr, BO: tl.constexpr, CARDINAL: tl.constexpr):
    pid_m = tl.program_id(0)
    i = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    row_in = rows < B
    xv, finite, span, _, slopes = _point(x_ptr, grid_ptr, rows, row_in, i, IN, ORDER, KNOTS, CARDINAL)
    base_slope = _silu_slope(xv)
    acc = tl.zeros((BM, BO), dtype=g_ptr.dtype.element_ty)
    for o0 in range(0, OUT, BO):
        outs = o0 + tl.arange(0, BO)
        out_in = outs < OUT
        g = tl.load(g_ptr + rows[:, None] * OUT + outs[None, :], mask=row_in[:, None] & out_in[None, :], other=0.0)
        base = tl.load(bw_ptr + outs * IN + i, mask=out_in, other=0.0)
        e = base_slope[:, None] * base[None, :]  # d out / d x of each (row, output)
        for d in tl.static_range(ORDER + 1):
            c = span - ORDER + d
            valid = row_in & (c >= 0) & (c < COEFF)
            slope = tl.where(finite, tl.where(valid, slopes[d], 0.0), NAN)
            w = tl.load(table_ptr + (i * COEFF + c)[:, None] * OUT + outs[None, :],
                        mask=valid[:, None] & out_in[None, :], other=0.0)
            e += slope[:, None] * w
        # g * 0 is NaN where g is not finite: the dense product multiplies such a row of
        # grad_out into every column, and the columns outside the band (zero slopes) make NaN
        acc += g * e + g * 0.0
    tl.store(gx_ptr + rows * IN + i, tl.sum(acc, axis=1), mask=row_in)


@triton.jit
def _gather_weight_grad_kernel(span_ptr, rows_ptr, starts_ptr, values_ptr, g_ptr, sw_ptr, sc_ptr,
                               finite_in_ptr, finite_out_ptr, gsw_ptr, prod_ptr, B, IN, OUT,
                               ORDER: tl.constexpr, COEFF: tl.constexpr, HAS_SCALER: tl.constexpr,
                               CB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """Programs (features x blocks of CB coefficients, outputs / BN): the gradient of each
    coefficient c of feature i, the sum over the points whose span lies in [c, c + ORDER] (the only
    ones whose basis c is not zero) of that basis times grad_out. Each feature's points are sorted
    by span (span_ptr, rows_ptr: (IN, B), sorted spans and the rows they came from), so those
    points are the range [first, end) of its sorted rows (starts_ptr: (IN, COEFF + ORDER + 1),
    where each feature's first point of each span or more is), read in order: no atomics, the same
    sum on every run. finite_in (IN,): whether a feature's inputs are all finite; finite_out (OUT,):
    how many of an output's grad_out entries are."""
    blocks = tl.cdiv(COEFF, CB)
    i = tl.program_id(0) // blocks
    c_first = tl.program_id(0) % blocks * CB
    outs = tl.program_id(1) * BN + tl.arange(0, BN)
    out_in = outs < OUT
    finite_feature = tl.load(finite_in_ptr + i) != 0
    non_finite = B - tl.load(finite_out_ptr + outs, mask=out_in, other=B)  # each output's, in all rows
    for c in range(c_first, tl.minimum(c_first + CB, COEFF)):
        first = tl.load(starts_ptr + i * (COEFF + ORDER + 1) + c)
        end = tl.load(starts_ptr + i * (COEFF + ORDER + 1) + c + ORDER + 1)
        acc = tl.zeros((BM, BN), dtype=g_ptr.dtype.element_ty)
        for j0 in range(first, end, BM):
            j = j0 + tl.arange(0, BM)
            j_in = j < end
            row = tl.load(rows_ptr + i * B + j, mask=j_in, other=0)
            d = c - tl.load(span_ptr + i * B + j, mask=j_in, other=0) + ORDER  # the local index of basis c
            value = tl.load(values_ptr + (i * (ORDER + 1) + d) * B + row, mask=j_in, other=0.0)
            g = tl.load(g_ptr + row[:, None] * OUT + outs[None, :], mask=j_in[:, None] & out_in[None, :],
                        other=0.0)
            acc += value[:, None] * g
        grad = tl.sum(acc, axis=0)
        # The dense product's NaN, where the rows summed here do not make it themselves: a
        # non-finite input makes every basis of its feature NaN; a non-finite grad_out entry in a
        # row not summed here meets this basis's exact 0 (0 * inf). Where an output has such
        # entries (rare), a second pass counts those among the rows summed, out of the hot loop.
        unseen = non_finite
        if tl.max(unseen, axis=0) > 0:
            for j0 in range(first, end, BM):
                j = j0 + tl.arange(0, BM)
                j_in = j < end
                row = tl.load(rows_ptr + i * B + j, mask=j_in, other=0)
                g = tl.load(g_ptr + row[:, None] * OUT + outs[None, :], mask=j_in[:, None] & out_in[None, :],
                            other=0.0)
                unseen -= tl.sum((~_finite(g)).to(tl.int32), axis=0)
        grad = tl.where(finite_feature & (unseen == 0), grad, NAN)
        at = (outs * IN + i) * COEFF + c
        if HAS_SCALER:
            tl.store(gsw_ptr + at, grad * tl.load(sc_ptr + outs * IN + i, mask=out_in, other=0.0), mask=out_in)
            tl.store(prod_ptr + at, grad * tl.load(sw_ptr + at, mask=out_in, other=0.0), mask=out_in)
        else:
            tl.store(gsw_ptr + at, grad, mask=out_in)


# --------------------------------------------------------------------------- launches


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _precision(x: torch.Tensor) -> str:
    return "tf32" if math_mode(x) == "tf32" else "ieee"


def _geometry(grid: torch.Tensor, order: int) -> tuple[int, int]:
    """(coeff, knots) of a grid (in, knots) of spline order ``order``."""
    knots = grid.size(1)
    return knots - 1 - order, knots


# Tile sizes depend on the output width (and the input gradient's on coeff), the spline order
# and the precision, and take one of three sizes by whether a launch has a program per SM: every
# distinct tile is one more compilation of a kernel. The dense kernels build each element of a
# basis tile with the whole recursion of its point; from order 4 on, or in float64, a thread's
# share of that tile is halved, else the recursion's values outgrow its registers
# (python -m benchmarks.studies.triton_compile).


def _heavy(order: int, double: bool) -> bool:
    return order >= 4 or double


# The SMs a launch is planned for where no device is given (``plan``, the compile study): an
# H100's or H200's.
SMS = 132


@functools.lru_cache(maxsize=None)
def device_sms(index: int) -> int:
    """The streaming multiprocessors of CUDA device ``index``."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def sms_of(x: torch.Tensor) -> int:
    """The SMs the launches on a tensor like ``x`` are sized for: its CUDA device's; 1 for CPU
    tensors, which Triton's interpreter runs one program at a time (so the largest tiles)."""
    if x.device.type != "cuda":
        return 1
    return device_sms(x.device.index if x.device.index is not None else torch.cuda.current_device())


def _filling(n: int, programs_per_unit, sms: int) -> int:
    """The largest of 64, 32 and 16 (a ``tl.dot`` operand's side) whose tiling of ``n`` gives a launch
    of at least one program per SM, by ``programs_per_unit(tiles)``; else 16. A launch of fewer
    programs than SMs leaves SMs idle while the others loop over the whole contraction."""
    for side in (64, 32):
        if programs_per_unit(triton.cdiv(n, side)) >= sms:
            return side
    return 16


def forward_tiles(batch: int, out_features: int, order: int = 3, double: bool = False,
                  sms: int = SMS) -> tuple[int, int, int]:
    """(BM, BN, BK) of the forward: rows, outputs and contraction columns per tile. The rows per
    tile shrink from 64 to 16 where a small batch would leave SMs idle."""
    bn = min(64, max(16, _pow2(out_features)))
    bm = _filling(batch, lambda tiles: tiles * triton.cdiv(out_features, bn), sms)
    return (bm, bn, 16 if _heavy(order, double) else 32)


def weight_grad_tiles(batch: int, out_features: int, order: int = 3, double: bool = False, *,
                      in_features: int, coeff: int, sms: int = SMS) -> tuple[int, int, int]:
    """(BM, BN, BK) of the weight gradient: rows per step, outputs and contraction columns per
    tile. Each program sums over the whole batch, so the contraction columns per tile shrink from
    64 to 16 where the weights are few (``in_features * (coeff + 1)`` columns) and would leave SMs idle."""
    bn = min(64, max(16, _pow2(out_features)))
    bk = _filling(in_features * (coeff + 1), lambda tiles: tiles * triton.cdiv(out_features, bn), sms)
    return (16 if _heavy(order, double) else 32, bn, bk)


def input_grad_tiles(batch: int, out_features: int, coeff: int, order: int = 3,
                     double: bool = False) -> tuple[int, int, int, int]:
    """(BM, BO, FB, CC) of the input gradient: rows, outputs per step, features per tile, columns per step."""
    cc = min(64, _pow2(coeff + 1))
    rows = 64 >> (int(order >= 4) + int(double))  # halved once for each (it holds bases and slopes)
    return (rows, min(32, max(16, _pow2(out_features))), max(1, 64 // cc), cc)


# Rows per program of the local bases' kernel: elementwise work, one feature per program.
LOCAL_BASES_ROWS = 128

# The dense kernels evaluate each element of their basis tile from x: a point's recursion once
# for every one of its feature's coeff + 1 columns, in every program along the outputs (64 per
# tile). Where those evaluations reach this many, the layer launches the local bases' kernel
# once (span, order + 1 bases and SiLU per point, as the gather kernels read them) and the dense
# kernels read the tile from its buffers: one launch more in the forward and in the weight
# gradient, which costs host time at small shapes, against the recursion's work at large ones.
# A count of the evaluations, standing until a GPU times both.
STORED_BASES_MIN = 2 ** 22


def stores_bases(batch: int, in_features: int, out_features: int, coeff: int) -> bool:
    """Whether the dense kernels of a layer of this shape read their basis tiles from the local bases'
    buffers rather than evaluate them (``STORED_BASES_MIN``)."""
    # every call asks: an integer ceiling, where triton.cdiv would cost microseconds
    return batch * in_features * (coeff + 1) * -(-out_features // 64) >= STORED_BASES_MIN


def gather_tiles(batch: int, out_features: int) -> tuple[int, int]:
    """(BM, BN) of the gather kernels: rows, and outputs per tile (the forward) or per step (the input
    gradient). Few rows: each thread keeps the bases of every row it covers in registers."""
    return (16, min(64, max(16, _pow2(out_features))))


def gather_weight_grad_tiles(in_features: int, out_features: int, coeff: int,
                             sms: int = SMS) -> tuple[int, int, int]:
    """(BM, BN, CB) of the gather weight gradient: sorted rows per step, outputs per tile, and
    coefficients per program: all of a feature's where that still gives a program per SM (fewer,
    longer programs), else one."""
    bn = min(64, max(16, _pow2(out_features)))
    return (32, bn, coeff if in_features * triton.cdiv(out_features, bn) >= sms else 1)


def _gathers(coeff: int, order: int, asked: bool) -> bool:
    """Whether the operators asked for the gather kernels (``asked``) run them: on a grid of one
    interval the band of local bases covers every column, which the gather input gradient's NaN rule
    assumes it does not, so such a layer contracts densely (``kan.fast.gathers``, which layers
    decide by, says the same)."""
    return asked and coeff > order + 1


# The gather weight gradient's operations besides its kernel and the scaler's sum: the local bases'
# kernel, the sort by span, the span bounds (arange, expand, searchsorted), the inputs' and
# grad_out's finiteness (isfinite and a reduction each), SiLU's column (one matrix product).
GATHER_WEIGHT_GRAD_OPERATIONS = 10


def launches(needs_input: bool = True, needs_weights: bool = True, scaler: bool = True,
             gather: bool = False, stored: bool = False) -> tuple[int, int]:
    """Kernel launches of one layer's forward and of its backward (first-order), a torch operation
    counted as one. The gather kernels add the coefficient table's one elementwise kernel to the
    forward, and to the backward where it computes the input gradient; the local bases' kernel to
    the forward; and to the weight gradient ``GATHER_WEIGHT_GRAD_OPERATIONS``. The dense kernels
    reading stored bases (``stored``, see ``stores_bases``) add the local bases' kernel to the
    forward and to the weight gradient."""
    table = int(gather)
    local = int(stored and not gather)
    weights = 1 + int(scaler) + table * GATHER_WEIGHT_GRAD_OPERATIONS + local  # the scaler's sum: one
    backward = int(needs_input) * (1 + table) + int(needs_weights) * weights
    return 1 + 2 * table + local, backward


def _table(spline_weight: torch.Tensor, scaler: Optional[torch.Tensor]) -> torch.Tensor:
    """The gather kernels' coefficient table (in, coeff, out): spline_weight * scaler, outputs contiguous (one kernel)."""
    out_features, in_features, coeff = spline_weight.shape
    table = spline_weight.new_empty(in_features, coeff, out_features)
    if scaler is None:
        table.copy_(spline_weight.permute(1, 2, 0))
    else:
        torch.mul(spline_weight.permute(1, 2, 0), scaler.t().unsqueeze(1), out=table)
    return table


# The kernels by name: ``_<name>_kernel``.
KERNELS = ("forward", "weight_grad", "input_grad", "local_bases", "gather_forward", "gather_weight_grad",
           "gather_input_grad")


def plan(kernel: str, batch: int, in_features: int, out_features: int, coeff: int, order: int,
         cardinal: bool = True, scaler: bool = True, precision: str = "ieee",
         double: bool = False, sms: int = SMS) -> tuple[dict, tuple[int, int], int]:
    """The compile-time constants, the grid of programs and the warps of one launch of ``kernel``
    (one of ``KERNELS``) for a layer of this geometry on a GPU of ``sms`` SMs: what the launches
    below pass, and what ``python -m benchmarks.studies.triton_compile`` compiles without a GPU.
    ``double``: float64 tensors."""
    stored = stores_bases(batch, in_features, out_features, coeff)
    constants, programs = _constants(kernel, batch, in_features, out_features, coeff, order, cardinal, scaler,
                                     precision, double, sms, stored)
    return dict(constants), programs, NUM_WARPS


# Cached: every launch asks, and at small shapes the launches' host time is the step's time.
@functools.lru_cache(maxsize=4096)
def _constants(kernel, batch, in_features, out_features, coeff, order, cardinal, scaler, precision, double, sms,
               stored):
    common = dict(ORDER=order, COEFF=coeff, KNOTS=coeff + order + 1, CARDINAL=cardinal)
    cdiv = triton.cdiv
    if kernel == "forward":
        bm, bn, bk = forward_tiles(batch, out_features, order, double, sms)
        return (dict(common, HAS_SCALER=scaler, BM=bm, BN=bn, BK=bk, PRECISION=precision, STORED=stored),
                (cdiv(batch, bm), cdiv(out_features, bn)))
    if kernel == "weight_grad":
        bm, bn, bk = weight_grad_tiles(batch, out_features, order, double, in_features=in_features, coeff=coeff,
                                       sms=sms)
        return (dict(common, HAS_SCALER=scaler, BM=bm, BN=bn, BK=bk, PRECISION=precision, STORED=stored),
                (cdiv(in_features * (coeff + 1), bk), cdiv(out_features, bn)))
    if kernel == "input_grad":
        bm, bo, fb, cc = input_grad_tiles(batch, out_features, coeff, order, double)
        return (dict(common, HAS_SCALER=scaler, BM=bm, BO=bo, FB=fb, CC=cc, PRECISION=precision),
                (cdiv(batch, bm), cdiv(in_features, fb)))
    bm, bn = gather_tiles(batch, out_features)
    if kernel == "local_bases":
        return dict(common, BM=LOCAL_BASES_ROWS), (cdiv(batch, LOCAL_BASES_ROWS), in_features)
    if kernel == "gather_forward":
        return dict(ORDER=order, COEFF=coeff, BM=bm, BN=bn), (cdiv(batch, bm), cdiv(out_features, bn))
    if kernel == "gather_input_grad":
        return dict(common, BM=bm, BO=bn), (cdiv(batch, bm), in_features)
    if kernel == "gather_weight_grad":
        rows, outs, block = gather_weight_grad_tiles(in_features, out_features, coeff, sms)
        return (dict(ORDER=order, COEFF=coeff, HAS_SCALER=scaler, CB=block, BM=rows, BN=outs),
                (in_features * cdiv(coeff, block), cdiv(out_features, outs)))
    raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")


def jit_function(kernel: str):
    """The Triton function of ``kernel`` (one of ``KERNELS``)."""
    return globals()[f"_{kernel}_kernel"]


def launched(gather: bool, stored: bool = False) -> tuple[str, ...]:
    """Every kernel a layer's first-order step launches, for a contraction (and for the dense one,
    whether it reads stored bases: ``stores_bases``)."""
    return ("local_bases",) + kernels_of(gather) if gather or stored else kernels_of(False)


def kernels_of(gather: bool) -> tuple[str, str, str]:
    """The kernels of one layer's step, (forward, weight gradient, input gradient), for a contraction."""
    if gather:
        return ("gather_forward", "gather_weight_grad", "gather_input_grad")
    return ("forward", "weight_grad", "input_grad")


def _launcher(x: torch.Tensor, out_features: int, grid: torch.Tensor, order: int, cardinal: bool, scaler: bool,
              stored: bool):
    """launch(kernel, *args): ``kernel`` (one of ``KERNELS``) on ``args``, planned for this layer and input
    (``stored``: the dense kernels read stored bases)."""
    coeff, _ = _geometry(grid, order)
    shape = (x.size(0), x.size(1), out_features)
    precision, double, sms = _precision(x), x.dtype == torch.float64, sms_of(x)

    def launch(kernel: str, *args) -> None:
        constants, programs = _constants(kernel, *shape, coeff, order, cardinal, scaler, precision, double, sms,
                                         stored)
        jit_function(kernel)[programs](*args, *shape, **constants, num_warps=NUM_WARPS, num_stages=NUM_STAGES)

    return launch


def _contraction(x: torch.Tensor, out_features: int, grid: torch.Tensor, order: int, gather: bool):
    """(the kernels of this layer's step (``kernels_of``), whether its dense kernels read stored bases)."""
    coeff, _ = _geometry(grid, order)
    gathers = _gathers(coeff, order, gather)
    return kernels_of(gathers), not gathers and stores_bases(x.size(0), x.size(1), out_features, coeff)


def _local_bases(launch, x, grid, order):
    """Each point's span (int32), local bases and SiLU, feature-major: (in, batch), (in, order + 1,
    batch) and (in, batch), by ``_local_bases_kernel``."""
    batch, in_features = x.shape
    span = torch.empty(in_features, batch, dtype=torch.int32, device=x.device)
    values, silu = x.new_empty(in_features, order + 1, batch), x.new_empty(in_features, batch)
    launch("local_bases", x, grid, span, values, silu)
    return span, values, silu


def _gather_weight_grads(launch, grad_out, x, spline_weight, scaler_arg, grid, order, grad_spline, product):
    """The spline weights' gradient (and ``product``, its elementwise product with them where there
    is a scaler) by ``_gather_weight_grad_kernel``; returns the base weights' gradient. Each
    feature's points are sorted by span (stable), and coefficient c sums the range of them whose
    span lies in [c, c + order], found by binary search."""
    coeff, _ = _geometry(grid, order)
    span, values, silu = _local_bases(launch, x, grid, order)
    spans, rows = torch.sort(span, dim=1, stable=True)
    # starts[i, s]: where feature i's first point of span s or more is; coefficient c sums
    # [starts[i, c], starts[i, c + order + 1]) (spans are integers)
    spans_from = torch.arange(coeff + order + 1, dtype=torch.int32, device=x.device)
    starts = torch.searchsorted(spans, spans_from.expand(x.size(1), -1).contiguous(), out_int32=True)
    finite_in = torch.isfinite(x).all(dim=0)
    finite_out = torch.isfinite(grad_out).sum(dim=0, dtype=torch.int32)
    launch("gather_weight_grad", spans, rows, starts, values, grad_out, spline_weight, scaler_arg,
           finite_in, finite_out, grad_spline, product)
    return grad_out.t().mm(silu.t())  # (out, in): SiLU's column, a matrix product as torch's own


def _dense_bases(launch, x, grid, order, stored):
    """The dense kernels' basis arguments (span, values, silu): the local bases' buffers where they
    read stored bases, else ``x`` three times (unread)."""
    return _local_bases(launch, x, grid, order) if stored else (x, x, x)


def _forward(x, spline_weight, scaler, base_weight, grid, order, gather=False, cardinal=True):
    out = x.new_empty(x.size(0), base_weight.size(0))
    (forward, _, _), stored = _contraction(x, out.size(1), grid, order, gather)
    launch = _launcher(x, out.size(1), grid, order, cardinal, scaler is not None, stored)
    if forward == "gather_forward":
        span, values, silu = _local_bases(launch, x, grid, order)
        launch(forward, span, values, silu, _table(spline_weight, scaler), base_weight, out)
    else:
        launch(forward, x, spline_weight, scaler if scaler is not None else spline_weight, base_weight, grid,
               *_dense_bases(launch, x, grid, order, stored), out)
    return out


def _backward(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights, gather=False,
              cardinal=True):
    (_, weight_grad, input_grad), stored = _contraction(x, base_weight.size(0), grid, order, gather)
    launch = _launcher(x, base_weight.size(0), grid, order, cardinal, scaler is not None, stored)
    scaler_arg = scaler if scaler is not None else spline_weight
    empty = x.new_empty(0)
    grad_x = grad_spline = grad_scaler = grad_base = empty
    if needs_weights:
        grad_spline = torch.empty_like(spline_weight)
        product = torch.empty_like(spline_weight) if scaler is not None else grad_spline
        if weight_grad == "gather_weight_grad":
            grad_base = _gather_weight_grads(launch, grad_out, x, spline_weight, scaler_arg, grid, order,
                                             grad_spline, product)
        else:
            grad_base = torch.empty_like(base_weight)
            bases = _dense_bases(launch, x, grid, order, stored)
            launch(weight_grad, x, grad_out, spline_weight, scaler_arg, grid, *bases, grad_spline, product, grad_base)
        if scaler is not None:
            grad_scaler = product.sum(dim=2)
    if needs_input:
        grad_x = torch.empty_like(x)
        if input_grad == "gather_input_grad":
            launch(input_grad, x, grad_out, _table(spline_weight, scaler), base_weight, grid, grad_x)
        else:
            launch(input_grad, x, grad_out, spline_weight, scaler_arg, base_weight, grid, grad_x)
    return grad_x, grad_spline, grad_scaler, grad_base


# --------------------------------------------------------------------------- operators


@torch.library.custom_op("kan::triton_spline_forward", mutates_args=())
def spline_forward(x: torch.Tensor, spline_weight: torch.Tensor, scaler: Optional[torch.Tensor],
                   base_weight: torch.Tensor, grid: torch.Tensor, order: int, gather: bool = False,
                   cardinal: bool = True) -> torch.Tensor:
    """One layer's output: x (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None,
    base_weight (out, in), grid (in, coeff + order + 1) uniform, order 1..5 -> (batch, out).
    Every tensor contiguous, of x's dtype and device. ``gather``: the gather kernels (see ``gathers``);
    ``cardinal``: the grid's steps are equal to rounding (``kan.fast.is_cardinal``; else the bases
    come from de Boor's triangle over the stored knots)."""
    return _forward(x, spline_weight, scaler, base_weight, grid, order, gather, cardinal)


@spline_forward.register_fake
def _(x, spline_weight, scaler, base_weight, grid, order, gather=False, cardinal=True):
    return x.new_empty(x.size(0), base_weight.size(0))


@torch.library.custom_op("kan::triton_spline_backward", mutates_args=())
def spline_backward(grad_out: torch.Tensor, x: torch.Tensor, spline_weight: torch.Tensor,
                    scaler: Optional[torch.Tensor], base_weight: torch.Tensor, grid: torch.Tensor, order: int,
                    needs_input: bool, needs_weights: bool, gather: bool = False,
                    cardinal: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the input, spline weights, scaler and base weights for ``grad_out`` (batch, out);
    an empty tensor for those not asked (``needs_input``, ``needs_weights``) and for a missing scaler."""
    return tuple(t.clone() if t.numel() == 0 else t for t in
                 _backward(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights,
                           gather, cardinal))


@spline_backward.register_fake
def _(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights, gather=False,
      cardinal=True):
    empty = x.new_empty(0)
    return (torch.empty_like(x) if needs_input else empty,
            torch.empty_like(spline_weight) if needs_weights else x.new_empty(0),
            x.new_empty(scaler.shape) if needs_weights and scaler is not None else x.new_empty(0),
            torch.empty_like(base_weight) if needs_weights else x.new_empty(0))


def reference_output(x, spline_weight, scaler, base_weight, grid, order):
    """The reference layer's operations (kan.reference): differentiable to any order."""
    bases = b_splines(x, grid, order)  # (batch, in, coeff)
    scaled = spline_weight if scaler is None else spline_weight * scaler.unsqueeze(-1)
    spline = F.linear(bases.reshape(x.size(0), -1), scaled.reshape(scaled.size(0), -1))
    return F.linear(F.silu(x), base_weight) + spline


def _setup_context(ctx, inputs, output):
    x, spline_weight, scaler, base_weight, grid, order, gather, cardinal = inputs
    ctx.save_for_backward(x, spline_weight, scaler, base_weight, grid)
    ctx.order, ctx.gather, ctx.cardinal = order, gather, cardinal


def _grads(ctx, grad_out, backward):
    """The gradients an autograd backward returns for ``grad_out``, by ``backward`` (the operator
    ``spline_backward`` or its implementation ``_backward``); through the reference's operations
    when this backward is itself differentiated."""
    x, spline_weight, scaler, base_weight, grid = ctx.saved_tensors
    needs = ctx.needs_input_grad[:4]
    if torch.is_grad_enabled():  # this backward is itself differentiated (create_graph=True)
        function = lambda *p: reference_output(*p, grid, ctx.order)  # noqa: E731
        return (*differentiable_grads(function, (x, spline_weight, scaler, base_weight), needs, grad_out),
                None, None, None, None)
    needs_weights = needs[1] or needs[2] or needs[3]
    grad_x, grad_spline, grad_scaler, grad_base = backward(
        grad_out.contiguous(), x, spline_weight, scaler, base_weight, grid, ctx.order, needs[0], needs_weights,
        ctx.gather, ctx.cardinal)
    return (grad_x if needs[0] else None, grad_spline if needs[1] else None,
            grad_scaler if needs[2] else None, grad_base if needs[3] else None, None, None, None, None)


def _spline_backward(ctx, grad_out):
    return _grads(ctx, grad_out, spline_backward)


spline_forward.register_autograd(_spline_backward, setup_context=_setup_context)


class _Direct(torch.autograd.Function):
    """The operators' implementations without the dispatcher: the same forward, backward and
    saved tensors as ``spline_forward`` with its registered autograd. The custom operator's Python
    autograd wrapper costs several times a launch on every call, and at small shapes the step's
    time is its host time (``kan.native`` calls its operators the same way)."""

    @staticmethod
    def forward(ctx, *inputs):
        _setup_context(ctx, inputs, None)
        return _forward(*inputs)

    @staticmethod
    def backward(ctx, grad_out):
        return _grads(ctx, grad_out, _backward)


def _traced() -> bool:
    """Whether something may trace or fake tensors (torch.compile, export, a dispatch mode such as
    fake tensors): then the layer calls the operators through the dispatcher, which sees them."""
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0


def layer(x, spline_weight, scaler, base_weight, grid, order, gather: bool = False,
          cardinal: Optional[bool] = None) -> torch.Tensor:
    """A layer's output through the operators (differentiable; in eager mode their implementations,
    ``_Direct``, where nothing traces); x (batch, in) any layout.
    ``gather``: contract by the gather kernels rather than densely (see ``gathers``). ``cardinal``:
    whether the grid's steps are equal to rounding; None finds out (``kan.bspline.is_cardinal``, a
    host synchronisation on CUDA: a layer passes the answer it keeps with its knots)."""
    if cardinal is None:
        cardinal = is_cardinal(grid)
    run = spline_forward if _traced() else _Direct.apply
    return run(x.contiguous(), spline_weight.contiguous(), None if scaler is None else scaler.contiguous(),
               base_weight.contiguous(), grid.contiguous(), order, gather, cardinal)
