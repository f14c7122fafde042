"""The run record: folders never overwritten, the tidy table's schema survives a round trip."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks.core import record
from benchmarks.core.record import bench_table as tidy


def _rows():
    base = {"model": "kan", "family": "kan", "phase": "forward", "device": "cpu", "dtype": "float32",
            "widths": "2x5x1", "batch": 64, "grid_size": 5, "machine": "m", "threads": 2, "parameters": 150,
            "param_bytes": 600, "saved_bytes": 100568, "flops": 119410, "first_call_s": 0.002}
    return [
        {**base, "benchmark": "test_case[a]", "status": "ok", "median_s": 0.001, "iqr_s": 0.0001,
         "mean_s": 0.0011, "min_s": 0.0009, "max_s": 0.002, "rounds": 20, "samples": [0.001] * 20},
        {**base, "benchmark": "test_case[b]", "model": "mlp", "family": "mlp", "grid_size": None,
         "status": "ok", "median_s": 0.0005, "iqr_s": 0.0, "mean_s": 0.0005, "min_s": 0.0005,
         "max_s": 0.0005, "rounds": 20},
        {**base, "benchmark": "test_case[c]", "model": "kan-fast", "status": "skipped",
         "reason": "model 'kan-fast' is registered but kan.fast cannot be imported"},
    ]


def test_new_runs_never_share_a_folder(tmp_path):
    first = record.new_run("same", root=tmp_path)
    second = record.new_run("same", root=tmp_path)
    assert first.path != second.path
    assert first.path.is_dir() and second.path.is_dir()
    env = second.environment()
    assert env["torch"]["version"] and env["threads"] >= 1 and "dirty" in env["commit"]
    assert [r.name for r in record.runs(tmp_path)] == sorted([first.name, second.name])
    assert record.latest(tmp_path).name == max(first.name, second.name)


def test_tidy_table_round_trip_keeps_the_schema(tmp_path):
    run = record.new_run(root=tmp_path)
    for row in _rows():
        run.append_jsonl(record.MEASUREMENTS, row)
    written = tidy(run.read_jsonl(record.MEASUREMENTS))
    run.write_table("benchmarks", written)
    read = run.read_table("benchmarks")
    assert list(read.columns) == record.BENCH_COLUMNS
    assert len(read) == 3
    assert list(read["status"]) == ["ok", "ok", "skipped"]
    assert read.loc[0, "x_mlp"] == pytest.approx(2.0)
    assert read.loc[0, "batch"] == 64 and read.loc[0, "grid_size"] == 5
    assert pd.isna(read.loc[1, "grid_size"]) and pd.isna(read.loc[2, "median_s"])
    assert "kan.fast" in read.loc[2, "reason"]
    pd.testing.assert_frame_equal(
        read[["median_s", "throughput", "x_mlp"]], written[["median_s", "throughput", "x_mlp"]].astype(float)
    )
    # whole numbers are written as whole numbers, not "64.0"
    header, first = (tmp_path / run.name / "benchmarks.csv").read_text().splitlines()[:2]
    fields = dict(zip(header.split(","), first.split(",")))
    assert fields["batch"] == "64" and fields["rounds"] == "20" and fields["parameters"] == "150"


def test_measurement_lines_survive_a_cut_write(tmp_path):
    run = record.new_run(root=tmp_path)
    run.append_jsonl(record.MEASUREMENTS, {"benchmark": "a", "status": "ok"})
    with run.file(record.MEASUREMENTS).open("a") as f:
        f.write('{"benchmark": "b", "sta')  # a run killed in the middle of a line
    assert run.read_jsonl(record.MEASUREMENTS) == [{"benchmark": "a", "status": "ok"}]
    assert run.read_jsonl("absent.jsonl") == []


def test_open_run_names_the_choices(tmp_path):
    run = record.new_run(root=tmp_path)
    assert record.open_run(run.name, root=tmp_path).path == run.path
    with pytest.raises(FileNotFoundError, match="recent runs: " + run.name):
        record.open_run("nope", root=tmp_path)
    with pytest.raises(ValueError, match="not valid JSON"):
        run.file("bad.json").write_text("{")
        run.read_json("bad.json")
    assert json.loads(run.file("environment.json").read_text())["machine"]


def test_a_label_too_long_for_a_folder_name_is_blamed_on_the_label(tmp_path):
    with pytest.raises(record.RunFolderError) as raised:
        record.new_run("x" * 5000, root=tmp_path / "results")
    message = str(raised.value)
    assert "label" in message and "5000 characters" in message and "KAN_RESULTS" not in message
    assert not (tmp_path / "results").exists(), "nothing made"
    assert record.new_run("y" * record.MAX_LABEL, root=tmp_path / "results").path.name.endswith("y" * 100)
