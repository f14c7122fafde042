"""kan-fast's dense contraction on the PyTorch paths: ``[bases(x), act(x)] @ W`` by row chunks."""

from __future__ import annotations

from typing import Callable

import torch

from kan.bspline import KnotGeometry, local_b_splines
from kan.fast.shared import all_finite, base_and_grad, chunk_rows, reference_grads
from kan.fast.uniform import _uniform_dense_bases, _uniform_input_grad, fused
from kan.reference import b_splines, differentiable_grads
from kan.regions import BASE_BRANCH, BASIS, SPLINE_PRODUCT, region


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


def dense_bases(x: torch.Tensor, base: torch.Tensor, geometry: KnotGeometry, run: Callable) -> torch.Tensor:
    """(rows, in), (rows, in) -> (rows, (coeff + 1) * in): the combined product's left operand.

    ``run``: how the layer runs its uniform-grid kernels (``kan.fast.uniform``)."""
    g = geometry
    if fused(g):
        chunk = run(_uniform_dense_bases, x, base, g.origin, g.inv_step, g.knots_ext, g.order, g.coeff)
        return chunk.view(x.size(0), -1)
    return _scatter_dense_bases(x, base, g)


def _local_input_grad(x: torch.Tensor, grad_columns: torch.Tensor, geometry: KnotGeometry, run: Callable) -> torch.Tensor:
    """sum_c grad_columns[:, c, :] * d basis_c / dx over the local bases only.

    x: (rows, in), grad_columns: (rows, coeff, in) (a view) -> (rows, in).
    """
    g = geometry
    if fused(g) and g.order >= 2:
        return run(_uniform_input_grad, x, grad_columns, g.origin, g.inv_step, g.knots_ext, g.order)
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
    def forward(ctx, x, weight_t, geometry, activation, run):
        batch, in_features = x.shape
        out = x.new_empty(batch, weight_t.size(1))
        rows = chunk_rows(x, weight_t.size(0))
        for start in range(0, batch, rows):
            xc = x[start : start + rows]
            with region(BASE_BRANCH):
                base = activation(xc)
            with region(BASIS):
                chunk = dense_bases(xc, base, geometry, run)  # (rows, (coeff + 1) * in)
            with region(SPLINE_PRODUCT):
                torch.mm(chunk, weight_t, out=out[start : start + rows])
        ctx.save_for_backward(x, weight_t)
        ctx.geometry = geometry
        ctx.activation = activation
        ctx.run = run
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
            return (*differentiable_grads(function, (x, weight_t), (need_x, need_w), grad_out), None, None, None)
        if not all_finite(grad_out):
            return (*reference_grads(function, (x, weight_t), (need_x, need_w), grad_out), None, None, None)
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight_t) if need_w else None
        batch, in_features = x.shape
        rows = chunk_rows(x, weight_t.size(0))
        for start in range(0, batch, rows):
            xc = x[start : start + rows]
            gc = grad_out[start : start + rows]
            if need_w:
                with region(BASIS):
                    chunk = dense_bases(xc, ctx.activation(xc), g, ctx.run)
                with region(SPLINE_PRODUCT):
                    grad_w.addmm_(chunk.t(), gc)
            if need_x:
                with region(SPLINE_PRODUCT):
                    grad_chunk = torch.mm(gc, weight_t.t()).view(-1, g.coeff + 1, in_features)
                with region(BASIS):
                    grad = _local_input_grad(xc, grad_chunk[:, : g.coeff], g, ctx.run)
                with region(BASE_BRANCH):
                    grad += base_and_grad(ctx.activation, xc, grad_chunk[:, g.coeff], False)
                grad_x[start : start + rows] = grad
        return grad_x, grad_w, None, None, None
