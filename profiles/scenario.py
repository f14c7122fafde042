"""What is profiled: a case of the measuring core, run for a few steps under a profiler.

    python -m profiles.scenario --model kan --device cpu --phase train loop --steps 5

runs the scenarios with no profiler attached; it is the child that ``py-spy record``
samples. cProfile and torch.profiler call :func:`run` in-process.

A scenario is a :class:`benchmarks.core.case.Case` (model, phase, device, shapes) and how
it is profiled: steps, warm-up, synchronisation, threads, and for a sampler a minimum
measured time (``min_seconds``: more steps than ``steps`` where they are short, so that
enough samples stand behind the shares). Its step is the core's own
(:func:`benchmarks.core.case.make_step`), the same loss and optimizer as the bench:

    forward    model(x), autograd recording as in training        x: (batch, in) on the device
    backward   loss.backward() alone; the forward runs in the untimed setup of each step
    train      zero_grad, forward, loss, backward, optimizer step
    loop       the train step as a real loop runs it: inputs and targets live on the host
               and move with ``.to(device)`` each step, and the loss is logged with
               ``.item()``; run twice, as it is and synchronized (below)

Synchronized: after each part of a step the device is synchronized, in functions
named for the part whose queued work it waits for (``wait_for_transfer``,
``wait_for_basis`` after each basis evaluation, ``wait_for_forward``,
``wait_for_autograd``, ``wait_for_optimizer``), so a host-side profiler charges the
device's work to the part that queued it instead of to the next call that waits
(``.to``, ``.item``). forward, backward and train are always synchronized; the loop
runs both ways. On the CPU every wait returns at once, so both loops are the same
computation; to tell their difference from the noise between two profiled runs, the
loop as it is can run a third time (``repeat``, ``...-loop-repeat``, step function
``repeated_loop_step``), after the synchronized one.

Only the measured steps count: each runs inside :func:`measured`, which cProfile
enables itself around, torch.profiler sees as a ``profiles.measured`` range and py-spy
finds on the sampled stacks (then the step function of its phase: ``forward_step``,
``loop_step``, ...). Warm-up steps and the backward phase's forward setup stay outside it.
Garbage is collected before the measured steps, so that what earlier work left is not
collected (and charged to whichever call allocates) inside them. Each scenario's
measured wall time and steps are kept (:attr:`Workload.measured_s`, ``measured_steps``);
the py-spy child prints them, so that the sampled time can be compared with them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Sequence

from benchmarks.core import cli
from benchmarks.core.case import Case, Step, make_batch, make_step
from benchmarks.core.cli import Parser, one_line
from benchmarks.core.command import run_command
from benchmarks.core.case import train_step as case_train_step
from benchmarks.core.phases import SUITE_PHASES
from benchmarks.core.timer import synchronize
from profiles.attribution import BASIS_FUNCTIONS

PHASES = [*SUITE_PHASES, "loop"]  # loop: the train step as a real loop runs it (see above)
MEASURED = "profiles.measured"  # torch.profiler label of a measured step
MEASURED_LINE = "profiles.scenario measured: "  # the child's report of each scenario's measured wall time


@dataclass(frozen=True)
class Scenario:
    """A case of the measuring core (``train`` for the loop) and how it is profiled."""

    case: Case
    loop: bool = False  # the training step as a loop runs it (host data, a logged loss)
    steps: int = 5
    warmup: int = 1
    synchronized: bool = True
    threads: int | None = None  # torch's intra-op threads; None leaves torch's default
    repeat: bool = False  # the loop as it is, profiled again: the noise between two profiled runs
    eager: bool = False  # kan-fast's layers with compile="off": their uniform-grid kernels not compiled
    min_seconds: float = 0.0  # measured steps beyond ``steps`` until they have taken this long (a sampler's)

    @property
    def model(self) -> str:
        return self.case.model

    @property
    def device(self) -> str:
        return self.case.device

    @property
    def phase(self) -> str:
        return "loop" if self.loop else self.case.phase

    @property
    def scenario(self) -> str:
        """"loop" for the training loop with host data, "step" for a phase run on device data."""
        return "loop" if self.loop else "step"

    @property
    def key(self) -> dict[str, object]:
        """The columns that identify this scenario's rows in the attribution table."""
        return {"scenario": self.scenario, "model": self.model, "device": self.device,
                "phase": self.phase, "synchronized": self.synchronized}

    @property
    def stem(self) -> str:
        """The file name stem of this scenario's profiles: ``kan-cpu-loop-synchronized``."""
        name = f"{self.model}-{self.device}-{self.phase}"
        if self.loop and self.synchronized:
            name += "-synchronized"
        if self.repeat:
            name += "-repeat"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

    @property
    def step_function(self) -> Callable[..., None]:
        if self.loop:
            if self.repeat:
                return repeated_loop_step
            return synchronized_loop_step if self.synchronized else loop_step
        return STEPS[self.phase]


