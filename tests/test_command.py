"""The command frame: run_command's exit statuses and the states it records in run.json, the shared
option types' one-line refusals, and readers that take a run's kind from run.json (an older folder's
from its files)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks.core import cli, manifest, record
from benchmarks.core.command import Command, run_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv(cli.RUN_FILE, raising=False)
    return tmp_path / "results"


def parser(**kwargs) -> cli.Parser:
    p = cli.Parser(prog="python -m example", **kwargs)
    p.add_argument("--rows", type=cli.count(0), default=2)
    cli.add_label(p)
    return p


def only_run(results: Path) -> record.Run:
    (run,) = record.runs(results)
    return run


def doc(run: record.Run) -> dict:
    return json.loads(run.file(manifest.FILE).read_text())


def test_a_finished_command_is_complete_with_its_command_settings_and_exit_status(results, capsys):
    def body(args, cmd: Command) -> int:
        run = cmd.open(label=args.label, settings={"rows": args.rows})
        assert doc(run)["state"] == manifest.RUNNING and doc(run)["finished"] is None  # said before the work
        for i in range(args.rows):
            run.append_jsonl("rows.jsonl", {"i": i})
        return 1  # a result failed: the run itself still finished

    assert run_command("quality", parser(), ["--rows", "3", "--label", "x"], body) == 1
    run = only_run(results)
    said = doc(run)
    assert said["schema"] == manifest.SCHEMA and said["kind"] == "quality"
    assert said["command"] == ["python", "-m", "example", "--rows", "3", "--label", "x"]
    assert said["settings"] == {"rows": 3}
    assert (said["state"], said["exit_status"]) == (manifest.COMPLETE, 1)
    assert said["started"] <= said["finished"] and said["finished"].endswith("Z")
    assert run.name.endswith("-x") and len(run.read_jsonl("rows.jsonl")) == 3
    assert run.kinds() == ["quality"] and run.partial() is None
    assert capsys.readouterr().out.splitlines()[-1] == f"run folder: {run.path}"  # the ending: the folder last


def test_bad_input_before_the_run_is_one_line_exit_2_and_no_folder(results, capsys):
    def body(args, cmd: Command) -> int:
        raise cli.UsageError("unknown budget 'huge'; valid budgets: quick, default")

    assert run_command("quality", parser(error_prefix="example: "), [], body) == 2
    captured = capsys.readouterr()
    assert captured.err == "example: unknown budget 'huge'; valid budgets: quick, default\n"
    assert captured.out == "" and not results.exists()


def test_an_unusable_state_after_the_run_opened_fails_the_run_with_exit_2(results, capsys):
    def body(args, cmd: Command) -> int:
        cmd.open(settings={})
        raise cli.UsageError("the head side's timing died")

    assert run_command("gate", parser(), [], body) == 2
    run = only_run(results)
    assert (doc(run)["state"], doc(run)["exit_status"]) == ("failed: the head side's timing died", 2)
    assert run.partial() == "stopped by an error (the head side's timing died)"
    assert capsys.readouterr().err.strip().splitlines() == ["error: the head side's timing died"]


def counting(stop_at: int):
    """A body that appends rows and is stopped by Ctrl-C at row ``stop_at``, inside interruptible();
    it then tables what finished, as every command does."""
    def body(args, cmd: Command) -> int:
        run = cmd.open(settings={})
        with cmd.interruptible():
            for i in range(args.rows):
                if i == stop_at:
                    raise KeyboardInterrupt
                run.append_jsonl("rows.jsonl", {"i": i})
        run.write_json("table.json", run.read_jsonl("rows.jsonl"))
        print(f"interrupted: kept the {len(run.read_jsonl('rows.jsonl'))} finished rows")
        return 0

    return body


def test_ctrl_c_is_exit_130_and_the_run_interrupted_with_what_finished(results, capsys):
    assert run_command("quality", parser(), ["--rows", "5"], counting(stop_at=3)) == 130
    run = only_run(results)
    assert (doc(run)["state"], doc(run)["exit_status"]) == (manifest.INTERRUPTED, 130)
    assert run.read_json("table.json") == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert run.partial() == "interrupted (Ctrl-C or SIGTERM)"
    assert "interrupted: kept the 3 finished rows" in capsys.readouterr().out


def test_ctrl_c_outside_interruptible_is_still_130_and_keeps_the_rows(results, capsys):
    def body(args, cmd: Command) -> int:
        run = cmd.open(settings={})
        run.append_jsonl("rows.jsonl", {"i": 0})
        raise KeyboardInterrupt

    assert run_command("bench", parser(), [], body) == 130
    run = only_run(results)
    assert doc(run)["state"] == manifest.INTERRUPTED and run.read_jsonl("rows.jsonl") == [{"i": 0}]
    assert "interrupted" in capsys.readouterr().err


def test_a_fault_of_the_harness_marks_the_run_failed_and_keeps_its_traceback(results):
    def body(args, cmd: Command) -> int:
        cmd.open(settings={})
        raise ZeroDivisionError("division by zero\nmore")

    with pytest.raises(ZeroDivisionError):
        run_command("profile", parser(), [], body)
    assert doc(only_run(results))["state"] == "failed: ZeroDivisionError: division by zero"


def test_help_and_argparse_errors_end_before_any_run(results, capsys):
    assert run_command("quality", parser(), ["--help"], counting(0)) == 0
    assert run_command("quality", parser(), ["--rows", "-1"], counting(0)) == 2
    err = capsys.readouterr().err
    assert err == "error: argument --rows: expected a non-negative integer, got '-1' (see --help)\n"
    assert not results.exists()


SIGTERMED = """
import sys, time
from benchmarks.core.cli import Parser
from benchmarks.core.command import run_command

