"""What is profiled: a model, a device and a phase, run for a few steps.

    python -m profiles.scenario --model kan --device cpu --phase train loop --steps 5

runs the scenarios with no profiler attached; it is the child that ``py-spy record``
samples. cProfile and torch.profiler call :func:`run` in-process.

Phases (each step builds nothing new; the model, optimizer and data are made once):

    forward    model(x), autograd recording as in training        x: (batch, in) on the device
    backward   loss.backward() alone; the forward runs in the untimed setup of each step
    train      zero_grad, forward, cross-entropy loss, backward, AdamW step
    loop       the train step as a real loop runs it: inputs and labels live on the host
               and move with ``.to(device)`` each step, and the loss is logged with
               ``.item()``; run twice, as it is and synchronized (below)

Synchronized: after each phase of a step the device is synchronized, in functions
named for the part whose queued work it waits for (``wait_for_transfer``,
``wait_for_basis`` after each basis evaluation, ``wait_for_forward``,
``wait_for_autograd``, ``wait_for_optimizer``), so a host-side profiler charges the
device's work to the part that queued it instead of to the next call that waits
(``.to``, ``.item``). forward, backward and train are always synchronized; the loop
runs both ways. On the CPU every wait returns at once, so both loops are the same
computation.

Only the measured steps count: each runs inside :func:`measured`, which cProfile
enables itself around, torch.profiler sees as a ``profiles.measured`` range and py-spy
finds on the sampled stacks. Warm-up steps and the backward phase's forward setup
stay outside it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

from profiles.attribution import BASIS_FUNCTIONS

PHASES = ["forward", "backward", "train", "loop"]
MEASURED = "profiles.measured"  # torch.profiler label of a measured step


@dataclass(frozen=True)
class Scenario:
    model: str
    device: str
    phase: str
    widths: tuple[int, ...] = (784, 64, 10)
    batch: int = 1024
    steps: int = 5
    warmup: int = 1
    synchronized: bool = True
    threads: int | None = None  # torch's intra-op threads; None leaves torch's default
    seed: int = 0

    @property
    def scenario(self) -> str:
        """"loop" for the training loop with host data, "step" for a phase run on device data."""
        return "loop" if self.phase == "loop" else "step"

    @property
    def key(self) -> dict[str, object]:
        """The columns that identify this scenario's rows in the attribution table."""
        return {"scenario": self.scenario, "model": self.model, "device": self.device,
                "phase": self.phase, "synchronized": self.synchronized}

    @property
    def stem(self) -> str:
        """The file name stem of this scenario's profiles: ``kan-cpu-loop-synchronized``."""
        name = f"{self.model}-{self.device}-{self.phase}"
        if self.phase == "loop" and self.synchronized:
            name += "-synchronized"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

    @property
    def step_function(self) -> Callable[..., None]:
        if self.phase == "loop":
            return synchronized_loop_step if self.synchronized else loop_step
        return STEPS[self.phase]


def expand(models: Sequence[str], devices: Sequence[str], phases: Sequence[str], **settings) -> list[Scenario]:
    """Every scenario for models x devices x phases; "loop" gives two, as it is and synchronized."""
    out = []
    for model in models:
        for device in devices:
            for phase in phases:
                for synchronized in ((False, True) if phase == "loop" else (True,)):
                    out.append(Scenario(model, device, phase, synchronized=synchronized, **settings))
    return out


# Device waits, one function per part so that every profiler names what was waited for.

def synchronize(device: str) -> None:
    """Wait until the work queued on ``device`` has run (nothing to wait for on the CPU)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def _label(name: str) -> ContextManager:
    from kan.regions import region  # a torch.profiler range only while the models' regions are on

    return region(name)


def wait_for_transfer(device: str) -> None:
    with _label("profiles.wait_for_transfer"):
        synchronize(device)


def wait_for_basis(device: str) -> None:
    with _label("profiles.wait_for_basis"):
        synchronize(device)


def wait_for_forward(device: str) -> None:
    """The rest of the forward (spline and base products, activations, loss): no one part."""
    with _label("profiles.wait_for_forward"):
        synchronize(device)


def wait_for_autograd(device: str) -> None:
    with _label("profiles.wait_for_autograd"):
        synchronize(device)


def wait_for_optimizer(device: str) -> None:
    with _label("profiles.wait_for_optimizer"):
        synchronize(device)


@dataclass
class Workload:
    """What a scenario's steps work on, made once: model, optimizer and data."""

    scenario: Scenario
    model: object
    optimizer: object
    x: object  # (batch, in) on the device
    y: object  # (batch,) class labels on the device
    host_batches: list = field(default_factory=list)  # [(x, y)] on the host, for the loop
    logged: list = field(default_factory=list)  # the loop's logged losses (floats)
    last: object = None  # the last output or loss, checked for NaN/inf after the run
    steps_done: int = 0

    @property
    def device(self) -> str:
        return self.scenario.device

    def wait(self, for_part: Callable[[str], None]) -> None:
        if self.scenario.synchronized:
            for_part(self.device)


