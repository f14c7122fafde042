"""The speed gate: refs, worktrees, import isolation of the two sides, verdicts and exit statuses.

The statistics themselves are tested in test_stats.py; the gate's power on real slowdowns is
a benchmark (run it with the commands in the README), not a test.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.core import protocol, stats
from benchmarks.gate import child as gate_suite, cli as gate, verdict

ROOT = Path(__file__).resolve().parents[1]


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, commits: int) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "gate@example.com")
    git(path, "config", "user.name", "gate test")
    for i in range(commits):
        (path / "file.txt").write_text(f"version {i}\n")
        git(path, "add", "file.txt")
        git(path, "commit", "-q", "-m", f"commit {i}")
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A two-commit repository standing in for the project's own (the gate's git commands run in ROOT)."""
    path = make_repo(tmp_path / "repo", 2)
    monkeypatch.setattr(gate, "ROOT", path)
    return path


def test_refs_resolve_to_commits(repo):
    assert gate.resolve_base("HEAD") == git(repo, "rev-parse", "HEAD")
    assert gate.resolve_base("HEAD~1") == git(repo, "rev-parse", "HEAD~1")
    assert gate.resolve_base(git(repo, "rev-parse", "--short", "HEAD")) == git(repo, "rev-parse", "HEAD")


def test_an_unknown_ref_is_an_error(repo):
    with pytest.raises(gate.GateError, match="unknown git ref 'nosuchref'"):
        gate.resolve_base("nosuchref")
    with pytest.raises(gate.GateError, match="unknown git ref 'nosuchref~1'"):
        gate.resolve_base("nosuchref~1")
    with pytest.raises(gate.GateError, match="unknown git ref"):
        gate.resolve_base("--all")


def test_a_ref_before_the_first_commit_is_no_base(repo):
    assert gate.resolve_base("HEAD~2") is None
    assert gate.resolve_base("HEAD^^") is None


def test_no_base_passes_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gate, "ROOT", make_repo(tmp_path / "first", 1))
    assert gate.main(["--base", "HEAD~1"]) == gate.EXIT_PASS
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gate: no base commit") and "passing" in out[0]


def test_a_shallow_clone_has_no_base(repo, tmp_path, monkeypatch, capsys):
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    monkeypatch.setattr(gate, "ROOT", clone)
    assert gate.is_shallow()
    assert gate.resolve_base("HEAD~1") is None
    assert gate.main(["--base", "HEAD~1"]) == gate.EXIT_PASS
    assert "shallow clone" in capsys.readouterr().out


def test_the_command_line_refuses_a_bad_ref_in_one_line():
    # The real entry point, in the real repository: one line on stderr, exit 2.
    out = subprocess.run([sys.executable, "-m", "benchmarks.gate", "--base", "nosuchref"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("gate: unknown git ref 'nosuchref'")
    assert out.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0.9"], "--threshold"),
    (["--alpha", "1.5"], "--alpha"),
    (["--rounds", "0"], "--rounds"),
    (["--phases", "sideways"], "unknown phase"),
    (["--baseline", "no/such/baseline.json"], "does not exist"),
])
def test_bad_options_are_one_line_errors(args, message, capsys):
    assert gate.main(args) == gate.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gate: ") and message in err


def test_worktree_checks_out_the_commit_and_leaves_nothing_behind(repo):
    first = gate.resolve_base("HEAD~1")
    with gate.worktree(first) as tree:
        assert (tree / "file.txt").read_text() == "version 0\n"
        assert str(tree) in git(repo, "worktree", "list")
        with gate.kan_only(tree) as only:  # no kan/ in this repository: the link dangles
            assert [p.name for p in only.iterdir()] == ["kan"]
    assert not tree.exists()
    assert git(repo, "worktree", "list").count("\n") == 0  # the main worktree alone
    assert (repo / "file.txt").read_text() == "version 1\n"


class FakeSide:
    def __init__(self, statuses):
        self.hello = {"cases": {n: {"status": s, "reason": f"{n} is {s}"} for n, s in statuses.items()}}

    def status(self, name):
        case = self.hello["cases"].get(name, {"status": "missing", "reason": ""})
        return case["status"], case["reason"]


