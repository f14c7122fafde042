"""Named regions inside the models, for the profilers.

Each model wraps its parts (basis evaluation, spline product, base branch) in
``region(name)``. When annotation is off (the default) a region costs one
global lookup, so the timed benchmarks see the bare model; the profiling
harness turns it on around its torch.profiler run (``with annotating():``), so
that the trace names the same parts that cProfile and py-spy see as function names.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

BASIS = "kan.basis"
SPLINE_PRODUCT = "kan.spline_product"
BASE_BRANCH = "kan.base_branch"

_annotate = False  # changed only inside ``annotating``, which restores it
_NULL = contextlib.nullcontext()


@contextlib.contextmanager
def annotating(enabled: bool = True) -> Iterator[None]:
    """``torch.profiler.record_function`` labels inside the models while the block runs (or,
    with ``enabled=False``, none); the state before the block is restored after it."""
    global _annotate
    previous, _annotate = _annotate, bool(enabled)
    try:
        yield
    finally:
        _annotate = previous


def annotation_enabled() -> bool:
    return _annotate


def region(name: str):
    """A context manager labelling ``name`` in torch.profiler traces when annotation is on."""
    if _annotate:
        return torch.profiler.record_function(name)
    return _NULL
