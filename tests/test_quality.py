"""The quality command: its tasks' data, a tiny run end to end into the report, divergence, and
kan-fast following the reference KAN's training curve from the same weights.

Truths here are independent of the code under test: the tasks' formulas evaluated by hand at
known points (J0's first zero, exp(0) = 1), scikit-learn's own digits, a model made to return
NaN, and the reference KAN trained beside kan-fast on the same batches.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.core import record
from benchmarks.core.timer import DeviceTimer
from benchmarks.quality import summary, tasks, train
from benchmarks.quality.cli import main

# kan-fast against kan from the same weights, without grid updates: the largest relative gap
# between their training losses at any step (README, "Quality").
LOSS_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


@pytest.fixture(autouse=True)
def one_thread():
    """Training as the command does (--threads 1): tiny networks, a machine shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_task_data_is_fixed_by_seed_and_shaped(name):
    task = tasks.TASKS[name]
    a, b, other = task.data(0), task.data(0), task.data(1)
    for t, u in zip(dataclasses.astuple(a), dataclasses.astuple(b)):
        assert torch.equal(t, u)
    assert not torch.equal(a.test_x, other.test_x)
    inputs = task.widths[0]
    for x, y in ((a.train_x, a.train_y), (a.test_x, a.test_y)):
        assert x.dim() == 2 and x.shape[1] == inputs and len(y) == len(x)
        assert float(x.min()) >= -1 and float(x.max()) <= 1  # inside the B-spline KANs' grid
        if task.kind == tasks.REGRESSION:
            assert y.shape == (len(x), 1) and y.dtype == torch.float64
        else:
            assert y.shape == (len(x),) and y.dtype == torch.int64
            assert set(y.tolist()) == set(range(task.widths[-1]))


def test_task_formulas_at_known_points():
    def value(fn, *point):
        return float(fn(np.array([point], dtype=float))[0])

    assert value(tasks.exp_sin, 0.0, 0.0) == pytest.approx(1.0)
    assert value(tasks.exp_sin, 0.5, 1.0) == pytest.approx(math.exp(2.0))
    assert value(tasks.product, -0.5, 0.4) == pytest.approx(-0.2)
    assert value(tasks.nested, 0.0, 0.0, 0.0, 0.0) == pytest.approx(1.0)
    assert value(tasks.nested, 0.5 ** 0.5, 0.0, 0.0, 0.0) == pytest.approx(math.exp(0.5))
    assert value(tasks.bessel, 0.0, 0.0) == pytest.approx(1.0)
    assert value(tasks.bessel, 0.24048255576957728, 0.0) == pytest.approx(0.0, abs=1e-12)  # J0's first zero / 10


def test_digits_split_covers_the_bundled_set():
    from sklearn.datasets import load_digits

    data = tasks.TASKS["digits"].data(3)
    assert len(data.train_x) + len(data.test_x) == len(load_digits().target) == 1797
    pixels = torch.cat([data.train_x, data.test_x])
    expected = torch.from_numpy(load_digits().data / 8.0 - 1.0)
    assert torch.equal(pixels.sort(dim=0).values, expected.sort(dim=0).values)  # every image, once


class ReturnsNaN(torch.nn.Module):
    """A model whose output turns NaN after ``after`` training forwards: divergence on demand."""

    def __init__(self, widths, after: int):
        super().__init__()
        self.linear = torch.nn.Linear(widths[0], widths[-1])
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += torch.is_grad_enabled()  # the test metric's forwards (no grad) do not count
        y = self.linear(x)
        return y * float("nan") if self.calls > self.after else y


def test_diverging_model_is_recorded_as_diverged_and_never_averaged():
    task = tasks.TASKS["product"]
    budget = dataclasses.replace(train.BUDGETS["quick"], steps=6)
    rows = []
    for seed, after in ((0, 3), (1, 10**6)):  # seed 0 diverges at its 4th step, seed 1 trains to the end
        group = train.trainees(task, ["mlp"], budget, "cpu", "float32", seed,
                               models={"mlp": ReturnsNaN(task.widths, after)})
        train.train(task, task.data(seed).to("cpu", torch.float32), group, budget, seed, DeviceTimer("cpu"))
        rows += [train.row(t, task, budget, seed, threads=1) for t in group]
    diverged, ok = rows
    assert diverged["status"] == train.DIVERGED and diverged["diverged_step"] == 3
    assert math.isnan(diverged["value"]) and diverged["steps"] == 4 and "NaN loss" in diverged["reason"]
    assert ok["status"] == train.OK and ok["steps"] == 6 and math.isfinite(ok["value"])
    (s,) = summary.summarize(rows, {task.name: False})
    assert (s["seeds"], s["ok"], s["diverged"]) == (2, 1, 1)
    assert s["value_mean"] == ok["value"]


