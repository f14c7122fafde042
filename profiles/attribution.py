"""Which part of a training step a profiler frame belongs to, and the table of shares.

The three profilers name what they see differently: cProfile by Python function or
built-in (``b_splines``, ``<built-in method torch._C._nn.linear>``), py-spy by Python
qualname or C++ symbol (``KANLinear.b_splines``, ``at::_ops::linear::call``),
torch.profiler by operator or ``record_function`` label (``aten::mm``, ``kan.basis``).
One table, :data:`RULES`, maps all of them onto the same parts, so that the
profilers speak of the same things:

    part        frames that belong to it
    basis       any model's basis function: b_splines, local_b_splines, dense_bases, basis;
                the models' ``kan.basis`` region
    autograd    the backward pass: Tensor.backward, torch.autograd.backward,
                run_backward, the C++ autograd engine, ``autograd::engine::...``
                events, the scenario's ``profiles.backward`` label
    optimizer   anything in torch/optim/ (step, zero_grad), ``Optimizer.step#...``
    matmul      linear, matmul, mm, addmm, bmm, baddbmm, einsum, embedding_bag as
                Python built-ins, ``aten::`` ops or C++ symbols; BLAS ``*gemm*`` kernels;
                kan.native's gather kernels (gather_forward, gather_table_grad,
                gather_weight_grads, gather_input_grad: their local bases are
                evaluated inside them)
    transfer    to, _to_copy, copy_, item, _local_scalar_dense, cpu, cuda;
                host-device memcpy events
    python      time in the interpreter that no part claims (see each profiler)
    other       time in C/C++ code that no part claims (elementwise ops, the loss, ...)

A device wait the scenario places after a phase (``wait_for_basis``,
``wait_for_autograd``, ``wait_for_optimizer``, ``wait_for_transfer``) belongs to that
phase's part, since on an asynchronous device the wait is where the phase's work
is paid for.

**The outermost matching frame wins.** A sample, call or event belongs to the part of
the outermost frame on its stack that matches a rule: the ``.to(dtype)`` inside
``b_splines`` is basis evaluation, not a transfer; the ``mm`` inside ``backward`` is
autograd; the ``copy_`` inside ``optimizer.step`` is the optimizer. A ``.to(device)``
or ``.item()`` called by the loop itself is a transfer, which is where a host
profiler blames the wait for work queued on an asynchronous device.

What is left ("python" or "other") depends on what a profiler can see; each profiler
module says how it splits the remainder.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from benchmarks.record import ATTRIBUTION_COLUMNS, PARTS  # the attribution table's schema

# A model's basis evaluation, by the name of the function that does it.
BASIS_FUNCTIONS = ("b_splines", "local_b_splines", "dense_bases", "basis")
# kan.native's contractions: local bases and the spline product in one kernel, so
# their time is the product's (as embedding_bag's is), the bases' work inside it.
NATIVE_CONTRACTIONS = r"gather_(?:forward|table_grad|weight_grads|input_grad)"

_ANY = r"(?:.*[.:])?"  # any qualifier: "KANLinear.", "torch._C._nn.", "aten::", "at::_ops::"
_MATMUL_OPS = r"(?:linear|matmul|mm|addmm|bmm|baddbmm|einsum|_?embedding_bag)"
_TRANSFER_OPS = r"(?:to|_to_copy|to_dtype|to_device|to_dtype_layout|to_other|copy_|item|_local_scalar_dense|cpu|cuda)"

# (part, pattern on the frame's name, pattern on its file or None), tried in order.
# Names are matched whole (re.fullmatch); files are searched (re.search), with "/" as
# the separator. A frame that matches no rule belongs to no part.
RULES: list[tuple[str, str, str | None]] = [
    ("basis", r"kan\.basis|" + _ANY + "(?:" + "|".join(BASIS_FUNCTIONS) + "|wait_for_basis)", None),
    # the fast KAN's C++ kernels (kan.native): Python wrappers and their trace labels
    ("matmul", r"(?:kan\.native::)?" + NATIVE_CONTRACTIONS, r"kan/native\.py$|^$"),
    ("autograd", _ANY + r"(?:run_backward|_engine_run_backward|wait_for_autograd)", None),
    ("autograd", _ANY + r"backward", r"torch/(?:_tensor\.py|autograd/__init__\.py|autograd/graph\.py)$"),
    ("autograd", r"profiles\.backward|autograd::engine::evaluate_function:.*|"
                 r"(?:.*::)?THPEngine_run_backward|torch::autograd::(?:python::Python)?Engine::.*", None),
    ("optimizer", r".*", r"torch/optim/"),
    ("optimizer", r"Optimizer\.(?:step|zero_grad)#.*|" + _ANY + r"wait_for_optimizer", None),
    ("matmul", _ANY + r"(?:THPVariable_)?" + _MATMUL_OPS + r"(?:::call|::redispatch)?|.*gemm.*", None),
    ("transfer", _ANY + r"(?:THPVariable_)?" + _TRANSFER_OPS + r"(?:::call|::redispatch)?|"
                 r"Memcpy [HD]to[HD].*|cudaMemcpy.*|" + _ANY + r"wait_for_transfer", None),
]

_COMPILED = [(part, re.compile(name), re.compile(file) if file else None) for part, name, file in RULES]


def classify(name: str, file: str = "") -> str | None:
    """The part a frame named ``name`` (in source or library ``file``) belongs to, or None.

    >>> classify("KANLinear.b_splines", "kan/reference.py")
    'basis'
    >>> classify("aten::addmm"), classify("<method 'to' of 'torch._C.TensorBase' objects>")
    ('matmul', 'transfer')
    """
    name = builtin_name(name)
    file = file.replace("\\", "/")
    for part, name_pattern, file_pattern in _COMPILED:
        if name_pattern.fullmatch(name) and (file_pattern is None or file_pattern.search(file)):
            return part
    return None


_METHOD = re.compile(r"<method '([^']+)' of '(?:[\w.]*\.)?(\w+)' objects>")
_BUILTIN = re.compile(r"<built-in method ([\w.]+)(?: of .*)?>")


def builtin_name(name: str) -> str:
    """cProfile's name of a C function, as a dotted name: ``"<method 'to' of
    'torch._C.TensorBase' objects>"`` -> ``"TensorBase.to"``, ``"<built-in method
    torch._C._nn.linear>"`` -> ``"torch._C._nn.linear"``; other names unchanged."""
    m = _METHOD.fullmatch(name)
    if m:
        return f"{m.group(2)}.{m.group(1)}"
    m = _BUILTIN.fullmatch(name)
    if m:
        return m.group(1)
    return name


