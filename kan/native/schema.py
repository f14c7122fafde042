"""The C++ kernels' signatures, declared once, and the checks every call passes before C.

Each kernel is declared in :data:`KERNELS` by its C parameters in order; its operator schema
(:func:`schema`), its ``ctypes`` argument types (``kan.native.library``) and the per-call
checks of dtypes, shapes and contiguity (:func:`_checked`) are all derived from that one
declaration, so a wrong call is a ``ValueError``, not corrupted memory.
"""

from __future__ import annotations

import ctypes
from typing import Callable, NamedTuple

import torch

MAX_ORDER = 7  # the highest spline order the kernels are built for (kMaxOrder in _native.cpp)


class Param(NamedTuple):
    """One C parameter of a kernel, in order.

    ``c``: its C type, ``T`` being the kernel's float type. Pointers are tensors of the
    operator (``const`` ones read, the others written); ``int`` parameters with
    ``given`` are the operator's integer arguments; other integers are derived by
    ``rule`` from the arguments (sizes, strides), and ``threads`` is torch's thread
    count. For tensors, ``rule`` gives the shape they must have; ``strided`` ones may
    have any strides (the kernel takes them), the others must be contiguous.
    """

    name: str
    c: str
    given: bool = True
    optional: bool = False
    rule: Callable[[dict], object] | None = None
    strided: bool = False

    @property
    def tensor(self) -> bool:
        return self.c.endswith("*")

    @property
    def written(self) -> bool:
        return self.tensor and not self.c.startswith("const ")


_CTYPES = {"const T*": ctypes.c_void_p, "T*": ctypes.c_void_p, "const int16_t*": ctypes.c_void_p,
           "int16_t*": ctypes.c_void_p, "int64_t*": ctypes.c_void_p, "int64_t": ctypes.c_int64, "int": ctypes.c_int}
_ELEMENT = {"int16_t": torch.int16, "int64_t": torch.int64}


def _coeff(a: dict) -> int:
    return a["knots"] - 1 - a["order"]


def _size(name: str, rule: Callable[[dict], int]) -> Param:
    return Param(name, "int64_t", given=False, rule=rule)


_THREADS = Param("threads", "int", given=False)
# The knots, as kan.bspline.KnotGeometry holds them; origin and inv_step on uniform grids only;
# cardinal (0 or 1): whether the cardinal recursion gives these knots' B-splines (else de Boor's).
_GEOMETRY = (
    _size("in_features", lambda a: a["knots_ext"].size(0)),
    Param("order", "int"),
    _size("knots", lambda a: a["knots_ext"].size(1) - 2),
    Param("knots_ext", "const T*", rule=lambda a: (a["in_features"], a["knots"] + 2)),
    Param("knots_padded", "const T*", rule=lambda a: (a["in_features"], a["knots"] + 2 * a["order"])),
    Param("origin", "const T*", optional=True, rule=lambda a: (a["in_features"],)),
    Param("inv_step", "const T*", optional=True, rule=lambda a: (a["in_features"],)),
    Param("cardinal", "int"),
)
_BATCH_IN = lambda a: (a["batch"], a["in_features"])  # noqa: E731
_IN_BATCH = lambda a: (a["in_features"], a["batch"])  # noqa: E731
_OUT_IN_COEFF = lambda a: (a["O"], a["I"], a["C"])  # noqa: E731

