"""The layer stack every model family shares: layers of given widths, applied in turn.

Each family (the reference KAN, kan-fast, Fourier, RBF, Chebyshev, the MLPs) says only how one
layer is made; the stack builds them in order (so a seed gives the same weights as building
them by hand), keeps them in ``layers`` (so state dicts name them ``layers.<i>.<parameter>``),
and by default applies them one after another.
"""

from __future__ import annotations

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