def outermost_part(stack: Iterable[str | None]) -> str | None:
    """The first part in ``stack`` (parts of its frames, outermost first), or None."""
    for part in stack:
        if part is not None:
            return part
    return None


def shares(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each part's share of the total (every part of PARTS present, summing to 1).

    ``seconds`` maps parts to seconds; a part missing from it has share 0.
    ``ValueError`` if the total is not positive or a part is unknown.
    """
    unknown = set(seconds) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(sorted(unknown))}; parts are {', '.join(PARTS)}")
    total = sum(seconds.values())
    if not total > 0:
        raise ValueError("no time was attributed (the profile is empty)")
    return {part: seconds.get(part, 0.0) / total for part in PARTS}


def rows(profiler: str, key: Mapping[str, object], seconds: Mapping[str, float]) -> list[dict]:
    """Rows of the attribution table (ATTRIBUTION_COLUMNS) for one profile.

    ``key`` gives scenario, model, device, phase and synchronized; one row per part.
    """
    fraction = shares(seconds)
    return [
        {
            "profiler": profiler,
            "scenario": key["scenario"],
            "model": key["model"],
            "device": key["device"],
            "phase": key["phase"],
            "synchronized": bool(key["synchronized"]),
            "part": part,
            "seconds": float(seconds.get(part, 0.0)),
            "share": fraction[part],
        }
        for part in PARTS
    ]
