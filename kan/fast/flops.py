"""FLOPs of kan-fast's forward pass (kan.zoo's convention)."""

from __future__ import annotations

from typing import Sequence

from kan import native
from kan.fast.options import BACKENDS, CONTRACTIONS, check_choice, gathers


def layer_forward_flops(
    in_features: int, out_features: int, batch: int, grid_size: int, spline_order: int, scaled: bool = True,
    native_kernels: bool | None = None, contraction: str = "auto", triton: bool = False,
) -> int:
    """FLOPs of one ``FastBSplineKANLinear.forward`` on ``batch`` rows (kan.zoo's convention).

    The work this layer does, which is less than the reference's: knot span and local
    coordinate (subtract, multiply, floor, subtract: 4 per element); the local bases
    by the cardinal recursion (per level r, r + 1 bases of at most two multiply-adds
    and a scale: 5 per basis); the base branch (SiLU, 4 per element); the scaler
    multiply; then the contraction: dense, one (batch, in * (coeff + 1)) x
    (in * (coeff + 1), out) product, or gathered, ``spline_order + 1`` multiply-adds
    per input, output and sample plus the base product. Which contraction is
    ``contraction``'s, or with "auto" that of ``triton`` (the Triton kernels) or of
    ``native_kernels`` (the C++ kernels or the PyTorch paths); None: the one a float32 CPU
    input takes in this process (the C++ kernels where they are on and can build; counting
    does not build them). The Triton kernels contract a grid of one interval densely.
    """
    b, i, o = batch, in_features, out_features
    coeff = grid_size + spline_order
    basis = 4 * b * i + sum(5 * (r + 1) * b * i for r in range(1, spline_order + 1))
    base = 4 * b * i
    scaler = o * i * coeff if scaled else 0
    if native_kernels is None:
        native_kernels = native.expected() and spline_order <= native.MAX_ORDER
    if gathers(contraction, grid_size, spline_order, native_kernels, triton):
        product = 2 * b * i * (spline_order + 1) * o + 2 * b * i * o + b * o
    else:
        product = 2 * b * i * (coeff + 1) * o
    return basis + base + scaler + product


def forward_flops(widths: Sequence[int], batch: int, grid_size: int = 5, spline_order: int = 3,
                  enable_standalone_scale_spline: bool = True, backend: str = "auto", contraction: str = "auto",
                  **_unused) -> int:
    """FLOPs of one ``FastBSplineKAN.forward`` on ``batch`` rows; options that do not change the count are ignored."""
    check_choice("backend", backend, BACKENDS)
    check_choice("contraction", contraction, CONTRACTIONS)
    native_kernels = {"auto": None, "native": True, "torch": False, "triton": False}[backend]
    return sum(
        layer_forward_flops(i, o, batch, grid_size, spline_order, enable_standalone_scale_spline, native_kernels,
                            contraction, triton=backend == "triton")
        for i, o in zip(widths, widths[1:])
    )
