"""The Measurement value: figures derived from its samples (checked by hand), its JSON round trip,
the rows earlier harnesses wrote, pytest-benchmark's JSON exported from it, and the bench run that
keeps every sample once and runs without pytest."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.core import record
from benchmarks.core.case import Case
from benchmarks.core.measurement import VERSION, Measurement, Ratio, samples_by_name
from benchmarks.suite import export

ROOT = Path(__file__).resolve().parents[1]
KAN = Case("kan", "forward", "cpu", "float32", (2, 5, 1), 64, 5)
MLP = Case("mlp", "forward", "cpu", "float32", (2, 5, 1), 64, None)


def kan_measurement(clock: str = "wall", **more) -> Measurement:
    # round 3 was disturbed (and is 10 s): on the wall clock it is left out, 3 of 4 rounds still enough
    fields = dict(name=f"test_case[{KAN.id}]", threads=1, clock=clock, samples=(3.0, 1.0, 2.0, 10.0),
                  rounds=(0, 1, 2, 3), disturbed=(False, False, False, True), min_rounds=2, first_call_s=7.0,
                  ratios={"x_mlp": Ratio(4.0, 3.9, 4.1, 3), "x_mlp_param": Ratio(2.0, 1.6, 2.4, 3)},
                  facts={"family": "kan", "machine": "m", "flops": 1000, "param_bytes": 600, "peak_bytes": None})
    return Measurement(KAN, **{**fields, **more})


def test_figures_are_derived_from_the_samples_by_hand():
    m = kan_measurement()
    assert m.used_rounds() == [0, 1, 2] and list(m.used) == [3.0, 1.0, 2.0]
    assert m.median_s == 2.0 and m.iqr_s == pytest.approx(2.5 - 1.5)  # quartiles of 1, 2, 3: 1.5 and 2.5
    row = m.row()
    assert (row["mean_s"], row["min_s"], row["max_s"]) == (2.0, 1.0, 3.0)
    assert row["rounds"] == 4 and row["used_rounds"] == 3 and row["disturbed"] == 1
    assert row["x_mlp"] == 4.0 and (row["x_mlp_param_low"], row["x_mlp_param_high"]) == (1.6, 2.4)
    # the interval of the ratio to mlp-param reaches 25% below it (2 / 1.6), past the 5% asked:
    # imprecise, and said of which ratio (the one to mlp reaches 4 / 3.9, 2.6%: clear)
    assert row["imprecise"] == "interval to mlp-param ±25%" and row["stable"] == "unstable"
    assert row["interference"] is None  # the one disturbed sample was left out
    # the CPU clock did not count the time the OS took: every sample counts
    cpu = kan_measurement("cpu")
    assert cpu.used_rounds() == [0, 1, 2, 3] and cpu.median_s == 2.5


def test_too_many_disturbed_samples_are_kept_and_said():
    m = kan_measurement(disturbed=(True, True, True, False))  # one clean round of 4: under half, all used
    assert m.used_rounds() == [0, 1, 2, 3] and m.median_s == 2.5
    assert m.row()["interference"] == "3 of 4 samples disturbed"


def test_the_baseline_is_1_to_itself_and_a_failure_has_no_figures():
    mlp = Measurement(MLP, name="mlp", clock="wall", samples=(1.0, 1.0), rounds=(0, 1), disturbed=(False, False))
    assert (mlp.row()["x_mlp"], mlp.row()["x_mlp_low"], mlp.row()["x_mlp_high"]) == (1.0, 1.0, 1.0)
    assert "x_mlp_param" not in mlp.row()
    bad = Measurement(KAN, status="nonfinite", reason="NaN in the forward output")
    assert bad.row()["status"] == "nonfinite" and "median_s" not in bad.row() and math.isnan(bad.median_s)


def test_samples_rounds_and_flags_go_in_threes_and_facts_are_known():
    with pytest.raises(ValueError, match="go in threes"):
        Measurement(KAN, samples=(1.0, 2.0), rounds=(0,), disturbed=(False, False))
    with pytest.raises(ValueError, match="unknown measurement facts"):
        Measurement(KAN, facts={"colour": "red"})


def test_json_round_trip_through_a_file(tmp_path):
    run = record.Run(tmp_path)
    measurements = [kan_measurement(), Measurement(MLP, name="skip", status="skipped", reason="not here", threads=2)]
    for m in measurements:
        run.append_jsonl(record.MEASUREMENTS, m.to_json())
    docs = run.read_jsonl(record.MEASUREMENTS)
    assert [d["version"] for d in docs] == [VERSION, VERSION]
    assert "median_s" not in docs[0]  # the raw measurement only: figures are derived
    assert run.measurements() == measurements
    assert run.samples() == {f"test_case[{KAN.id}]": [3.0, 1.0, 2.0, 10.0]}


def test_a_newer_version_is_refused_in_one_line():
    doc = {**kan_measurement().to_json(), "version": VERSION + 1}
    with pytest.raises(ValueError, match="newer than this harness reads"):
        Measurement.from_json(doc)


def test_rows_of_earlier_harnesses_load_as_recorded():
    """A row as python -m benchmarks appended it before measurements had versions: flat, with its
    figures and raw samples; its disturbed samples unknown, so its figures stay as written."""
    row = {"benchmark": f"test_case[{KAN.id}]", **KAN.record(), "family": "kan", "status": "ok",
           "median_s": 1.5, "iqr_s": 0.5, "mean_s": 1.6, "min_s": 1.0, "max_s": 3.0, "rounds": 3, "used_rounds": 2,
           "samples": [1.0, 2.0, 3.0], "disturbed": 1, "x_mlp": 4.0, "x_mlp_low": 3.5, "x_mlp_high": 4.5,
           "stable": "stable", "clock": "wall", "threads": 2, "machine": "m", "flops": 1000}
    m = Measurement.from_json(json.loads(json.dumps(row)))
    assert m.case == KAN and m.name == row["benchmark"] and m.samples == (1.0, 2.0, 3.0)
    assert m.row() == row and m.to_json() == row  # rendered, and written back, as recorded
    assert samples_by_name([m]) == {row["benchmark"]: [1.0, 2.0, 3.0]}
    table = record.bench_table([m])
    assert table.loc[0, "median_s"] == 1.5 and table.loc[0, "x_mlp"] == 4.0
    # the fewest fields a hand-made or cut row has: no case to name, still a row
    thin = Measurement.from_json({"benchmark": "a", "model": "kan", "phase": "forward", "device": "cpu",
                                  "status": "ok", "median_s": 0.01})
    assert thin.case is None and record.bench_table([thin]).loc[0, "median_s"] == 0.01


def _export(tmp_path: Path, name: str, scale: float) -> Path:
    run = record.Run(tmp_path / name)
    run.path.mkdir()
    run.write_json("environment.json", {"machine": "m", "threads": 1, "cpu": "a CPU",
                                        "commit": {"id": "abc", "dirty": False}})
    mlp = Measurement(MLP, name=f"test_case[{MLP.id}]", clock="cpu", samples=(0.5 * scale, 0.25 * scale, 1.0),
                      rounds=(0, 1, 2), disturbed=(False,) * 3)
    assert export.write(run, [kan_measurement(), mlp, Measurement(KAN, name="failed", status="error", reason="x")])
    return run.benchmark_json


def test_the_exported_json_is_pytest_benchmarks_own(tmp_path):
    old, new = _export(tmp_path, "old", 1.0), _export(tmp_path, "new", 2.0)
    doc = json.loads(old.read_text())
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    assert set(by_name) == {f"test_case[{KAN.id}]", f"test_case[{MLP.id}]"}  # the failed one has no timing
    mlp = by_name[f"test_case[{MLP.id}]"]["stats"]
    assert (mlp["min"], mlp["median"], mlp["max"], mlp["rounds"]) == (0.25, 0.5, 1.0, 3)
    assert "data" not in mlp  # the samples are kept once, in measurements.jsonl
    assert by_name[f"test_case[{MLP.id}]"]["options"]["timer"] == "CpuTimer(cpu), in turns"
    assert doc["machine_info"]["cpu_model"] == "a CPU" and doc["commit_info"]["dirty"] is False
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(old), str(new)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr
    assert MLP.id in compare.stdout and KAN.id in compare.stdout


def holds(path: Path, samples: list[float]) -> bool:
    """Whether the file at ``path`` holds the list ``samples``: as a list anywhere in a JSON document
    (or a JSON line), or written out as one in a table."""
    def within(obj) -> bool:
        if isinstance(obj, list):
            return obj == samples or any(within(v) for v in obj)
        return isinstance(obj, dict) and any(within(v) for v in obj.values())

    text = path.read_text()
    if path.suffix in (".json", ".jsonl"):
        return any(within(json.loads(line)) for line in ([text] if path.suffix == ".json" else text.splitlines()))
    return json.dumps(samples) in text


BENCH_TWICE = """
import sys
from benchmarks.suite.cli import main
codes = [main(["--suite", "smoke", "--model", "mlp", "--device", "cpu", "--threads", "1", "--label", label])
         for label in ("a", "b")]
