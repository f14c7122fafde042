"""MLP baselines: the yardsticks a KAN's speed is compared with.

Two baselines answer two questions:

* ``MLP``: the same widths as the KAN (a width-matched MLP). Same shape of
  network, far fewer parameters; it shows what the KAN's extra machinery costs.
* ``ParamMatchedMLP``: hidden widths scaled by one common factor until the MLP
  has (within 5%) as many parameters as a given KAN from the registry. Same
  capacity by count; it shows what the KAN costs per parameter.

Both are plain ``nn.Linear`` layers with an activation between them (not after
the last), and ``forward_flops`` / ``param_matched_forward_flops`` give their
analytic FLOPs with the convention of :mod:`kan.zoo`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from kan.reference import check_features
from kan.stack import LayerStack

PARAMETER_TOLERANCE = 0.05  # a parameter-matched MLP is within 5% of its target

# FLOPs per element of each activation, with the convention of kan.zoo
# (transcendental = 1, other elementwise op = 1). SiLU is x / (1 + exp(-x)):
# exp, add, divide and the multiply by x, as the reference KAN counts it.
ACTIVATION_FLOPS: dict[type[torch.nn.Module], int] = {
    torch.nn.Identity: 0,
    torch.nn.ReLU: 1,  # one comparison
    torch.nn.Tanh: 1,  # one transcendental
    torch.nn.Sigmoid: 3,  # exp, add, divide
    torch.nn.SiLU: 4,  # exp, add, divide, multiply
    torch.nn.GELU: 5,  # x * 0.5 * (1 + erf(x / sqrt(2))): divide, erf, add, two multiplies
}


def activation_flops(activation: type[torch.nn.Module]) -> int:
    """FLOPs per element of ``activation`` (a module class); ``ValueError`` if it is not in the table."""
    try:
        return ACTIVATION_FLOPS[activation]
    except (KeyError, TypeError):
        known = ", ".join(cls.__name__ for cls in ACTIVATION_FLOPS)
        raise ValueError(
            f"no FLOP count for activation {activation!r}; counted activations: {known}"
        ) from None


class MLP(LayerStack):
    """Linear layers of widths ``layers_hidden`` (input first), ``activation`` between them."""

    def __init__(
        self,
        layers_hidden: Sequence[int],
        activation: type[torch.nn.Module] = torch.nn.SiLU,
        bias: bool = True,
    ):
        widths = [int(w) for w in layers_hidden]
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least an input and an output width, got {widths!r}")
        super().__init__(widths, functools.partial(torch.nn.Linear, bias=bias))
        self.widths = widths
        self.activation = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        check_features(x, self.widths[0])
        x = self.layers[0](x)  # (..., widths[1])
        for layer in self.layers[1:]:
            x = layer(self.activation(x))  # (..., next width)
        return x


def mlp_parameter_count(widths: Sequence[int], bias: bool = True) -> int:
    """Weights (and biases) of ``MLP(widths, bias=bias)``, by formula."""
    return sum(i * o + (o if bias else 0) for i, o in zip(widths, widths[1:]))


def forward_flops(
    widths: Sequence[int],
    batch: int,
    activation: type[torch.nn.Module] = torch.nn.SiLU,
    bias: bool = True,
) -> int:
    """FLOPs of one ``MLP.forward`` on ``batch`` rows (see kan.zoo for the convention).

    Per layer a (batch, in) x (in, out) product, 2 * batch * in * out, plus
    batch * out for the bias add; between layers the activation on every element
    of the hidden output (``ACTIVATION_FLOPS``, 4 for SiLU).
    """
    per_element = activation_flops(activation)
    total = 0
    for i, o in zip(widths, widths[1:]):
        total += 2 * batch * i * o + (batch * o if bias else 0)
    total += per_element * batch * sum(widths[1:-1])
    return total


def param_matched_widths(widths: Sequence[int], target_params: int) -> list[int]:
    """``widths`` with every hidden width scaled by one factor so the MLP has ~``target_params``.

    The input and output widths stay. With hidden widths ``s * h_j`` the
    parameter count (weights and biases) is a quadratic ``a s^2 + b s + c`` in the
    factor ``s``; its positive root is rounded to whole widths, and then single
    hidden widths are moved by one while that brings the count closer to the
    target, until it is within 5%. ``ValueError`` if ``widths`` has no hidden
    layer, or if no widths of this shape reach the target within 5%.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 3:
        raise ValueError(
            f"widths {widths!r} have no hidden layer, so there is no width to scale "
            f"to reach {target_params} parameters"
        )
    if target_params <= 0:
        raise ValueError(f"target_params must be positive, got {target_params!r}")
    hidden = widths[1:-1]
    first, last = widths[0], widths[-1]

    # Parameter count as a function of the factor s (hidden widths s * h_j):
    #   first layer  first * s h_1 + s h_1
    #   middle       s^2 h_j h_(j+1) + s h_(j+1)
    #   last layer   s h_L * last + last
    a = sum(h * g for h, g in zip(hidden, hidden[1:]))
    b = first * hidden[0] + sum(hidden) + hidden[-1] * last
    c = last
    if a == 0:
        factor = (target_params - c) / b
    else:
        factor = (-b + math.sqrt(b * b + 4 * a * (target_params - c))) / (2 * a)

    def relative_error(candidate: list[int]) -> float:
        return abs(mlp_parameter_count(candidate) - target_params) / target_params

    matched = [first] + [max(1, round(factor * h)) for h in hidden] + [last]
    # Rounding can miss the target when hidden widths are small: nudge one hidden
    # width by one at a time while that helps.
    while relative_error(matched) > PARAMETER_TOLERANCE:
        neighbours = [
            matched[:j] + [matched[j] + step] + matched[j + 1 :]
            for j in range(1, len(matched) - 1)
            for step in (-1, 1)
            if matched[j] + step >= 1
        ]
        best = min(neighbours, key=relative_error)
        if relative_error(best) >= relative_error(matched):
            break
        matched = best

    if relative_error(matched) > PARAMETER_TOLERANCE:
        raise ValueError(
            f"no MLP of shape {widths[0]} -> {len(hidden)} hidden -> {widths[-1]} has within "
            f"{PARAMETER_TOLERANCE:.0%} of {target_params} parameters; the closest, widths "
            f"{matched!r}, has {mlp_parameter_count(matched)} (whole widths are too coarse "
            f"at this size, or the target is below the smallest such MLP)"
        )
    return matched


