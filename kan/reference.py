"""The reference B-spline KAN, with the semantics of efficient-kan.

A KAN layer maps x (batch, in) to

    y = base_weight @ silu(x) + (spline_weight * spline_scaler) @ b_splines(x)

where ``b_splines(x)`` evaluates all ``grid_size + spline_order`` B-spline bases of
every input feature by the Cox-de Boor recursion: "basis functions times one matrix
product". Parameter names, buffer names, shapes and initialisation match
efficient-kan, so its state dicts load here with ``strict=True`` and the other way
round, and the same seed gives the same weights.

Known defects of the original are fixed without changing its default numerics:

* ``update_grid`` fitted the new coefficients against the *scaled* spline weights
  and stored them as unscaled ones, so with the standalone scaler on the layer's
  function changed; it now refits the unscaled weights, which keeps the function.
* ``update_grid`` built its uniform grid in float32 whatever the input; it now keeps
  the input's dtype and device.
* Rank-deficient least squares (duplicated or constant inputs) went to a solver that
  assumes full rank on CUDA; ``update_grid`` now solves by LAPACK's ``gelsd`` (the
  SVD's minimum-norm solution), on the CPU for devices that have no such driver.
  (``gelsy``, the CPU default, returned near-zero coefficients on data with fewer
  distinct values than coefficients, so ``update_grid`` changed the function on its
  own batch; the initialisation, a full-rank fit, keeps it.)
* A finite input far beyond the grid (about 1e38 in float32) made ``b_splines``
  overflow to ``inf * 0 = NaN``; such inputs now have the zero bases they have
  mathematically. NaN and infinite inputs keep the original's NaN bases.
* An empty batch failed in a reshape; it now gives an empty output. Options that
  describe no spline (``grid_size < 1``, ``spline_order < 0``, an empty, reversed or
  infinite ``grid_range``) are refused in one line; ``spline_order=0`` (piecewise
  constant) failed in ``reset_parameters`` and now works.
* Shape checks were ``assert`` statements, which ``python -O`` removes; a wrong
  input width now raises ``ValueError`` naming the expected and received widths.

This module is the yardstick the faster KANs are measured against: it stays
deliberately plain.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from kan.regions import BASE_BRANCH, BASIS, SPLINE_PRODUCT, region
from kan.stack import LayerStack


def check_dtype(x: torch.Tensor, weight: torch.Tensor) -> None:
    """``ValueError`` in the user's terms where the input's dtype is not the layer's (outside
    autocast, which casts for the products itself)."""
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"the input is {x.dtype} but the layer's parameters are {weight.dtype}; convert one "
                         f"to the other (model.to({x.dtype}) or x.to({weight.dtype}))")


def check_features(x: torch.Tensor, in_features: int) -> None:
    """``ValueError`` unless the last dimension of ``x`` is ``in_features`` wide."""
    if x.dim() == 0 or x.size(-1) != in_features:
        received = "a scalar" if x.dim() == 0 else f"width {x.size(-1)} (shape {tuple(x.shape)})"
        raise ValueError(f"expected input of width {in_features} in its last dimension, got {received}")


def solve_least_squares(A: torch.Tensor, B: torch.Tensor, driver: str = "gelsd") -> torch.Tensor:
    """Batched least squares ``min ||A X - B||`` that copes with rank-deficient ``A``.

    A: (batch, rows, cols), B: (batch, rows, rhs) -> X: (batch, cols, rhs), on A's
    device and dtype, by a LAPACK driver on the CPU (devices whose lstsq has no such
    driver solve there). ``gelsd`` (by the SVD: the minimum-norm solution) solves
    rank-deficient systems (duplicated or constant samples, fewer distinct samples
    than coefficients, coefficients that no sample touches), where ``gelsy`` returned
    solutions near zero with residuals as large as the targets. ``gelsy`` (rank-revealing
    QR) is several times faster at large grids, and right for full-rank systems.
    """
    if A.device.type == "cpu":
        return torch.linalg.lstsq(A, B, driver=driver).solution
    return torch.linalg.lstsq(A.cpu(), B.cpu(), driver=driver).solution.to(A.device)


def b_splines(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """All B-spline bases of every feature, by the Cox-de Boor recursion.

    x: (batch, in), grid: (in, knots) -> (batch, in, knots - 1 - spline_order).
    Intervals are half-open, [t_i, t_(i+1)), so a point on the last knot has no
    support. A finite input beyond the knots is first moved to one knot step beyond
    them, where every basis is zero as well: the recursion's ``(x - t) / (t' - t)``
    would otherwise overflow for inputs near the dtype's largest value and turn the
    zero bases into NaN (``inf * 0``). NaN and infinite inputs are left as they are:
    their bases are NaN from order 1 on, 0 at order 0.
    """
    first_step = grid[:, 1:2] - grid[:, :1]  # (in, 1)
    last_step = grid[:, -1:] - grid[:, -2:-1]
    bounded = x.clamp(grid[:, 0] - first_step[:, 0], grid[:, -1] + last_step[:, 0])  # (batch, in)
    x = torch.where(x.isfinite(), bounded, x).unsqueeze(-1)  # (batch, in, 1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)  # (batch, in, knots - 1)
    for k in range(1, spline_order + 1):
        bases = (
            (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * bases[:, :, :-1]
        ) + (
            (grid[:, k + 1 :] - x) / (grid[:, k + 1 :] - grid[:, 1:(-k)]) * bases[:, :, 1:]
        )  # (batch, in, knots - 1 - k)
    return bases.contiguous()


def check_options(grid_size, spline_order, grid_range) -> None:
    """``ValueError`` in one line unless the grid options describe a spline."""
    if isinstance(grid_size, bool) or not isinstance(grid_size, numbers.Integral) or grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    if isinstance(spline_order, bool) or not isinstance(spline_order, numbers.Integral) or spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0 (0: piecewise constant), got {spline_order!r}")
    try:
        low, high = (float(v) for v in grid_range)
    except (TypeError, ValueError):
        raise ValueError(f"grid_range must be two numbers (low, high), got {grid_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"grid_range must be two finite numbers with low < high, got {tuple(grid_range)!r}")


@dataclass(frozen=True)
class SplineOptions:
    """The options of a B-spline KAN layer, efficient-kan's by name, order and default: the one
    definition that ``KANLinear``, ``KAN`` and kan-fast's layer and model all take (by position
    after the widths, or by keyword). ``ValueError`` in one line unless they describe a spline."""

    grid_size: int = 5
    spline_order: int = 3
    scale_noise: float = 0.1
    scale_base: float = 1.0
    scale_spline: float = 1.0
    enable_standalone_scale_spline: bool = True
    base_activation: type[torch.nn.Module] = torch.nn.SiLU
    grid_eps: float = 0.02
    grid_range: Sequence[float] = (-1, 1)

    def __post_init__(self):
        check_options(self.grid_size, self.spline_order, self.grid_range)

    def keywords(self) -> dict[str, object]:
        """The options by name, to pass on to a layer."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def takes_spline_options(init):
    """Give ``init`` (``def __init__(self, <leading>, *options, <keyword-only>, **named)``, whose
    ``options`` and ``named`` make a SplineOptions) the signature it accepts: its leading
    parameters, SplineOptions' fields with their defaults, then its keyword-only ones. What
    ``help``, ``inspect.signature`` and ``kan.zoo.options`` show."""
    signature = inspect.signature(init)
    kept = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    leading = [p for p in kept if p.kind is not p.KEYWORD_ONLY]
    fields = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                annotation=f.type) for f in dataclasses.fields(SplineOptions)]
    init.__signature__ = signature.replace(
        parameters=[*leading, *fields, *(p for p in kept if p.kind is p.KEYWORD_ONLY)])
    return init


