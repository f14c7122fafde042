"""What is measured: one case, and the model, data and timed step it stands for.

A :class:`Case` names what is measured: a registered model, a phase, a device, a dtype and
the shapes. :func:`make_step` builds it: the model from :mod:`kan.zoo` (asked by name, at
call time), data (:func:`make_batch`), and a :class:`Step` whose ``fn`` is the timed work
and whose ``setup`` is the untimed preparation that must precede every call:

    >>> from benchmarks.core.case import Case, make_step
    >>> from benchmarks.core.protocol import rounds
    >>> from benchmarks.core.timer import DeviceTimer
    >>> step = make_step(Case("kan", "backward", "cpu", "float32", (784, 64, 10), batch=256))
    >>> seconds = rounds(step.fn, DeviceTimer("cpu"), 20, setup=step.setup)

This is the one definition of each phase, shared by the bench suites, the gate, the
studies and the profiles:

- ``forward``: one forward pass with autograd recording, as in training;
- ``backward``: ``loss.backward()`` alone; ``setup`` runs the forward and the loss;
- ``forward+backward``: the forward, the loss and its backward, timed together;
- ``train``: ``zero_grad``, forward, loss, backward and one optimizer step (:func:`train_step`).

Every phase with a loss uses :func:`loss` (mean squared error against normal targets) and
the training step :func:`optimizer` (Adam, learning rate 1e-3). A command that trains on a
task of its own (the quality runs: cross-entropy for classification, another learning rate)
passes its loss to :func:`train_step` and its learning rate to :func:`optimizer`, so that
the step itself keeps one definition. Every ``setup`` ends by
waiting for the device, so a timed call starts on an idle device. Inputs are uniform in
[-1, 1] (the B-spline KANs' default grid range).

A profiler that must see each part of a step passes ``part``: a function that takes a
part's name (``"forward"``, ``"backward"``, ``"optimizer"``) and returns a context
manager the step runs that part's work in; the profiles label the part there and, to
charge an asynchronous device's work to the part that queued it, wait for the device at
its end. The timed steps pass none (a shared do-nothing context).
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch

from benchmarks.core.errors import one_line
from benchmarks.core.phases import PHASES
from benchmarks.core.timer import DEVICE_TYPES, device_type, synchronize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}

# FLOP convention of kan.zoo (a multiply-add is 2, any other elementwise operation 1).
# A backward pass is counted as twice its forward (a gradient for the inputs and one for
# the weights of every product), the usual estimate; an Adam step as 13 per parameter:
# exp_avg.lerp_ 3, exp_avg_sq.mul_.addcmul_ 4, sqrt / bias correction + eps 3, addcdiv_ 3.
BACKWARD_PER_FORWARD = 2
ADAM_FLOPS_PER_PARAMETER = 13
LEARNING_RATE = 1e-3
LOSS = "mean squared error"
OPTIMIZER = f"Adam, learning rate {LEARNING_RATE:g}"


def loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of every phase that has one: output and targets (batch, out)."""
    return torch.nn.functional.mse_loss(output, targets)


def optimizer(parameters, lr: float = LEARNING_RATE) -> torch.optim.Optimizer:
    """The optimizer of the training step (Adam; the timed phases keep the default rate)."""
    return torch.optim.Adam(parameters, lr=lr)


_NO_PART = contextlib.nullcontext()


def no_part(name: str) -> contextlib.AbstractContextManager:
    """The ``part`` of a timed step: nothing around any part."""
    return _NO_PART


def train_step(model, opt, inputs, targets, part=no_part, loss_fn=loss) -> torch.Tensor:
    """One training step: zero_grad, forward, loss, backward, optimizer step; returns the loss.

    ``loss_fn(output, targets)``: the loss, :func:`loss` unless a task brings its own.
    """
    opt.zero_grad(set_to_none=True)
    with part("forward"):
        value = loss_fn(model(inputs), targets)
    with part("backward"):
        value.backward()
    with part("optimizer"):
        opt.step()
    return value


class ModelUnavailable(Exception):
    """A registered model whose module cannot be imported here (missing, or broken)."""


def zoo():
    """The model registry, imported on first use (a third-party ``kan`` may shadow ours)."""
    try:
        return importlib.import_module("kan.zoo")
    except ImportError as e:
        raise ImportError(
            f"cannot import the model registry kan.zoo ({e}); run from the repository root, "
            "or uninstall another package called 'kan'"
        ) from None


