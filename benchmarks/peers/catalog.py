"""The peers: third-party KAN packages from PyPI, pinned, and a small adapter per package.

An adapter builds the package's model for given widths and grid size (cubic splines on
[-1, 1], as ours) and, where the package computes the same function as our reference
B-spline layer, loads the reference's weights into it so that their outputs can be
compared (the ``equivalence`` column). It runs in the peer's own process and virtual
environment (``benchmarks.peers.child``), where our ``kan`` package is not importable:
pykan's import name is ``kan`` too.

Which peers compute the reference's function (efficient-kan's layer: SiLU base branch plus
a B-spline branch on the same uniform grid, spline weights times a per-edge scaler):

- flashkan and inkan: the same bases on the same knots, a SiLU branch; the reference's
  scaled spline weights and base weights load into theirs, so outputs agree to rounding.
- pykan: not compared. Its layer adds a per-edge ``scale_sp`` and ``scale_base``, node and
  subnode affine terms and a symbolic branch, and extends its grid with its own rule, so the
  same weights do not give the same function without rebuilding its state by hand.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from typing import Callable

SPLINE_ORDER = 3
GRID_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class Peer:
    name: str  # the package's name on PyPI
    spec: str  # what the peers' nox session installs: pinned
    needs: tuple[str, ...]  # what it imports but does not declare (pykan declares nothing)
    module: str  # the module holding its model
    build: Callable  # (widths, grid_size) -> torch.nn.Module
    load_reference: Callable | None  # (model, layers) -> None; None: not the reference's function
    not_comparable: str = ""  # why, where load_reference is None

    @property
    def version(self) -> str:
        return self.spec.split("==", 1)[1]


def _flashkan(widths, grid_size):
    from flashkan.network import KANNetwork

    return KANNetwork(list(widths), grid_size=grid_size, spline_order=SPLINE_ORDER)


def _inkan(widths, grid_size):
    from inkan.network import KANNetwork

    return KANNetwork(list(widths), grid_size=grid_size, spline_order=SPLINE_ORDER)


def _pykan(widths, grid_size):
    import torch

    from kan import MultKAN  # pykan's, in its own environment

    class PyKAN(torch.nn.Module):
        """MultKAN behind the plain module interface: its own ``to`` takes a device only."""

        def __init__(self):
            super().__init__()
            # no checkpoints written, no activations kept, no symbolic branch: the model as it trains
            self.model = MultKAN(width=list(widths), grid=grid_size, k=SPLINE_ORDER, symbolic_enabled=False,
                                 save_act=False, auto_save=False, ckpt_path=tempfile.mkdtemp(prefix="pykan-"), seed=0)

        def forward(self, x):
            return self.model(x)

    return PyKAN()


def _load_spline_layers(model, layers) -> None:
    """Load the reference's layers into a model of ``KANLayer``s with ``spline_weight``
    (out, in, coeff) and ``base_weight`` (out, in): the reference's spline weights already
    multiplied by its scaler, and its base weights."""
    import torch

    mine = [m for m in model.modules() if hasattr(m, "spline_weight") and hasattr(m, "base_weight")]
    if len(mine) != len(layers):
        raise ValueError(f"{len(mine)} layers here, {len(layers)} in the reference")
    with torch.no_grad():
        for layer, (spline, base) in zip(mine, layers):
            layer.spline_weight.copy_(torch.as_tensor(spline, dtype=layer.spline_weight.dtype))
            layer.base_weight.copy_(torch.as_tensor(base, dtype=layer.base_weight.dtype))


PEERS = {
    "pykan": Peer("pykan", "pykan==0.2.8",
                  ("numpy", "scipy", "sympy", "matplotlib", "pandas", "scikit-learn", "pyyaml", "tqdm", "setuptools"),
                  "kan", _pykan, None,
                  "pykan adds per-edge spline and base scales, node affine terms and a symbolic branch, "
                  "and extends its grid by its own rule"),
    "flashkan": Peer("flashkan", "flashkan==0.2.0", ("numpy",), "flashkan.network", _flashkan, _load_spline_layers),
    "inkan": Peer("inkan", "inkan==0.5.2", ("numpy",), "inkan.network", _inkan, _load_spline_layers),
}


# The peers that compute our reference's function (a KANNetwork of the reference's layers): the ones
# kan-fast's studies measure it against.
REFERENCE_PEERS = tuple(name for name, peer in PEERS.items() if peer.load_reference is not None)


def importable(peer: Peer) -> str | None:
    """None where the peer's module imports here, else one line saying why not."""
    try:
        importlib.import_module(peer.module)
    except ImportError as e:
        return f"cannot import {peer.module} ({e}); the peers' nox session installs {peer.spec}"
    except Exception as e:  # a broken install
        return f"importing {peer.module} failed: {type(e).__name__}: {e}"
    return None


def reference_layers(model) -> list[tuple[list, list]]:
    """Our reference KAN's layers as plain lists, for a peer's process: (spline weight times scaler
    (out, in, coeff), base weight (out, in)) per layer."""
    return [(layer.scaled_spline_weight.detach().tolist(), layer.base_weight.detach().tolist())
            for layer in model.layers]
