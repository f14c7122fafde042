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
  (t_(m+1) - t_m)`` from the stored knots of that interval; the cardinal recursion;
  zero outside the ``order + 1`` local bases) and the weight tile is read straight
  from ``spline_weight``, ``scaler`` and ``base_weight``; both meet in ``tl.dot``.
* ``_weight_grad_kernel``: tiles (k, outputs); loops over rows; the same basis tile,
  transposed, times ``grad_out``; writes the spline-weight and base-weight gradients
  and, with a scaler, ``grad * spline_weight`` whose sum over ``c`` (one reduction
  launch) is the scaler's gradient.
* ``_input_grad_kernel``: tiles (rows, features); for a block of features the
  columns are padded to a power of two (the reshape that sums each feature's
  columns needs it); ``grad_out @ W^T`` by ``tl.dot`` over the outputs, times the
  bases' derivatives (and SiLU's), summed per feature.

The gather kernels, for large grids (``gather=True``; the layer's ``contraction``), use that a
point touches only ``order + 1`` of the ``coeff`` bases. A coefficient table ``(in, coeff, out)``
(the scaled spline weights, outputs contiguous; one elementwise kernel per call, not saved)
replaces the dense product:

* ``_gather_forward_kernel``: tiles (rows, outputs); loops over the features; per row
  the span, the ``order + 1`` local bases, and as many coalesced reads of the table rows
  the span selects, multiplied and added in registers, plus the base branch;
* ``_gather_input_grad_kernel``: tiles (rows, one feature); loops over the outputs;
  ``grad_out`` times the bases' derivatives dotted with the same table rows, plus SiLU's;
* the weight gradient is the dense ``_weight_grad_kernel``.

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

import os
from typing import Optional

import torch
import torch.nn.functional as F

import triton
import triton.language as tl

from kan.reference import b_splines, differentiable_grads

MAX_ORDER = 5
# Launch options of every kernel. One stage: the loop's loads are gathers whose addresses
# depend on one another (input, span, knots), which the software pipeliner would stage in
# shared memory several times over (float64 at three stages does not fit an H100's).
NUM_WARPS = 4
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


def why_not_layer(x: torch.Tensor, order: int, uniform: bool, silu: bool, cardinal: bool = True) -> Optional[str]:
    """None if the kernels compute a layer of this spline order, grid and activation on ``x``; else why not.

    ``cardinal``: the grid's steps equal to the dtype's rounding (``kan.fast.is_cardinal``). The
    kernels evaluate the cardinal recursion, which stands for the B-splines of the stored knots
    only on such a grid; a uniform grid whose float knots drift (large float32 grids) takes the
    PyTorch path, which evaluates de Boor's triangle over the stored knots."""
    if not silu:
        return "the kernels compute the default SiLU base activation only"
    if not 1 <= order <= MAX_ORDER:
        return f"the kernels take spline orders 1 to {MAX_ORDER}, not {order}"
    if not uniform:
        return "the grid is not uniform (update_grid adapted it)"
    if not cardinal:
        return "the grid's knots are not evenly spaced to the dtype's rounding (a large float32 grid)"
    if x.dtype not in (torch.float32, torch.float64):
        return f"the kernels take float32 or float64, not {x.dtype}"
    return None


# The cardinal B-splines on one knot interval, u in [0, 1): order k from order k - 1 by the
# recursion b_k,j = b_k-1,j-1 * (u + k - j) / k + b_k-1,j * (j + 1 - u) / k (terms outside 0..k-1
# are zero). The slope in u of b_k,j is b_k-1,j-1 - b_k-1,j.


@triton.jit
def _up2(u, a0, a1):
    return a0 * ((1.0 - u) / 2.0), a0 * ((u + 1.0) / 2.0) + a1 * ((2.0 - u) / 2.0), a1 * ((u + 0.0) / 2.0)


@triton.jit
def _up3(u, a0, a1, a2):
    return (a0 * ((1.0 - u) / 3.0), a0 * ((u + 2.0) / 3.0) + a1 * ((2.0 - u) / 3.0),
            a1 * ((u + 1.0) / 3.0) + a2 * ((3.0 - u) / 3.0), a2 * ((u + 0.0) / 3.0))


@triton.jit
def _up4(u, a0, a1, a2, a3):
    return (a0 * ((1.0 - u) / 4.0), a0 * ((u + 3.0) / 4.0) + a1 * ((2.0 - u) / 4.0),
            a1 * ((u + 2.0) / 4.0) + a2 * ((3.0 - u) / 4.0), a2 * ((u + 1.0) / 4.0) + a3 * ((4.0 - u) / 4.0),
            a3 * ((u + 0.0) / 4.0))


@triton.jit
def _up5(u, a0, a1, a2, a3, a4):
    return (a0 * ((1.0 - u) / 5.0), a0 * ((u + 4.0) / 5.0) + a1 * ((2.0 - u) / 5.0),
            a1 * ((u + 3.0) / 5.0) + a2 * ((3.0 - u) / 5.0), a2 * ((u + 2.0) / 5.0) + a3 * ((4.0 - u) / 5.0),
            a3 * ((u + 1.0) / 5.0) + a4 * ((5.0 - u) / 5.0), a4 * ((u + 0.0) / 5.0))


# v_d of the values given, 0 for any other d (d is a tensor of local indices).


@triton.jit
def _pick2(d, v0, v1):
    return tl.where(d == 0, v0, tl.where(d == 1, v1, 0.0))


@triton.jit
def _pick3(d, v0, v1, v2):
    return tl.where(d == 0, v0, _pick2(d - 1, v1, v2))


@triton.jit
def _pick4(d, v0, v1, v2, v3):
    return tl.where(d == 0, v0, _pick3(d - 1, v1, v2, v3))


@triton.jit
def _pick5(d, v0, v1, v2, v3, v4):
    return tl.where(d == 0, v0, _pick4(d - 1, v1, v2, v3, v4))


@triton.jit
def _pick6(d, v0, v1, v2, v3, v4, v5):
    return tl.where(d == 0, v0, _pick5(d - 1, v1, v2, v3, v4, v5))


@triton.jit
def _local1(u, d):
    """Order 1: the value and the u-slope of local basis d (0..1) at u; 0 for any other d."""
    return _pick2(d, 1.0 - u, u), _pick2(d, -1.0 + 0.0 * u, 1.0 + 0.0 * u)


@triton.jit
def _local2(u, d):
    """Order 2: the value and the u-slope of local basis d (0..2) at u; 0 for any other d."""
    a0, a1 = 1.0 - u, u
    b0, b1, b2 = _up2(u, a0, a1)
    return _pick3(d, b0, b1, b2), _pick3(d, -a0, a0 - a1, a1)


@triton.jit
def _local3(u, d):
    """Order 3: the value and the u-slope of local basis d (0..3) at u; 0 for any other d."""
    a0, a1, a2 = _up2(u, 1.0 - u, u)
    b0, b1, b2, b3 = _up3(u, a0, a1, a2)
    return _pick4(d, b0, b1, b2, b3), _pick4(d, -a0, a0 - a1, a1 - a2, a2)


@triton.jit
def _local4(u, d):
    """Order 4: the value and the u-slope of local basis d (0..4) at u; 0 for any other d."""
    a0, a1, a2 = _up2(u, 1.0 - u, u)
    a0, a1, a2, a3 = _up3(u, a0, a1, a2)
    b0, b1, b2, b3, b4 = _up4(u, a0, a1, a2, a3)
    return _pick5(d, b0, b1, b2, b3, b4), _pick5(d, -a0, a0 - a1, a1 - a2, a2 - a3, a3)


@triton.jit
def _local5(u, d):
    """Order 5: the value and the u-slope of local basis d (0..5) at u; 0 for any other d."""
    a0, a1, a2 = _up2(u, 1.0 - u, u)
    a0, a1, a2, a3 = _up3(u, a0, a1, a2)
    a0, a1, a2, a3, a4 = _up4(u, a0, a1, a2, a3)
    b0, b1, b2, b3, b4, b5 = _up5(u, a0, a1, a2, a3, a4)
    return _pick6(d, b0, b1, b2, b3, b4, b5), _pick6(d, -a0, a0 - a1, a1 - a2, a2 - a3, a3 - a4, a4)


@triton.jit
def _local(u, d, ORDER: tl.constexpr):
    if ORDER == 1:
        value, slope = _local1(u, d)
    elif ORDER == 2:
        value, slope = _local2(u, d)
    elif ORDER == 3:
        value, slope = _local3(u, d)
    elif ORDER == 4:
        value, slope = _local4(u, d)
    else:
        value, slope = _local5(u, d)
    return value, slope


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
             DERIV: tl.constexpr):
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
    value, slope = _local(u, c - span + ORDER, ORDER)  # local basis index d = c - (span - ORDER)
    is_base = c == COEFF
    value = tl.where(is_base, _silu(xv), tl.where(finite, value, NAN))
    value = tl.where(inside, value, 0.0)
    if DERIV:
        slope = tl.where(is_base, _silu_slope(xv), tl.where(finite, slope / width, NAN))
        slope = tl.where(inside, slope, 0.0)
    else:
        slope = value
    return value, slope


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
def _forward_kernel(x_ptr, sw_ptr, sc_ptr, bw_ptr, grid_ptr, out_ptr, B, IN, OUT,
                    ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, HAS_SCALER: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    outs = pid_n * BN + tl.arange(0, BN)
    row_in = rows < B
    out_in = outs < OUT
    K = IN * (COEFF + 1)
    acc = tl.zeros((BM, BN), dtype=out_ptr.dtype.element_ty)
    for k0 in range(0, K, BK):
        k = k0 + tl.arange(0, BK)
        k_in = k < K
        feat = k // (COEFF + 1)
        c = k % (COEFF + 1)
        inside = row_in[:, None] & k_in[None, :]
        xv = tl.load(x_ptr + rows[:, None] * IN + feat[None, :], mask=inside, other=0.0)
        a, _ = _columns(xv, feat[None, :], c[None, :], inside, grid_ptr, ORDER, COEFF, KNOTS, False)
        w = _weights(sw_ptr, sc_ptr, bw_ptr, outs[None, :], feat[:, None], c[:, None],
                     k_in[:, None] & out_in[None, :], IN, COEFF, HAS_SCALER)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    tl.store(out_ptr + rows[:, None] * OUT + outs[None, :], acc, mask=row_in[:, None] & out_in[None, :])


@triton.jit
def _weight_grad_kernel(x_ptr, g_ptr, sw_ptr, sc_ptr, grid_ptr, gsw_ptr, prod_ptr, gbw_ptr, B, IN, OUT,
                        ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr, HAS_SCALER: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr):
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
        xv = tl.load(x_ptr + rows[:, None] * IN + feat[None, :], mask=inside, other=0.0)
        a, _ = _columns(xv, feat[None, :], c[None, :], inside, grid_ptr, ORDER, COEFF, KNOTS, False)
        g = tl.load(g_ptr + rows[:, None] * OUT + outs[None, :], mask=row_in[:, None] & out_in[None, :], other=0.0)
        acc = tl.dot(tl.trans(a), g, acc, input_precision=PRECISION)
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
                       PRECISION: tl.constexpr):
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
            h = tl.dot(g, w, h, input_precision=PRECISION)
        inside = row_in[:, None] & col_in[None, :]
        xv = tl.load(x_ptr + rows[:, None] * IN + feat[None, :], mask=inside, other=0.0)
        _, da = _columns(xv, feat[None, :], c[None, :], inside, grid_ptr, ORDER, COEFF, KNOTS, True)
        e = tl.where(inside, h * da, 0.0)
        acc += tl.sum(tl.reshape(e, (BM, FB, CC)), axis=2)
    feats = pid_f * FB + tl.arange(0, FB)
    tl.store(gx_ptr + rows[:, None] * IN + feats[None, :], acc, mask=row_in[:, None] & (feats < IN)[None, :])



