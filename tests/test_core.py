"""The measuring core: the step of each phase, the protocols' order of calls, the record's
derived figures and failure modes, and how a command hands back its run folder."""

from __future__ import annotations

import math
import subprocess

import pandas as pd
import pytest
import torch

from benchmarks.core import cli, protocol, record
from benchmarks.core.git import commit_info
from benchmarks.core.case import Case, make_step


class Linear(torch.nn.Module):
    """y = x @ w, with w known, so the loss and gradients can be computed by hand."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x):
        return x @ self.w


def test_every_phase_uses_the_one_loss_and_optimizer():
    case = Case("linear", "train", "cpu", "float64", (3, 2), batch=5)
    w = torch.arange(6, dtype=torch.float64).reshape(3, 2) / 10
    step = make_step(case, model=Linear(w).double())
    x, y = step.inputs, step.targets
    expected_loss = ((x @ w - y) ** 2).mean()  # mean squared error, by hand
    grad = 2 * x.t() @ (x @ w - y) / y.numel()
    step.setup()
    step.fn()
    assert step.state["loss"].item() == pytest.approx(expected_loss.item(), rel=1e-12)
    # one Adam step from zero moments moves every weight by lr against the sign of its gradient
    moved = step.model.w.detach() - w
    assert torch.allclose(moved, -1e-3 * torch.sign(grad), atol=1e-9)
    assert isinstance(step.optimizer, torch.optim.Adam)

    fb = make_step(Case("linear", "forward+backward", "cpu", "float64", (3, 2), batch=5), model=Linear(w).double())
    fb.setup()
    fb.fn()
    assert torch.allclose(fb.model.w.grad, 2 * fb.inputs.t() @ (fb.inputs @ w - fb.targets) / fb.targets.numel())


def test_parts_run_in_order_inside_their_context():
    seen = []

    def part(name):
        class Recorder:
            def __enter__(self):
                seen.append(f"{name}>")

            def __exit__(self, *exc):
                seen.append(f"<{name}")
        return Recorder()

    w = torch.ones(3, 2)
    for phase, expected in [
        ("forward", ["forward>", "<forward"]),
        ("backward", ["backward>", "<backward"]),  # the forward ran in setup
        ("forward+backward", ["forward>", "<forward", "backward>", "<backward"]),
        ("train", ["forward>", "<forward", "backward>", "<backward", "optimizer>", "<optimizer"]),
    ]:
        step = make_step(Case("linear", phase, "cpu", "float32", (3, 2), batch=4), model=Linear(w), part=part)
        step.setup()
        seen.clear()
        step.fn()
        assert seen == expected, phase


class FakeStep:
    def __init__(self, name, log, fail_at=None, nonfinite_at=None):
        self.name, self.log, self.calls = name, log, 0
        self.fail_at, self.nonfinite_at = fail_at, nonfinite_at

    def setup(self):
        self.log.append(f"setup {self.name}")

    def fn(self):
        self.calls += 1
        self.log.append(self.name)
        if self.calls == self.fail_at:
            raise RuntimeError("boom\nsecond line")

    def nonfinite(self):
        return "NaN in the output" if self.calls == self.nonfinite_at else None


class CountingClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_turns_alternate_call_by_call_and_drop_failures():
    log = []
    a, b, c = FakeStep("a", log), FakeStep("b", log, fail_at=3), FakeStep("c", log, nonfinite_at=2)
    candidates = [protocol.Candidate("a", a), protocol.Candidate("b", b), protocol.Candidate("c", c),
                  protocol.Candidate("d", status="not installed", reason="pip install d")]
    protocol.turns(candidates, CountingClock(), repeats=3, warmup=1)
    calls = [entry for entry in log if not entry.startswith("setup")]
    # first calls, then warm-up and timed calls in turns; b fails at its third call, c is NaN at its second
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "b", "a", "a"]
    assert all(log[i] == f"setup {log[i + 1]}" for i in range(0, len(log), 2))
    ca, cb, cc, cd = candidates
    assert (ca.status, len(ca.samples), ca.first_call_s) == ("ok", 3, 1.0)
    assert (cb.status, cb.reason, cb.samples) == ("error", "RuntimeError: boom", [])
    assert (cc.status, cc.reason) == ("nonfinite", "NaN in the output")
    assert (cd.status, cd.samples) == ("not installed", [])


class FakeSide:
    def __init__(self, label, log, per_call):
        self.label, self.log, self.per_call = label, log, per_call

    def warm_up(self):
        return self.per_call

    def take_turns(self, name, count, calls):
        self.log.append((self.label, name))
        # the first call of each turn disturbed and slow: the sample is the fastest undisturbed one
        return [[(10 * self.per_call[name], True)] + [(self.per_call[name], False)] * (calls - 1)
                for _ in range(count)]


def test_paired_turns_alternate_the_order_of_the_sides():
    log = []
    sides = [FakeSide("base", log, {"x": 0.01, "y": 0.02}), FakeSide("head", log, {"x": 0.011, "y": 0.019})]
    taken = protocol.paired_turns(sides, count=2, per_turn=1, sample_s=0.05)
    assert log == [("base", "x"), ("head", "x"), ("head", "y"), ("base", "y"),
                   ("head", "x"), ("base", "x"), ("base", "y"), ("head", "y")]
    # a turn lasts about sample_s on the faster side, the same number of calls on both
    assert [len(t) for t in taken["base"]["x"]] == [5, 5] and [len(t) for t in taken["head"]["x"]] == [5, 5]
    assert protocol.fastest(taken)["head"]["y"] == [0.019, 0.019]
    assert protocol.disturbed_turns(taken) == {"base": {"x": 0, "y": 0}, "head": {"x": 0, "y": 0}}
    all_bad = {"head": {"x": [[(0.5, True), (0.4, True)], [(0.3, False), (0.2, True)]]}}
    assert protocol.fastest(all_bad) == {"head": {"x": [0.4, 0.3]}}
    assert protocol.disturbed_turns(all_bad) == {"head": {"x": 1}}


def _row(model, phase, median, **extra):
    return {"model": model, "family": "mlp" if model.startswith("mlp") else "kan", "phase": phase,
            "device": "cpu", "dtype": "float32", "widths": "4x3", "batch": 8, "grid_size": 5,
            "status": "ok", "median_s": median, "flops": 1000, "machine": "m", **extra}


def test_the_record_derives_each_figure_once_from_the_rows():
    rows = [_row("kan", "forward", 0.004), _row("mlp", "forward", 0.001, grid_size=None),
            _row("mlp-param", "forward", 0.002), _row("kan", "train", 0.02, status="nonfinite")]
    frame = record.bench_table(rows)
    kan = frame[(frame["model"] == "kan") & (frame["phase"] == "forward")].iloc[0]
    assert kan["x_mlp"] == pytest.approx(4.0) and kan["x_mlp_param"] == pytest.approx(2.0)
    assert kan["throughput"] == pytest.approx(8 / 0.004) and kan["gflops"] == pytest.approx(1000 / 0.004 / 1e9)
    bad = frame[frame["status"] == "nonfinite"].iloc[0]
    assert math.isnan(bad["median_s"]) and math.isnan(bad["x_mlp"])


def test_a_run_without_its_table_is_rebuilt_from_its_measurements(tmp_path):
    run = record.new_run(root=tmp_path)
    for row in [_row("kan", "forward", 0.004), _row("mlp", "forward", 0.001, grid_size=None)]:
        run.append_jsonl(record.MEASUREMENTS, row)
    assert not run.has("benchmarks.csv") and run.has_bench()
    table = run.read_bench_table()
    assert table.loc[table["model"] == "kan", "x_mlp"].iloc[0] == pytest.approx(4.0)


def test_a_table_of_the_fewest_columns_reads_with_ratios(tmp_path):
    run = record.new_run(root=tmp_path)
    pd.DataFrame({"model": ["kan", "mlp"], "phase": ["forward"] * 2, "device": ["cpu"] * 2,
                  "median_s": [0.01, 0.002]}).to_csv(run.file("benchmarks.csv"), index=False)
    table = run.read_bench_table()
    assert list(table.columns) == record.BENCH_COLUMNS
    assert table.loc[table["model"] == "kan", "x_mlp"].iloc[0] == pytest.approx(5.0)


def test_an_unwritable_results_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(record.RunFolderError) as e:
        record.new_run(root=blocker / "results")
    assert str(blocker / "results") in str(e.value) and "$KAN_RESULTS" in str(e.value)
    assert "\n" not in str(e.value)


def test_untracked_files_make_the_tree_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert commit_info(tmp_path)["dirty"] is False
    (tmp_path / "b.py").write_text("y = 2\n")
    assert commit_info(tmp_path)["dirty"] is True


def test_announce_hands_the_run_folder_to_the_caller(tmp_path, monkeypatch, capsys):
    run = record.new_run(root=tmp_path / "results")
    target = tmp_path / "run-file"
    monkeypatch.setenv(cli.RUN_FILE, str(target))
    cli.announce(run)
    assert capsys.readouterr().out == f"run folder: {run.path}\n"
    assert target.read_text().strip() == str(run.path.resolve())


def test_write_rows_keeps_the_declared_columns(tmp_path):
    run = record.new_run(root=tmp_path)
    run.write_rows(record.QUALITY, [{"task": "sine", "model": "kan-fast", "grid_size": 5, "status": "ok",
                                     "batch": 64.0, "curve": [[10, 0.01, 0.5]]}])
    table = run.read_table(record.QUALITY)
    assert list(table.columns) == record.TABLES[record.QUALITY]
    assert table["curve"].iloc[0] == "[[10, 0.01, 0.5]]" and str(table["batch"].iloc[0]) == "64"


def test_rounds_rotate_the_order():
    log = []
    steps = [FakeStep(n, log) for n in "abc"]
    protocol.turns([protocol.Candidate(s.name, s) for s in steps], CountingClock(), repeats=3, warmup=0)
    calls = [entry for entry in log if not entry.startswith("setup")]
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # after the first calls


class FakeUsage:
    """getrusage as a test scripts it: per call of the step, context switches and CPU seconds."""

    def __init__(self, per_call):
        self.per_call, self.switches, self.cpu, self.reads = list(per_call), 0, 0.0, 0

    def __call__(self):
        if self.reads % 2 == 1:  # the reading after a call: add that call's usage
            switches, cpu = self.per_call.pop(0)
            self.switches += switches
            self.cpu += cpu
        self.reads += 1
        return self.switches, self.cpu


class SteppingClock:
    """A clock whose calls last the seconds given, one after another."""

    def __init__(self, durations):
        self.durations, self.now, self.reads = list(durations), 0.0, 0

    def __call__(self):
        if self.reads % 2 == 1:
            self.now += self.durations.pop(0)
        self.reads += 1
        return self.now


def test_disturbed_samples_are_told_by_switches_and_by_lost_cpu_time():
    # first call (untimed), then five timed calls of 10 ms with two threads busy (20 ms of CPU)
    durations = [0.01] * 6
    usage = FakeUsage([(0, 0.02), (0, 0.02), (1, 0.02), (0, 0.02), (0, 0.011), (0, 0.0199)])
    c = protocol.Candidate("a", FakeStep("a", []))
    protocol.turns([c], SteppingClock(durations), repeats=5, warmup=0, usage=usage)
    assert c.samples == pytest.approx([0.01] * 5)
    # a context switch; then a call that got about one core's time instead of two
    assert protocol.disturbed(c) == [False, True, False, True, False]


def test_calls_too_short_for_the_cpu_clock_are_judged_by_switches_only():
    c = protocol.Candidate("a", samples=[1e-4, 1e-4, 1e-4], switches=[0, 0, 2], cpu_s=[1e-4, 1e-6, 1e-4])
    assert protocol.disturbed(c) == [False, False, True]


def test_until_clear_stops_when_clear_or_out_of_budget():
    log = []
    c = protocol.Candidate("a", FakeStep("a", log))
    asked = []
    taken = protocol.turns_until_clear([c], CountingClock(), warmup=0, min_rounds=3, max_rounds=50, budget_s=1e9,
                                       clear=lambda r: asked.append(r) or r >= 5, usage=lambda: (0, 0.0))
    assert taken == 5 and asked == [3, 4, 5]
    ticks = iter(range(100))
    c2 = protocol.Candidate("b", FakeStep("b", []))
    taken = protocol.turns_until_clear([c2], CountingClock(), warmup=0, min_rounds=2, max_rounds=50, budget_s=3,
                                       clear=lambda r: False, usage=lambda: (0, 0.0), clock=lambda: next(ticks))
    # the clock reads 0 at the start, then 1, 2, 3 after rounds 2, 3, 4 (from min_rounds on)
    assert taken == 4


def test_threads_follow_the_idle_cores():
    from benchmarks.core.timer import default_threads

    assert default_threads(2.0, 2)[0] == 2
    n, why = default_threads(0.18, 2)
    assert n == 1 and "0.18 cores were idle" in why
    assert default_threads(7.6, 4)[0] == 4  # never more than torch's own default
    assert default_threads(None, 4) == (4, "4 (torch's default; idle cores unknown here)")
    # a machine with more work than cores has no idle core, not "only 0 cores"
    assert default_threads(0.0, 2) == (1, "1, not torch's 2: no core was idle at the start (--threads to choose)")


@pytest.mark.parametrize("ratio, low, high, unstable, said", [
    (2.77, 2.70, 2.85, None, "2.77x slower than the MLP"),
    (0.5, 0.48, 0.52, None, "2.00x faster than the MLP"),
    (1.02, 0.97, 1.08, None, "no clear difference from the MLP"),
    (2620.4, 2500.0, 2700.0, None, "2,620x slower than the MLP"),
    (3.0, 1.1, 9.0, "interval ±200%", "3.00x slower than the MLP; imprecise (interval ±200%)"),
    (3.0, 0.9, 9.0, "interval ±200%", "no clear difference from the MLP; imprecise (interval ±200%)"),
    (3.0, float("nan"), float("nan"), None, "no interval measured"),
])
def test_the_words_for_a_ratio(ratio, low, high, unstable, said):
    from benchmarks.core import stats

    assert stats.words(ratio, low, high, unstable, than="the MLP") == said


def test_the_words_say_direction_and_size_with_the_interval_and_every_flag():
    from benchmarks.core import stats

    said = stats.words(32.5, 31.4, 33.6, "interval to mlp ±6.1%", than="the MLP", disturbed="9 of 12 samples disturbed",
                       interval=True)
    assert said == ("32.5x slower than the MLP (95% interval 31.4\u201333.6); imprecise (interval to mlp ±6.1%); "
                    "disturbed (9 of 12 samples disturbed)")
    # a faster ratio's interval is said in the same direction: 0.5 [0.4, 0.625] is 2x faster, 1.6 to 2.5
    assert stats.words(0.5, 0.4, 0.625, interval=True) == "2.00x faster (95% interval 1.60\u20132.50)"
    assert "unstable" not in said
    assert [stats.direction(*r) for r in ((2.0, 1.5, 2.5), (0.5, 0.4, 0.6), (1.1, 0.9, 1.3), (2.0, math.nan, 3.0))] \
        == ["slower", "faster", "same", ""]


def test_a_ratio_compared_across_runs_by_its_intervals():
    """new / old of two ratios, each with a 95% interval read as normal on the log scale: checked by hand."""
    from scipy.stats import norm

    from benchmarks.core import stats

    z = norm.ppf(0.975)
    s_new, s_old = 0.02, 0.03  # log-scale standard errors
    new, old = 3.0, 2.4
    c = stats.compare_ratios(new, new * math.exp(-z * s_new), new * math.exp(z * s_new),
                             old, old * math.exp(-z * s_old), old * math.exp(z * s_old), threshold=1.05, n=20)
    sigma = math.hypot(s_new, s_old)
    assert c.ratio == pytest.approx(1.25)
    assert c.ci_low == pytest.approx(1.25 * math.exp(-z * sigma)) and c.ci_high == pytest.approx(1.25 * math.exp(z * sigma))
    assert c.p_slower == pytest.approx(norm.sf(math.log(1.25) / sigma))
    assert c.verdict == "regression"
    same = stats.compare_ratios(3.0, 2.7, 3.3, 3.05, 2.8, 3.3, threshold=1.05, n=20)
    assert same.verdict == "unchanged"
    with pytest.raises(ValueError):
        stats.compare_ratios(3.0, math.nan, 3.3, 3.0, 2.8, 3.3)


def test_a_paired_interval_is_clear_within_five_percent():
    from benchmarks.core import stats

    base = [1.0 + 0.01 * (i % 7) for i in range(40)]
    steady = stats.paired_ratio_interval([2 * b for b in base], base)
    assert steady.ratio == pytest.approx(2.0) and steady.clear()
    noisy = stats.paired_ratio_interval([2 * b * (1.5 if i % 2 else 0.7) for i, b in enumerate(base)], base)
    assert not noisy.clear() and noisy.ci_low < 2.0 < noisy.ci_high


def test_a_paired_ratio_from_too_few_rounds_has_no_interval():
    """The widest interval that assumes nothing, [smallest, largest] of n ratios, misses their
    median when all n fall on one side of it: probability 2 * 0.5^n (scipy's binomial). Below the
    n where that is at most 5%, no 95% interval is claimed (the ratio itself is kept)."""
    from scipy.stats import binom

    from benchmarks.core import stats

    def covered(n):
        return 1 - 2 * binom.pmf(0, n, 0.5)
    assert covered(stats.MIN_INTERVAL_PAIRS) >= 0.95 > covered(stats.MIN_INTERVAL_PAIRS - 1)
    base = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98]
    few = stats.paired_ratio_interval([11 * b for b in base[:stats.MIN_INTERVAL_PAIRS - 1]],
                                      base[:stats.MIN_INTERVAL_PAIRS - 1])
    assert few.ratio == pytest.approx(11) and math.isnan(few.ci_low) and math.isnan(few.ci_high)
    assert not few.clear() and stats.words(few.ratio, few.ci_low, few.ci_high) == "no interval measured"
    assert stats.words(few.ratio, few.ci_low, few.ci_high, rounds=few.pairs) == "no interval from 5 rounds (it takes 6)"
    assert stats.words(few.ratio, few.ci_low, few.ci_high, than="X", interval=True, rounds=few.pairs) == \
        "11.0x X's time, no interval from 5 rounds (it takes 6)"  # a sentence standing alone keeps the ratio
    enough = stats.paired_ratio_interval([11 * b for b in base[:stats.MIN_INTERVAL_PAIRS]],
                                         base[:stats.MIN_INTERVAL_PAIRS])
    assert enough.ci_low == pytest.approx(11) and enough.ci_high == pytest.approx(11)
    assert stats.words(enough.ratio, enough.ci_low, enough.ci_high, than="X") == "11.0x slower than X"


def test_one_thread_on_the_cpu_is_timed_by_cpu_time_and_keeps_disturbed_samples():
    import time

    from benchmarks.core.case import Case
    from benchmarks.core.measure import measured
    from benchmarks.core.timer import CpuTimer, DeviceTimer, clock_for

    clock, name = clock_for("cpu", 1)
    assert isinstance(clock, CpuTimer) and name == "cpu"

    def slept() -> float:
        start = clock()
        time.sleep(0.05)  # waiting is not CPU time
        return clock() - start

    # The clock counts all the process's threads: the OpenMP team of an operator that ran just
    # before (the previous test's) spins for some milliseconds a thread before it sleeps (OpenMP's
    # default wait), which a first sleep can take in. That CPU time is spent once, so the least of
    # three sleeps is free of it; a clock that counted waiting would read 0.05 s in all three.
    assert min(slept() for _ in range(3)) < 0.02
    assert isinstance(clock_for("cpu", 2)[0], DeviceTimer) and clock_for("cpu", 2)[1] == "wall"
    c = protocol.Candidate("a", samples=[0.01, 0.01, 0.01, 0.01], rounds=[0, 1, 2, 3],
                           switches=[0, 3, 0, 1], cpu_s=[0.01] * 4)
    on = lambda clock: measured(c, Case("mlp"), clock=clock, threads=1, min_rounds=2)  # noqa: E731
    assert on("wall").used_rounds() == [0, 2]  # the disturbed rounds left out
    assert on("cpu").used_rounds() == [0, 1, 2, 3]  # nothing to leave out


def test_with_several_threads_a_call_is_disturbed_when_it_lost_cpu_time_and_took_longer():
    # 2 threads: a switch alone (call 0), less CPU use alone (call 2: a serial stretch) are not
    # disturbances; call 3 lost CPU time and took twice as long: a thread waited for a core
    c = protocol.Candidate("a", samples=[0.01, 0.01, 0.01, 0.02, 0.01], switches=[2, 0, 1, 1, 0],
                           cpu_s=[0.02, 0.02, 0.011, 0.022, 0.02])
    assert protocol.disturbed(c, threads=2) == [False, False, False, True, False]
    assert protocol.disturbed(c, threads=1) == [True, False, True, True, False]


def test_an_exception_is_one_line_with_its_type():
    from benchmarks.core.cli import one_line

    assert one_line(ValueError("bad width 0\n  at layer 2")) == "ValueError: bad width 0"
    assert one_line(RuntimeError("  \n")) == "RuntimeError"
    assert one_line(KeyError("x")) == "KeyError: 'x'"
