"""`python -m benchmarks` end to end on a tiny suite, and Ctrl-C keeping what finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.core import record

ROOT = Path(__file__).resolve().parents[1]
# Python ignores Ctrl-C when started with SIGINT ignored (a background job); restore the default.
LAUNCH = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from benchmarks.suite.cli import main; sys.exit(main())")


def _bench(results: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "KAN_RESULTS": str(results), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path):
    proc = _bench(tmp_path, "--suite", "smoke", "--model", "kan,mlp,mlp-param", "--device", "cpu",
                  "--threads", "1", "--label", "e2e")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    (run,) = record.runs(tmp_path)
    assert run.name.endswith("-e2e") and f"run folder: {run.path}" in out
    assert "measurements.jsonl" in out  # the files it names include the raw samples
    assert run.settings()["devices"] == ["cpu"] and run.settings()["devices_absent"] == []  # the devices timed

    table = run.read_table("benchmarks")
    assert list(table.columns) == record.BENCH_COLUMNS
    assert len(table) == 9 and set(table["status"]) == {"ok"}
    assert set(table["rounds"]) == {2} and (table["threads"] == 1).all()
    assert (table.loc[table["model"] == "mlp", "x_mlp"] == 1.0).all()
    kan = table[table["model"] == "kan"]
    assert kan["x_mlp"].notna().all() and kan["x_mlp_param"].notna().all()
    assert (kan["gflops"] > 0).all() and (kan["saved_bytes"] > 0).all() and (kan["first_call_s"] > 0).all()

    doc = run.read_json("benchmark.json")
    assert doc["machine_info"]["torch"]["version"] and doc["machine_info"]["threads"] == 1
    assert doc["machine_info"]["cpu_model"] and "load_average" in doc["machine_info"]
    assert "dirty" in doc["commit_info"]
    assert {b["name"] for b in doc["benchmarks"]} == set(table["benchmark"])
    assert all(b["stats"]["rounds"] == 2 and "data" not in b["stats"] for b in doc["benchmarks"])
    # one thread on the CPU: the samples are the process's CPU time, and the file says so
    assert all(b["options"]["timer"] == "CpuTimer(cpu), in turns" for b in doc["benchmarks"])
    assert set(table["clock"]) == {"cpu"}
    # pytest-benchmark's figures are made of the samples taken in turns, kept in the measurements
    measured = {m.name: m for m in run.measurements()}
    assert all(b["stats"]["min"] == min(measured[b["name"]].samples) for b in doc["benchmarks"])
    assert run.environment()["threads"] == 1

    # the summary: model x phase, median time, x MLP
    assert "9 measurements: 9 ok" in out
    kan_lines = [" ".join(line.split()) for line in out.splitlines() if line.split()[:2] == ["forward", "kan"]]
    assert len(kan_lines) == 1, out
    # two rounds give a ratio but no 95% interval (stats.MIN_INTERVAL_PAIRS), so no verdict, and say why
    assert kan_lines[0].endswith("no interval from 2 rounds (it takes 6)"), kan_lines
    assert kan["x_mlp_low"].isna().all() and kan["x_mlp_high"].isna().all()

    # still a pytest-benchmark file that its own tools read
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(run.benchmark_json)],
                             capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stderr
    assert "test_case[kan-forward-cpu-float32-2x5x1-b64-g5]" in compare.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_keeps_what_finished(tmp_path, stop):
    """Ctrl-C, or SIGTERM as CI and batch systems stop jobs: the finished cases are kept and tabled."""
    proc = _bench(tmp_path, "--suite", "quick", "--model", "mlp,kan", "--device", "cpu", "--threads", "1")
    deadline = time.monotonic() + 240
    rows = []
    while time.monotonic() < deadline and proc.poll() is None:
        runs = record.runs(tmp_path)
        rows = runs[0].read_jsonl(record.MEASUREMENTS) if runs else []
        if len(rows) >= 2:
            break
        time.sleep(0.2)
    assert len(rows) >= 2, "no measurement finished in time"
    proc.send_signal(stop)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted: kept the" in out

    (run,) = record.runs(tmp_path)
    table = run.read_table("benchmarks")
    assert 2 <= len(table) < 12 and set(table["status"]) == {"ok"}
    if run.has("benchmark.json"):  # pytest-benchmark writes it on Ctrl-C; only finished cases are in it
        names = {b["name"] for b in json.loads(run.benchmark_json.read_text())["benchmarks"]}
        assert names <= set(table["benchmark"])


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's foreground job has it, even under a background test


@pytest.mark.skipif(__import__("shutil").which("nox") is None, reason="nox is not installed")
def test_ctrl_c_under_nox_keeps_the_table_and_marks_the_run_partial(tmp_path):
    """Ctrl-C as a terminal sends it, to nox's whole process group, while `nox -s bench` runs a suite
    far too long to finish first (the full suite): nox waits for the bench, which writes its table
    and summary and marks the run partial."""
    env = {**os.environ, "KAN_RESULTS": str(tmp_path), "KAN_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(["nox", "-f", str(ROOT / "noxfile.py"), "-s", "bench", "--", "--suite", "full",
                             "--model", "kan", "--device", "cpu", "--threads", "1"],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 300
        rows = []
        while time.monotonic() < deadline and proc.poll() is None and not rows:
            runs = record.runs(tmp_path)
            rows = runs[0].read_jsonl(record.MEASUREMENTS) if runs else []
            time.sleep(0.2)
        assert rows, f"no measurement finished in time (nox exit {proc.poll()})"
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out  # nox reports the interrupt
    (run,) = record.runs(tmp_path)
    table = run.read_table("benchmarks")
    assert len(table) >= 1 and set(table["status"]) == {"ok"}, out
    assert "interrupted: kept the" in out and "measurements:" in out  # the bench's own summary
    assert run.read_json("run.json")["state"] == record.INTERRUPTED
    assert run.partial().startswith("interrupted (Ctrl-C or SIGTERM) after ")
