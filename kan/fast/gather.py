"""kan-fast's gather contraction on the PyTorch paths: each input reads the coefficient rows its
local bases touch (large grids), as an ``embedding_bag`` with per-sample weights."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from kan.bspline import KnotGeometry, de_boor_local, knot_span, local_b_splines
from kan.fast.options import GATHER_BLOCK_FEATURES
from kan.fast.shared import all_finite, reference_grads
from kan.fast.uniform import _uniform_bags, _uniform_sorted_values, _uniform_span_key, fused
from kan.reference import b_splines, differentiable_grads
from kan.regions import BASIS, SPLINE_PRODUCT, region


def _table_rows(first: torch.Tensor, geometry: KnotGeometry) -> torch.Tensor:
    """Rows of the (in * coeff, out) table that the local bases read.

    first: (batch, in) -> (batch, in, order + 1); bases that do not exist are clamped
    to a row of their feature (their weights are zero).
    """
    g = geometry
    index = first.unsqueeze(-1) + torch.arange(g.order + 1, device=first.device)
    rows = torch.arange(first.size(-1), device=first.device).unsqueeze(1) * g.coeff  # (in, 1)
    return index.clamp(0, g.coeff - 1) + rows


def _gather_bags(x: torch.Tensor, geometry: KnotGeometry, block: int, run: Callable):
    """Bag indices and weights for the gather forward, in feature blocks.

    x: (batch, in) -> index, weight: (blocks * batch, block * (order + 1)), and the
    number of blocks; bag (blk, b) holds sample b's local bases of the features in
    block blk, so one block's coefficient rows stay in cache across the batch.
    """
    g = geometry
    batch, in_features = x.shape
    blocks = -(-in_features // block)
    pad = blocks * block - in_features
    if fused(g):
        origin, inv_step = F.pad(g.origin, (0, pad)), F.pad(g.inv_step, (0, pad))  # padding: step 0
        index, weight = run(
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


def _gather_table_grad(x: torch.Tensor, grad_out: torch.Tensor, geometry: KnotGeometry, run: Callable) -> torch.Tensor:
    """d table: for each coefficient row, the weighted sum of grad_out over the samples using it.

    x: (batch, in), grad_out: (batch, out) -> (in * coeff, out). Each feature's samples
    are sorted by knot span; the samples sharing a span form one bag per local
    position d (an ``embedding_bag`` over the rows of grad_out, which stays in cache).
    """
    g = geometry
    batch, in_features = x.shape
    buckets = g.knots + 1  # key = span + 1 in [0, knots]
    if fused(g):
        key = run(_uniform_span_key, x, g.origin, g.inv_step, g.knots)  # (in, batch)
    else:
        key = (knot_span(x, g) + 1).t()
    key, sample = torch.sort(key, dim=1)  # (in, batch), sample: which row of grad_out
    xs = x.t().gather(1, sample)  # (in, batch)
    if fused(g):
        values = run(_uniform_sorted_values, xs, key, g.inv_step, g.knots_ext, g.order, g.coeff)
    else:
        span = key - 1
        local, _ = de_boor_local(xs.t(), span.t(), g, derivative=False)  # order + 1 of (batch, in)
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
    def forward(ctx, x, table, geometry, run):
        batch = x.size(0)
        with region(BASIS):
            index, weight, blocks = _gather_bags(x, geometry, GATHER_BLOCK_FEATURES, run)
        with region(SPLINE_PRODUCT):
            out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
            out = out.view(blocks, batch, -1).sum(0)
        ctx.save_for_backward(x, table)
        ctx.geometry = geometry
        ctx.run = run
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, table = ctx.saved_tensors
        g = ctx.geometry
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]

        def function(x, table):  # the reference's dense bases times the table
            return b_splines(x, g.knots_ext[:, 1:-1], g.order).reshape(x.size(0), table.size(0)) @ table

        if torch.is_grad_enabled():  # create_graph: a backward that can itself be differentiated
            return (*differentiable_grads(function, (x, table), (need_x, need_t), grad_out), None, None)
        if not all_finite(grad_out):
            return (*reference_grads(function, (x, table), (need_x, need_t), grad_out), None, None)
        grad_out = grad_out.contiguous()
        batch, in_features = x.shape
        grad_x = grad_t = None
        if need_t:
            with region(SPLINE_PRODUCT):
                grad_t = _gather_table_grad(x, grad_out, g, ctx.run)
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
        return grad_x, grad_t, None, None
