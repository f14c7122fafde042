"""Build, load and call the fast KAN's CPU kernels (``kan/_native.cpp``).

The kernels are plain C++ with OpenMP and no PyTorch headers: they take data
pointers, so one ``g++`` call builds them (every spline order from 0 to MAX_ORDER,
float and double: 25 to 40 s on a 2-core machine), on first use, into a cache
folder (``$KAN_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/kan-harness`` or
``~/.cache/kan-harness``), keyed by the source, the compiler, its flags and the CPU.
They are loaded with ``ctypes`` after ``torch``, so they share the OpenMP runtime that
``torch`` loaded and its thread pool.

``available()`` says whether they can be used: they are off where no C++ compiler
is found, where the build fails (a warning says why, once), or when
``KAN_NATIVE=0`` or ``set_enabled(False)`` turns them off; callers then take the
PyTorch paths in ``kan.fast``, which compute the same function.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from kan.regions import region

SOURCE = Path(__file__).with_name("_native.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
MAX_ORDER = 7  # the highest spline order the kernels are built for (kMaxOrder in _native.cpp)
_NO = ("0", "false", "no", "off")

_state: dict = {"enabled": os.environ.get("KAN_NATIVE", "1").lower() not in _NO, "library": None, "error": None}
_lock = threading.Lock()


def set_enabled(enabled: bool) -> None:
    """Turn the C++ kernels on or off for this process (``KAN_NATIVE=0`` starts with them off)."""
    _state["enabled"] = bool(enabled)


def enabled() -> bool:
    """Whether the C++ kernels are switched on (they may still be unavailable: see ``available``)."""
    return bool(_state["enabled"])


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else ``g++``, ``c++`` or ``clang++`` on the PATH."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    """Where built libraries are kept."""
    if os.environ.get("KAN_NATIVE_CACHE"):
        return Path(os.environ["KAN_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kan-harness"


def _cpu_signature() -> str:
    """The CPU model and feature flags, so ``-march=native`` builds are not shared across CPUs."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(wanted)))


def _build(cxx: str) -> Path:
    """Compile the source into the cache (once per source, compiler, flags and CPU); the library's path."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), cxx, version, " ".join(FLAGS), platform.machine(), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"kan_native_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            errors = [line for line in lines if "error" in line] or lines or [f"exit {result.returncode}"]
            raise RuntimeError(f"{cxx} failed: {errors[0]}")
        os.replace(built, target)  # atomic: a concurrent build of the same key writes the same bytes
    return target


_I64, _INT, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_GEOMETRY = [_I64, _INT, _I64, _PTR, _PTR, _PTR, _PTR]
_SIGNATURES = {
    "gather_forward": _GEOMETRY + [_PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _INT],
    "gather_table_grad": _GEOMETRY + [_PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _INT],
    "gather_input_grad": _GEOMETRY + [_PTR, _I64, _PTR, _PTR, _I64, _PTR, _INT],
    "dense_bases": _GEOMETRY + [_PTR, _PTR, _I64, _PTR, _INT],
    "dense_input_grad": _GEOMETRY + [_PTR, _PTR, _I64, _PTR, _INT],
    "local_bases": _GEOMETRY + [_PTR, _I64, _PTR, _PTR, _PTR, _INT],
    "scale_spline": [_PTR, _PTR, _I64, _I64, _I64, _PTR, _I64, _I64, _I64, _INT],
    "spline_grads": [_PTR, _I64, _I64, _I64, _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _INT],
    "silu": [_PTR, _I64, _PTR, _INT],
    "silu_grad": [_PTR, _PTR, _I64, _PTR, _INT, _INT],
}


def _load() -> ctypes.CDLL | None:
    if _state["library"] is not None or _state["error"] is not None:
        return _state["library"]
    with _lock:
        if _state["library"] is None and _state["error"] is None:
            cxx = compiler()
            if cxx is None:
                _state["error"] = "no C++ compiler found (set CXX or install g++)"
                return None
            try:
                library = ctypes.CDLL(str(_build(cxx)))
                for suffix in ("f32", "f64"):
                    for name, arguments in _SIGNATURES.items():
                        function = getattr(library, f"kan_{name}_{suffix}")
                        function.argtypes = arguments
                        function.restype = None
                _state["max_order"] = int(library.kan_max_order_f32())
                _state["library"] = library
            except (OSError, RuntimeError, AttributeError) as error:
                _state["error"] = f"{type(error).__name__}: {error}"
                warnings.warn(f"kan.native: C++ kernels unavailable ({_state['error']}); using the PyTorch paths")
    return _state["library"]


def available() -> bool:
    """Whether the C++ kernels are on and built (builds them on the first call)."""
    return bool(_state["enabled"]) and _load() is not None


def expected() -> bool:
    """Whether the kernels are on and should work, without building them: built already, or
    a compiler is there and no build has failed."""
    if not _state["enabled"] or _state["error"] is not None:
        return False
    return _state["library"] is not None or compiler() is not None


def error() -> str | None:
    """Why the kernels could not be built or loaded, if they could not."""
    return _state["error"]


def takes(x: torch.Tensor) -> bool:
    """Whether the kernels take this tensor: on the CPU, float32 or float64, and built."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and available()


