"""kan-fast's C++ kernels as PyTorch operators ``kan_native::<kernel>``, and the functions that call them.

Each kernel of ``kan.native.schema.KERNELS`` is registered once per process, with a CPU
implementation (check, then call C) and a fake kernel (the same checks, for fake tensors and
``torch.compile``). The Python functions at the bottom allocate the outputs and call the
operators by keyword: through the dispatcher where torch.compile, export or a dispatch mode may
be watching, else straight into the operator's implementation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kan.native import library as _library
from kan.native.library import ENABLED, _load, error
from kan.native.schema import KERNELS, _checked, _plan, _pointers, _threads, _value_rules, schema
from kan.regions import region

def _kernel(name: str):
    """The CPU implementation of operator ``kan_native::<name>``: check, then call C. The
    dispatcher passes the arguments in schema order; ``_call`` passes them by name."""
    plan = _plan(name)
    label = f"kan.native::{name}"

    def run(*args, **by_name):
        a, dtype = _checked(plan, by_name or dict(zip(plan.arguments, args)))
        problem = _value_rules(name, a)
        if problem:
            raise ValueError(f"kan_native::{name}: {problem}")
        functions = _library._state["functions"] or (_load() if ENABLED else None)
        if functions is None:
            raise RuntimeError(f"kan.native: C++ kernels unavailable ({error()})")
        a["threads"] = _threads()
        values = _pointers(plan, a)
        with region(label):
            functions[name, dtype](*values)

    return run


def _fake(name: str):
    plan = _plan(name)

    def check(*args):
        a, _ = _checked(plan, dict(zip(plan.arguments, args)))
        # the dispatcher sends a call here when any tensor is a meta one: with others on the CPU,
        # that is a mistake (the CPU tensors would never be written), not a shape inference
        devices = {a[t].device.type for t, *_ in plan.tensors if a[t] is not None}
        if len(devices) > 1:
            raise ValueError(f"kan_native::{name}: tensors on more than one device ({', '.join(sorted(devices))})")

    return check


_RUN = {name: _kernel(name) for name in KERNELS}


def _call(name: str, **arguments) -> None:
    """Run operator ``kan_native::<name>`` with ``arguments``: through the dispatcher where
    something may trace or fake tensors (torch.compile, export, a dispatch mode such as
    fake tensors), so that it sees the operator; else its implementation directly, the same
    checks and C call without the dispatcher's per-call cost, which small layers feel."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        getattr(ops, name)(**arguments)
    else:
        _RUN[name](**arguments)


def _register() -> torch.library.Library:
    library = torch.library.Library("kan_native", "DEF")
    for name in KERNELS:
        library.define(schema(name))
        library.impl(name, _RUN[name], "CPU")
        torch.library.register_fake(f"kan_native::{name}", _fake(name), lib=library)
    return library


# Registered once per process: not in the copy that ``python -m kan.native`` runs as __main__,
# which calls into the imported module instead.

# Registered once per process, on first import.
_LIBRARY = _register()
ops = torch.ops.kan_native


def _geometry(geometry) -> dict:
    """The kernels' geometry arguments (see _GEOMETRY)."""
    g = geometry
    return dict(order=g.order, knots_ext=g.knots_ext, knots_padded=g.knots_padded, origin=g.origin,
                inv_step=g.inv_step, cardinal=int(g.cardinal))


def _contiguous(*tensors: torch.Tensor):
    for t in tensors:
        if t.layout is not torch.strided:  # .contiguous() of a sparse tensor fails with PyTorch's wording
            raise ValueError(f"kan.native: the kernels take dense (strided) tensors, got {t.layout}")
    return [t.detach().contiguous() for t in tensors]


class SavedSpans(NamedTuple):
    """What ``gather_forward(..., save=True)`` keeps of each input on a uniform grid, for
    the table gradient: u (in, batch), the local coordinate in its knot span, and span
    (in, batch) int16, the span in [-1, knots - 1]; feature-major, input [b, i] at [i, b]."""

    u: torch.Tensor
    span: torch.Tensor


def can_save(geometry) -> bool:
    """Whether ``gather_forward`` can save spans for this geometry: a cardinal grid (whose
    bases the local coordinate alone gives), and spans that fit int16."""
    return geometry.cardinal and geometry.knots < 2**15


def _spans(saved: SavedSpans | None) -> dict:
    return dict(saved_u=None, saved_span=None) if saved is None else dict(saved_u=saved.u, saved_span=saved.span)


def gather_forward(x: torch.Tensor, table: torch.Tensor, geometry, save: bool = False):
    """x (batch, in), table (in, coeff, out) -> (batch, out): each input's local bases times their table rows.

    With ``save`` (a geometry that ``can_save``), returns (result, SavedSpans) for
    ``gather_weight_grads``, which then needs no x."""
    x, table = _contiguous(x, table)
    if save and not can_save(geometry):
        raise ValueError("kan.native.gather_forward: saving spans needs a cardinal grid of under 32768 knots")
    batch = x.size(0)
    result = x.new_empty(batch, table.size(-1))
    saved = None
    if save:
        saved = SavedSpans(x.new_empty(x.size(1), batch), x.new_empty(x.size(1), batch, dtype=torch.int16))
    _call("gather_forward", **_geometry(geometry), x=x, table=table, result=result,
                       **_spans(saved))
    return (result, saved) if save else result