def expand(models: Sequence[str], devices: Sequence[str], phases: Sequence[str],
           widths: Sequence[int] = (784, 64, 10), batch: int = 1024, repeat: bool = False,
           **settings) -> list[Scenario]:
    """Every scenario for models x devices x phases; "loop" gives two, as it is and synchronized,
    and with ``repeat`` a third: the loop as it is again, after the synchronized one.

    The repeat measures what two profiled runs of one computation differ by, so that a
    difference between the two loops can be told from noise (on the CPU they are the
    same computation). The models are built with their registry defaults (grid size
    included); ``settings`` are the Scenario's (steps, warmup, threads).
    """
    out = []
    for model in models:
        for device in devices:
            for phase in phases:
                loop = phase == "loop"
                case = Case(model, "train" if loop else phase, device, "float32", tuple(widths), batch,
                            grid_size=None)
                for synchronized in ((False, True) if loop else (True,)):
                    out.append(Scenario(case, loop, synchronized=synchronized, **settings))
                if loop and repeat:
                    out.append(Scenario(case, loop, synchronized=False, repeat=True, **settings))
    return out


# Device waits, one function per part so that every profiler names what was waited for.

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


WAITS = {"transfer": wait_for_transfer, "forward": wait_for_forward, "backward": wait_for_autograd,
         "optimizer": wait_for_optimizer}
LABELS = {"backward": "profiles.backward"}  # torch.profiler ranges around a part, synchronized or not


@dataclass
class Workload:
    """What a scenario's steps work on, made once: the core's step, and the loop's host batches."""

    scenario: Scenario
    step: Step
    host_batches: list = field(default_factory=list)  # [(inputs, targets)] on the host, for the loop
    logged: list = field(default_factory=list)  # the loop's logged losses (floats)
    steps_done: int = 0
    measured_s: float = 0.0  # wall time of the measured steps, profiler included
    measured_steps: int = 0

    @property
    def device(self) -> str:
        return self.scenario.device

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """The context of one part of a step: its label, and a device wait at its end when synchronized."""
        with _label(LABELS[name]) if name in LABELS else contextlib.nullcontext():
            yield
            if self.scenario.synchronized:
                WAITS[name](self.device)


def prepare(s: Scenario) -> Workload:
    """Build the scenario's case with the core's step builder, on the scenario's device."""
    import torch

    w = Workload(s, step=None)  # the step's parts call back into w
    w.step = make_step(s.case, part=w.part)
    if s.eager:
        _eager_kernels(w.step.model)
    if s.loop:
        generator = torch.Generator().manual_seed(s.case.seed)
        w.host_batches = [make_batch(s.case, device="cpu", generator=generator) for _ in range(4)]
    if s.synchronized:
        _wait_after_basis(w.step.model, s.device)
    return w


def _eager_kernels(model) -> None:
    """Set the ``compile`` option of every layer of ``model`` that has one (kan-fast's) to "off"."""
    for module in model.modules():
        if hasattr(module, "compile_mode"):
            module.compile_mode = "off"


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
# tell the phases apart in one sampled process; each runs the core's step.

def forward_step(w: Workload) -> None:
    w.step.fn()


def backward_step(w: Workload) -> None:
    w.step.fn()


def train_step(w: Workload) -> None:
    w.step.fn()


