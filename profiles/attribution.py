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
                events, the scenario's ``profiles.backward`` label; what of it is
                not split further (below): the engine's own work, and nodes no
                profiler can place
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

**The backward, by what it differentiates.** Inside the backward (an ``autograd``
frame), time belongs to the gradient of a forward part where a frame says which:

    basis grad           the basis's gradient: the ``kan.basis`` region or a basis
                         function inside a custom backward; the reference KAN's
                         elementwise nodes (Mul, Div, Sub, Add, Slice, Unsqueeze, Clone)
    spline product grad  the ``kan.spline_product`` region; MmBackward0, ViewBackward0,
                         TBackward0; the products' custom autograd Functions (kan.fast)
                         and kan.native's gather kernels
    base branch grad     the ``kan.base_branch`` region; activation nodes (SiluBackward0)
    loss grad            loss nodes (MseLossBackward0), the forward's ``aten::mse_loss``

The innermost frame that names one decides (a basis function called inside a product's
custom backward is the basis's gradient), by the second table, :data:`GRADIENT_RULES`.
What no frame places stays ``autograd``: the engine's own work (scheduling nodes,
summing a node's gradient to its input's shape where the forward broadcast, adding the
gradients of a tensor used twice, freeing what a node saved, ``AccumulateGrad``
writing ``.grad``).