@functools.lru_cache(maxsize=64)
def _model_parameter_count(match: str, widths: tuple[int, ...], options: tuple) -> int:
    """Trainable parameters of ``zoo.build(match, widths, **options)``, counted on a built model.

    The global random state is left as it was, so seeding before building a
    ``ParamMatchedMLP`` gives the same weights whether or not the count was cached.
    """
    from kan import zoo

    with torch.random.fork_rng(devices=[]):
        model = zoo.build(match, list(widths), **dict(options))
    return zoo.parameter_count(model)


def matched_widths(
    layers_hidden: Sequence[int], match: str = "kan", grid_size: int = 5, spline_order: int = 3
) -> tuple[list[int], int]:
    """(MLP widths, target parameter count) matching the zoo model ``match`` of these widths.

    ``match`` is built with ``grid_size`` (and ``spline_order`` where it takes
    one) to count its parameters.
    """
    from kan import zoo

    if zoo.entry(match).family != "kan":
        kans = ", ".join(name for name, e in zoo.REGISTRY.items() if e.family == "kan")
        raise ValueError(f"match must name a KAN model, got {match!r}; KAN models: {kans}")
    widths = zoo.check_widths(layers_hidden)
    accepted = zoo.options(match)
    options = {}
    if "grid_size" in accepted:
        options["grid_size"] = grid_size
    if "spline_order" in accepted:
        options["spline_order"] = spline_order
    target = _model_parameter_count(match, tuple(widths), tuple(sorted(options.items())))
    return param_matched_widths(widths, target), target


class ParamMatchedMLP(MLP):
    """An MLP (SiLU, biases) whose hidden widths are scaled to the parameter count of a KAN.

    ``self.widths`` are the matched widths; ``self.target_params`` is the
    parameter count of ``zoo.build(match, layers_hidden, grid_size=...,
    spline_order=...)`` that they match within 5%.
    """

    def __init__(
        self,
        layers_hidden: Sequence[int],
        match: str = "kan",
        grid_size: int = 5,
        spline_order: int = 3,
    ):
        widths, target = matched_widths(layers_hidden, match, grid_size, spline_order)
        super().__init__(widths)
        self.match = match
        self.target_params = target


def param_matched_forward_flops(
    widths: Sequence[int],
    batch: int,
    match: str = "kan",
    grid_size: int = 5,
    spline_order: int = 3,
) -> int:
    """FLOPs of one ``ParamMatchedMLP.forward``: ``forward_flops`` of the matched widths."""
    mlp_widths, _ = matched_widths(widths, match, grid_size, spline_order)
    return forward_flops(mlp_widths, batch)