# kernel -> its C parameters, in the order of ``kan_<kernel>_f32`` / ``_f64`` in _native.cpp
# (tests/test_native.py reads that file and compares).
KERNELS: dict[str, tuple[Param, ...]] = {
    "gather_forward": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("table", "const T*", rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        _size("out", lambda a: a["table"].size(-1)),
        Param("result", "T*", rule=lambda a: (a["batch"], a["out"])),
        Param("saved_u", "T*", optional=True, rule=_IN_BATCH),
        Param("saved_span", "int16_t*", optional=True, rule=_IN_BATCH),
        _THREADS,
    ),
    "gather_table_grad": (
        *_GEOMETRY,
        Param("x", "const T*", optional=True, rule=_BATCH_IN),
        Param("saved_u", "const T*", optional=True, rule=_IN_BATCH),
        Param("saved_span", "const int16_t*", optional=True, rule=_IN_BATCH),
        _size("batch", lambda a: a["grad_out"].size(0)),
        Param("grad_out", "const T*", rule=lambda a: (a["batch"], a["out"])),
        _size("out", lambda a: a["grad_out"].size(-1)),
        Param("grad_table", "T*", optional=True, rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        Param("w", "const T*", optional=True, rule=lambda a: (a["out"], a["in_features"], _coeff(a))),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["out"], a["in_features"])),
        Param("grad_w", "T*", optional=True, rule=lambda a: (a["out"], a["in_features"], _coeff(a))),
        Param("grad_scaler", "T*", optional=True, rule=lambda a: (a["out"], a["in_features"])),
        _THREADS,
    ),
    "gather_input_grad": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("table", "const T*", rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        Param("grad_out", "const T*", rule=lambda a: (a["batch"], a["out"])),
        _size("out", lambda a: a["table"].size(-1)),
        Param("grad_x", "T*", rule=_BATCH_IN),
        _THREADS,
    ),
    "dense_bases": (
        *_GEOMETRY,
        Param("x", "const T*", rule=lambda a: (a["rows"], a["in_features"])),
        Param("base", "const T*", rule=lambda a: (a["rows"], a["in_features"])),
        _size("rows", lambda a: a["x"].size(0)),
        Param("result", "T*", rule=lambda a: (a["rows"], (_coeff(a) + 1) * a["in_features"])),
        _THREADS,
    ),
    "local_bases": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("first", "int64_t*", rule=_BATCH_IN),
        Param("value", "T*", rule=lambda a: (a["batch"], a["in_features"], a["order"] + 1)),
        Param("slope", "T*", optional=True, rule=lambda a: (a["batch"], a["in_features"], a["order"] + 1)),
        _THREADS,
    ),
    "scale_spline": (
        Param("w", "const T*", rule=_OUT_IN_COEFF),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _size("O", lambda a: a["w"].size(0)),
        _size("I", lambda a: a["w"].size(1)),
        _size("C", lambda a: a["w"].size(2)),
        Param("dst", "T*", rule=_OUT_IN_COEFF, strided=True),
        _size("so", lambda a: a["dst"].stride(0)),
        _size("si", lambda a: a["dst"].stride(1)),
        _size("sc", lambda a: a["dst"].stride(2)),
        _THREADS,
    ),
    "silu": (
        Param("x", "const T*"),
        _size("n", lambda a: a["x"].numel()),
        Param("y", "T*", rule=lambda a: a["x"].shape),
        _THREADS,
    ),
    "silu_grad": (
        Param("x", "const T*"),
        Param("grad", "const T*", rule=lambda a: a["x"].shape),
        _size("n", lambda a: a["x"].numel()),
        Param("out", "T*", rule=lambda a: a["x"].shape),
        Param("accumulate", "int"),
        _THREADS,
    ),
    "spline_grads": (
        Param("G", "const T*", rule=_OUT_IN_COEFF, strided=True),
        _size("so", lambda a: a["G"].stride(0)),
        _size("si", lambda a: a["G"].stride(1)),
        _size("sc", lambda a: a["G"].stride(2)),
        Param("w", "const T*", rule=_OUT_IN_COEFF),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _size("O", lambda a: a["w"].size(0)),
        _size("I", lambda a: a["w"].size(1)),
        _size("C", lambda a: a["w"].size(2)),
        Param("grad_w", "T*", rule=_OUT_IN_COEFF),
        Param("grad_scaler", "T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _THREADS,
    ),
}


def _geometry_rules(a: dict) -> str | None:
    if not 0 <= a["order"] <= MAX_ORDER:
        return f"order must be in [0, {MAX_ORDER}], got {a['order']}"
    if _coeff(a) < 1:
        return f"{a['knots']} knots leave no coefficient at order {a['order']}"
    if (a["origin"] is None) != (a["inv_step"] is None):
        return "origin and inv_step come together (a uniform grid) or not at all"
    if a["cardinal"] not in (0, 1) or (a["cardinal"] and a["origin"] is None):
        return f"cardinal must be 0, or 1 on a uniform grid (origin and inv_step), got {a['cardinal']}"
    return None