def gather_table_grad(x: torch.Tensor | None, grad_out: torch.Tensor, geometry,
                      saved: SavedSpans | None = None) -> torch.Tensor:
    """x (batch, in), grad_out (batch, out) -> (in, coeff, out): the gradient of gather_forward's table.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None or saved is not None else x.detach().contiguous()
    grad = grad_out.new_empty(geometry.knots_ext.size(0), geometry.coeff, grad_out.size(-1))
    _call("gather_table_grad", **_geometry(geometry), x=x, **_spans(saved),
                          grad_out=grad_out, grad_table=grad, w=None, scaler=None, grad_w=None, grad_scaler=None)
    return grad


def gather_weight_grads(x: torch.Tensor | None, grad_out: torch.Tensor, geometry, spline_weight: torch.Tensor,
                        scaler: torch.Tensor | None, need_scaler: bool = True, saved: SavedSpans | None = None):
    """The gradients of ``spline_weight`` (out, in, coeff) and its ``scaler`` (out, in) through a
    gather table made by ``scale_spline``: ``spline_grads(gather_table_grad(...).permute(2, 0, 1), ...)``
    in one pass, without the table gradient. Returns (grad_weight, grad_scaler), as spline_grads.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None or saved is not None else x.detach().contiguous()
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call("gather_table_grad", **_geometry(geometry), x=x, **_spans(saved),
                          grad_out=grad_out, grad_table=None, w=w, scaler=s, grad_w=grad_weight,
                          grad_scaler=grad_scaler)
    return grad_weight, grad_scaler


def gather_input_grad(x: torch.Tensor, table: torch.Tensor, grad_out: torch.Tensor, geometry) -> torch.Tensor:
    """x (batch, in), table (in, coeff, out), grad_out (batch, out) -> (batch, in): gather_forward's x gradient."""
    x, table, grad_out = _contiguous(x, table, grad_out)
    grad = torch.empty_like(x)
    _call("gather_input_grad", **_geometry(geometry), x=x, table=table, grad_out=grad_out, grad_x=grad)
    return grad


def dense_bases(x: torch.Tensor, base: torch.Tensor, geometry, out: torch.Tensor | None = None) -> torch.Tensor:
    """x, base (rows, in) -> (rows, (coeff + 1) * in): the coeff bases of every feature, then base.

    Basis-major: column ``c * in + i`` is basis c of feature i, ``coeff * in + i`` base[:, i].

    ``out``, where given, is written instead of a new tensor (it must be contiguous and
    of that shape and x's dtype).
    """
    x, base = _contiguous(x, base)
    if out is None:
        out = x.new_empty(x.size(0), (geometry.coeff + 1) * x.size(1))
    _call("dense_bases", **_geometry(geometry), x=x, base=base, result=out)
    return out


def scale_spline(spline_weight: torch.Tensor, scaler: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """out (out_features, in, coeff), any strides, = spline_weight * scaler.unsqueeze(-1) (or a copy)."""
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    _call("scale_spline", w=w, scaler=s, dst=out)
    return out


def spline_grads(grad_scaled: torch.Tensor, spline_weight: torch.Tensor, scaler: torch.Tensor | None,
                 need_scaler: bool = True):
    """Gradients of spline_weight (out, in, coeff) and of its scaler (out, in) from grad_scaled.

    grad_scaled: the gradient of ``spline_weight * scaler.unsqueeze(-1)``, (out, in, coeff)
    with any strides. Returns (grad_weight, grad_scaler); grad_scaler is None without a
    scaler or when not needed.
    """
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call("spline_grads", G=grad_scaled.detach(), w=w, scaler=s, grad_w=grad_weight, grad_scaler=grad_scaler)
    return grad_weight, grad_scaler


def local_bases(x: torch.Tensor, geometry, derivative: bool = False):
    """The same triple as ``kan.bspline.local_b_splines``, from the C++ kernels."""
    (x,) = _contiguous(x)
    batch, in_features = x.shape
    width = geometry.order + 1
    first = x.new_empty(batch, in_features, dtype=torch.int64)
    values = x.new_empty(batch, in_features, width)
    slopes = x.new_empty(batch, in_features, width) if derivative else None
    _call("local_bases", **_geometry(geometry), x=x, first=first, value=values, slope=slopes)
    return first, values, slopes


def silu(x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.silu(x)`` (no autograd), for float32/float64 CPU tensors."""
    (x,) = _contiguous(x)
    y = torch.empty_like(x)
    _call("silu", x=x, y=y)
    return y


def silu_grad(x: torch.Tensor, grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``grad * silu'(x)``, written to a new tensor, or added into ``out`` (contiguous, x's shape)."""
    x, grad = _contiguous(x, grad)
    accumulate = out is not None
    if out is None:
        out = torch.empty_like(x)
    _call("silu_grad", x=x, grad=grad, out=out, accumulate=int(accumulate))
    return out