class KANLinear(torch.nn.Module):
    @takes_spline_options
    def __init__(self, in_features: int, out_features: int, *options, **named):
        super().__init__()
        spline = SplineOptions(*options, **named)
        grid_size, spline_order, grid_range = spline.grid_size, spline.spline_order, spline.grid_range
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order

        # Extended uniform knots: spline_order extra knots beyond each end of grid_range.
        h = (grid_range[1] - grid_range[0]) / grid_size
        grid = (
            torch.arange(-spline_order, grid_size + spline_order + 1) * h + grid_range[0]
        ).expand(in_features, -1).contiguous()  # (in, grid_size + 2 * spline_order + 1)
        if not bool(grid.isfinite().all()):  # lstsq and the bases would fail far from here
            low, high = (float(v) for v in grid_range)
            step = (high - low) / grid_size
            raise ValueError(f"grid_range {tuple(grid_range)!r} is too wide: its extended knots (spline_order "
                             f"{spline_order} steps beyond each end, {low - spline_order * step:.3g} to "
                             f"{high + spline_order * step:.3g}) overflow {grid.dtype}")
        self.register_buffer("grid", grid)

        self.base_weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = torch.nn.Parameter(
            torch.empty(out_features, in_features, grid_size + spline_order)
        )
        if spline.enable_standalone_scale_spline:
            self.spline_scaler = torch.nn.Parameter(torch.empty(out_features, in_features))

        self.scale_noise = spline.scale_noise
        self.scale_base = spline.scale_base
        self.scale_spline = spline.scale_spline
        self.enable_standalone_scale_spline = spline.enable_standalone_scale_spline
        self.base_activation = spline.base_activation()
        self.grid_eps = spline.grid_eps

        self.reset_parameters()

    def reset_parameters(self) -> None:
        """efficient-kan's recipe, in its order of random draws (same seed, same weights)."""
        torch.nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            noise = (
                (torch.rand(self.grid_size + 1, self.in_features, self.out_features) - 1 / 2)
                * self.scale_noise
                / self.grid_size
            )  # (grid_size + 1, in, out)
            knots = self.grid.T[self.spline_order : self.spline_order + self.grid_size + 1]  # (grid_size + 1, in)
            self.spline_weight.data.copy_(
                (self.scale_spline if not self.enable_standalone_scale_spline else 1.0)
                * self.curve2coeff(knots, noise.to(knots.dtype), driver="gelsy")  # see curve2coeff
            )
            if self.enable_standalone_scale_spline:
                torch.nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """All B-spline bases of every feature (module-level ``b_splines`` on this layer's grid).

        x: (batch, in) -> (batch, in, grid_size + spline_order).
        """
        if x.dim() != 2:
            raise ValueError(f"b_splines expects a 2-D input (batch, in), got shape {tuple(x.shape)}")
        check_features(x, self.in_features)
        return b_splines(x, self.grid, self.spline_order)

    def curve2coeff(self, x: torch.Tensor, y: torch.Tensor, driver: str = "gelsd") -> torch.Tensor:
        """Spline coefficients whose curves pass closest (least squares) to the points.

        x: (batch, in), y: (batch, in, out) -> (out, in, grid_size + spline_order).
        ``driver``: see ``solve_least_squares``. ``reset_parameters`` fits curves through
        the distinct knots (full rank) with ``gelsy``, efficient-kan's solver: its
        weights for a seed, and at grid 1000 several times faster than ``gelsd``.
        """
        check_features(x, self.in_features)
        if y.shape != (x.size(0), self.in_features, self.out_features):
            raise ValueError(
                f"curve2coeff expects y of shape {(x.size(0), self.in_features, self.out_features)}, "
                f"got {tuple(y.shape)}"
            )
        A = self.b_splines(x).transpose(0, 1)  # (in, batch, coeff)
        B = y.transpose(0, 1)  # (in, batch, out)
        solution = solve_least_squares(A, B, driver)  # (in, coeff, out)
        return solution.permute(2, 0, 1).contiguous()  # (out, in, coeff)

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        """(out, in, coeff): the spline weights times their standalone scaler."""
        if self.enable_standalone_scale_spline:
            return self.spline_weight * self.spline_scaler.unsqueeze(-1)
        return self.spline_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.in_features)
        original_shape = x.shape
        x = x.reshape(-1, self.in_features)  # (batch, in)

        with region(BASE_BRANCH):
            base_output = F.linear(self.base_activation(x), self.base_weight)  # (batch, out)
        with region(BASIS):
            bases = self.b_splines(x)  # (batch, in, coeff)
        with region(SPLINE_PRODUCT):
            spline_output = F.linear(
                bases.view(x.size(0), bases.size(1) * bases.size(2)),  # sizes spelt out: the batch may be empty
                self.scaled_spline_weight.view(self.out_features, -1),
            )  # (batch, out)
        output = base_output + spline_output
        return output.reshape(*original_shape[:-1], self.out_features)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        """Move the knots to the sample quantiles of ``x`` (batch, in), keeping the function on ``x``.

        The new knots blend the per-feature quantiles with a uniform grid over the
        sample range (weight ``grid_eps`` on the uniform one), and the spline
        coefficients are refitted by least squares (minimum norm where the samples
        do not determine them) to the spline part's values on ``x``. The base part is
        untouched. What is kept, per feature: the values on the samples of ``x``, to
        rounding, where a spline on the new knots can pass through them, which holds
        when the feature has at most ``grid_size + spline_order`` distinct values
        lying in distinct supports (Schoenberg-Whitney), as with data of few distinct
        values, whose quantile knots cluster between them. Otherwise (more distinct
        values than coefficients, as in continuous data) the new spline is the
        least-squares closest one on ``x``, not the same function; and between and
        beyond the samples the function always follows the new knots.
        """
        if x.dim() != 2:
            raise ValueError(f"update_grid expects a 2-D input (batch, in), got shape {tuple(x.shape)}")
        check_features(x, self.in_features)
        if x.size(0) == 0:
            raise ValueError("update_grid needs at least one sample, got an empty batch")
        if not bool(x.isfinite().all()):
            raise ValueError("update_grid needs finite samples, got NaN or inf (they would become knots)")
        batch = x.size(0)

        splines = self.b_splines(x).permute(1, 0, 2)  # (in, batch, coeff)
        coeff = self.spline_weight.permute(1, 2, 0)  # (in, coeff, out)
        spline_values = torch.bmm(splines, coeff).permute(1, 0, 2)  # (batch, in, out)

        x_sorted = torch.sort(x, dim=0)[0]  # (batch, in)
        quantile_rows = torch.linspace(0, batch - 1, self.grid_size + 1, dtype=torch.int64, device=x.device)
        grid_adaptive = x_sorted[quantile_rows]  # (grid_size + 1, in)

        uniform_step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / self.grid_size  # (in,)
        steps = torch.arange(self.grid_size + 1, dtype=x.dtype, device=x.device).unsqueeze(1)
        grid_uniform = steps * uniform_step + x_sorted[0] - margin  # (grid_size + 1, in)

        grid = self.grid_eps * grid_uniform + (1 - self.grid_eps) * grid_adaptive
        below = torch.arange(self.spline_order, 0, -1, dtype=x.dtype, device=x.device).unsqueeze(1)
        above = torch.arange(1, self.spline_order + 1, dtype=x.dtype, device=x.device).unsqueeze(1)
        grid = torch.cat(
            [grid[:1] - uniform_step * below, grid, grid[-1:] + uniform_step * above], dim=0
        )  # (grid_size + 2 * spline_order + 1, in)

        self.grid.copy_(grid.T)
        self.spline_weight.data.copy_(self.curve2coeff(x, spline_values))

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        """efficient-kan's L1 + entropy penalty on the mean absolute spline weights."""
        l1_fake = self.spline_weight.abs().mean(-1)  # (out, in)
        regularization_loss_activation = l1_fake.sum()
        p = l1_fake / regularization_loss_activation
        regularization_loss_entropy = -torch.sum(p * p.log())
        return (
            regularize_activation * regularization_loss_activation
            + regularize_entropy * regularization_loss_entropy
        )