def _saved_rules(a: dict) -> str | None:
    if (a["saved_u"] is None) != (a["saved_span"] is None):
        return "saved_u and saved_span come together"
    if a["saved_u"] is not None and (not a["cardinal"] or a["knots"] >= 2**15):
        return "saving spans needs a cardinal grid of under 32768 knots"
    return None


def _table_grad_rules(a: dict) -> str | None:
    if a["batch"] > 2**31 - 64:  # the kernel sorts sample indices as int32 (with a few of padding)
        return f"takes at most {2**31 - 64} samples, got {a['batch']}"
    if a["x"] is None and a["saved_u"] is None:
        return "the table gradient needs x or the spans gather_forward saved"
    if a["grad_table"] is None and (a["w"] is None or a["grad_w"] is None):
        return "needs grad_table, or w and grad_w"
    if a["grad_scaler"] is not None and (a["scaler"] is None or a["w"] is None):
        return "grad_scaler needs w and scaler"
    return _saved_rules(a)


# What the shapes alone do not say: kernel -> a check giving the problem, or None.
_RULES: dict[str, Callable[[dict], str | None]] = {
    "gather_forward": lambda a: _geometry_rules(a) or _saved_rules(a),
    "gather_table_grad": lambda a: _geometry_rules(a) or _table_grad_rules(a),
    "gather_input_grad": _geometry_rules,
    "dense_bases": _geometry_rules,
    "local_bases": _geometry_rules,
    "silu_grad": lambda a: None if a["accumulate"] in (0, 1) else "accumulate must be 0 or 1",
    "spline_grads": lambda a: "grad_scaler needs scaler" if a["grad_scaler"] is not None and a["scaler"] is None
    else None,
}


def schema(name: str) -> str:
    """The operator schema of kernel ``name``, derived from its C parameters."""
    arguments, written = [], 0
    for p in KERNELS[name]:
        if not p.given:
            continue
        if p.tensor:
            alias = ""
            if p.written:
                alias, written = f"({chr(ord('a') + written)}!)", written + 1
            arguments.append(f"Tensor{alias}{'?' if p.optional else ''} {p.name}")
        else:
            arguments.append(f"int {p.name}")
    return f"{name}({', '.join(arguments)}) -> ()"


class _Plan(NamedTuple):
    """A kernel's table entry, laid out for the per-call checks (which run on every call)."""

    name: str
    arguments: tuple[str, ...]  # the operator's arguments, in order
    floats: tuple[str, ...]  # T tensors, the data before the knot tables: the first present gives T
    sizes: tuple[tuple[str, Callable], ...]  # derived integers and their rules
    # each tensor: name, optional, dtype (None: T), shape rule, strided
    tensors: tuple[tuple[str, bool, torch.dtype | None, Callable | None, bool], ...]
    c_arguments: tuple[tuple[str, bool], ...]  # every C parameter: name, whether a pointer
    rule: Callable[[dict], str | None] | None


def _plan(name: str) -> _Plan:
    params = KERNELS[name]
    given = [p for p in params if p.given]
    floats = [p.name for p in given if p.c.endswith("T*")]
    return _Plan(
        name=name,
        arguments=tuple(p.name for p in given),
        floats=tuple([n for n in floats if n not in _GEOMETRY_NAMES] + [n for n in floats if n in _GEOMETRY_NAMES]),
        sizes=tuple((p.name, p.rule) for p in params if not p.given and p.rule is not None),
        tensors=tuple((p.name, p.optional, None if p.c.endswith("T*") else _ELEMENT[p.c.replace("const ", "")[:-1]],
                       p.rule, p.strided) for p in given if p.tensor),
        c_arguments=tuple((p.name, p.tensor) for p in params),
        rule=_RULES.get(name),
    )