# The gather kernels (large grids): a point touches only its order + 1 local bases, so the
# contraction reads, per point, the order + 1 rows of a coefficient table (in, coeff, out) that
# its span selects, instead of multiplying all coeff + 1 columns. The table holds the scaled
# spline weights with the outputs contiguous, so that each row's read is one coalesced run.


@triton.jit
def _point(x_ptr, grid_ptr, rows, row_in, i, IN, KNOTS: tl.constexpr):
    """Feature i of the rows: the input, whether it is finite, its span and local coordinate, the interval's width."""
    xv = tl.load(x_ptr + rows * IN + i, mask=row_in, other=0.0)
    finite = _finite(xv)
    xs = tl.where(finite, xv, 0.0)
    row = grid_ptr + i * KNOTS + tl.zeros_like(rows)
    first = tl.load(row, mask=row_in, other=0.0)
    last = tl.load(row + (KNOTS - 1), mask=row_in, other=1.0)
    span, u, width = _locate(xs, row, first, last, row_in, KNOTS)
    return xv, finite, span, u, width


@triton.jit
def _gather_forward_kernel(x_ptr, table_ptr, bw_ptr, grid_ptr, out_ptr, B, IN, OUT,
                           ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr,
                           BM: tl.constexpr, BN: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    outs = pid_n * BN + tl.arange(0, BN)
    row_in = rows < B
    out_in = outs < OUT
    acc = tl.zeros((BM, BN), dtype=out_ptr.dtype.element_ty)
    for i in range(0, IN):
        xv, finite, span, u, _ = _point(x_ptr, grid_ptr, rows, row_in, i, IN, KNOTS)
        for d in tl.static_range(ORDER + 1):
            c = span - ORDER + d  # the coefficient of local basis d
            value, _ = _local(u, d, ORDER)
            value = tl.where(finite, value, NAN)
            valid = row_in & (c >= 0) & (c < COEFF)
            w = tl.load(table_ptr + (i * COEFF + c)[:, None] * OUT + outs[None, :],
                        mask=valid[:, None] & out_in[None, :], other=0.0)
            acc += value[:, None] * w
        base = tl.load(bw_ptr + outs * IN + i, mask=out_in, other=0.0)
        acc += _silu(xv)[:, None] * base[None, :]
    tl.store(out_ptr + rows[:, None] * OUT + outs[None, :], acc, mask=row_in[:, None] & out_in[None, :])


@triton.jit
def _gather_input_grad_kernel(x_ptr, g_ptr, table_ptr, bw_ptr, grid_ptr, gx_ptr, B, IN, OUT,
                              ORDER: tl.constexpr, COEFF: tl.constexpr, KNOTS: tl.constexpr,
                              BM: tl.constexpr, BO: tl.constexpr):
    pid_m = tl.program_id(0)
    i = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    row_in = rows < B
    xv, finite, span, u, width = _point(x_ptr, grid_ptr, rows, row_in, i, IN, KNOTS)
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
            _, slope = _local(u, d, ORDER)
            slope = tl.where(finite, slope / width, NAN)
            valid = row_in & (c >= 0) & (c < COEFF)
            w = tl.load(table_ptr + (i * COEFF + c)[:, None] * OUT + outs[None, :],
                        mask=valid[:, None] & out_in[None, :], other=0.0)
            e += slope[:, None] * w
        # g * 0 is NaN where g is not finite: the dense product multiplies such a row of
        # grad_out into every column, and the columns outside the band (zero slopes) make NaN
        acc += g * e + g * 0.0
    tl.store(gx_ptr + rows * IN + i, tl.sum(acc, axis=1), mask=row_in)


# --------------------------------------------------------------------------- launches


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _precision(x: torch.Tensor) -> str:
    return "tf32" if math_mode(x) == "tf32" else "ieee"


def _geometry(grid: torch.Tensor, order: int) -> tuple[int, int]:
    """(coeff, knots) of a grid (in, knots) of spline order ``order``."""
    knots = grid.size(1)
    return knots - 1 - order, knots


# Tile sizes depend on the output width (and the input gradient's on coeff) only, not on the
# batch: every distinct tile is one more compilation of a kernel.


def forward_tiles(batch: int, out_features: int) -> tuple[int, int, int]:
    """(BM, BN, BK) of the forward: rows, outputs and contraction columns per tile."""
    return (64, min(64, max(16, _pow2(out_features))), 32)


def weight_grad_tiles(batch: int, out_features: int) -> tuple[int, int, int]:
    """(BM, BN, BK) of the weight gradient: rows per step, outputs and contraction columns per tile."""
    return (32, min(64, max(16, _pow2(out_features))), 64)


def input_grad_tiles(batch: int, out_features: int, coeff: int) -> tuple[int, int, int, int]:
    """(BM, BO, FB, CC) of the input gradient: rows, outputs per step, features per tile, columns per step."""
    cc = min(64, _pow2(coeff + 1))
    return (64, min(32, max(16, _pow2(out_features))), max(1, 64 // cc), cc)


def gather_tiles(batch: int, out_features: int) -> tuple[int, int]:
    """(BM, BN) of the gather kernels: rows, and outputs per tile (the forward) or per step (the input gradient)."""
    return (64, min(64, max(16, _pow2(out_features))))


def gathers(coeff: int, order: int, asked: bool) -> bool:
    """Whether a layer asked for the gather kernels (``asked``) runs them: on a grid of one interval
    the band of local bases covers every column, which the gather input gradient's NaN rule assumes
    it does not, so such a layer contracts densely."""
    return asked and coeff > order + 1


def launches(needs_input: bool = True, needs_weights: bool = True, scaler: bool = True,
             gather: bool = False) -> tuple[int, int]:
    """Kernel launches of one layer's forward and of its backward (first-order). The gather
    kernels add the coefficient table's one elementwise kernel to the forward, and to the backward
    where it computes the input gradient."""
    table = int(gather)
    backward = int(needs_input) * (1 + table) + (int(needs_weights) * (1 + int(scaler)))  # the scaler's sum: one
    return 1 + table, backward


def _table(spline_weight: torch.Tensor, scaler: Optional[torch.Tensor]) -> torch.Tensor:
    """The gather kernels' coefficient table (in, coeff, out): spline_weight * scaler, outputs contiguous (one kernel)."""
    out_features, in_features, coeff = spline_weight.shape
    table = spline_weight.new_empty(in_features, coeff, out_features)
    if scaler is None:
        table.copy_(spline_weight.permute(1, 2, 0))
    else:
        torch.mul(spline_weight.permute(1, 2, 0), scaler.t().unsqueeze(1), out=table)
    return table


def _forward(x, spline_weight, scaler, base_weight, grid, order, gather=False):
    batch, in_features = x.shape
    out_features = base_weight.size(0)
    coeff, knots = _geometry(grid, order)
    out = x.new_empty(batch, out_features)
    if gathers(coeff, order, gather):
        bm, bn = gather_tiles(batch, out_features)
        _gather_forward_kernel[(triton.cdiv(batch, bm), triton.cdiv(out_features, bn))](
            x, _table(spline_weight, scaler), base_weight, grid, out, batch, in_features, out_features,
            ORDER=order, COEFF=coeff, KNOTS=knots, BM=bm, BN=bn, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        return out
    bm, bn, bk = forward_tiles(batch, out_features)
    launch = (triton.cdiv(batch, bm), triton.cdiv(out_features, bn))
    _forward_kernel[launch](
        x, spline_weight, scaler if scaler is not None else spline_weight, base_weight, grid, out,
        batch, in_features, out_features,
        ORDER=order, COEFF=coeff, KNOTS=knots, HAS_SCALER=scaler is not None, BM=bm, BN=bn, BK=bk,
        PRECISION=_precision(x), num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out


def _backward(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights, gather=False):
    batch, in_features = x.shape
    out_features = base_weight.size(0)
    coeff, knots = _geometry(grid, order)
    precision = _precision(x)
    scaler_arg = scaler if scaler is not None else spline_weight
    empty = x.new_empty(0)
    grad_x = grad_spline = grad_scaler = grad_base = empty
    if needs_weights:
        grad_spline = torch.empty_like(spline_weight)
        grad_base = torch.empty_like(base_weight)
        product = torch.empty_like(spline_weight) if scaler is not None else empty
        bm, bn, bk = weight_grad_tiles(batch, out_features)
        launch = (triton.cdiv(in_features * (coeff + 1), bk), triton.cdiv(out_features, bn))
        _weight_grad_kernel[launch](
            x, grad_out, spline_weight, scaler_arg, grid, grad_spline, product if scaler is not None else grad_spline,
            grad_base, batch, in_features, out_features,
            ORDER=order, COEFF=coeff, KNOTS=knots, HAS_SCALER=scaler is not None, BM=bm, BN=bn, BK=bk,
            PRECISION=precision, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        if scaler is not None:
            grad_scaler = product.sum(dim=2)
    if needs_input and gathers(coeff, order, gather):
        grad_x = torch.empty_like(x)
        bm, bo = gather_tiles(batch, out_features)
        _gather_input_grad_kernel[(triton.cdiv(batch, bm), in_features)](
            x, grad_out, _table(spline_weight, scaler), base_weight, grid, grad_x, batch, in_features, out_features,
            ORDER=order, COEFF=coeff, KNOTS=knots, BM=bm, BO=bo, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    elif needs_input:
        grad_x = torch.empty_like(x)
        bm, bo, fb, cc = input_grad_tiles(batch, out_features, coeff)
        launch = (triton.cdiv(batch, bm), triton.cdiv(in_features, fb))
        _input_grad_kernel[launch](
            x, grad_out, spline_weight, scaler_arg, base_weight, grid, grad_x, batch, in_features, out_features,
            ORDER=order, COEFF=coeff, KNOTS=knots, HAS_SCALER=scaler is not None, BM=bm, BO=bo, FB=fb, CC=cc,
            PRECISION=precision, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
    return grad_x, grad_spline, grad_scaler, grad_base


# --------------------------------------------------------------------------- operators


@torch.library.custom_op("kan::triton_spline_forward", mutates_args=())
def spline_forward(x: torch.Tensor, spline_weight: torch.Tensor, scaler: Optional[torch.Tensor],
                   base_weight: torch.Tensor, grid: torch.Tensor, order: int, gather: bool = False) -> torch.Tensor:
    """One layer's output: x (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None,
    base_weight (out, in), grid (in, coeff + order + 1) uniform, order 1..5 -> (batch, out).
    Every tensor contiguous, of x's dtype and device. ``gather``: the gather kernels (see ``gathers``)."""
    return _forward(x, spline_weight, scaler, base_weight, grid, order, gather)


@spline_forward.register_fake
def _(x, spline_weight, scaler, base_weight, grid, order, gather=False):
    return x.new_empty(x.size(0), base_weight.size(0))


@torch.library.custom_op("kan::triton_spline_backward", mutates_args=())
def spline_backward(grad_out: torch.Tensor, x: torch.Tensor, spline_weight: torch.Tensor,
                    scaler: Optional[torch.Tensor], base_weight: torch.Tensor, grid: torch.Tensor, order: int,
                    needs_input: bool, needs_weights: bool, gather: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                                           torch.Tensor, torch.Tensor]:
    """Gradients of the input, spline weights, scaler and base weights for ``grad_out`` (batch, out);
    an empty tensor for those not asked (``needs_input``, ``needs_weights``) and for a missing scaler."""
    return tuple(t.clone() if t.numel() == 0 else t for t in
                 _backward(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights,
                           gather))


@spline_backward.register_fake
def _(grad_out, x, spline_weight, scaler, base_weight, grid, order, needs_input, needs_weights, gather=False):
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
    x, spline_weight, scaler, base_weight, grid, order, gather = inputs
    ctx.save_for_backward(x, spline_weight, scaler, base_weight, grid)
    ctx.order, ctx.gather = order, gather


def _spline_backward(ctx, grad_out):
    x, spline_weight, scaler, base_weight, grid = ctx.saved_tensors
    needs = ctx.needs_input_grad[:4]
    if torch.is_grad_enabled():  # this backward is itself differentiated (create_graph=True)
        function = lambda *p: reference_output(*p, grid, ctx.order)  # noqa: E731
        return (*differentiable_grads(function, (x, spline_weight, scaler, base_weight), needs, grad_out),
                None, None, None)
    needs_weights = needs[1] or needs[2] or needs[3]
    grad_x, grad_spline, grad_scaler, grad_base = spline_backward(
        grad_out.contiguous(), x, spline_weight, scaler, base_weight, grid, ctx.order, needs[0], needs_weights,
        ctx.gather)
    return (grad_x if needs[0] else None, grad_spline if needs[1] else None,
            grad_scaler if needs[2] else None, grad_base if needs[3] else None, None, None, None)


spline_forward.register_autograd(_spline_backward, setup_context=_setup_context)


def layer(x, spline_weight, scaler, base_weight, grid, order, gather: bool = False) -> torch.Tensor:
    """A layer's output through the operators (differentiable); x (batch, in) any layout.
    ``gather``: contract by the gather kernels rather than densely (see ``gathers``)."""
    return spline_forward(x.contiguous(), spline_weight.contiguous(),
                          None if scaler is None else scaler.contiguous(), base_weight.contiguous(),
                          grid.contiguous(), order, gather)