def prepare(s: Scenario) -> Workload:
    """Build the model by name, its optimizer and the data, on the scenario's device."""
    import torch

    from kan import zoo

    torch.manual_seed(s.seed)
    model = zoo.build(s.model, list(s.widths)).to(s.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, classes = s.widths[0], s.widths[-1]

    def batch() -> tuple:
        x = torch.rand(s.batch, inputs) * 2 - 1  # (batch, in), inside the default grid range
        y = torch.randint(0, classes, (s.batch,))  # (batch,)
        return x, y

    x, y = batch()
    w = Workload(s, model, optimizer, x.to(s.device), y.to(s.device))
    if s.phase == "loop":
        w.host_batches = [batch() for _ in range(4)]
    if s.synchronized:
        _wait_after_basis(model, s.device)
    return w


def _wait_after_basis(model, device: str) -> None:
    """Make every basis function of ``model`` wait for the device before it returns."""
    for module in model.modules():
        for name in BASIS_FUNCTIONS:
            if callable(getattr(type(module), name, None)):
                setattr(module, name, _waiting(getattr(module, name), device))


def _waiting(basis: Callable, device: str) -> Callable:
    def basis_then_wait(*args, **kwargs):
        out = basis(*args, **kwargs)
        wait_for_basis(device)
        return out

    return basis_then_wait


# The steps. Each is a module-level function with its own name, which py-spy uses to
# tell the phases apart in one sampled process.

def _forward_loss(w: Workload, x, y):
    import torch.nn.functional as F

    out = w.model(x)  # (batch, out)
    loss = F.cross_entropy(out, y)
    w.wait(wait_for_forward)
    return loss


def _backward(w: Workload, loss) -> None:
    with _label("profiles.backward"):
        loss.backward()
    w.wait(wait_for_autograd)


def _train(w: Workload, x, y):
    w.optimizer.zero_grad(set_to_none=True)
    loss = _forward_loss(w, x, y)
    _backward(w, loss)
    w.optimizer.step()
    w.wait(wait_for_optimizer)
    return loss


def forward_step(w: Workload, state=None) -> None:
    w.last = w.model(w.x)
    w.wait(wait_for_forward)


def backward_setup(w: Workload):
    """The untimed part of a backward step: fresh gradients and a forward to differentiate."""
    w.optimizer.zero_grad(set_to_none=True)
    loss = _forward_loss(w, w.x, w.y)
    synchronize(w.device)
    return loss


def backward_step(w: Workload, loss) -> None:
    _backward(w, loss)
    w.last = loss


def train_step(w: Workload, state=None) -> None:
    w.last = _train(w, w.x, w.y)


def _loop(w: Workload) -> None:
    xb, yb = w.host_batches[w.steps_done % len(w.host_batches)]
    x, y = xb.to(w.device), yb.to(w.device)  # as a data loader's batch is moved
    w.wait(wait_for_transfer)
    loss = _train(w, x, y)
    w.logged.append(loss.item())  # as a loop logs its loss
    w.last = loss


def loop_step(w: Workload, state=None) -> None:
    _loop(w)


def synchronized_loop_step(w: Workload, state=None) -> None:
    _loop(w)


STEPS = {"forward": forward_step, "backward": backward_step, "train": train_step}
STEP_NAMES = ("forward_step", "backward_step", "train_step", "loop_step", "synchronized_loop_step")
SETUPS = {"backward": backward_setup}


def measured(step: Callable, w: Workload, state) -> None:
    """One measured step; the profilers count only what runs inside this frame."""
    step(w, state)


class NonFinite(RuntimeError):
    """The scenario's output or loss had NaN or inf: a failed measurement."""


def run(s: Scenario, section: Callable[[], ContextManager] = contextlib.nullcontext) -> Workload:
    """Prepare ``s``, run its warm-up steps, then its measured steps inside ``section()``."""
    import torch

    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        w = prepare(s)
        step, setup = s.step_function, SETUPS.get(s.phase, lambda w: None)
        for _ in range(s.warmup):
            step(w, setup(w))
            w.steps_done += 1
        synchronize(s.device)
        for _ in range(s.steps):
            state = setup(w)
            with section():
                measured(step, w, state)
            w.steps_done += 1
    finally:
        torch.set_num_threads(threads)
    if w.last is not None and not bool(torch.isfinite(w.last).all()):
        raise NonFinite(f"{s.model} on {s.device}, {s.phase}: NaN or inf in the output")
    return w


# Argument types shared with the profiling command line.

def widths_arg(text: str) -> tuple[int, ...]:
    """``"784,64,10"`` -> (784, 64, 10); argparse.ArgumentTypeError otherwise."""
    try:
        widths = tuple(int(w) for w in text.replace(" ", "").split(","))
    except ValueError:
        widths = ()
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(
            f"widths must be two or more positive integers separated by commas, such as 784,64,10; got {text!r}"
        )
    return widths


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m profiles.scenario",
        description="Run profiling scenarios with no profiler attached (what py-spy samples).",
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--phase", nargs="+", choices=PHASES, default=PHASES)
    parser.add_argument("--widths", type=widths_arg, default=(784, 64, 10))
    parser.add_argument("--batch", type=positive_int, default=1024)
    parser.add_argument("--steps", type=positive_int, default=5)
    parser.add_argument("--warmup", type=count_arg, default=1)
    parser.add_argument("--threads", type=positive_int, default=None)
    args = parser.parse_args(argv)
    failed = 0
    for s in expand([args.model], [args.device], args.phase,
                     widths=args.widths, batch=args.batch, steps=args.steps, warmup=args.warmup,
                     threads=args.threads):
        try:
            run(s)
        except Exception as e:  # one line per failed scenario; the others still run
            print(f"profiles.scenario: {s.stem} failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