def _checked(plan: _Plan, a: dict) -> tuple[dict, torch.dtype]:
    """The operator's arguments ``a`` (by name) with the derived sizes added, and the float
    dtype T, after checking every tensor's presence, dtype, device, shape and contiguity;
    ValueError naming the first problem.

    Every call of every kernel passes here, so the loops read each tensor once into a local
    and look up each method once; the checks and their order are those the docstring names."""
    name = plan.name
    get = a.get
    Tensor = torch.Tensor
    for tensor, optional, *_ in plan.tensors:  # before the sizes, which read the tensors
        t = get(tensor)
        if t is None:
            if not optional:
                raise ValueError(f"kan_native::{name}: {tensor} is required")
        elif not isinstance(t, Tensor):
            raise ValueError(f"kan_native::{name}: {tensor} must be a tensor, got {type(t).__name__}")
    reference = plan.floats[0]
    for n in plan.floats:
        if a[n] is not None:
            reference = n
            break
    dtype = None if a[reference] is None else a[reference].dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        raise ValueError(f"kan_native::{name}: {reference} must be float32 or float64, got {dtype}")
    for size, rule in plan.sizes:
        a[size] = rule(a)
    problem = plan.rule(a) if plan.rule else None  # first: the shapes below assume a valid order
    if problem:
        raise ValueError(f"kan_native::{name}: {problem}")
    strided_layout = torch.strided
    for tensor, optional, element, shape, strided in plan.tensors:
        t = a[tensor]
        if t is None:
            if not optional:
                raise ValueError(f"kan_native::{name}: {tensor} is required")
            continue
        element = element or dtype
        if t.layout is not strided_layout:
            raise ValueError(f"kan_native::{name}: {tensor} must be a dense (strided) tensor, got {t.layout}")
        if t.dtype is not element or not (t.is_cpu or t.is_meta):  # meta: the fake kernel's tensors
            raise ValueError(f"kan_native::{name}: {tensor} must be a CPU {element} tensor "
                             f"(as {reference}), got {t.device.type} {t.dtype}")
        if shape is not None:
            expected = shape(a)
            if t.shape != expected:
                raise ValueError(f"kan_native::{name}: {tensor} must be {tuple(expected)}, got {tuple(t.shape)}")
        if not strided and not t.is_contiguous():
            raise ValueError(f"kan_native::{name}: {tensor} must be contiguous")
    return a, dtype


_GEOMETRY_NAMES = frozenset(p.name for p in _GEOMETRY)


def _threads() -> int:
    """torch's intra-op thread count, which the kernels never exceed (they clamp it too)."""
    return max(1, torch.get_num_threads())


def _pointers(plan: _Plan, a: dict) -> list:
    """The C arguments of a checked call: each tensor's data pointer, after checking that it has
    memory here (a meta or fake tensor passes the shape checks with a null pointer: refused),
    and the integers as they are. ValueError naming the first tensor without memory."""
    values = []
    for n, pointer in plan.c_arguments:
        value = a[n]
        if pointer and value is not None:
            address = value.data_ptr()
            if address == 0 and value.numel() > 0:
                raise ValueError(f"kan_native::{plan.name}: {n} has no memory on this machine "
                                 f"({value.device.type} tensor: meta or fake); the kernels take CPU tensors")
            value = address
        values.append(value)
    return values


def _value_rules(name: str, a: dict) -> str | None:
    """What the kernels index with, checked on the values (the fake kernel cannot: it has no
    values): the saved knot spans that gather_table_grad reads within [-1, knots - 1], by one
    min and max per call (gather_forward writes them)."""
    span = a.get("saved_span") if name == "gather_table_grad" else None
    if span is not None and span.numel() > 0:
        low, high = torch.aminmax(span)
        low, high = int(low), int(high)
        if low < -1 or high > a["knots"] - 1:
            return (f"saved_span must hold knot spans in [-1, {a['knots'] - 1}], got values in [{low}, {high}] "
                    "(spans saved by gather_forward for this geometry)")
    return None