def body(args, cmd):
    run = cmd.open(settings={"rows": "until stopped"})
    with cmd.interruptible():
        i = 0
        while True:
            run.append_jsonl("rows.jsonl", {"i": i})
            i += 1
            time.sleep(0.01)
    print(f"kept {len(run.read_jsonl('rows.jsonl'))}")
    return 0

sys.exit(run_command("quality", Parser(prog="python -m example"), [], body))
"""


def test_sigterm_is_treated_as_ctrl_c(tmp_path):
    """Stopped as CI stops a job: exit 130, run.json says interrupted, every row written before is kept."""
    from signals import terminated_after_first_result

    env = {**os.environ, "KAN_RESULTS": str(tmp_path / "results"), cli.RUN_FILE: str(tmp_path / "run-file")}
    code, output = terminated_after_first_result([sys.executable, "-c", SIGTERMED], tmp_path / "results",
                                                 "*/rows.jsonl", env, ROOT)
    assert code == 130, output
    run = record.Run(Path((tmp_path / "run-file").read_text().strip()))
    kept = run.read_jsonl("rows.jsonl")
    assert f"kept {len(kept)}" in output and len(kept) >= 1
    assert (doc(run)["state"], doc(run)["exit_status"]) == (manifest.INTERRUPTED, 130)


# --- the shared option types ---------------------------------------------------------------------


def options() -> cli.Parser:
    p = cli.Parser(prog="python -m example")
    cli.add_models(p)
    cli.add_devices(p, default="cpu", multiple=False)
    cli.add_dtypes(p, ("float32", "float64"), default="float32")
    cli.add_phases(p, ("forward", "train"), flag="--phases")
    cli.add_threads(p)
    cli.add_label(p)
    p.add_argument("--grids", type=cli.int_list("--grids"))
    p.add_argument("--widths", type=cli.widths)
    return p


@pytest.mark.parametrize("argv, says", [
    (["--model", "kan,nosuch"], "argument --model: unknown model 'nosuch'; valid models: kan, "),
    (["--device", "tpu"], "argument --device: unknown device 'tpu'; valid devices: cpu, cuda, mps"),
    (["--dtype", "float16"], "argument --dtype: unknown dtype 'float16'; valid dtypes: float32, float64"),
    (["--phases", "forward,sideways"], "argument --phases: unknown phase 'sideways'; valid phases: forward, train"),
    (["--threads", "0"], "argument --threads: threads must be a positive integer"),
    (["--threads", "two"], "argument --threads: threads must be a positive integer, got 'two'"),
    (["--label", "x" * 101], "argument --label: the run label is 101 characters long"),
    (["--grids", "5,0"], "argument --grids: --grids must be positive integers separated by commas, got '5,0'"),
    (["--widths", "784"], "argument --widths: widths must be two or more positive integers"),
])
def test_a_bad_value_is_one_line_naming_it_and_the_valid_ones(argv, says, results, capsys):
    assert run_command("quality", options(), argv, counting(0)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + says) and err.endswith(" (see --help)\n") and err.count("\n") == 1, err
    assert not results.exists()


def test_cuda_that_is_not_here_is_refused_as_it_is_read(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as e:
        options().parse_args(["--device", "cuda"])
    assert e.value.code == 2
    assert "argument --device: device 'cuda' was asked for but cuda is not available" in capsys.readouterr().err


def test_lists_take_commas_and_repeats_in_order_and_the_first_replaces_the_default():
    p = cli.Parser(prog="example")
    cli.add_phases(p, ("forward", "backward", "train"), default=["forward", "backward", "train"], nargs="+")
    assert p.parse_args([]).phase == ["forward", "backward", "train"]
    assert p.parse_args(["--phase", "train,forward", "train", "--phase", "backward"]).phase == \
        ["train", "forward", "backward"]
    args = options().parse_args(["--model", "mlp,kan", "--model", "mlp", "--threads", "1", "--grids", "5,50"])
    assert (args.model, args.threads, args.grids, args.dtype) == (["mlp", "kan"], 1, (5, 50), "float32")


# --- readers: the kind of a run from run.json, an older folder's from its files ----------------------


def bench_rows(run: record.Run, model: str = "kan") -> None:
    row = {"benchmark": f"{model}-forward", "model": model, "family": "kan", "phase": "forward", "device": "cpu",
           "dtype": "float32", "widths": "2x5x1", "batch": 8, "machine": "m", "status": "ok", "median_s": 0.001}
    run.append_jsonl(record.MEASUREMENTS, row)
    run.write_table("benchmarks", record.bench_table([row]))


def test_run_json_decides_the_kind_over_the_files(tmp_path):
    from reports import data

    # a peers run stopped before it wrote peers.json: its files alone look like a bench run
    peers = record.Run(tmp_path / "20250601T120000-aaaaaaa")
    peers.path.mkdir()
    manifest.begin(peers, "peers", ["python", "-m", "benchmarks.peers"], {})
    bench_rows(peers, "peer:flashkan")
    assert manifest.legacy_kinds(peers) == ["bench"]
    assert peers.kinds() == ["peers"] and data.kinds_of(peers) == ["peers"]
    # a folder holding a quality table that run.json says is the targets study: nothing for the page
    targets = record.Run(tmp_path / "20250601T130000-aaaaaaa")
    targets.path.mkdir()
    manifest.begin(targets, "targets", ["python", "-m", "benchmarks.studies.targets"], {})
    targets.write_table(record.QUALITY, __import__("pandas").DataFrame({"task": ["x"]}))
    assert manifest.legacy_kinds(targets) == ["quality"]
    assert targets.kinds() == ["targets"] and not data.reportable(targets)


def test_a_folder_without_run_json_is_read_from_its_files_and_keeps_its_kinds_when_added_to(tmp_path):
    from reports import data

    old = record.Run(tmp_path / "20240101T000000-aaaaaaa")
    old.path.mkdir()
    bench_rows(old)
    old.write_json(record.BENCH_SETTINGS, {"suite": "quick", "cases": 1, "state": record.COMPLETE, "shard": "1/2"})
    assert old.kinds() == ["bench"] and data.kinds_of(old) == ["bench"] and old.partial() is None
    assert old.settings()["shard"] == "1/2" and data.shard_of(old)[1] == "1/2"
    assert data.load(old).benchmarks["model"].tolist() == ["kan"]
    manifest.begin(old, "profile", ["python", "-m", "profiles", "--run", str(old.path)], {"steps": 1})
    assert doc(old)["kind"] is None and old.kinds() == ["bench", "profile"]
    old.mark(record.INTERRUPTED)  # the adding command's state: the folder's own is still bench.json's
    assert doc(old)["added"][-1]["state"] == record.INTERRUPTED and old.partial() is None


def test_settings_learnt_while_running_go_to_the_command_running(tmp_path):
    run = record.Run(tmp_path / "run")
    run.path.mkdir()
    manifest.begin(run, "bench", ["python", "-m", "benchmarks"], {"suite": "quick"})
    run.add_settings(ladder={"climbs": []})
    assert manifest.settings(run) == {"suite": "quick", "ladder": {"climbs": []}}
    manifest.begin(run, "profile", ["python", "-m", "profiles", "--run", "run"], {"steps": 5})  # added to it
    run.add_settings(pinned=[0])
    assert manifest.settings(run) == {"suite": "quick", "ladder": {"climbs": []}}  # the maker's, untouched
    assert doc(run)["added"][-1]["settings"] == {"steps": 5, "pinned": [0]}