def test_pareto_front_on_hand_made_points():
    rows = [{"label": name, "value_mean": v, "train_s": t} for name, v, t in
            [("slow-good", 0.01, 10.0), ("fast-bad", 0.5, 1.0), ("dominated", 0.6, 2.0), ("middle", 0.1, 3.0),
             ("tie-slower", 0.1, 4.0), ("rounding-apart", 0.09999, 5.0)]]
    summary.mark_pareto(rows, higher_is_better=False)
    front = {r["label"]: r["pareto"] for r in rows}
    assert front == {"slow-good": True, "fast-bad": True, "dominated": False, "middle": True, "tie-slower": False,
                     "rounding-apart": False}
    assert {r["label"]: r["dominated_by"] for r in rows}["dominated"] == "fast-bad"  # middle is more accurate but slower


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kan_fast_follows_the_reference_training_curve(dtype):
    """From the same weights and batches, kan-fast's losses stay within LOSS_TOLERANCE of kan's;
    with grid updates (a least-squares refit at steps 0 and 5) they agree loosely (1e-6, float64)."""
    task = tasks.TASKS["exp-sin"]
    budget = dataclasses.replace(train.BUDGETS["default"], steps=40, batch=64, checkpoints=2)
    group = train.trainees(task, ["kan", "kan-fast"], budget, "cpu", dtype, seed=0)
    by = {(t.model_name, t.grid_updates): t for t in group}
    for k, v in by["kan", False].model.state_dict().items():
        assert torch.equal(v, by["kan-fast", False].model.state_dict()[k]), k
    train.train(task, task.data(0).to("cpu", train.DTYPES[dtype]), group, budget, 0, DeviceTimer("cpu"))
    assert all(t.status == train.OK and len(t.losses) == budget.steps for t in group)
    ref, fast = np.array(by["kan", False].losses), np.array(by["kan-fast", False].losses)
    assert np.max(np.abs(fast - ref) / ref) <= LOSS_TOLERANCE[dtype]
    assert by["kan-fast", False].curve[-1][2] == pytest.approx(by["kan", False].curve[-1][2], rel=LOSS_TOLERANCE[dtype])
    assert ref[-1] < ref[0] / 2  # it did train
    if dtype == "float64":
        ref, fast = np.array(by["kan", True].losses[:10]), np.array(by["kan-fast", True].losses[:10])
        assert by["kan", True].updates_done == by["kan-fast", True].updates_done == 8
        assert np.max(np.abs(fast - ref) / ref) <= 1e-6


def test_quick_run_writes_its_tables_and_renders(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("KAN_RUN_FILE", str(tmp_path / "run-file"))
    code = main(["--budget", "quick", "--task", "product,digits", "--model", "kan,fourier-kan,mlp-param",
                 "--seeds", "0,1", "--steps", "4"])
    assert code == 0
    run = record.Run(__import__("pathlib").Path((tmp_path / "run-file").read_text().strip()))
    rows = run.read_table(record.QUALITY)
    assert list(rows.columns) == record.TABLES[record.QUALITY]
    assert len(rows) == 2 * 2 * 4  # tasks x seeds x (kan, kan +grid updates, fourier-kan, mlp-param)
    assert len(run.read_jsonl(record.QUALITY + ".jsonl")) == len(rows)
    assert set(rows["status"]) == {"ok"} and (rows["steps"] == 4).all()
    assert (rows["train_s"] >= rows["first_step_s"]).all()
    assert set(rows.loc[rows["model"] == "kan", "grid_updates"]) == {0, 1}  # the schedule's step 0 only, in 4 steps
    digits = rows[rows["task"] == "digits"]
    assert digits["test_accuracy"].between(0, 1).all() and digits["test_rmse"].isna().all()
    flops = rows[(rows["model"] == "mlp-param") & (rows["task"] == "product")]["flops_per_step"].iloc[0]
    params = rows[(rows["model"] == "mlp-param") & (rows["task"] == "product")]["parameters"].iloc[0]
    from kan import zoo

    assert flops == 3 * zoo.flops("mlp-param", [2, 5, 1], 32, grid_size=5) + 13 * params
    summ = run.read_table(record.QUALITY_SUMMARY)
    assert list(summ.columns) == record.TABLES[record.QUALITY_SUMMARY]
    assert len(summ) == 2 * 4 and (summ["seeds"] == 2).all() and summ["pareto"].any()

    from reports.render import render

    page = render(str(run.path)).read_text()
    assert "Accuracy against training time" in page
    for caption in ("<caption>product</caption>", "<caption>digits</caption>"):
        assert caption in page
    assert "Pareto front" in page and "kan +grid updates" in page
    assert "nox -s quality" not in page  # the section has results, not the hint to make them


@pytest.mark.parametrize("argv, says", [
    (["--task", "nosuch"], "unknown task 'nosuch'; valid tasks: exp-sin, product, nested, bessel, digits"),
    (["--model", "nosuch"], "unknown model 'nosuch'; valid models: kan, "),
    (["--budget", "huge"], "unknown budget 'huge'; valid budgets: quick, default"),
    (["--seeds", "a"], "--seeds must be non-negative integers"),
    (["--steps", "0"], "--steps: expected a positive integer"),
    (["--dtype", "float16"], "valid dtypes: float32, float64"),
])
def test_bad_choices_are_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_unwritable_results_folder_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KAN_RESULTS", str(blocker / "results"))
    assert main(["--budget", "quick", "--task", "product", "--model", "mlp", "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write a run folder" in err[0]


@pytest.mark.slow
def test_sigterm_keeps_the_finished_rows(tmp_path):
    """Stopped as CI stops a job: exit 130, and every row finished before the signal is in quality.csv."""
    import os
    import sys
    from pathlib import Path

    from signals import terminated_after_first_result

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KAN_RESULTS": str(tmp_path / "results"), "KAN_RUN_FILE": str(tmp_path / "run-file")}
    seeds = ",".join(str(s) for s in range(500))  # far more than can finish before the signal
    code, output = terminated_after_first_result(
        [sys.executable, "-m", "benchmarks.quality", "--budget", "quick", "--task", "product", "--model", "mlp",
         "--seeds", seeds, "--steps", "5"], tmp_path / "results", "*/quality.jsonl", env, root)
    assert code == 130, output
    assert "interrupted: kept the" in output
    run = record.Run(Path((tmp_path / "run-file").read_text().strip()))
    finished = run.read_jsonl(record.QUALITY + ".jsonl")
    rows = run.read_table(record.QUALITY)
    assert 1 <= len(rows) == len(finished) < 500
