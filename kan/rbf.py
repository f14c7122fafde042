"""Gaussian radial-basis KAN, with the semantics of FastKAN (ZiyaoLi/fast-kan).

FastKAN replaces the B-splines by Gaussians on a uniform grid of centres c_k
over [grid_min, grid_max], all of width h = (grid_max - grid_min) / (grid_size - 1):

    phi_k(x) = exp(-((x - c_k) / h)^2)

A layer maps x (batch, in) to

    y = spline_linear(phi(layernorm(x))) + base_linear(silu(x))

where the LayerNorm (optional) normalises the input before the bases and the
base branch (optional) sees the un-normalised input. The defaults, the order of
the random draws (spline weights, then the base branch) and so the weights a
seed gives are FastKAN's; FastKAN's ``num_grids`` is called ``grid_size`` here,
like the basis size of every KAN in the registry, and the centres are a buffer
rather than a frozen parameter.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from kan.mlp import activation_flops
from kan.reference import check_features
from kan.regions import BASE_BRANCH, BASIS, SPLINE_PRODUCT, region
from kan.stack import LayerStack, layer_options, takes_layer_options


class RBFKANLinear(torch.nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 8,
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        use_base_update: bool = True,
        use_layernorm: bool = True,
        base_activation: type[torch.nn.Module] = torch.nn.SiLU,
        spline_weight_init_scale: float = 0.1,
    ):
        super().__init__()
        if grid_size < 2:
            raise ValueError(f"grid_size (the number of RBF centres) must be >= 2, got {grid_size}")
        if not grid_min < grid_max:
            raise ValueError(f"grid_min must be below grid_max, got {grid_min} and {grid_max}")
        if use_layernorm and in_features < 2:
            raise ValueError(
                f"a LayerNorm over {in_features} input feature maps every input to its bias; "
                f"pass use_layernorm=False for a layer this narrow"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.use_base_update = use_base_update

        self.layernorm = torch.nn.LayerNorm(in_features) if use_layernorm else None
        self.register_buffer("grid", torch.linspace(grid_min, grid_max, grid_size))  # (grid_size,)
        self.denominator = (grid_max - grid_min) / (grid_size - 1)

        self.spline_linear = torch.nn.Linear(in_features * grid_size, out_features, bias=False)
        torch.nn.init.trunc_normal_(self.spline_linear.weight, mean=0.0, std=spline_weight_init_scale)
        if use_base_update:
            self.base_activation = base_activation()
            self.base_linear = torch.nn.Linear(in_features, out_features)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in) -> (batch, in, grid_size): the Gaussian around every centre."""
        return torch.exp(-(((x.unsqueeze(-1) - self.grid) / self.denominator) ** 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.in_features)
        original_shape = x.shape
        x = x.reshape(-1, self.in_features)  # (batch, in)

        with region(BASIS):  # the LayerNorm counts as part of the feature evaluation
            normalised = self.layernorm(x) if self.layernorm is not None else x  # (batch, in)
            bases = self.basis(normalised)  # (batch, in, grid_size)
        with region(SPLINE_PRODUCT):
            output = self.spline_linear(bases.flatten(1))  # (batch, out); flatten: the batch may be empty
        if self.use_base_update:
            with region(BASE_BRANCH):
                output = output + self.base_linear(self.base_activation(x))  # (batch, out)
        return output.reshape(*original_shape[:-1], self.out_features)


class RBFKAN(LayerStack):
    @takes_layer_options(RBFKANLinear)
    def __init__(self, layers_hidden: Sequence[int], *options, **named):
        options = layer_options(RBFKANLinear, options, named)
        super().__init__(layers_hidden, functools.partial(RBFKANLinear, **options))
        self.grid_size = options["grid_size"]


# LayerNorm, per element: the sum for the mean (1), the subtraction (1), the
# squared deviation summed for the variance (multiply-add, 2), the scaling by
# 1 / std (1) and the affine multiply-add (2); per row: two divisions by the
# width, the eps add and the reciprocal square root.
LAYERNORM_FLOPS_PER_ELEMENT = 7
LAYERNORM_FLOPS_PER_ROW = 4


def layer_forward_flops(
    in_features: int,
    out_features: int,
    batch: int,
    grid_size: int,
    use_base_update: bool = True,
    use_layernorm: bool = True,
    base_activation: type[torch.nn.Module] = torch.nn.SiLU,
) -> int:
    """FLOPs of one ``RBFKANLinear.forward`` on ``batch`` rows (see kan.zoo for the convention).

    LayerNorm: 7 per input element plus 4 per row (see the constants above);
    basis: subtract, divide, square, negate, exp (5 per element of
    (batch, in, grid_size)); product: (batch, in * grid_size) x
    (in * grid_size, out); base branch: the activation per input element
    (``kan.mlp.ACTIVATION_FLOPS``, 4 for SiLU), a (batch, in) x (in, out)
    product, its bias add and the add to the spline output (2 * batch * out).
    """
    b, i, o, g = batch, in_features, out_features, grid_size
    layernorm = (LAYERNORM_FLOPS_PER_ELEMENT * b * i + LAYERNORM_FLOPS_PER_ROW * b) if use_layernorm else 0
    basis = 5 * b * i * g
    product = 2 * b * (i * g) * o
    base = (
        (activation_flops(base_activation) * b * i + 2 * b * i * o + 2 * b * o) if use_base_update else 0
    )
    return layernorm + basis + product + base


def forward_flops(widths: Sequence[int], batch: int, grid_size: int = 8, use_base_update: bool = True,
                  use_layernorm: bool = True, base_activation: type[torch.nn.Module] = torch.nn.SiLU,
                  **range_and_init) -> int:
    """FLOPs of one ``RBFKAN.forward`` on ``batch`` rows. ``range_and_init``: the model's other
    options (``grid_min``, ``grid_max``, ``spline_weight_init_scale``; ``kan.zoo.flops`` checks
    the names), which do not change the count."""
    return sum(
        layer_forward_flops(i, o, batch, grid_size, use_base_update, use_layernorm, base_activation)
        for i, o in zip(widths, widths[1:])
    )
