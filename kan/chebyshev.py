"""Chebyshev KAN, with the semantics of ChebyKAN (SynodicMonth/ChebyKAN).

Each edge function is a Chebyshev series of degree ``grid_size`` in the input
squashed into [-1, 1] by tanh:

    phi_(o,i)(x) = sum_n  c_(i,o,n) T_n(tanh x),   n = 0..grid_size,

so a layer maps x (batch, in) to ``y_o = sum_i phi_(o,i)(x_i)`` (no bias, as in
ChebyKAN). ChebyKAN evaluates ``T_n(t) = cos(n acos t)``, whose gradient is
NaN where tanh saturates to exactly +/-1 (acos has an infinite slope there);
here the polynomials come from the recurrence T_(n+1) = 2 t T_n - T_(n-1),
which is exact and smooth on all of [-1, 1]. The polynomials (batch, in,
grid_size + 1) meet the coefficients in one matrix product. ChebyKAN calls the
degree ``degree``; it is ``grid_size`` here, like the basis size of every KAN
in the registry.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F

from kan.reference import check_features
from kan.regions import BASIS, SPLINE_PRODUCT, region
from kan.stack import LayerStack, layer_options, takes_layer_options


def chebyshev_polynomials(t: torch.Tensor, degree: int) -> torch.Tensor:
    """t: (...) in [-1, 1] -> (..., degree + 1): T_0(t) .. T_degree(t) by the three-term recurrence."""
    polynomials = [torch.ones_like(t), t]  # T_0, T_1
    two_t = 2 * t
    for _ in range(2, degree + 1):
        polynomials.append(two_t * polynomials[-1] - polynomials[-2])  # T_(n+1) = 2 t T_n - T_(n-1)
    return torch.stack(polynomials[: degree + 1], dim=-1)


class ChebyshevKANLinear(torch.nn.Module):
    def __init__(self, in_features: int, out_features: int, grid_size: int = 5):
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size (the polynomial degree) must be >= 1, got {grid_size}")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.cheby_coeffs = torch.nn.Parameter(
            torch.empty(in_features, out_features, grid_size + 1)
        )  # (in, out, degree + 1)
        torch.nn.init.normal_(self.cheby_coeffs, mean=0.0, std=1 / (in_features * (grid_size + 1)))

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in) -> (batch, in, grid_size + 1): T_n(tanh x) for n = 0..grid_size."""
        return chebyshev_polynomials(torch.tanh(x), self.grid_size)

    @property
    def coefficient_matrix(self) -> torch.Tensor:
        """(out, in * (grid_size + 1)), laid out as the flattened ``basis``: in, then n."""
        return self.cheby_coeffs.transpose(0, 1).reshape(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.in_features)
        original_shape = x.shape
        x = x.reshape(-1, self.in_features)  # (batch, in)

        with region(BASIS):
            polynomials = self.basis(x)  # (batch, in, grid_size + 1)
        with region(SPLINE_PRODUCT):
            output = F.linear(polynomials.flatten(1), self.coefficient_matrix)  # (batch, out); flatten: the batch may be empty
        return output.reshape(*original_shape[:-1], self.out_features)


class ChebyshevKAN(LayerStack):
    """ChebyKAN layers stacked directly (ChebyKAN's examples add LayerNorms between them; this does not)."""

    @takes_layer_options(ChebyshevKANLinear)
    def __init__(self, layers_hidden: Sequence[int], *options, **named):
        options = layer_options(ChebyshevKANLinear, options, named)
        super().__init__(layers_hidden, functools.partial(ChebyshevKANLinear, **options))
        self.grid_size = options["grid_size"]


def layer_forward_flops(in_features: int, out_features: int, batch: int, grid_size: int) -> int:
    """FLOPs of one ``ChebyshevKANLinear.forward`` on ``batch`` rows (see kan.zoo for the convention).

    basis: tanh and the doubling 2 t (2 per input element), then per recurrence
    step n = 2..grid_size a multiply and a subtract per element (T_0 and T_1 are
    free); product: (batch, in * (grid_size + 1)) x (in * (grid_size + 1), out).
    """
    b, i, o, d = batch, in_features, out_features, grid_size
    basis = 2 * b * i + 2 * b * i * max(d - 1, 0)
    product = 2 * b * i * (d + 1) * o
    return basis + product


def forward_flops(widths: Sequence[int], batch: int, grid_size: int = 5) -> int:
    """FLOPs of one ``ChebyshevKAN.forward`` on ``batch`` rows."""
    return sum(layer_forward_flops(i, o, batch, grid_size) for i, o in zip(widths, widths[1:]))