class KAN(LayerStack):
    layer_class: type[KANLinear] = KANLinear  # what each layer is built from

    @takes_spline_options
    def __init__(self, layers_hidden: Sequence[int], *options, **named):
        spline = SplineOptions(*options, **named)
        super().__init__(layers_hidden, functools.partial(self.layer_class, **spline.keywords()))
        self.grid_size = spline.grid_size
        self.spline_order = spline.spline_order

    def forward(self, x: torch.Tensor, update_grid: bool = False) -> torch.Tensor:
        for layer in self.layers:
            if update_grid:
                layer.update_grid(x)
            x = layer(x)
        return x

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        return sum(
            layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers
        )


def layer_forward_flops(
    in_features: int, out_features: int, batch: int, grid_size: int, spline_order: int, scaled: bool = True
) -> int:
    """FLOPs of one ``KANLinear.forward`` on ``batch`` rows (see kan.zoo for the convention).

    base branch: SiLU as exp, add, divide, multiply (4 per element) and a
    (batch, in) x (in, out) product; basis: the order-0 indicator (2 comparisons and
    an and per interval), then per Cox-de Boor level 2 knot differences per basis
    function and feature plus 7 per element (two subtract-divide pairs, two
    multiplies, one add); spline: the scaler multiply and a (batch, in * coeff) x
    (in * coeff, out) product; and the final add.
    """
    b, i, o = batch, in_features, out_features
    coeff = grid_size + spline_order
    intervals = grid_size + 2 * spline_order
    base = 4 * b * i + 2 * b * i * o
    basis = 3 * b * i * intervals
    for k in range(1, spline_order + 1):
        functions = intervals - k
        basis += 2 * i * functions + 7 * b * i * functions
    spline = (o * i * coeff if scaled else 0) + 2 * b * i * coeff * o
    return base + basis + spline + b * o


