"""Fourier KAN, with the semantics of GistNoesis' FourierKAN (fftKAN).

Each edge function is a truncated Fourier series in its input,

    phi_(o,i)(x) = sum_k  a_(o,i,k) cos(k x) + b_(o,i,k) sin(k x),   k = 1..grid_size,

so a layer maps x (batch, in) to ``y_o = sum_i phi_(o,i)(x_i) + bias_o``. The
original sums a broadcast (batch, out, in, grid_size) product; here the
features ``cos(k x), sin(k x)`` (batch, in * 2 * grid_size) meet the
coefficients (out, in * 2 * grid_size) in one matrix product, so no tensor of
that four-dimensional size is ever made. Parameter names and the initialisation
follow fftKAN; the bias is stored as (out,) rather than fftKAN's (1, out).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from kan.reference import check_features
from kan.regions import BASIS, SPLINE_PRODUCT, region
from kan.stack import LayerStack, layer_options, takes_layer_options


class FourierKANLinear(torch.nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        addbias: bool = True,
        smooth_initialization: bool = False,
    ):
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size (the number of frequencies) must be >= 1, got {grid_size}")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.addbias = addbias

        frequencies = torch.arange(1, grid_size + 1, dtype=torch.float32)  # (grid_size,)
        self.register_buffer("frequencies", frequencies, persistent=False)

        # fftKAN's normalisation: inputs of unit variance give outputs of unit
        # variance. With smooth_initialization the k-th coefficients are divided
        # by k^2 instead of sqrt(grid_size), so the initial functions are smooth.
        grid_norm = frequencies**2 if smooth_initialization else math.sqrt(grid_size)
        self.fouriercoeffs = torch.nn.Parameter(
            torch.randn(2, out_features, in_features, grid_size) / (math.sqrt(in_features) * grid_norm)
        )  # (2, out, in, grid_size): [0] multiplies cos(k x), [1] multiplies sin(k x)
        if addbias:
            self.bias = torch.nn.Parameter(torch.zeros(out_features))  # (out,)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in) -> (batch, in, 2 * grid_size): cos(k x) for k = 1..grid_size, then sin(k x)."""
        kx = x.unsqueeze(-1) * self.frequencies.to(x.dtype)  # (batch, in, grid_size)
        return torch.cat([torch.cos(kx), torch.sin(kx)], dim=-1)

    @property
    def coefficient_matrix(self) -> torch.Tensor:
        """(out, in * 2 * grid_size), laid out as the flattened ``basis``: in, then (cos, sin), then k."""
        return self.fouriercoeffs.permute(1, 2, 0, 3).reshape(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.in_features)
        original_shape = x.shape
        x = x.reshape(-1, self.in_features)  # (batch, in)

        with region(BASIS):
            features = self.basis(x)  # (batch, in, 2 * grid_size)
        with region(SPLINE_PRODUCT):
            output = F.linear(
                features.flatten(1),  # (batch, in * 2 * grid_size); flatten, not view(batch, -1): the batch may be empty
                self.coefficient_matrix,
                self.bias if self.addbias else None,
            )  # (batch, out)
        return output.reshape(*original_shape[:-1], self.out_features)


class FourierKAN(LayerStack):
    @takes_layer_options(FourierKANLinear)
    def __init__(self, layers_hidden: Sequence[int], *options, **named):
        options = layer_options(FourierKANLinear, options, named)
        super().__init__(layers_hidden, functools.partial(FourierKANLinear, **options))
        self.grid_size = options["grid_size"]


def layer_forward_flops(
    in_features: int, out_features: int, batch: int, grid_size: int, addbias: bool = True
) -> int:
    """FLOPs of one ``FourierKANLinear.forward`` on ``batch`` rows (see kan.zoo for the convention).

    basis: the products k * x, then cos and sin (3 per element of
    (batch, in, grid_size)); product: (batch, in * 2 * grid_size) x
    (in * 2 * grid_size, out); bias: batch * out adds.
    """
    b, i, o, g = batch, in_features, out_features, grid_size
    basis = 3 * b * i * g
    product = 2 * b * (i * 2 * g) * o
    return basis + product + (b * o if addbias else 0)


def forward_flops(
    widths: Sequence[int],
    batch: int,
    grid_size: int = 5,
    addbias: bool = True,
    smooth_initialization: bool = False,
) -> int:
    """FLOPs of one ``FourierKAN.forward`` on ``batch`` rows; the initialisation does not change it."""
    return sum(
        layer_forward_flops(i, o, batch, grid_size, addbias) for i, o in zip(widths, widths[1:])
    )
