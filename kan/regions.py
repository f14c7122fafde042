"""Named regions inside the models, for the profilers.

Each model wraps its parts (basis evaluation, spline product, base branch) in
``region(name)``. When annotation is off (the default) a region costs one
attribute lookup, so the timed benchmarks see the bare model; the profiling
harness turns it on so that torch.profiler's trace names the same parts that
cProfile and py-spy see as function names.
"""

from __future__ import annotations

import contextlib

import torch

BASIS = "kan.basis"
SPLINE_PRODUCT = "kan.spline_product"
BASE_BRANCH = "kan.base_branch"

_annotate = False
_NULL = contextlib.nullcontext()


def set_annotation(enabled: bool) -> None:
    """Turn ``torch.profiler.record_function`` labels inside the models on or off."""
    global _annotate
    _annotate = bool(enabled)


def annotation_enabled() -> bool:
    return _annotate


def region(name: str):
    """A context manager labelling ``name`` in torch.profiler traces when annotation is on."""
    if _annotate:
        return torch.profiler.record_function(name)
    return _NULL