def supports(x: torch.Tensor, order: int) -> bool:
    """Whether the spline kernels take this input: ``takes(x)`` and a spline order they handle."""
    return takes(x) and 0 <= order <= _state["max_order"]


def _call(name: str, dtype: torch.dtype, *arguments) -> None:
    """Run kernel ``name`` for ``dtype``; labelled ``kan.native::<name>`` in torch.profiler traces."""
    function = _function(name, dtype)
    with region(f"kan.native::{name}"):
        function(*arguments)


def _function(name: str, dtype: torch.dtype):
    library = _load()
    if library is None:
        raise RuntimeError(f"kan.native: C++ kernels unavailable ({_state['error']})")
    return getattr(library, f"kan_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _geometry(geometry, x: torch.Tensor) -> tuple:
    """The kernels' geometry arguments; the tables must match x's dtype and be contiguous."""
    g = geometry
    tables = (g.knots_ext, g.knots_padded, g.origin, g.inv_step)
    for table in tables:
        if table is not None and (table.dtype != x.dtype or not table.is_contiguous()):
            raise ValueError("kan.native: knot tables must be contiguous and of the input's dtype")
    return (g.knots_ext.size(0), g.order, g.knots, *(_pointer(t) for t in tables))


def _threads() -> int:
    return torch.get_num_threads()


def _contiguous(*tensors: torch.Tensor):
    return [t.detach().contiguous() for t in tensors]


def _check_table(table: torch.Tensor, x: torch.Tensor, geometry) -> None:
    expected = (x.size(1), geometry.coeff)
    if table.dim() != 3 or tuple(table.shape[:2]) != expected or table.dtype != x.dtype:
        raise ValueError(f"kan.native: table must be ({expected[0]}, {expected[1]}, out) of {x.dtype}, "
                         f"got {tuple(table.shape)} of {table.dtype}")


class SavedSpans(NamedTuple):
    """What ``gather_forward(..., save=True)`` keeps of each input on a uniform grid, for
    the table gradient: u (in, batch), the local coordinate in its knot span, and span
    (in, batch) int16, the span in [-1, knots - 1]; feature-major, input [b, i] at [i, b]."""

    u: torch.Tensor
    span: torch.Tensor


def can_save(geometry) -> bool:
    """Whether ``gather_forward`` can save spans for this geometry: a uniform grid, and
    spans that fit int16."""
    return geometry.origin is not None and geometry.knots < 2**15


def gather_forward(x: torch.Tensor, table: torch.Tensor, geometry, save: bool = False):
    """x (batch, in), table (in, coeff, out) -> (batch, out): each input's local bases times their table rows.

    With ``save`` (a geometry that ``can_save``), returns (result, SavedSpans) for
    ``gather_weight_grads``, which then needs no x."""
    x, table = _contiguous(x, table)
    _check_table(table, x, geometry)
    if save and not can_save(geometry):
        raise ValueError("kan.native.gather_forward: saving spans needs a uniform grid of under 32768 knots")
    batch = x.size(0)
    result = x.new_empty(batch, table.size(2))
    saved = None
    if save:
        saved = SavedSpans(x.new_empty(x.size(1), batch), torch.empty(x.size(1), batch, dtype=torch.int16))
    _call(
        "gather_forward", x.dtype,
        *_geometry(geometry, x), x.data_ptr(), batch, table.data_ptr(), table.size(2), result.data_ptr(),
        *_saved_arguments(saved), _threads(),
    )
    return (result, saved) if save else result


def _saved_arguments(saved: SavedSpans | None) -> tuple:
    return (None, None) if saved is None else (saved.u.data_ptr(), saved.span.data_ptr())


def _bases_source(x: torch.Tensor | None, saved: SavedSpans | None, geometry, grad_out: torch.Tensor) -> tuple:
    """The table-gradient kernels' (x, saved_u, saved_span, batch) arguments."""
    if saved is None:
        if x is None:
            raise ValueError("kan.native: the table gradient needs x or the spans gather_forward saved")
        if x.dim() != 2 or x.size(0) != grad_out.size(0) or x.size(1) != geometry.knots_ext.size(0):
            raise ValueError(f"kan.native: x must be ({grad_out.size(0)}, {geometry.knots_ext.size(0)}), "
                             f"got {tuple(x.shape)}")
        if x.dtype != grad_out.dtype:
            raise ValueError(f"kan.native: x is {x.dtype}, grad_out {grad_out.dtype}")
        return x.data_ptr(), None, None, x.size(0)
    u, span = saved
    rows = geometry.knots_ext.size(0)
    if (u.dtype != grad_out.dtype or span.dtype != torch.int16 or u.shape != span.shape or u.size(0) != rows
            or u.size(1) != grad_out.size(0) or not (u.is_contiguous() and span.is_contiguous())
            or not can_save(geometry)):
        raise ValueError("kan.native: saved spans do not match this geometry and grad_out")
    return (None, *_saved_arguments(saved), u.size(1))


def gather_table_grad(x: torch.Tensor | None, grad_out: torch.Tensor, geometry,
                      saved: SavedSpans | None = None) -> torch.Tensor:
    """x (batch, in), grad_out (batch, out) -> (in, coeff, out): the gradient of gather_forward's table.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None else x.detach().contiguous()
    source = _bases_source(x, saved, geometry, grad_out)
    grad = grad_out.new_empty(geometry.knots_ext.size(0), geometry.coeff, grad_out.size(1))
    _call(
        "gather_table_grad", grad_out.dtype,
        *_geometry(geometry, grad_out), *source, grad_out.data_ptr(), grad_out.size(1), grad.data_ptr(),
        None, None, None, None, _threads(),
    )
    return grad


def gather_weight_grads(x: torch.Tensor | None, grad_out: torch.Tensor, geometry, spline_weight: torch.Tensor,
                        scaler: torch.Tensor | None, need_scaler: bool = True, saved: SavedSpans | None = None):
    """The gradients of ``spline_weight`` (out, in, coeff) and its ``scaler`` (out, in) through a
    gather table made by ``scale_spline``: ``spline_grads(gather_table_grad(...).permute(2, 0, 1), ...)``
    in one pass, without the table gradient. Returns (grad_weight, grad_scaler), as spline_grads.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None else x.detach().contiguous()
    source = _bases_source(x, saved, geometry, grad_out)
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    expected = (grad_out.size(1), geometry.knots_ext.size(0), geometry.coeff)
    bad_scaler = s is not None and (s.shape != w.shape[:2] or s.dtype != w.dtype)
    if tuple(w.shape) != expected or w.dtype != grad_out.dtype or bad_scaler:
        raise ValueError(f"kan.native.gather_weight_grads: spline_weight must be {expected} of {grad_out.dtype}, "
                         f"the scaler {expected[:2]}")
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call(
        "gather_table_grad", grad_out.dtype,
        *_geometry(geometry, grad_out), *source, grad_out.data_ptr(), grad_out.size(1), None,
        w.data_ptr(), _pointer(s), grad_weight.data_ptr(), _pointer(grad_scaler), _threads(),
    )
    return grad_weight, grad_scaler


def gather_input_grad(x: torch.Tensor, table: torch.Tensor, grad_out: torch.Tensor, geometry) -> torch.Tensor:
    """x (batch, in), table (in, coeff, out), grad_out (batch, out) -> (batch, in): gather_forward's x gradient."""
    x, table, grad_out = _contiguous(x, table, grad_out)
    _check_table(table, x, geometry)
    grad = torch.empty_like(x)
    _call(
        "gather_input_grad", x.dtype,
        *_geometry(geometry, x), x.data_ptr(), x.size(0), table.data_ptr(), grad_out.data_ptr(), table.size(2),
        grad.data_ptr(), _threads(),
    )
    return grad


def dense_bases(x: torch.Tensor, base: torch.Tensor, geometry, out: torch.Tensor | None = None) -> torch.Tensor:
    """x, base (rows, in) -> (rows, (coeff + 1) * in): the coeff bases of every feature, then base.

    Basis-major: column ``c * in + i`` is basis c of feature i, ``coeff * in + i`` base[:, i].

    ``out``, where given, is written instead of a new tensor (it must be contiguous and
    of that shape and x's dtype).
    """
    x, base = _contiguous(x, base)
    shape = (x.size(0), (geometry.coeff + 1) * x.size(1))
    if out is None:
        out = x.new_empty(shape)
    elif tuple(out.shape) != shape or not out.is_contiguous() or out.dtype != x.dtype:
        raise ValueError(f"kan.native.dense_bases: out must be a contiguous {shape} tensor of {x.dtype}")
    _call(
        "dense_bases", x.dtype,
        *_geometry(geometry, x), x.data_ptr(), base.data_ptr(), x.size(0), out.data_ptr(), _threads()
    )
    return out


def dense_input_grad(x: torch.Tensor, grad_cells: torch.Tensor, geometry) -> torch.Tensor:
    """x (rows, in), grad_cells (rows, (coeff + 1) * in) -> (rows, in): the bases' part of the input's gradient."""
    x, grad_cells = _contiguous(x, grad_cells)
    grad = torch.empty_like(x)
    _call(
        "dense_input_grad", x.dtype,
        *_geometry(geometry, x), x.data_ptr(), grad_cells.data_ptr(), x.size(0), grad.data_ptr(), _threads()
    )
    return grad


def scale_spline(spline_weight: torch.Tensor, scaler: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """out (out_features, in, coeff), any strides, = spline_weight * scaler.unsqueeze(-1) (or a copy)."""
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    if tuple(out.shape) != tuple(w.shape) or out.dtype != w.dtype or (s is not None and s.dtype != w.dtype):
        raise ValueError(f"kan.native.scale_spline: out must be {tuple(w.shape)} of {w.dtype}")
    _call(
        "scale_spline", w.dtype,
        w.data_ptr(), _pointer(s), *w.shape, out.data_ptr(), *out.stride(), _threads()
    )
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
    if tuple(grad_scaled.shape) != tuple(w.shape) or grad_scaled.dtype != w.dtype:
        raise ValueError(f"kan.native.spline_grads: grad_scaled must be {tuple(w.shape)} of {w.dtype}")
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call(
        "spline_grads", w.dtype,
        grad_scaled.data_ptr(), *grad_scaled.stride(), w.data_ptr(), _pointer(s), *w.shape, grad_weight.data_ptr(),
        _pointer(grad_scaler), _threads(),
    )
    return grad_weight, grad_scaler


def local_bases(x: torch.Tensor, geometry, derivative: bool = False):
    """The same triple as ``kan.fast.local_b_splines``, from the C++ kernels."""
    (x,) = _contiguous(x)
    batch, in_features = x.shape
    width = geometry.order + 1
    first = torch.empty(batch, in_features, dtype=torch.int64)
    values = x.new_empty(batch, in_features, width)
    slopes = x.new_empty(batch, in_features, width) if derivative else None
    _call(
        "local_bases", x.dtype,
        *_geometry(geometry, x), x.data_ptr(), batch, first.data_ptr(), values.data_ptr(), _pointer(slopes),
        _threads(),
    )
    return first, values, slopes


def silu(x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.silu(x)`` (no autograd), for float32/float64 CPU tensors."""
    (x,) = _contiguous(x)
    y = torch.empty_like(x)
    _call("silu", x.dtype, x.data_ptr(), x.numel(), y.data_ptr(), _threads())
    return y


def silu_grad(x: torch.Tensor, grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``grad * silu'(x)``, written to a new tensor, or added into ``out`` (contiguous, x's shape)."""
    x, grad = _contiguous(x, grad)
    if grad.shape != x.shape or grad.dtype != x.dtype:
        raise ValueError(f"kan.native.silu_grad: grad must be {tuple(x.shape)} of {x.dtype}")
    accumulate = out is not None
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"kan.native.silu_grad: out must be contiguous {tuple(x.shape)} of {x.dtype}")
    _call("silu_grad", x.dtype, x.data_ptr(), grad.data_ptr(), x.numel(), out.data_ptr(), int(accumulate), _threads())
    return out