def suite_of(*names):
    by_model = {}
    for n in names:
        model, phase = n.rsplit("-", 1)
        by_model.setdefault(model, []).append(phase)
    cases = [c for model, phases in by_model.items() for c in gate_suite.suite([model], phases)]
    assert [gate_suite.name(c) for c in cases] == list(names)
    return cases


def turns_of(samples):
    """A side's turns of one call each: the call is the turn's sample."""
    return {name: [[(t, False)] for t in times] for name, times in samples.items()}


def measurements_of(cases, sides, samples):
    """The measurements the gate makes of ``sides`` ({label: FakeSide}) and their ``samples``."""
    return [m for label, side in sides.items()
            for m in verdict.side_measurements(cases, label, side, turns_of(samples.get(label, {})),
                                               clock="wall", threads=1)]


def test_verdicts_for_models_on_one_side_only_and_failures():
    cases = suite_of("kan-forward", "kan-fast-forward", "rbf-kan-forward", "mlp-forward", "mlp-train")
    head = FakeSide({"kan-forward": "ok", "kan-fast-forward": "ok", "rbf-kan-forward": "missing",
                     "mlp-forward": "nonfinite", "mlp-train": "ok"})
    base = FakeSide({"kan-forward": "ok", "kan-fast-forward": "missing", "rbf-kan-forward": "ok",
                     "mlp-forward": "ok", "mlp-train": "error"})
    times = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]
    samples = {"head": {"kan-forward": [t * 1.3 for t in times], "kan-fast-forward": times, "mlp-train": times},
               "base": {"kan-forward": times, "rbf-kan-forward": times, "mlp-forward": times}}
    measured = measurements_of(cases, {"head": head, "base": base}, samples)
    rows = {r["benchmark"]: r for r in verdict.judge(measured, "base", 1.15, 0.01)}
    assert rows["kan-forward"]["status"] == stats.REGRESSION
    assert rows["kan-forward"]["ratio"] == pytest.approx(1.3)
    assert rows["kan-fast-forward"]["status"] == "new"
    assert rows["rbf-kan-forward"]["status"] == "removed"
    assert rows["mlp-forward"]["status"] == "error" and rows["mlp-forward"]["failed_side"] == "head"
    assert rows["mlp-train"]["status"] == "error" and rows["mlp-train"]["failed_side"] == "base"
    verdict_word, status, summary = gate.overall(list(rows.values()))
    assert (verdict_word, status) == ("fail", gate.EXIT_REGRESSION)
    assert "kan-forward" in summary and "mlp-forward" in summary
    json.dumps(list(rows.values()))  # gate.json can hold the rows as they are


def test_overall_passes_without_regressions_and_reports_improvements():
    rows = [{"benchmark": "a", "status": stats.UNCHANGED}, {"benchmark": "b", "status": stats.IMPROVEMENT},
            {"benchmark": "c", "status": "new"}, {"benchmark": "d", "status": "error", "failed_side": "base"}]
    verdict, status, summary = gate.overall(rows)
    assert (verdict, status) == ("pass", gate.EXIT_PASS)
    assert summary == "no regression; faster: b"
    assert "d" in gate.format_table([{**r, "reason": "x"} for r in rows])