print("codes", codes, "pytest imported:", any(m == "pytest" or m.startswith("_pytest") for m in sys.modules))
"""


def test_the_bench_runs_without_pytest_and_keeps_each_sample_once(tmp_path):
    env = {**os.environ, "KAN_RESULTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", BENCH_TWICE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert "codes [0, 0] pytest imported: False" in out.stdout, out.stdout + out.stderr
    first, second = record.runs(tmp_path)
    measurements = first.measurements()
    assert len(measurements) == 3 and all(len(m.samples) == 2 for m in measurements)
    # each measurement's samples are written once: in measurements.jsonl, in no other file of the run
    for m in measurements:
        holders = [p.name for p in sorted(first.path.iterdir()) if holds(p, list(m.samples))]
        assert holders == [record.MEASUREMENTS], (m.name, holders)
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(first.benchmark_json),
                              str(second.benchmark_json)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr
    assert "test_case[mlp-train-cpu-float32-2x5x1-b64]" in compare.stdout


def test_k_keeps_the_cases_whose_id_holds_the_text():
    from benchmarks.core.case import device_unavailable
    from benchmarks.suite.runner import wanted

    assert wanted(KAN, ["forward"]) and wanted(KAN, ["backward", "g5"]) and not wanted(KAN, ["train"])
    assert wanted(KAN) and wanted(Case("kan", device="cuda")) == (device_unavailable("cuda") is None)
