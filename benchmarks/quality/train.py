"""Training every model of one task and seed under one budget, in turns, timed by the core's clock.

The models of one task and seed are trained side by side: step by step, each takes its
turn (A B C, then B C A, ...), on the same minibatch, so that the machine's drifts fall
on all of them alike (the protocol of :func:`benchmarks.core.protocol.turns`, carried
over to training). Each step is the core's training step
(:func:`benchmarks.core.case.train_step`: zero_grad, forward, the task's loss, backward,
Adam) timed with :class:`benchmarks.core.timer.DeviceTimer`, which waits for the device
before its stop reading. The first step (lazy initialisation, kernel builds) is kept
apart from the steady state; the total training time counts every step and every grid
update. Test metrics are computed at checkpoints, outside the timed region.

A B-spline KAN whose ``forward`` takes ``update_grid`` (kan, kan-fast) also trains as a
second candidate with pykan's grid-update schedule: ``model(x, update_grid=True)`` on the
step's minibatch before the steps of ``Budget.grid_update_steps`` (pykan's ``fit``
updates every 5 steps up to step 50 by default).

A loss that is NaN or inf ends that model's training: it is recorded as diverged (with the
step), never given a metric.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.core.case import (DTYPES, Case, ModelUnavailable, build_model, optimizer, phase_flops, train_step,
                                  widths_label, zoo)
from benchmarks.core.cli import one_line
from benchmarks.core.timer import DeviceTimer, synchronize
from benchmarks.quality.tasks import Data, Task

OK, DIVERGED, ERROR, SKIPPED = "ok", "diverged", "error", "skipped"


@dataclass(frozen=True)
class Budget:
    """What every model gets on every task: the same optimizer, schedule, steps and batch size."""

    name: str
    steps: int
    batch: int
    learning_rate: float
    checkpoints: int  # test metric evaluations, evenly spaced, the last after the last step
    grid_update_every: int = 5  # pykan's fit(): update_grid every 5 steps ...
    grid_update_until: int = 50  # ... before step 50

    def grid_update_steps(self) -> tuple[int, ...]:
        return tuple(range(0, min(self.grid_update_until, self.steps), self.grid_update_every))

    def checkpoint_steps(self) -> list[int]:
        """Step counts after which the test metric is taken (1-based, ending at ``steps``)."""
        n = max(1, min(self.checkpoints, self.steps))
        return sorted({max(1, round(self.steps * (i + 1) / n)) for i in range(n)})

    def lr(self, step: int) -> float:
        """The learning rate of ``step`` (0-based): cosine decay from ``learning_rate`` to a tenth of it."""
        progress = step / max(1, self.steps - 1)
        return self.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def describe(self) -> str:
        return (f"{self.steps} steps, batch {self.batch}, Adam lr {self.learning_rate:g} with cosine decay to "
                f"{self.learning_rate / 10:g}")


BUDGETS = {
    "quick": Budget("quick", steps=10, batch=32, learning_rate=1e-2, checkpoints=2),
    "default": Budget("default", steps=2000, batch=128, learning_rate=1e-2, checkpoints=20),
}


# A model that starts from another's weights (its state dict loaded, strict): kan-fast computes the
# reference KAN's function with the same parameters, so from the same start it must follow the
# same training curve (tests/test_quality.py holds it to that). Built from the same seed alone,
# its initial spline weights differ from the reference's in the last bits (a least-squares fit).
SAME_START = {"kan-fast": "kan"}


def takes_grid_updates(model: torch.nn.Module) -> bool:
    """Whether ``model(x, update_grid=True)`` adapts its knots (the B-spline KANs)."""
    try:
        return "update_grid" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class Trainee:
    """One model in training: what it is, its optimizer, and what its training has produced."""

    model_name: str
    grid_updates: bool
    model: torch.nn.Module | None
    case: Case
    status: str = OK
    reason: str = ""
    opt: torch.optim.Optimizer | None = None
    step_s: list[float] = field(default_factory=list)  # every step's seconds, the first included
    grid_update_s: float = 0.0
    updates_done: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)  # [step, training seconds so far, metric]
    diverged_step: int | None = None
    parameters: int | None = None
    flops_per_step: int | None = None

    def stop(self, status: str, reason: str, step: int | None = None) -> None:
        self.status, self.reason = status, reason
        if status == DIVERGED:
            self.diverged_step = step


def case_for(task: Task, model_name: str, budget: Budget, device: str, dtype: str, seed: int) -> Case:
    from benchmarks.core.case import has_grid

    grid = task.grid_size if has_grid(model_name) else None
    return Case(model_name, "train", device, dtype, task.widths, budget.batch, grid, seed)


def trainees(task: Task, names: list[str], budget: Budget, device: str, dtype: str, seed: int,
             models: dict[str, torch.nn.Module] | None = None, grid_updates: str = "both") -> list[Trainee]:
    """A trainee per model (two for a model that takes grid updates: without and with, from the same
    initial weights), each built from ``seed``; a model of SAME_START starts from its source's weights.
    ``models``: prebuilt models by name, used instead of the registry's (tests inject a model that
    fails this way)."""
    out = []
    starts: dict[str, dict] = {}  # each model's initial state dict, the one all its variants start from
    for name in names:
        case = case_for(task, name, budget, device, dtype, seed)
        variants = [False]
        probe = None
        try:
            torch.manual_seed(seed)
            probe = models[name] if models and name in models else build_model(case)
            if name in SAME_START and not (models and name in models):
                source = SAME_START[name]
                if source not in starts:
                    torch.manual_seed(seed)
                    starts[source] = build_model(case_for(task, source, budget, device, dtype, seed)).state_dict()
                probe.load_state_dict(starts[source], strict=True)
            starts[name] = {k: v.clone() for k, v in probe.state_dict().items()}
        except ModelUnavailable as e:
            out.append(Trainee(name, False, None, case, SKIPPED, str(e)))
            continue
        except Exception as e:  # the model cannot be built: this row fails, the others train
            out.append(Trainee(name, False, None, case, ERROR, f"cannot build: {one_line(e)}"))
            continue
        if takes_grid_updates(probe):
            variants = {"both": [False, True], "no": [False], "yes": [True]}[grid_updates]
        for i, updates in enumerate(variants):
            if i == 0:
                model = probe
            else:  # the same initial weights as the first variant (a rebuild may differ in the last bits)
                model = _copy(probe)
            out.append(_prepare(Trainee(name, updates, model, case), budget))
    return out


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def _prepare(t: Trainee, budget: Budget) -> Trainee:
    case = t.case
    t.model = t.model.to(device=torch.device(case.device), dtype=DTYPES[case.dtype]).train()
    t.opt = optimizer(t.model.parameters(), lr=budget.lr(0))
    t.parameters = zoo().parameter_count(t.model)
    try:
        t.flops_per_step = phase_flops(case.forward_flops(), "train", t.parameters)
    except (ValueError, ImportError, AttributeError):
        t.flops_per_step = None  # a model the registry does not count (a test's injected model)
    return t


def _finite(value: float) -> bool:
    return math.isfinite(value)


@torch.no_grad()
def evaluate(t: Trainee, task: Task, data: Data) -> float:
    return task.score(t.model(data.test_x), data.test_y)


def train(task: Task, data: Data, group: list[Trainee], budget: Budget, seed: int, timer: DeviceTimer,
          progress=None) -> None:
    """Train every trainee of ``group`` for ``budget.steps`` steps, in turns; see the module docstring.

    ``data`` is already on the group's device and dtype. The minibatches are drawn from a
    generator seeded by ``seed``: every model sees the same batches in the same order.
    """
    device = torch.device(group[0].case.device) if group else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    n_train = data.train_x.shape[0]
    checkpoints = set(budget.checkpoint_steps())
    updates = set(budget.grid_update_steps())
    live = [t for t in group if t.status == OK]
    for step in range(budget.steps):
        rows = torch.randint(n_train, (min(budget.batch, n_train),), generator=generator).to(device)
        x, y = data.train_x[rows], data.train_y[rows]  # (batch, in), (batch, out) or (batch,)
        synchronize(device)
        lr = budget.lr(step)
        turn = live[step % len(live):] + live[:step % len(live)] if live else []
        for t in turn:
            for g in t.opt.param_groups:
                g["lr"] = lr
            try:
                if t.grid_updates and step in updates:
                    start = timer()
                    with torch.no_grad():
                        t.model(x, update_grid=True)
                    t.grid_update_s += timer() - start
                    t.updates_done += 1
                start = timer()
                value = train_step(t.model, t.opt, x, y, loss_fn=task.loss)
                seconds = timer() - start
                loss = float(value.detach())
            except Exception as e:
                t.stop(ERROR, f"step {step}: {one_line(e)}")
                continue
            t.step_s.append(seconds)
            t.losses.append(loss)
            if not _finite(loss):
                t.stop(DIVERGED, f"{'NaN' if math.isnan(loss) else 'inf'} loss at step {step}", step)
        live = [t for t in live if t.status == OK]
        if step + 1 in checkpoints:
            for t in live:
                value = evaluate(t, task, data)
                if not _finite(value):
                    t.stop(DIVERGED, f"NaN or inf test output after step {step}", step)
                    continue
                t.curve.append([step + 1, float(sum(t.step_s) + t.grid_update_s), value])
            live = [t for t in live if t.status == OK]
        if progress:
            progress(step + 1)


def row(t: Trainee, task: Task, budget: Budget, seed: int, threads: int) -> dict:
    """The quality.csv row of one trainee after training (record.TABLES["quality"])."""
    steady = t.step_s[1:]
    value = t.curve[-1][2] if t.status == OK and t.curve else math.nan
    to_target = next((c[1] for c in t.curve if task.reached(c[2])), math.nan) if t.status == OK else math.nan
    r = {
        "task": task.name, "kind": task.kind, "model": t.model_name,
        "family": _family(t.model_name),
        "grid_updates": t.updates_done if t.grid_updates else 0,
        "seed": seed, "status": t.status,
        "metric": task.metric, "value": value,
        "test_rmse": value if task.metric == "test rmse" else math.nan,
        "test_accuracy": value if task.metric == "test accuracy" else math.nan,
        "final_loss": t.losses[-1] if t.losses else math.nan,
        "target": task.target, "time_to_target_s": to_target,
        "train_s": float(sum(t.step_s) + t.grid_update_s) if t.step_s else math.nan,
        "step_median_s": float(np.median(steady)) if steady else math.nan,
        "step_iqr_s": float(np.subtract(*np.percentile(steady, [75, 25]))) if steady else math.nan,
        "first_step_s": t.step_s[0] if t.step_s else math.nan,
        "grid_update_s": t.grid_update_s if t.grid_updates else math.nan,
        "steps": len(t.step_s), "diverged_step": _whole(t.diverged_step),
        "parameters": _whole(t.parameters), "flops_per_step": _whole(t.flops_per_step),
        "widths": widths_label(task.widths), "grid_size": t.case.grid_size, "batch": budget.batch,
        "learning_rate": budget.learning_rate, "budget": budget.name,
        "device": t.case.device, "dtype": t.case.dtype, "threads": threads,
        "reason": t.reason,
        "curve": t.curve,
    }
    return r


def _whole(n: int | None):
    """A count as itself, or empty where there is none (so the column stays whole numbers)."""
    return "" if n is None else int(n)


def _family(name: str) -> str:
    try:
        return zoo().entry(name).family
    except ValueError:
        return "kan"