def test_baseline_ratios_to_the_mlp(tmp_path):
    cases = suite_of("kan-forward", "kan-fast-forward", "mlp-forward")
    head = FakeSide({"kan-forward": "ok", "kan-fast-forward": "ok", "mlp-forward": "ok"})
    mlp = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]
    samples = {"head": {"kan-forward": [6 * t for t in mlp], "kan-fast-forward": [2 * t for t in mlp],
                        "mlp-forward": mlp}}
    measured = measurements_of(cases, {"head": head}, samples)
    doc = gate.baseline_document(verdict.by_side(measured)["head"], threads=1)
    assert doc["ratios"] == {"kan-forward": pytest.approx(6.0), "kan-fast-forward": pytest.approx(2.0)}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({**doc, "ratios": {"kan-forward": 4.0, "rbf-kan-forward": 3.0}}))
    baseline = gate.read_baseline(path)
    rows = {r["benchmark"]: r for r in verdict.judge(measured, "baseline", 1.15, 0.01, baseline)}
    assert rows["kan-forward"]["status"] == stats.REGRESSION and rows["kan-forward"]["ratio"] == pytest.approx(1.5)
    assert rows["kan-fast-forward"]["status"] == "new"
    assert rows["mlp-forward"]["status"] == "reference"


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read baseline"),
    ('{"ratios": {"kan-forward": -1}}', "no valid 'ratios'"),
    ('{"ratios": {"kan-forward": 2.0}, "settings": {"batch": 1}}', "recorded for"),
])
def test_a_bad_baseline_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(gate.GateError, match=message):
        gate.read_baseline(path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project (models and harness) with two commits: the first without kan/mlp.py."""
    path = tmp_path / "project"
    for part in ("kan", "benchmarks"):
        shutil.copytree(ROOT / part, path / part, ignore=shutil.ignore_patterns("__pycache__"))
    git(path, "init", "-q")
    git(path, "config", "user.email", "gate@example.com")
    git(path, "config", "user.name", "gate test")
    git(path, "add", "kan", "benchmarks", ":!kan/mlp.py")
    git(path, "commit", "-q", "-m", "before the MLP")
    git(path, "add", "kan/mlp.py")
    git(path, "commit", "-q", "-m", "the MLP")
    monkeypatch.setattr(gate, "ROOT", path)
    return path


@pytest.mark.slow
def test_a_whole_gate_times_each_side_with_its_own_models(project, tmp_path, monkeypatch, capsys):
    """The base's kan comes first on its child's import path, ahead of the working tree and of
    the editable install: a module the base lacks is missing there (the MLP is "new"), never
    borrowed from the working tree. Nothing else changed: the gate passes and writes its verdict.

    Seven pairs of one code's timings on a busy machine can be slower on one side every time, by a
    median beyond the default 1.15 (the gate's false alarms, about as often as alpha allows), so the
    threshold here is one no two sides of the same code come near; the verdicts on real slowdowns
    are tested on scripted sides below."""
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    status = gate.main(["--base", "HEAD~1", "--models", "chebyshev-kan,mlp", "--phases", "forward",
                        "--rounds", "7", "--sample-time", "0.001", "--threshold", "100"])
    assert status == gate.EXIT_PASS
    (path,) = (tmp_path / "results").glob("*/gate.json")
    doc = json.loads(path.read_text())
    assert (doc["verdict"], doc["exit_status"], doc["mode"]) == ("pass", 0, "base")
    assert doc["base"]["commit"] == git(project, "rev-parse", "HEAD~1")
    assert Path(doc["head"]["kan_file"]).resolve() == (project / "kan" / "__init__.py").resolve()
    assert project not in Path(doc["base"]["kan_file"]).parents  # the base's own copy, in its worktree
    rows = {r["benchmark"]: r for r in doc["benchmarks"]}
    assert all(list(r) == gate.ROW_COLUMNS for r in rows.values())
    assert rows["mlp-forward"]["status"] == "new"
    compared = rows["chebyshev-kan-forward"]
    assert compared["status"] == stats.UNCHANGED and compared["n_head"] == compared["n_base"] == 7
    assert compared["test"] == "wilcoxon" and compared["calls_per_sample"] >= protocol.MIN_CALLS
    from benchmarks.core import record

    measured = {(m.facts["side"], m.name): m for m in record.Run(path.parent).measurements()}
    assert len(measured["base", "chebyshev-kan-forward"].samples) == 7  # the samples' one home
    assert measured["head", "mlp-forward"].status == "ok" and measured["base", "mlp-forward"].status == "missing"
    out = capsys.readouterr().out
    assert "chebyshev-kan-forward" in out and "gate: PASS" in out
    assert git(project, "worktree", "list").count("\n") == 0  # the base's worktree is gone


def test_a_baseline_file_stands_in_only_where_no_base_commit_exists(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"ratios": {"kan-forward": 5.0}, "settings": gate_suite.settings()}))
    args = gate.parser().parse_args(["--base", "HEAD~1", "--baseline", str(path)])
    monkeypatch.setattr(gate, "ROOT", make_repo(tmp_path / "two", 2))
    mode, commit, baseline = gate._plan(args)
    assert mode == "base" and commit == git(gate.ROOT, "rev-parse", "HEAD~1") and baseline is None
    monkeypatch.setattr(gate, "ROOT", make_repo(tmp_path / "one", 1))
    mode, commit, baseline = gate._plan(args)
    assert mode == "baseline" and commit is None and baseline["ratios"] == {"kan-forward": 5.0}
    assert gate._plan(gate.parser().parse_args(["--base", "HEAD~1"]))[0] == "none"


@pytest.mark.parametrize("rounds, per_round, alpha, smallest", [
    (6, 1, 0.01, 7),    # 6 pairs: the smallest p is 1/64 = 0.016, never under 0.01
    (1, 4, 0.01, 2),    # 4 pairs a side in one round: 2 rounds of 4 are the fewest
    (4, 1, 0.05, 5),    # 4 pairs could reach 1/16 < 0.05, but fewer than 5 are never judged
])
def test_rounds_that_can_never_fail_the_gate_are_refused(rounds, per_round, alpha, smallest, capsys):
    status = gate.main(["--rounds", str(rounds), "--samples-per-round", str(per_round), "--alpha", str(alpha)])
    err = capsys.readouterr().err
    assert status == gate.EXIT_ERROR and err.count("\n") == 1, err
    assert f"use --rounds {smallest} or more" in err and "can never show a regression" in err


def test_the_fewest_rounds_the_gate_accepts_can_fail_it():
    """7 pairs all slower give the one-sided signed-rank test p = 1/128 < 0.01: a regression."""
    from benchmarks.core import stats

    assert stats.min_pairs(0.01) == 7
    base = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98]
    c = stats.compare([2 * b for b in base], base, threshold=1.15, alpha=0.01, paired=True)
    assert c.verdict == stats.REGRESSION and c.p_slower == pytest.approx(1 / 128)


def test_a_registered_model_that_cannot_be_imported_is_an_error_not_missing(monkeypatch):
    from benchmarks.core import case as cases

    def broken(case, **options):
        raise cases.ModelUnavailable("model 'kan-fast' is registered but kan.fast:FastBSplineKAN cannot be "
                                     "imported: SyntaxError: invalid syntax (fast.py, line 1200)")

    monkeypatch.setattr(cases, "make_step", broken)
    (case,) = gate_suite.suite(["kan-fast"], ["forward"])
    prepared = gate_suite.prepare(case)
    assert prepared.status == "error" and "SyntaxError" in prepared.reason
    (unknown,) = gate_suite.suite(["no-such-model"], ["forward"])
    assert gate_suite.prepare(unknown).status == "missing", "absent from the registry: new or removed"


@pytest.mark.slow
def test_a_working_tree_that_breaks_a_model_fails_the_gate(project, tmp_path, monkeypatch, capsys):
    """A syntax error in the working tree's kan/fast/layer.py: kan-fast is an error on the head's side
    (it is registered there), so the gate fails; it is never "removed"."""
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    with open(project / "kan" / "fast" / "layer.py", "a") as file:
        file.write("\ndef broken(:\n")
    status = gate.main(["--base", "HEAD", "--models", "kan-fast,mlp", "--phases", "forward", "--rounds", "7",
                        "--sample-time", "0.001"])
    assert status == gate.EXIT_REGRESSION
    (path,) = (tmp_path / "results").glob("*/gate.json")
    doc = json.loads(path.read_text())
    assert (doc["verdict"], doc["exit_status"]) == ("fail", 1)
    rows = {r["benchmark"]: r for r in doc["benchmarks"]}
    broken = rows["kan-fast-forward"]
    assert broken["status"] == "error" and broken["failed_side"] == "head", broken
    assert "SyntaxError" in broken["reason"] and "cannot be imported" in broken["reason"]
    assert rows["mlp-forward"]["status"] != "error"
    assert "could not measure kan-fast-forward in the working tree" in doc["summary"]


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads: threads must be a positive integer"),
    (["--threads", "100000"], "--threads: threads must be at most"),
    (["--write-baseline", "no/such/folder/baseline.json"], "the folder no/such/folder does not exist"),
    (["--label", "x" * 5000], "the run label is 5000 characters long"),
])
def test_bad_threads_baseline_folder_and_label_are_one_line_errors_before_any_timing(args, message, capsys,
                                                                                   monkeypatch):
    def no_timing(*a, **k):
        raise AssertionError("the gate started timing")

    monkeypatch.setattr(gate, "Side", no_timing)
    assert gate.main(args) == gate.EXIT_ERROR
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gate: ") and message in err, captured
    assert "KAN_RESULTS" not in err


class ScriptedSide:
    """Stands in for a side's child process: every case builds, and each call of a turn takes a
    scripted time (the head's kan-forward 1.3 times the base's), the first call of every third turn
    disturbed, so that the samples, their pairing and the disturbed turns are known in advance."""

    def __init__(self, label, kan_dir, cases, threads, clock="wall", warmup_s=0.3, cpus=None):
        self.label, self.names = label, [gate_suite.name(c) for c in cases]
        self.turn = {name: 0 for name in self.names}
        self.hello = {}

    def greet(self):
        self.hello = {"models": ["kan", "mlp"], "kan_file": "kan/__init__.py",
                      "cases": {n: {"status": "ok", "reason": "", "first_call_s": 0.5} for n in self.names}}
        return self.hello

    def close(self):
        pass

    def status(self, name):
        case = self.hello["cases"].get(name, {"status": "missing", "reason": "not in the suite"})
        return case["status"], case["reason"]

    def warm_up(self):
        return {n: 0.001 for n in self.names}

    def take_turns(self, name, count, calls):
        out = []
        for _ in range(count):
            k = self.turn[name] = self.turn[name] + 1
            seconds = 0.010 * (1 + 0.01 * (k % 5)) * (1.3 if (self.label, name) == ("head", "kan-forward") else 1)
            out.append([(seconds * (1 + 0.1 * i) + 1e-9 * k, i == 0 and k % 3 == 0) for i in range(calls)])
        return out


def scripted_repo(path: Path, kan_changes: bool) -> Path:
    """A two-commit repository with a kan/ package, which the second commit changes or not."""
    path.mkdir()
    (path / "kan").mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "gate@example.com")
    git(path, "config", "user.name", "gate test")
    for i in range(2):
        (path / "kan" / "__init__.py").write_text(f"# version {i if kan_changes else 0}\n")
        (path / "file.txt").write_text(f"version {i}\n")
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", f"commit {i}")
    return path


def test_an_unchanged_kan_passes_without_timing_and_a_change_anywhere_in_it_is_timed(tmp_path, monkeypatch, capsys):
    """The sides share the working tree's harness and differ only by kan/: where kan/ is the same
    at the base, a verdict could only be the machine's noise."""
    path = scripted_repo(tmp_path / "same", kan_changes=False)
    monkeypatch.setattr(gate, "ROOT", path)
    monkeypatch.setattr(gate, "Side", ScriptedSide)
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    args = ["--base", "HEAD~1", "--models", "kan,mlp", "--rounds", "8", "--sample-time", "0.003"]
    assert gate.main(args) == gate.EXIT_PASS
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gate: kan/ is the same at HEAD~1") and "passing" in out[0]
    assert not (tmp_path / "results").exists()  # nothing timed, no run folder
    # --even-if-unchanged times them (the scripted head side is slower)
    assert gate.main([*args, "--even-if-unchanged"]) == gate.EXIT_REGRESSION
    capsys.readouterr()
    # an untracked file in kan/ and an edit of a tracked one are changes of the models
    (path / "kan" / "new.py").write_text("x = 1\n")
    assert not gate.same_models(git(path, "rev-parse", "HEAD~1"))
    (path / "kan" / "new.py").unlink()
    assert gate.same_models(git(path, "rev-parse", "HEAD~1"))
    (path / "kan" / "__init__.py").write_text("# edited\n")
    assert not gate.same_models(git(path, "rev-parse", "HEAD~1"))
    assert gate.main(args) == gate.EXIT_REGRESSION


@pytest.fixture
def scripted_gate(tmp_path, monkeypatch):
    """A gate run against HEAD~1 of a repository with a kan/ package, its sides scripted: (run, stdout)."""
    path = scripted_repo(tmp_path / "scripted", kan_changes=True)
    monkeypatch.setattr(gate, "ROOT", path)
    monkeypatch.setattr(gate, "Side", ScriptedSide)
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def test_the_gate_keeps_its_samples_once_as_measurements_and_its_table_derives_from_them(scripted_gate, capsys):
    from benchmarks.core import record
    from benchmarks.core.measurement import Measurement

    status = gate.main(["--base", "HEAD~1", "--models", "kan,mlp", "--rounds", "8", "--sample-time", "0.003"])
    out = capsys.readouterr().out
    assert status == gate.EXIT_REGRESSION, out
    (run,) = record.runs(scripted_gate)
    doc = run.read_json("gate.json")
    assert "samples" not in doc  # the samples are kept in measurements.jsonl, and only there

    measured = [Measurement.from_json(line) for line in run.read_jsonl(record.MEASUREMENTS)]
    assert sorted((m.facts["side"], m.name) for m in measured) == sorted(
        (side, f"{model}-{phase}") for side in ("head", "base") for model in ("kan", "mlp")
        for phase in ("forward", "train"))
    kan = {m.facts["side"]: m for m in measured if m.name == "kan-forward"}
    assert len(kan["head"].samples) == len(kan["base"].samples) == 8 and kan["head"].first_call_s == 0.5
    assert kan["head"].facts["calls_per_sample"] == 3  # 3 ms a sample of calls of at least 1 ms
    # a sample is the fastest undisturbed call of its turn: the second call where the first was disturbed
    k = 3
    expected = 0.010 * (1 + 0.01 * (k % 5)) * 1.3 * 1.1 + 1e-9 * k
    assert kan["head"].samples[k - 1] == pytest.approx(expected, rel=1e-12)
    assert not any(kan["head"].disturbed)  # no turn had every call disturbed

    # every sample value is written once in the folder: in measurements.jsonl
    needle = repr(kan["base"].samples[0])
    holders = [p.name for p in run.path.iterdir() if p.is_file() and needle in p.read_text()]
    assert holders == [record.MEASUREMENTS]

    # the verdict table, rebuilt from the measurements read back, is the one the gate wrote and printed
    settings = doc["settings"]
    rows = gate.verdict_rows(measured, "base", settings["threshold"], settings["alpha"])
    assert json.dumps(rows) == json.dumps(doc["benchmarks"])
    assert gate.format_table(rows) in out
    by_name = {r["benchmark"]: r for r in rows}
    assert by_name["kan-forward"]["status"] == stats.REGRESSION
    assert by_name["kan-forward"]["ratio"] == pytest.approx(1.3, rel=0.02)
    assert by_name["mlp-train"]["status"] == stats.UNCHANGED
    assert run.kinds() == ["gate"]  # the measurements do not make it a bench run


def test_a_gate_run_with_measurements_renders_as_a_gate_run(scripted_gate, capsys):
    from benchmarks.core import record
    from reports.render import render

    gate.main(["--base", "HEAD~1", "--models", "kan,mlp", "--phases", "forward", "--rounds", "8",
               "--sample-time", "0.003"])
    (run,) = record.runs(scripted_gate)
    page = render(str(run.path)).read_text()
    assert '<span class="slower">FAIL</span>' in page and "regression in kan-forward" in page
    assert "<h2>Time per model" not in page  # its measurements.jsonl is the gate's, not a bench table


def test_a_baseline_gate_rebuilds_its_table_from_its_folder_alone(scripted_gate, tmp_path, capsys):
    from benchmarks.core import record

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"ratios": {"kan-forward": 1.0, "kan-train": 1.0},
                                "settings": gate_suite.settings()}))
    status = gate.main(["--baseline", str(path), "--models", "kan", "--rounds", "8", "--sample-time", "0.003"])
    out = capsys.readouterr().out
    assert status == gate.EXIT_REGRESSION, out  # kan-forward is 1.3 times the MLP, recorded as 1.0
    (run,) = record.runs(scripted_gate)
    doc = run.read_json("gate.json")
    measured = run.measurements()
    assert {m.facts["side"] for m in measured} == {"head"}
    rows = gate.verdict_rows(measured, "baseline", doc["settings"]["threshold"], doc["settings"]["alpha"],
                             {"ratios": doc["base"]["ratios"]})
    assert json.dumps(rows) == json.dumps(doc["benchmarks"])
    assert gate.format_table(rows, baseline_mode=True) in out


def test_a_recorded_baseline_holds_the_head_measurements_ratios_and_keeps_no_run(scripted_gate, tmp_path, capsys):
    path = tmp_path / "baseline.json"
    status = gate.main(["--write-baseline", str(path), "--models", "kan", "--phases", "forward", "--rounds", "8",
                        "--sample-time", "0.003"])
    assert status == gate.EXIT_PASS, capsys.readouterr()
    ratios = json.loads(path.read_text())["ratios"]
    assert ratios == {"kan-forward": pytest.approx(1.3, rel=1e-3)}  # the scripted head's kan over its mlp
    assert not scripted_gate.exists() or not any(scripted_gate.iterdir())  # recording writes no run folder