def _loop(w: Workload) -> None:
    s = w.step
    host_inputs, host_targets = w.host_batches[w.steps_done % len(w.host_batches)]
    with w.part("transfer"):
        inputs, targets = host_inputs.to(w.device), host_targets.to(w.device)  # as a data loader's batch is moved
    s.state["loss"] = value = case_train_step(s.model, s.optimizer, inputs, targets, w.part)
    w.logged.append(value.item())  # as a loop logs its loss


def loop_step(w: Workload) -> None:
    _loop(w)


def synchronized_loop_step(w: Workload) -> None:
    _loop(w)


def repeated_loop_step(w: Workload) -> None:
    _loop(w)


STEPS = {"forward": forward_step, "backward": backward_step, "train": train_step}
STEP_NAMES = ("forward_step", "backward_step", "train_step", "loop_step", "synchronized_loop_step",
              "repeated_loop_step")


def measured(step: Callable, w: Workload) -> None:
    """One measured step; the profilers count only what runs inside this frame."""
    step(w)


class NonFinite(RuntimeError):
    """The scenario's output or loss had NaN or inf: a failed measurement."""


def run(s: Scenario, section: Callable[[], ContextManager] = contextlib.nullcontext) -> Workload:
    """Prepare ``s``, run its warm-up steps, then its measured steps inside ``section()``."""
    from benchmarks.core.timer import using_threads

    # the scenario's threads while it runs, the caller's count restored after
    with using_threads(s.threads) if s.threads else contextlib.nullcontext():
        w = prepare(s)
        step = s.step_function
        for _ in range(s.warmup):
            w.step.setup()
            step(w)
            w.steps_done += 1
        synchronize(s.device)
        # collect what earlier work left (a previous profiler's events, the last scenario's
        # model) now, so that the collector's pause is not charged to whichever call of a
        # measured step happens to allocate when it runs
        gc.collect()
        while w.measured_steps < s.steps or w.measured_s < s.min_seconds:
            w.step.setup()
            started = time.perf_counter()
            with section():
                measured(step, w)
            w.measured_s += time.perf_counter() - started
            w.steps_done += 1
            w.measured_steps += 1
    bad = w.step.nonfinite()
    if bad:
        raise NonFinite(f"{s.model} on {s.device}, {s.phase}: {bad}")
    return w


def parser() -> Parser:
    p = Parser(prog="python -m profiles.scenario",
               description="Run profiling scenarios with no profiler attached (what py-spy samples).",
               error_prefix="profiles.scenario: error: ")
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    cli.add_phases(p, PHASES, default=list(PHASES), nargs="+")
    p.add_argument("--widths", type=cli.widths, default=(784, 64, 10))
    p.add_argument("--batch", type=cli.count(1), default=1024)
    p.add_argument("--steps", type=cli.count(1), default=5)
    p.add_argument("--warmup", type=cli.count(0), default=1)
    p.add_argument("--threads", type=cli.count(1), default=None)
    p.add_argument("--repeat", action="store_true", help="profile the loop as it is a second time")
    p.add_argument("--eager", action="store_true", help="kan-fast's layers with compile=\"off\"")
    p.add_argument("--min-seconds", type=cli.seconds, default=0.0,
                   help="measured steps beyond --steps until they have taken this long (for a sampler)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("profile-scenario", parser(), argv, _scenarios)  # the profiler's child: no run folder


def _scenarios(args, cmd) -> int:
    failed = 0
    for s in expand([args.model], [args.device], args.phase,
                    widths=args.widths, batch=args.batch, steps=args.steps, warmup=args.warmup,
                    threads=args.threads, repeat=args.repeat, eager=args.eager, min_seconds=args.min_seconds):
        try:
            w = run(s)
        except Exception as e:  # one line per failed scenario; the others still run
            print(f"profiles.scenario: {s.stem} failed: {one_line(e)}", file=sys.stderr)
            failed += 1
            continue
        # the wall time of the measured steps, for the sampler's coverage of them
        print(MEASURED_LINE + json.dumps({"stem": s.stem, "seconds": w.measured_s, "steps": w.measured_steps}),
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
