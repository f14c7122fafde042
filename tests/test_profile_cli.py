"""`python -m profiles` end to end on a tiny KAN, its errors, and py-spy's faults."""

from __future__ import annotations

import stat

from types import SimpleNamespace

import pytest

from benchmarks.core import record, schema
from profiles import attribution, cli, pyspy

TINY = ["--model", "kan", "--widths", "16,8,4", "--batch", "32", "--warmup", "1"]
KEY = ["profiler", "scenario", "model", "device", "phase", "synchronized"]


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    return tmp_path


def only_run(root):
    (run,) = record.runs(root)
    return run


@pytest.mark.parametrize("argv, says", [
    (["--model", "no-such-kan"], "unknown model 'no-such-kan'; valid models: kan"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:99"], "cuda:99"),  # not available, or no such device
    (["--widths", "784,-1"], "widths must be two or more positive integers"),
    (["--phase", "sideways"], "unknown phase 'sideways'; valid phases: forward, backward, train, loop"),
    (["--profiler", "perf"], "invalid choice: 'perf'"),
    (["--batch", "0"], "expected a positive integer"),
    (["--run", "no-such-run"], "no run 'no-such-run'"),
    (["--threads", "0"], "threads must be a positive integer"),
])
def test_bad_values_get_one_line_and_status_2(argv, says, results, capsys):
    assert cli.main(argv) == cli.USAGE
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_help_names_the_phases_and_every_default():
    """--help is where a user learns the phases and how many steps a profile takes without the docs."""
    text = " ".join(cli.parser().format_help().split()).split(" options: ", 1)[1]
    assert "one or more of forward, backward, train, loop" in text
    for option, default in (("--steps", 5), ("--warmup", 1), ("--rate", 100), ("--top", 30)):
        assert cli.parser().parse_args([]).__dict__[option[2:]] == default
        said = text.split(f"{option} {option[2:].upper()}", 1)[1].split(" --", 1)[0]
        assert f"default {default}" in said, (option, said)


@pytest.mark.slow
def test_tiny_profile_end_to_end(results, capsys):
    """cProfile and torch.profiler in-process; the loop both as it is and synchronized."""
    import torch

    threads = torch.get_num_threads()
    status = cli.main([*TINY, "--steps", "3", "--phase", "train", "loop", "--profiler", "cprofile", "torch",
                       "--threads", "1"])
    assert status == cli.OK
    assert torch.get_num_threads() == threads  # restored after the scenarios
    run = only_run(results)
    table = run.read_table("attribution")
    assert list(table.columns) == schema.ATTRIBUTION_COLUMNS
    assert set(table["part"]) == set(schema.PARTS)
    sums = table.groupby(KEY)["share"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)
    profiles = {(p, ph, sync) for p, ph, sync in table[["profiler", "phase", "synchronized"]].itertuples(index=False)}
    assert profiles == {(p, ph, sync) for p in ("cprofile", "torch")
                        for ph, sync in (("train", True), ("loop", False), ("loop", True))}
    # a training step of a KAN spends time in its bases, products, backward and optimizer
    train = table[(table.phase == "train")].set_index(["profiler", "part"])["share"]
    for profiler in ("cprofile", "torch"):
        for part in ("basis", "matmul", "autograd", "optimizer"):
            assert train[(profiler, part)] > 0, (profiler, part)
    meta = run.read_json("profile.json")
    assert meta["profilers"] == {"cprofile": "ok", "torch": "ok"}
    assert meta["settings"]["threads_used"] == 1
    assert set(meta["backward"]) == {"cprofile", "torch"}
    # the loop as it is ran twice under each profiler: its repeat is noise in profile.json, not a row
    noise = meta["loop_noise"]["profiles"]
    assert {r["profiler"] for r in noise} == {"cprofile", "torch"}
    for r in noise:
        assert set(r["noise_points"]) == set(schema.PARTS) == set(r["synchronized_points"])
        assert r["largest_noise_points"] == max(r["noise_points"].values())
        assert r["within_noise"] == (r["largest_synchronized_points"] <= r["largest_noise_points"])
    for stem in ("kan-cpu-train", "kan-cpu-loop", "kan-cpu-loop-synchronized", "kan-cpu-loop-repeat"):
        for name in meta["files"][stem]["cprofile"] + meta["files"][stem]["torch"]:
            assert run.file(name).stat().st_size > 0
    assert "{method 'to' of 'torch._C.TensorBase' objects}" in run.file(
        "profiles/kan-cpu-loop.cprofile.txt").read_text()

    # adding to the same run replaces the rows of the same profiles and keeps the others
    assert cli.main([*TINY, "--steps", "1", "--phase", "train", "--profiler", "cprofile",
                     "--run", str(run.path)]) == cli.OK
    again = run.read_table("attribution")
    assert len(again) == len(table)
    assert again.groupby(KEY)["share"].sum().to_numpy() == pytest.approx(1.0)


def test_missing_pyspy_says_how_to_install_and_exits_3(results, capsys, monkeypatch):
    monkeypatch.setattr(pyspy, "executable", lambda: None)
    status = cli.main([*TINY, "--steps", "1", "--phase", "forward", "--profiler", "cprofile", "py-spy"])
    assert status == cli.PROFILER_UNAVAILABLE
    assert "pip install py-spy" in capsys.readouterr().err
    run = only_run(results)
    assert set(run.read_table("attribution")["profiler"]) == {"cprofile"}
    meta = run.read_json("profile.json")
    assert meta["profilers"]["py-spy"].startswith("py-spy did not run")
    # the same steps timed bare and under cProfile: the overhead is a field of profile.json
    (stem, said), = meta["overhead"]["scenarios"].items()
    assert stem == "kan-cpu-forward" and said["steps"] == 1 and said["bare_s"] > 0
    cprofile = said["profilers"]["cprofile"]
    # the factor is rounded to two decimals from the unrounded times; the times are kept to four significant
    # digits (each within 5e-4 of itself), so their quotient is within about 1e-3 of the factor's own quotient
    ratio = cprofile["seconds"] / said["bare_s"]
    assert cprofile["seconds"] > 0 and abs(cprofile["factor"] - ratio) <= 0.005 + 1.1e-3 * ratio + 1e-12
    assert "py-spy" not in said["profilers"] and "compare with each other; their times do not" in meta["overhead"]["note"]


def test_overhead_is_each_profilers_time_over_the_bare_time():
    said = cli.overhead({"kan-cpu-loop": 2.0, "kan-cpu-train": 1.0},
                        {"kan-cpu-loop": {"cprofile": 3.0, "py-spy": 40.0, "torch": None}}, steps=5)
    assert said["scenarios"]["kan-cpu-loop"] == {
        "steps": 5, "bare_s": 2.0, "profilers": {"cprofile": {"seconds": 3.0, "factor": 1.5},
                                                 "py-spy": {"seconds": 40.0, "factor": 20.0}}}
    assert said["scenarios"]["kan-cpu-train"]["profilers"] == {}
    assert cli.overhead({}, {}, steps=5) == {}


def test_pyspy_not_permitted_says_how_to_enable_it(tmp_path):
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Failed to attach: Permission denied (os error 13)' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(pyspy.Unavailable, match="SYS_PTRACE") as e:
        pyspy.record(["--model", "kan"], tmp_path / "out.json", program=str(fake))
    assert "sudo" in str(e.value) and "\n" not in str(e.value)


def pyspy_problem() -> str | None:
    if pyspy.executable() is None:
        return "py-spy is not installed"
    return None


@pytest.mark.slow
@pytest.mark.skipif(pyspy_problem() is not None, reason=str(pyspy_problem()))
def test_tiny_pyspy_profile_end_to_end(results, capsys):
    # without --native, which costs py-spy a long start on a large libtorch (the native
    # frames' attribution is tested on a recorded profile in test_profile_attribution)
    status = cli.main([*TINY, "--steps", "60", "--phase", "train", "--profiler", "py-spy", "--no-native"])
    said = capsys.readouterr()
    if status == cli.PROFILER_UNAVAILABLE:
        pytest.skip(f"py-spy may not trace processes here: {said.err.strip()}")
    assert status == cli.OK, said.err
    run = only_run(results)
    table = run.read_table("attribution")
    assert set(table["profiler"]) == {"py-spy"}
    assert table["share"].sum() == pytest.approx(1.0)
    assert set(table["part"]) == set(schema.PARTS)
    samples = pyspy.read(run.file("profiles/kan-cpu-train.speedscope.json"))
    assert samples.stacks and all(samples.frames[s[0]][0] == "train_step" for s in samples.stacks)
    # Which parts a 100 Hz sampler happens to hit depends on the machine's load, so the test
    # does not ask for any part to be hit; it recounts the kept samples' parts from their
    # frames (outermost matching frame) and checks the table says the same.
    recount = dict.fromkeys(schema.PARTS, 0.0)
    for stack, weight in zip(samples.stacks, samples.weights):
        # without native frames py-spy cannot tell a Python line from the C call it makes,
        # so a sample no part claims is "other"
        recount[attribution.stack_part(samples.frames[i] for i in stack) or "other"] += weight
    total = sum(recount.values())
    shares = table.set_index("part")["share"]
    for part, seconds in recount.items():
        assert shares[part] == pytest.approx(seconds / total), part
    assert run.file("profiles/kan-cpu-train.flamegraph.svg").read_text().startswith("<svg")
    # the sampled time of the scenario against the child's own clock of its measured steps
    coverage = run.read_json("profile.json")["py_spy_coverage"]["kan-cpu-train"]
    assert coverage["measured_s"] > 0
    assert coverage["sampled_s"] == pytest.approx(samples.seconds, abs=1e-4)
    # the child ran its 60 steps and more, until they had taken 1.2 x MIN_PYSPY_SAMPLES periods at 100/s
    assert coverage["steps"] >= 60
    assert coverage["measured_s"] >= cli.PYSPY_HEADROOM * cli.MIN_PYSPY_SAMPLES / 100 - 1e-4
    assert coverage["samples"] == round(samples.seconds * 100)


def test_loop_noise_compares_the_repeat_and_the_synchronized_loop_with_the_first():
    def rows(profiler, synchronized, shares):
        return attribution.rows(profiler, {"scenario": "loop", "model": "kan", "device": "cpu", "phase": "loop",
                                           "synchronized": synchronized}, shares)

    table = rows("torch", False, {"basis": 6, "autograd": 4}) + rows("torch", True, {"basis": 5, "autograd": 5})
    repeats = {("torch", "kan", "cpu"): {"shares": attribution.shares({"basis": 3, "autograd": 7}), "seconds": 20.0}}
    (r,) = cli.loop_noise(table, repeats)["profiles"]
    assert r["seconds"] == {"first": 10.0, "synchronized": 10.0, "repeat": 20.0}
    assert r["noise_points"]["basis"] == pytest.approx(30) and r["noise_points"]["autograd"] == pytest.approx(30)
    assert r["synchronized_points"]["basis"] == pytest.approx(10)
    assert (r["largest_noise_points"], r["largest_synchronized_points"], r["within_noise"]) == (30, 10, True)
    assert r["sampling_points"] is None  # torch.profiler does not sample
    assert cli.loop_noise(table, {}) == {}


def test_a_samplers_loop_difference_within_its_sampling_error_is_noise():
    """py-spy's shares rest on samples: two loops of 100 samples each differ by up to 14 points
    (two standard errors of a difference of shares of one half) by sampling alone."""
    def rows(synchronized, shares):
        return attribution.rows("py-spy", {"scenario": "loop", "model": "kan", "device": "cpu", "phase": "loop",
                                           "synchronized": synchronized}, shares)

    table = rows(False, {"basis": 50, "autograd": 50}) + rows(True, {"basis": 62, "autograd": 38})
    repeats = {("py-spy", "kan", "cpu"): {"shares": attribution.shares({"basis": 53, "autograd": 47}), "seconds": 1.0}}
    samples = {("kan", "cpu", False, False): 100, ("kan", "cpu", True, False): 100}
    (r,) = cli.loop_noise(table, repeats, samples)["profiles"]
    assert r["sampling_points"] == pytest.approx(200 * (0.25 / 100 * 2) ** 0.5, abs=0.01)  # 14.14
    assert (r["largest_noise_points"], r["largest_synchronized_points"]) == (pytest.approx(3), pytest.approx(12))
    assert r["within_noise"] is True  # 12 points: beyond the repeat's 3, within sampling's 14
    many = {key: 10_000 for key in samples}  # 1.4 points of sampling error: 12 is beyond it
    (r,) = cli.loop_noise(table, repeats, many)["profiles"]
    assert r["within_noise"] is False
    (r,) = cli.loop_noise(table, repeats)["profiles"]  # counts unknown: the repeat alone judges
    assert r["sampling_points"] is None and r["within_noise"] is False


def test_on_the_cpu_a_loop_beyond_the_noise_is_not_said_to_be_the_synchronisation(capsys):
    """On the CPU the synchronized loop is the same computation as the first: a larger difference than the one
    repeat is more noise (the load moved), never an effect of synchronising. The terminal says so, as the page."""
    r = {"profiler": "cprofile", "model": "kan-fast", "device": "cpu", "largest_noise_points": 46.9,
         "largest_synchronized_points": 49.4, "within_noise": False}
    cli.print_noise({"profiles": [r, {**r, "device": "cuda", "largest_synchronized_points": 60.0}]})
    cpu, cuda = capsys.readouterr().out.strip().splitlines()[1:]
    assert "beyond" in cpu and "on the CPU" in cpu and "load moved" in cpu
    assert cuda.endswith("beyond the noise")


def test_each_scenarios_line_says_what_its_seconds_and_its_share_are(tmp_path, capsys):
    """The seconds are the whole scenario (building the model, warm-up, profiler, files), not its measured steps,
    and the share is its largest part's: the line says both rather than leaving bare figures."""
    made = tmp_path / "profiles" / "kan-cpu-forward.pstats"
    made.parent.mkdir()
    made.write_text("")
    s = SimpleNamespace(stem="kan-cpu-forward", repeat=False,
                        key={"scenario": "forward", "model": "kan", "device": "cpu", "phase": "forward",
                             "synchronized": True})
    cli.Found().note_for(SimpleNamespace(path=tmp_path))(s, "cprofile", {"basis": 3.0, "matmul": 1.0}, [made], 5.5)
    line = capsys.readouterr().out
    assert "5.5 s in all" in line and "largest part basis 75.0%" in line


def test_more_threads_than_usable_cores_is_refused_before_a_run_folder_exists(results):
    """In a child: torch takes any thread count, and segfaults on absurd ones."""
    import os
    import subprocess
    import sys

    from benchmarks.core.timer import max_threads

    for threads in (100000, max_threads() + 1):
        done = subprocess.run([sys.executable, "-m", "profiles", *TINY, "--steps", "1", "--phase", "forward",
                               "--profiler", "cprofile", "--threads", str(threads)], capture_output=True, text=True,
                              env={**os.environ, "KAN_RESULTS": str(results)}, timeout=600)
        assert done.returncode == cli.USAGE, done.stderr
        assert done.stderr.count("\n") == 1 and f"--threads: threads must be at most {max_threads()}" in done.stderr
        assert not list(results.iterdir()), "no run folder"


def test_a_scenario_runs_its_steps_and_more_until_its_minimum_time(monkeypatch):
    """A sampler's scenario (``min_seconds``) runs steps beyond ``steps`` until they have taken that
    long, so that enough samples stand behind its shares; without it, exactly ``steps``."""
    from profiles import scenario

    (short,) = scenario.expand(["kan"], ["cpu"], ["forward"], widths=(4, 3), batch=8, steps=2, warmup=0)
    done = scenario.run(short)
    assert done.measured_steps == 2 and done.steps_done == 2
    # The scenario's clock made to read 1/16 s later at each reading, so that each measured step
    # takes 1/16 s (exact in binary): how many steps reach min_seconds is then known, where on the
    # wall clock two steps of a busy machine (an OpenMP team waiting for a descheduled thread)
    # can take all of it.
    readings = iter(range(1000))
    monkeypatch.setattr(scenario, "time", SimpleNamespace(perf_counter=lambda: next(readings) / 16))
    (sampled,) = scenario.expand(["kan"], ["cpu"], ["forward"], widths=(4, 3), batch=8, steps=2, warmup=0,
                                 min_seconds=0.25)
    done = scenario.run(sampled)
    assert (done.measured_steps, done.steps_done, done.measured_s) == (4, 4, 0.25)  # the first step to reach it
    args = SimpleNamespace(widths=(4, 3), batch=8, steps=2, warmup=0, threads=None, rate=50)
    child = cli._pyspy_child_args(args, "kan", "cpu", [short])
    assert child[child.index("--min-seconds") + 1] == str(cli.PYSPY_HEADROOM * cli.MIN_PYSPY_SAMPLES / 50)
    assert scenario.parser().parse_args(["--model", "kan", "--min-seconds", "0.5"]).min_seconds == 0.5


def test_an_eager_scenario_builds_kan_fast_with_compile_off_here_and_in_the_pyspy_child():
    """Where CUDA is profiled without --compile, the scenarios are eager: kan-fast's layers run
    with compile="off" in this process, and the py-spy child is told so on its command line."""
    from profiles import scenario

    (eager,) = scenario.expand(["kan-fast"], ["cpu"], ["forward"], widths=(4, 3), batch=8, eager=True)
    (plain,) = scenario.expand(["kan-fast"], ["cpu"], ["forward"], widths=(4, 3), batch=8)
    assert {layer.compile_mode for layer in scenario.prepare(eager).step.model.layers} == {"off"}
    assert {layer.compile_mode for layer in scenario.prepare(plain).step.model.layers} == {"auto"}
    args = SimpleNamespace(widths=(4, 3), batch=8, steps=1, warmup=0, threads=None, rate=100)
    assert "--eager" in cli._pyspy_child_args(args, "kan-fast", "cpu", [eager])
    assert "--eager" not in cli._pyspy_child_args(args, "kan-fast", "cpu", [plain])
    assert cli.eager_on_cuda(["cuda"], keep_compile=False) == cli.EAGER_NOTE