def forward_flops(widths: Sequence[int], batch: int, grid_size: int = 5, spline_order: int = 3,
                  enable_standalone_scale_spline: bool = True, **_unused) -> int:
    """FLOPs of one ``KAN.forward`` on ``batch`` rows; options that do not change the count are ignored."""
    return sum(
        layer_forward_flops(i, o, batch, grid_size, spline_order, enable_standalone_scale_spline)
        for i, o in zip(widths, widths[1:])
    )


def differentiable_grads(function, inputs: Sequence, needs: Sequence[bool], grad_out: torch.Tensor) -> list:
    """A custom Function's backward while autograd records it (``create_graph=True``): the
    gradients of ``function(*inputs)`` against ``grad_out`` by autograd through ``function``,
    which must be the same function written in differentiable PyTorch operations (the
    reference's), with ``create_graph=True``.

    ``inputs`` are the tensors the Function saved, still connected to the graph, so the
    gradients returned can themselves be differentiated: with respect to the inputs (a
    Hessian, a physics-informed loss on ``d output / d x``) and to ``grad_out``. The fast
    kernels compute first-order gradients only; every Function of ``kan.fast`` (and any
    backend's) calls this from ``backward`` when ``torch.is_grad_enabled()``, so that a
    second derivative is exact instead of silently detached. Returns one entry per input:
    the gradient for those whose flag in ``needs`` is set (zeros where the output does not
    depend on it), None for the others; non-tensor inputs pass as they are.
    """
    with torch.enable_grad():
        wanted = [t for t, n in zip(inputs, needs) if n and isinstance(t, torch.Tensor)]
        if not wanted:
            return [None] * len(inputs)
        output = function(*inputs)
        found = iter(torch.autograd.grad(output, wanted, grad_out, create_graph=True, allow_unused=True))
        grads = [next(found) if n and isinstance(t, torch.Tensor) else None for t, n in zip(inputs, needs)]
    return [torch.zeros_like(t) if g is None and n and isinstance(t, torch.Tensor) else g
            for g, t, n in zip(grads, inputs, needs)]