How a profiler knows which forward part a node differentiates differs, and so does
what it can split (the page's note, :data:`BACKWARD_NOTES`):

- torch.profiler links each backward node to the forward operator that made it by
  autograd's sequence number, and that operator to the model region it ran in: exact.
- py-spy (``--native``) sees the node's C++ class, ``...::MmBackward0::apply``, by
  :data:`NODE_RULES`. A name says which operator a node differentiates, not where the
  model used it: the reference KAN makes MmBackward0 in both products and MulBackward0
  in the basis and in the spline weight's scaler, and the table charges each name to
  the part where the reference KAN spends most of its time (the spline product, the
  basis). A BLAS kernel with no node frame above it (py-spy does not unwind through
  MKL's kernels, so such stacks jump from the Python caller to the kernel) counts as an
  MmBackward0's. torch.profiler's column is the exact one; the difference between the
  two is this table's error and py-spy's sampling error.
- cProfile sees Python frames only: custom autograd Functions' ``backward`` methods
  (kan.fast) and what they call. A backward of plain PyTorch operators (the reference
  KAN) is one C call, ``run_backward``, and stays ``autograd`` whole.

A device wait the scenario places after a phase (``wait_for_basis``,
``wait_for_autograd``, ``wait_for_optimizer``, ``wait_for_transfer``) belongs to that
phase's part, since on an asynchronous device the wait is where the phase's work
is paid for.

**The outermost matching frame wins.** A sample, call or event belongs to the part of
the outermost frame on its stack that matches a rule: the ``.to(dtype)`` inside
``b_splines`` is basis evaluation, not a transfer; the ``mm`` inside ``backward`` is
the backward's (autograd, or the gradient its node names, above); the ``copy_`` inside ``optimizer.step`` is the optimizer. A ``.to(device)``
or ``.item()`` called by the loop itself is a transfer, which is where a host
profiler blames the wait for work queued on an asynchronous device.

What is left ("python" or "other") depends on what a profiler can see; each profiler
module says how it splits the remainder.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from benchmarks.core.schema import PARTS

# A model's basis evaluation, by the name of the function that does it.
BASIS_FUNCTIONS = ("b_splines", "local_b_splines", "dense_bases", "basis")
# kan.native's contractions: local bases and the spline product in one kernel, so
# their time is the product's (as embedding_bag's is), the bases' work inside it.
NATIVE_CONTRACTIONS = r"gather_(?:forward|table_grad|weight_grads|input_grad)"
# Where their Python wrappers live (an empty file: a trace label, which names no file), and
# where kan-fast's custom autograd Functions do.
NATIVE_WRAPPERS = r"kan/native/operators\.py$|^$"
FAST_FUNCTIONS = r"kan/fast/\w+\.py$"

_ANY = r"(?:.*[.:])?"  # any qualifier: "KANLinear.", "torch._C._nn.", "aten::", "at::_ops::"
_MATMUL_OPS = r"(?:linear|matmul|mm|addmm|bmm|baddbmm|einsum|_?embedding_bag)"
_TRANSFER_OPS = r"(?:to|_to_copy|to_dtype|to_device|to_dtype_layout|to_other|copy_|item|_local_scalar_dense|cpu|cuda)"

# (part, pattern on the frame's name, pattern on its file or None), tried in order.
# Names are matched whole (re.fullmatch); files are searched (re.search), with "/" as
# the separator. A frame that matches no rule belongs to no part.
RULES: list[tuple[str, str, str | None]] = [
    ("basis", r"kan\.basis|" + _ANY + "(?:" + "|".join(BASIS_FUNCTIONS) + "|wait_for_basis)", None),
    # the fast KAN's C++ kernels (kan.native): Python wrappers and their trace labels
    ("matmul", r"(?:kan\.native::)?" + NATIVE_CONTRACTIONS, NATIVE_WRAPPERS),
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

GRADIENT_PARTS = ("basis grad", "spline product grad", "base branch grad", "loss grad")
# The forward part a torch.profiler region or forward operator stands for, as a gradient.
_LOSS_OPS = _ANY + r"\w*(?:_loss|loss_\w*)"  # aten::mse_loss, aten::nll_loss_nd, at::_ops::mse_loss_backward::call
_NODE = r"(?:torch::autograd::generated::)?"  # py-spy's C++ node classes: ...::MmBackward0::apply
_APPLY = r"(?:::apply|_apply_functional|_copy_apply_functional)?"

# Inside the backward: (gradient part, pattern on the frame's name, pattern on its file or
# None), as RULES. The innermost frame that matches decides. Every profiler reads these.
GRADIENT_RULES: list[tuple[str, str, str | None]] = [
    ("basis grad", r"kan\.basis|" + _ANY + "(?:" + "|".join(BASIS_FUNCTIONS) + ")", None),
    ("basis grad", r"(?:kan\.native::)?dense_input_grad", NATIVE_WRAPPERS),
    ("spline product grad", r"kan\.spline_product", None),
    ("spline product grad", r"(?:kan\.native::)?" + NATIVE_CONTRACTIONS, NATIVE_WRAPPERS),
    ("base branch grad", r"kan\.base_branch", None),
    # the products' custom autograd Functions (cProfile names the method "backward")
    ("spline product grad", r"(?:\w*Product\.)?backward", FAST_FUNCTIONS),
    ("loss grad", _LOSS_OPS + r"(?:::call|::redispatch)?", None),
]
# Autograd's nodes by name, for the profilers that cannot link a node to its forward
# operator (py-spy, cProfile). Written for the reference KAN's forward: where it makes
# one kind of node in two parts, the name goes to the part that spends more time in it
# (MmBackward0: the spline product, not the base branch's linear; MulBackward0: the
# basis, not the spline weight's scaler). torch.profiler does not read this table.
NODE_RULES: list[tuple[str, str, str | None]] = [
    ("loss grad", _NODE + r"\w*LossBackward\d*" + _APPLY, None),
    ("base branch grad", _NODE + r"(?:Silu|Gelu|Relu|Tanh|Sigmoid|Elu|LeakyRelu)Backward\d*" + _APPLY, None),
    ("spline product grad", _NODE + r"(?:Mm|View|T|Reshape|UnsafeView)Backward\d*" + _APPLY, None),
    ("basis grad", _NODE + r"(?:Mul|Div|Sub|Add|Slice|Unsqueeze|Clone|ToCopy)Backward\d*" + _APPLY, None),
    # a BLAS kernel py-spy could not unwind through (no node frame above it): an MmBackward0's
    ("spline product grad", r".*gemm.*", None),
]

# What each profiler can split of a backward, for the page (profile.json "backward").
BACKWARD_NOTES = {
    "torch": "exact: each backward node is linked to the forward operator that made it by autograd's "
             "sequence number, and that operator to the model region (kan.basis, kan.spline_product, "
             "kan.base_branch) it ran in; autograd is the engine's own work and AccumulateGrad",
    "py-spy": "by the node's C++ class (MmBackward0, MulBackward0, ...): a name says which operator a node "
              "differentiates, not where the model used it, so the reference KAN's MmBackward0 counts as "
              "the spline product's (its base branch's linear makes one too) and MulBackward0 as the "
              "basis's (the spline weight's scaler makes one too); the table is written for the B-spline KANs "
              "(an MLP's MmBackward0 is no spline product); torch.profiler's split is the exact one",
    "cprofile": "only Python code in the backward: custom autograd Functions' backward methods (kan.fast) and "
                "what they call; a backward of plain PyTorch operators (the reference KAN) is one C call, "
                "run_backward, and cProfile cannot split it: it stays autograd whole",
}


def _compile(rules):
    return [(part, re.compile(name), re.compile(file) if file else None) for part, name, file in rules]


_GRADIENTS, _NODES = _compile(GRADIENT_RULES), _compile(NODE_RULES)


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


def classify_gradient(name: str, file: str = "", nodes: bool = True) -> str | None:
    """The gradient part a frame names inside the backward (GRADIENT_RULES, then
    NODE_RULES when ``nodes``), or None.

    >>> classify_gradient("torch::autograd::generated::SiluBackward0::apply")
    'base branch grad'
    >>> classify_gradient("kan.basis"), classify_gradient("aten::mm")
    ('basis grad', None)
    """
    name = builtin_name(name)
    file = file.replace("\\", "/")
    for table in (_GRADIENTS, _NODES) if nodes else (_GRADIENTS,):
        for part, name_pattern, file_pattern in table:
            if name_pattern.fullmatch(name) and (file_pattern is None or file_pattern.search(file)):
                return part
    return None


def resolve(outer: str | None, gradient: str | None) -> str | None:
    """The part of time whose outermost part is ``outer`` and innermost gradient frame
    ``gradient``: inside the backward the gradient, where a frame names one."""
    if outer == "autograd" and gradient is not None:
        return gradient
    return outer


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


def stack_part(frames: Iterable[tuple[str, str]], nodes: bool = True) -> str | None:
    """The part of a sample whose stack is ``frames`` ((name, file), outermost first)."""
    frames = list(frames)
    outer = outermost_part(classify(name, file) for name, file in frames)
    if outer != "autograd":
        return outer
    gradients = [classify_gradient(name, file, nodes) for name, file in frames]
    return resolve(outer, outermost_part(reversed(gradients)))


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