@dataclass(frozen=True)
class Case:
    """What one benchmark measures. ``grid_size`` is None for models without a grid (MLP)."""

    model: str
    phase: str = "forward"
    device: str = "cpu"
    dtype: str = "float32"
    widths: tuple[int, ...] = (2, 5, 1)
    batch: int = 64
    grid_size: int | None = 5
    seed: int = field(default=0, compare=False)
    graph: bool = False  # the step captured in CUDA graphs (graphed_step)

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; valid phases: {', '.join(PHASES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        device_type(self.device)
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def id(self) -> str:
        """A readable, unique name: ``kan-forward-cpu-float32-784x64x10-b256-g5``."""
        grid = "" if self.grid_size is None else f"-g{self.grid_size}"
        graph = "-graph" if self.graph else ""
        return f"{self.model}-{self.phase}-{self.device}-{self.dtype}-{widths_label(self.widths)}-b{self.batch}{grid}{graph}"

    @property
    def workload(self) -> str:
        """The case less its model: the models sharing it are compared with each other."""
        grid = "" if self.grid_size is None else f" grid {self.grid_size}"
        graph = " cuda graph" if self.graph else ""
        return f"{self.phase} {self.device} {self.dtype} {widths_label(self.widths)} batch {self.batch}{grid}{graph}"

    def options(self) -> dict[str, object]:
        """Keyword options for ``kan.zoo.build``."""
        return {} if self.grid_size is None else {"grid_size": self.grid_size}

    def forward_flops(self) -> int:
        """Analytic FLOPs of one forward pass, from the registry."""
        return zoo().flops(self.model, self.widths, self.batch, **self.options())

    def record(self) -> dict[str, object]:
        """The case as tidy-table fields."""
        d = asdict(self)
        d.pop("seed")
        if d.pop("graph"):
            d["mode"] = "cuda graph"
        d["widths"] = widths_label(self.widths)
        return d


def widths_label(widths) -> str:
    """``(784, 64, 10)`` as ``"784x64x10"``, the form the tidy table stores."""
    return "x".join(str(int(w)) for w in widths)


def phase_flops(forward_flops: int, phase: str, parameters: int) -> int:
    """Analytic FLOPs of one timed call of ``phase``, from the forward's count (see above)."""
    if phase == "forward":
        return forward_flops
    if phase == "backward":
        return BACKWARD_PER_FORWARD * forward_flops
    if phase == "forward+backward":
        return (1 + BACKWARD_PER_FORWARD) * forward_flops
    if phase == "train":
        return (1 + BACKWARD_PER_FORWARD) * forward_flops + ADAM_FLOPS_PER_PARAMETER * parameters
    raise ValueError(f"unknown phase {phase!r}; valid phases: {', '.join(PHASES)}")


def has_grid(model: str) -> bool:
    """Whether ``model`` takes a ``grid_size`` (True when its module cannot be imported)."""
    registry = zoo()
    registry.entry(model)  # an unknown name raises here
    try:
        return "grid_size" in registry.options(model)
    except (ImportError, AttributeError, SyntaxError):
        return True


def device_unavailable(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None when it can."""
    kind = device_type(device)
    if kind == "cuda" and not torch.cuda.is_available():
        return "cuda is not available here (no CUDA GPU or a CPU-only torch build)"
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "mps is not available here (not an Apple-silicon Mac, or torch without MPS)"
    return None


def dtype_unsupported(device: str, dtype: str) -> str | None:
    """Why ``dtype`` cannot be used on ``device``, or None when it can."""
    if dtype == "float32":
        return None
    kind = device_type(device)
    if kind == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} does not support bfloat16"
    if kind == "mps":
        try:
            torch.ones(2, device="mps", dtype=DTYPES[dtype]).sum().item()
        except (RuntimeError, TypeError) as e:
            return f"mps does not support {dtype} here ({str(e).splitlines()[0]})"
    return None


def build_model(case: Case) -> torch.nn.Module:
    """``kan.zoo.build`` for ``case``; :class:`ModelUnavailable` if its module cannot be imported."""
    registry = zoo()
    entry = registry.entry(case.model)
    try:
        entry.model_class()
    except (ImportError, AttributeError, SyntaxError) as e:
        raise ModelUnavailable(
            f"model {case.model!r} is registered but {entry.model} cannot be imported: {type(e).__name__}: {e}"
        ) from None
    return registry.build(case.model, case.widths, **case.options())


@dataclass
class Step:
    """The timed work of a case: call ``setup()`` (untimed), then ``fn()`` (timed).

    ``model`` and ``inputs`` (batch, in) are on the case's device and dtype; ``forward()``
    is an untimed forward pass for probes (memory, profilers); :meth:`nonfinite` checks the
    last call's output (and, from backward on, the gradients).
    """

    case: Case
    model: torch.nn.Module
    inputs: torch.Tensor  # (batch, in)
    targets: torch.Tensor  # (batch, out)
    setup: Callable[[], None]
    fn: Callable[[], None]
    state: dict = field(default_factory=dict)  # what the last call left: "output", "loss"
    optimizer: torch.optim.Optimizer | None = None  # the training step's

    def forward(self) -> torch.Tensor:
        return self.model(self.inputs)

    def nonfinite(self) -> str | None:
        """A one-line description of NaN or inf in what the last call produced, else None."""
        checks = [("output", self.state.get("output")), ("loss", self.state.get("loss"))]
        if self.case.phase != "forward":
            checks += [(f"gradient of {n}", p.grad) for n, p in self.model.named_parameters()]
        if self.case.phase == "train":
            checks += [(f"parameter {n}", p) for n, p in self.model.named_parameters()]
        for what, t in checks:
            if t is not None and not bool(torch.isfinite(t.detach()).all()):
                kinds = [k for k, bad in (("NaN", torch.isnan(t).any()), ("inf", torch.isinf(t).any())) if bad]
                return f"{' and '.join(kinds)} in the {case_phase(self.case)} {what}"
        return None


def case_phase(case: Case) -> str:
    return {"forward": "forward", "backward": "backward", "forward+backward": "forward and backward",
            "train": "training step"}[case.phase]


def make_batch(case: Case, device=None, generator: torch.Generator | None = None):
    """(inputs (batch, in) uniform in [-1, 1], targets (batch, out) normal) for ``case``, on ``device``
    (the case's by default) in the case's dtype."""
    device = torch.device(case.device if device is None else device)
    dtype = DTYPES[case.dtype]
    inputs = torch.rand(case.batch, case.widths[0], generator=generator, dtype=dtype) * 2 - 1  # (batch, in)
    targets = torch.randn(case.batch, case.widths[-1], generator=generator, dtype=dtype)  # (batch, out)
    return inputs.to(device), targets.to(device)


def make_step(case: Case, model: torch.nn.Module | None = None,
              part: Callable[[str], contextlib.AbstractContextManager] = no_part) -> Step:
    """Build ``case``: its model (``model`` when given, else from the registry), data and step.

    ``part``: the context of each part of the step (see the module docstring). A case with
    ``graph`` set is built by :func:`graphed_step`.
    """
    if case.graph and model is None:
        return graphed_step(case)
    torch.manual_seed(case.seed)
    if model is None:
        model = build_model(case)
    device, dtype = torch.device(case.device), DTYPES[case.dtype]
    model = model.to(device=device, dtype=dtype).train()
    inputs, targets = make_batch(case)
    state: dict = {}
    opt = None

    def forward_loss() -> torch.Tensor:
        with part("forward"):
            state["output"] = out = model(inputs)  # (batch, out)
            return loss(out, targets)

    def fresh() -> None:
        state.clear()  # the last output and its graph are freed here, untimed
        model.zero_grad(set_to_none=True)

    if case.phase == "forward":

        def setup() -> None:
            state.clear()
            synchronize(device)

        def fn() -> None:
            with part("forward"):
                state["output"] = model(inputs)  # (batch, out)

    elif case.phase == "backward":

        def setup() -> None:
            fresh()
            state["loss"] = forward_loss()
            synchronize(device)

        def fn() -> None:
            with part("backward"):
                state["loss"].backward()

    elif case.phase == "forward+backward":

        def setup() -> None:
            fresh()
            synchronize(device)

        def fn() -> None:
            state["loss"] = value = forward_loss()
            with part("backward"):
                value.backward()

    else:
        opt = optimizer(model.parameters())

        def setup() -> None:
            state.clear()
            synchronize(device)

        def fn() -> None:
            state["loss"] = train_step(model, opt, inputs, targets, part)

    return Step(case, model, inputs, targets, setup, fn, state, opt)


__all__ = [
    "Case", "Step", "make_step", "make_batch", "loss", "optimizer", "train_step", "build_model", "phase_flops", "widths_label", "has_grid",
    "device_unavailable", "dtype_unsupported", "ModelUnavailable", "PHASES", "DTYPES", "DEVICE_TYPES",
]


# --------------------------------------------------------------------------- CUDA graphs


class CaptureFailed(ModelUnavailable):
    """A model that cannot be captured in a CUDA graph: its row is "skipped" with the reason."""


GRAPH_NOTE = ("captured with torch.cuda.make_graphed_callables: the model's forward and backward each "
              "replay one CUDA graph; the loss and the optimizer step run eagerly")


def _first_cause(e: BaseException) -> str:
    """The first error of a chain, in one line: a failed capture raises again on leaving the
    capture ("operation failed due to a previous error during capture"), hiding what failed."""
    while e.__context__ is not None and e.__context__ is not e:
        e = e.__context__
    return one_line(e)


def graphed_step(case):
    """The step of ``case`` (``case.graph`` True) with its model captured in CUDA graphs.

    :class:`CaptureFailed` with the reason where the model cannot be captured (a device wait or
    a host read inside its forward, an unsupported operator): the row says why.
    """
    if torch.device(case.device).type != "cuda":
        raise CaptureFailed(f"CUDA graphs need a CUDA device, not {case.device}")
    plain = replace(case, graph=False)
    torch.manual_seed(case.seed)
    model = build_model(plain).to(device=torch.device(case.device), dtype=DTYPES[case.dtype]).train()
    inputs, _ = make_batch(plain)  # (batch, in): the graphs' static input takes a copy each call
    try:
        graphed = torch.cuda.make_graphed_callables(model, (inputs,), num_warmup_iters=3)
    except Exception as e:  # noqa: BLE001 - any failure to capture is a row, never a crash
        try:
            torch.cuda.synchronize(case.device)
        except RuntimeError:
            pass  # the capture's own error, raised again by the wait: the row says the first one
        raise CaptureFailed(f"cannot be captured in a CUDA graph: {_first_cause(e)}") from None
    step = make_step(plain, model=graphed)
    step.case = case
    return step
