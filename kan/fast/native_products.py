"""kan-fast's products on the CPU by the C++ kernels of ``kan.native``.

On the CPU, where kan.native's kernels build, both contractions run there: the
local bases are evaluated inside each kernel, vectorised over features, and never
stored for the whole batch. The dense product keeps its matrix product in PyTorch
(the BLAS), over row chunks of a cache-sized buffer that the C++ writes. The dense
weight is (out, (coeff + 1) * in), basis-major like the chunks, whose every column
the C++ writes straight from vector registers; the gather table is (in, coeff, out).
"""

from __future__ import annotations

import torch

from kan import native
from kan.bspline import KnotGeometry
from kan.fast.shared import activate, all_finite, base_and_grad, chunk_rows, reference_grads, reference_layer
from kan.reference import differentiable_grads
from kan.regions import BASE_BRANCH, BASIS, SPLINE_PRODUCT, region


class _Unrecorded:
    """The context a native product's forward is given where autograd records nothing (grad
    mode off): no input needs a gradient, and nothing is saved."""

    needs_input_grad = (False,) * 6

    def save_for_backward(self, *tensors) -> None:
        pass


def native_product(product: type[torch.autograd.Function], *args) -> torch.Tensor:
    """``product.apply(*args)`` (``NativeDenseProduct`` or ``NativeGatherProduct``); with grad mode
    off, its forward alone, the same operations without the autograd Function's own per-call
    cost, which small layers feel."""
    if torch.is_grad_enabled():
        return product.apply(*args)
    return product.forward(_Unrecorded(), *args)


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
    step = chunk_rows(x, width)
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
            base = activate(activation, x)
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
                grad_x += base_and_grad(ctx.activation, x, grad_out @ weight[:, g.coeff], True)
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
            base = activate(activation, x)
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
                grad_x += base_and_grad(ctx.activation, x, grad_out @ base_weight, True)
        return grad_x, grad_spline, grad_scaler, grad_base_weight, None, None
