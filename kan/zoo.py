"""The registry: every model the harness measures, by a stable name.

    >>> from kan import zoo
    >>> zoo.available()["kan"]
    'reference B-spline KAN (efficient-kan semantics: basis functions times one matrix product)'
    >>> model = zoo.build("kan", [784, 64, 10], grid_size=5)
    >>> zoo.flops("kan", [784, 64, 10], batch=1024, grid_size=5)  # one forward pass

The harness (benchmarks/, profiles/, reports/) only ever reaches the models
through this module, by name, so it never imports a model module itself.

Each entry names a model class that takes ``layers_hidden`` (the widths, input
first) plus keyword options, and a function ``forward_flops(widths, batch,
**options)`` giving the analytic FLOP count of one forward pass. FLOPs follow one
convention everywhere: a multiply-add is 2 FLOPs, every other elementwise
arithmetic operation or comparison is 1, a transcendental function (exp, sin,
tanh, ...) is 1.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    model: str  # "module:Class", imported on first use
    flops: str  # "module:function"
    family: str  # "kan" or "mlp"

    def model_class(self) -> type[torch.nn.Module]:
        return _resolve(self.model)

    def flops_function(self) -> Callable[..., int]:
        return _resolve(self.flops)


_ENTRIES = [
    Entry(
        "kan",
        "reference B-spline KAN (efficient-kan semantics: basis functions times one matrix product)",
        "kan.reference:KAN",
        "kan.reference:forward_flops",
        "kan",
    ),
    Entry(
        "kan-fast",
        "fast exact B-spline KAN: local closed-form bases, same parameters and outputs as 'kan'",
        "kan.fast:FastBSplineKAN",
        "kan.fast:forward_flops",
        "kan",
    ),
    Entry(
        "fourier-kan",
        "Fourier KAN: cos(kx), sin(kx) features for k = 1..grid_size times one matrix product",
        "kan.fourier:FourierKAN",
        "kan.fourier:forward_flops",
        "kan",
    ),
    Entry(
        "rbf-kan",
        "Gaussian RBF KAN (FastKAN): radial bases over grid_range, optional LayerNorm, SiLU base branch",
        "kan.rbf:RBFKAN",
        "kan.rbf:forward_flops",
        "kan",
    ),
    Entry(
        "chebyshev-kan",
        "Chebyshev KAN: tanh squash, Chebyshev polynomials by the recurrence",
        "kan.chebyshev:ChebyshevKAN",
        "kan.chebyshev:forward_flops",
        "kan",
    ),
    Entry(
        "mlp",
        "width-matched MLP baseline: the same widths, SiLU between layers",
        "kan.mlp:MLP",
        "kan.mlp:forward_flops",
        "mlp",
    ),
    Entry(
        "mlp-param",
        "parameter-matched MLP baseline: hidden widths scaled to within 5% of a KAN's parameter count",
        "kan.mlp:ParamMatchedMLP",
        "kan.mlp:param_matched_forward_flops",
        "mlp",
    ),
]

REGISTRY: dict[str, Entry] = {e.name: e for e in _ENTRIES}


def _resolve(path: str):
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, str]:
    """Every registered name with its one-line description, in a stable order."""
    return {name: entry.description for name, entry in REGISTRY.items()}


def entry(name: str) -> Entry:
    """The registry entry for ``name``; ``ValueError`` listing valid names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; valid models: {', '.join(REGISTRY)}"
        ) from None


def options(name: str) -> dict[str, object]:
    """The keyword options ``build(name, ...)`` accepts, with their defaults."""
    params = inspect.signature(entry(name).model_class()).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.name != "layers_hidden" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_widths(widths: Sequence[int]) -> list[int]:
    """``widths`` as a list of positive ints, input first; ``ValueError`` otherwise."""
    try:
        out = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise ValueError(f"widths must be a sequence of positive integers, got {widths!r}") from None
    if len(out) < 2 or any(w <= 0 for w in out) or any(w != v for w, v in zip(out, widths)):
        raise ValueError(
            f"widths must be at least two positive integers (input first), got {list(widths)!r}"
        )
    return out


def _check_options(name: str, given: dict[str, object]) -> None:
    valid = options(name)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )


def build(name: str, widths: Sequence[int], **model_options) -> torch.nn.Module:
    """A new model ``name`` with layer widths ``widths`` (input first)."""
    e = entry(name)
    widths = check_widths(widths)
    _check_options(name, model_options)
    return e.model_class()(widths, **model_options)


def flops(name: str, widths: Sequence[int], batch: int, **model_options) -> int:
    """Analytic FLOPs of one forward pass of ``build(name, widths, **options)`` on ``batch`` rows."""
    e = entry(name)
    widths = check_widths(widths)
    _check_options(name, model_options)
    if int(batch) != batch or batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    return int(e.flops_function()(widths, int(batch), **model_options))


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
