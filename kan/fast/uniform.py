"""The uniform-grid kernels of kan-fast's PyTorch paths, and their compilation per layer.

On a uniform grid every kernel below is one elementwise expression over float
tensors: the knot span is ``floor`` of the knot coordinate, and one lookup in the knot
table gives the local coordinate from the span's stored knot (``_uniform_span``).
``torch.compile`` fuses each into a single vectorised loop, where the layer's ``compile``
option allows (:class:`CompiledKernels`); otherwise they run eagerly, the same expressions.
They serve cardinal grids only (``KnotGeometry.cardinal``). Where that floor lands on the
wrong side of a knot by rounding, the bases are continuous there (orders >= 1), so values
move by rounding only; derivatives are continuous from order 2 on, and order 1's input
gradient takes the exact path.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from typing import Callable

import torch

from kan.bspline import KnotGeometry, row_gather, uniform_local

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
    lower = row_gather(knots_ext, column).view(x.shape)
    interval = 1 / (row_gather(knots_ext, column + 1).view(x.shape) - lower)
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
    values, _ = uniform_local(u, order, derivative=False)  # order + 1 of (rows, in)
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
    _, slopes = uniform_local(u, order, derivative=True)
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
    values, _ = uniform_local(u, order, derivative=False)
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
    values, _ = uniform_local(u, order, derivative=False)
    out = []
    for d, value in enumerate(values):
        position = span - order + d
        out.append(torch.where((position >= 0) & (position < coeff), value, 0))
    return torch.stack(out)


# --------------------------------------------------------------------------- compilation


def fused(geometry: KnotGeometry) -> bool:
    """Whether the uniform kernels apply: a cardinal grid and a continuous basis (order >= 1)."""
    return geometry.cardinal and geometry.order >= 1


@functools.lru_cache(maxsize=None)
def can_compile(device_type: str) -> bool:
    """Whether torch.compile's toolchain for ``device_type`` is here: a C++ compiler for the
    CPU, Triton for CUDA. Looked up once per device type and process, never per call."""
    if device_type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def eager(kernel: Callable, *args):
    """``kernel(*args)`` as it is: how a layer whose kernels are not compiled runs them."""
    return kernel(*args)


class CompiledKernels:
    """One layer's uniform-grid kernels through ``torch.compile``, each compiled on its first call.

    Called as ``kernels(kernel, *args)``, like :func:`eager`. A kernel that fails to compile or
    to run compiled is reported once, in one warning naming the layer and the error, and from
    then on this layer runs every kernel eagerly (the same expressions); no other layer is
    affected. Inside an outer ``torch.compile``, which traces the kernels itself, they run as
    they are.
    """

    def __init__(self, layer: str):
        self.layer = layer  # how the warning names the layer
        self.compiled: dict[Callable, Callable] = {}
        self.failure: str | None = None

    def __call__(self, kernel: Callable, *args):
        if self.failure is not None or torch.compiler.is_compiling():
            return kernel(*args)
        try:
            compiled = self.compiled.get(kernel)
            if compiled is None:
                compiled = self.compiled[kernel] = torch.compile(kernel)
            return compiled(*args)
        except Exception as error:  # a missing or broken toolchain, or a kernel it cannot build
            self.failure = f"{type(error).__name__}: {error}"
            warnings.warn(f"kan.fast: torch.compile failed in {self.layer} ({self.failure}); "
                          "this layer runs its kernels eagerly from now on")
            return kernel(*args)

    def __getstate__(self) -> dict:
        """Compiled functions do not pickle: a copy compiles its own on first use."""
        return {**self.__dict__, "compiled": {}}
