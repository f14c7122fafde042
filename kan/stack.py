"""The layer stack every model family shares: layers of given widths, applied in turn.

Each family (the reference KAN, kan-fast, Fourier, RBF, Chebyshev, the MLPs) says only how one
layer is made; the stack builds them in order (so a seed gives the same weights as building
them by hand), keeps them in ``layers`` (so state dicts name them ``layers.<i>.<parameter>``),
and by default applies them one after another.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence

import torch


class LayerStack(torch.nn.Module):
    """``make_layer(in_features, out_features)`` for each pair of consecutive ``layers_hidden``
    (the widths, input first), in ``self.layers``; forward applies them in turn."""

    def __init__(self, layers_hidden: Sequence[int], make_layer: Callable[[int, int], torch.nn.Module]):
        super().__init__()
        widths = list(layers_hidden)
        self.layers = torch.nn.ModuleList(make_layer(i, o) for i, o in zip(widths, widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., layers_hidden[0]) -> (..., layers_hidden[-1])."""
        for layer in self.layers:
            x = layer(x)
        return x


def takes_layer_options(layer: type[torch.nn.Module]):
    """Give a stack's ``__init__(self, layers_hidden, *options, **named)`` the signature it
    accepts: ``layers_hidden``, then the options ``layer`` takes after its two widths, with their
    defaults (what ``help``, ``inspect.signature`` and ``kan.zoo.options`` show)."""
    def decorate(init):
        own = list(inspect.signature(init).parameters.values())[:2]  # self, layers_hidden
        theirs = list(inspect.signature(layer).parameters.values())[2:]  # after in_features, out_features
        init.__signature__ = inspect.Signature([*own, *theirs])
        return init

    return decorate


def layer_options(layer: type[torch.nn.Module], options: tuple, named: dict) -> dict:
    """The options of ``layer`` given by position and by name, defaults filled in; TypeError for
    an option it does not take, as calling it would raise."""
    bound = inspect.signature(layer).bind(0, 0, *options, **named)  # the two widths stand in
    bound.apply_defaults()
    return dict(list(bound.arguments.items())[2:])

