"""kan-fast's choices: backends, contractions, compilation, and the crossovers of ``contraction="auto"``."""

from __future__ import annotations

import functools
from typing import Sequence

# Contraction crossovers of contraction="auto": the gather contraction is used from this
# many coefficients per feature (grid_size + spline_order) on; below it the dense product.
# Measured apart for the PyTorch paths and for the C++ kernels
# (python -m benchmarks.studies.crossover). Read-only defaults: a layer's ``contraction``
# option forces either contraction.
GATHER_MIN_COEFF = 24
NATIVE_GATHER_MIN_COEFF = 5
# The Triton kernels' crossover is not measured yet (they have not run on a GPU). It comes from
# a count per (sample, input, output): the dense kernels do coeff + 1 multiply-adds; the gather
# kernels do order + 2 and read order + 1 table entries, each read taking about four
# multiply-adds' time at a GPU's L1 bandwidth, so about 5 * order + 6 (21 at order 3). Replace
# it by python -m benchmarks.studies.triton_gpu's comparison of the two kernels on a GPU.
TRITON_GATHER_MIN_COEFF = 21
# Bytes of dense basis per row chunk on the CPU: small enough to stay in the last-level
# cache between the kernel that writes it and the matrix product that reads it.
CHUNK_BYTES = 4 << 20
# Features per block in the gather forward: a block's coefficient rows stay in cache
# while every sample of the batch reads them.
GATHER_BLOCK_FEATURES = 16
# The layers' choices (constructor options of FastBSplineKANLinear and FastBSplineKAN).
BACKENDS = ("auto", "native", "torch", "triton")
CONTRACTIONS = ("auto", "dense", "gather")
# The layers' torch.compile choices: "auto" compiles the uniform-grid kernels where torch.compile's
# toolchain is found (a C++ compiler for the CPU, Triton for CUDA), "on" wherever asked, "off" never.
COMPILES = ("auto", "on", "off")


def check_choice(option: str, value: str, valid: Sequence[str]) -> str:
    """``value`` if it is one of ``valid``; a one-line ValueError naming them otherwise."""
    if value not in valid:
        raise ValueError(f"{option} must be one of {', '.join(valid)}; got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def triton_kernels():
    """``kan.triton_spline`` (the Triton kernels), or None where Triton does not import."""
    try:
        from kan import triton_spline
    except Exception:  # not installed, or an install that fails to import: the other paths run
        return None
    return triton_spline


def gathers(contraction: str, grid_size: int, spline_order: int, native_kernels: bool, triton: bool = False) -> bool:
    """Whether a layer contracts by gathering coefficient rows: ``contraction`` where it names one,
    else from the crossover of its path (``gather_min_coeff``). The Triton kernels contract a grid
    of one interval densely whatever is asked (``kan.triton_spline.gathers``: its band of local
    bases covers every column)."""
    if triton and grid_size < 2:
        return False
    if contraction != "auto":
        return contraction == "gather"
    return grid_size + spline_order >= gather_min_coeff(native_kernels, triton)


def gather_min_coeff(native_kernels: bool, triton: bool = False) -> int:
    """The crossover (coefficients per feature) for the Triton kernels, the C++ kernels or the PyTorch paths."""
    if triton:
        return TRITON_GATHER_MIN_COEFF
    return NATIVE_GATHER_MIN_COEFF if native_kernels else GATHER_MIN_COEFF
