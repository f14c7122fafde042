"""`python -m benchmarks.studies.targets`: its rows, its ratio arithmetic, missing peers, bad input.

The runs here use tiny widths and run ``torch.compile``'d code eagerly (Dynamo off): they
check the script, not the speed of the models, in seconds.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from benchmarks.studies import targets
from benchmarks.core import record

TINY = ["--quick", "--widths", "6,5,3", "--batch", "16", "--repeats", "10"]


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    with torch._dynamo.config.patch(disable=True):
        yield tmp_path / "results"


@pytest.fixture
def no_peers(monkeypatch):
    for name, (module, _) in targets.PEERS.items():
        monkeypatch.setitem(sys.modules, module, None)  # `import` of it now fails as if absent


def _run_tables(results):
    run = record.latest(results, having="fast_targets_verdicts.csv")
    rows = run.read_table("fast_targets")
    verdicts = run.read_table("fast_targets_verdicts")
    return run, rows, verdicts


def _row(rows, model, phase, grid=5):
    found = rows[(rows.model == model) & (rows.phase == phase) & (rows.grid_size == grid)]
    assert len(found) == 1, (model, phase, grid)
    return found.iloc[0]


def _holds(ratio, direction, bound):
    return ratio >= bound if direction == ">=" else ratio <= bound


def test_tiny_run_rows_and_ratios(results, capsys):
    assert targets.main(TINY + ["--grids", "5"]) == 0
    out = capsys.readouterr().out
    run, rows, verdicts = _run_tables(results)
    assert f"run folder: {run.path}" in out
    assert run.has("environment.json") and run.read_json("fast_targets.json")["repeats"] == 10

    expected = {("kan-fast", "forward+backward"), ("kan", "forward+backward"), ("flashkan", "forward+backward"),
                ("inkan", "forward+backward"), ("kan-fast", "forward"), ("dense floor", "forward"),
                ("kan-fast", "saved for backward"), ("kan", "saved for backward")}
    assert set(zip(rows.model, rows.phase)) == expected
    assert (rows.grid_size == 5).all() and (rows.widths == "6x5x3").all() and (rows.batch == 16).all()

    timed = rows[(rows.status == "ok") & (rows.phase != "saved for backward")]
    assert {"kan-fast", "kan", "dense floor"} <= set(timed.model)
    # the samples are in measurements.jsonl, one line per row, and nowhere else
    lines = {(line["case"]["model"], line["name"].split("[")[0]): line
             for line in run.read_jsonl("measurements.jsonl")}
    assert len(lines) == len(rows) and "samples_s" not in rows.columns
    for _, r in timed.iterrows():
        line = lines[(r.model, r.phase)]
        samples, disturbed = line["samples"], line["disturbed"]
        assert len(samples) == r.rounds == 10 and all(s > 0 for s in samples)
        # the median and IQR of the undisturbed samples (all of them where fewer than 10 are left)
        used = [s for s, bad in zip(samples, disturbed) if not bad]
        used = used if len(used) >= 10 else samples
        q1, median, q3 = np.percentile(used, [25, 50, 75])
        assert r.median_s == pytest.approx(median) and r.iqr_s == pytest.approx(q3 - q1)
        assert r.first_call_s > 0
        assert f"{r.median_s * 1e3:.2f}" in out

    # The ratios from the rows, by hand: other / kan-fast where "x faster", kan-fast / other where "at most".
    fast = _row(rows, "kan-fast", "forward+backward")
    by_target = {(v.target, v.grid_size): v for _, v in verdicts.iterrows()}
    v = by_target[("fwd+bwd: x faster than the reference", 5)]
    assert v.ratio == pytest.approx(_row(rows, "kan", "forward+backward").median_s / fast.median_s)
    assert v.ci_low <= v.ratio <= v.ci_high
    v = by_target[("forward: time / dense floor's", 5)]
    assert v.ratio == pytest.approx(_row(rows, "kan-fast", "forward").median_s
                                    / _row(rows, "dense floor", "forward").median_s)
    v = by_target[("saved bytes / the reference's", 5)]
    assert v.ratio == pytest.approx(_row(rows, "kan-fast", "saved for backward").saved_bytes
                                    / _row(rows, "kan", "saved for backward").saved_bytes)
    peers = rows[rows.model.isin(list(targets.PEERS)) & (rows.phase == "forward+backward")]
    v = by_target[("fwd+bwd: x faster than the faster peer", 5)]
    if (peers.status == "ok").all():
        assert v.ratio == pytest.approx(peers.median_s.min() / fast.median_s)
        assert v.note == f"the faster peer: {peers.loc[peers.median_s.idxmin(), 'model']}"
    else:
        assert v.verdict == "not measured"

    for _, v in verdicts.iterrows():
        if v.grid_size == 50:
            assert v.verdict == "not measured" and v.note == "grid 50 not in --grids"
        elif not math.isnan(v.ratio):
            assert v.verdict == ("PASS" if _holds(v.ratio, v.direction, v.bound) else "MISS")
        printed = [line for line in out.splitlines() if line.startswith(f"{v.target}  ") and
                   line[len(v.target):].split()[0] == str(v.grid_size)]
        assert len(printed) == 1 and v.verdict in printed[0]


def test_missing_peers_are_reported_not_installed(results, capsys, no_peers):
    assert targets.main(TINY + ["--grids", "5"]) == 0
    out = capsys.readouterr().out
    _, rows, verdicts = _run_tables(results)
    for name, (_, spec) in targets.PEERS.items():
        peer = _row(rows, name, "forward+backward")
        assert peer.status == "not installed" and math.isnan(peer.median_s)
        assert peer.reason == f"not installed (pip install --no-deps {spec})"
        assert f"{name:<11}  forward+backward" in out and f"not installed: {peer.reason}" in out
    assert "pip install --no-deps flashkan==0.2.0" in out
    assert _row(rows, "kan-fast", "forward+backward").status == "ok"
    on_peers = verdicts[verdicts.other == "the faster peer"]
    assert (on_peers.verdict == "not measured").all() and on_peers.ratio.isna().all()
    assert "flashkan not installed" in on_peers.iloc[0].note
    assert (verdicts[verdicts.other != "the faster peer"].verdict.isin(["PASS", "MISS"])).all()


def test_the_tables_rebuilt_from_the_measurements_read_back_are_the_ones_written(results, tmp_path, no_peers):
    from benchmarks.core.measurement import Measurement

    assert targets.main(TINY + ["--grids", "5"]) == 0
    run, _, _ = _run_tables(results)
    measured = [Measurement.from_json(line) for line in run.read_jsonl(record.MEASUREMENTS)]
    settings = run.settings()
    rows, verdicts = targets.tables(measured, tuple(settings["widths"]), tuple(settings["grids"]))
    again = record.Run(tmp_path / "again")
    again.path.mkdir()
    for name, table in ((record.TARGETS, rows), (record.TARGET_VERDICTS, verdicts)):
        again.write_rows(name, table)
        assert again.file(f"{name}.csv").read_text() == run.file(f"{name}.csv").read_text()
    # each sample is written once in the folder, in measurements.jsonl
    fast = next(m for m in measured if m.case.model == "kan-fast" and m.samples)
    needle = repr(fast.samples[0])
    assert [p.name for p in run.path.iterdir() if needle in p.read_text()] == [record.MEASUREMENTS]


def test_ctrl_c_keeps_the_finished_rows(results, capsys, no_peers, monkeypatch):
    measure = targets.measure_grid

    def interrupted_at_grid_7(grid_size, *args):
        if grid_size == 7:
            raise KeyboardInterrupt
        return measure(grid_size, *args)

    monkeypatch.setattr(targets, "measure_grid", interrupted_at_grid_7)
    assert targets.main(TINY + ["--grids", "5,7"]) == 130
    _, rows, _ = _run_tables(results)
    assert set(rows.grid_size) == {5} and (rows.model == "kan-fast").sum() == 3
    assert "interrupted: kept the 8 finished rows" in capsys.readouterr().out
    (run,) = record.runs(results)
    said = run.read_json("run.json")  # the frame's manifest: what ran, with what, and how it ended
    assert (said["kind"], said["state"], said["exit_status"]) == ("targets", "interrupted", 130)
    assert said["settings"]["grids"] == [5, 7] and said["command"][-2:] == ["--grids", "5,7"]


def _rows(**medians):
    """Hand-made measurements: ``name=(model, phase, grid, value)`` with ten equal samples (or the saved
    bytes), or a status string."""
    from benchmarks.core.measurement import Measurement

    s = targets.Settings((6, 5, 3), 16, (5, 50), 10, 1, "cpu", 1)
    out = []
    for key, (model, phase, grid, value) in medians.items():
        case = targets.case_of(model, phase, s, grid)
        m = Measurement(case, name=targets.name_of(phase, case), threads=1, clock="wall")
        if isinstance(value, str):
            m = dataclasses.replace(m, status=value, reason=f"{model} {value}")
        elif phase == targets.SAVED:
            m = dataclasses.replace(m, facts={"saved_bytes": value})
        else:
            m = dataclasses.replace(m, samples=(value,) * 10, rounds=tuple(range(10)), disturbed=(False,) * 10)
        out.append(m)
    return out


def test_verdicts_from_hand_made_numbers():
    fb, fw, saved = targets.FORWARD_BACKWARD, targets.FORWARD, targets.SAVED
    rows = _rows(
        a=("kan-fast", fb, 5, 0.010), b=("kan", fb, 5, 0.085),
        c=("flashkan", fb, 5, 0.012), d=("inkan", fb, 5, 0.011),
        e=("kan-fast", fw, 5, 0.003), f=("dense floor", fw, 5, 0.002),
        g=("kan-fast", saved, 5, 100), h=("kan", saved, 5, 400),
        i=("kan-fast", fb, 50, 0.050), j=("flashkan", fb, 50, 0.300), k=("inkan", fb, 50, "not installed"),
    )
    got = {(t.name, t.grid_size): targets.verdict(t, rows, (5, 50)) for t in targets.TARGETS}
    reference = got[("fwd+bwd: x faster than the reference", 5)]
    assert reference["ratio"] == pytest.approx(8.5) and reference["verdict"] == "PASS"
    assert reference["ci_low"] == pytest.approx(8.5) and reference["ci_high"] == pytest.approx(8.5)
    peer = got[("fwd+bwd: x faster than the faster peer", 5)]
    assert peer["ratio"] == pytest.approx(1.1) and peer["verdict"] == "MISS"
    assert peer["note"] == "the faster peer: inkan"
    floor = got[("forward: time / dense floor's", 5)]
    assert floor["ratio"] == pytest.approx(1.5) and floor["verdict"] == "PASS"  # "at most 1.5": 1.5 passes
    memory = got[("saved bytes / the reference's", 5)]
    assert memory["ratio"] == pytest.approx(0.25) and memory["verdict"] == "PASS"
    assert math.isnan(memory["ci_low"])
    large = got[("fwd+bwd: x faster than the faster peer", 50)]
    assert large["verdict"] == "not measured" and math.isnan(large["ratio"])
    assert "inkan not installed" in large["note"] and "x6.00 against flashkan alone" in large["note"]

    slower = _rows(a=("kan-fast", fb, 5, 0.020), b=("kan", fb, 5, 0.085))
    v = targets.verdict(targets.TARGETS[0], slower, (5,))
    assert v["ratio"] == pytest.approx(4.25) and v["verdict"] == "MISS"
    broken = _rows(a=("kan-fast", fb, 5, "error"), b=("kan", fb, 5, 0.085))
    v = targets.verdict(targets.TARGETS[0], broken, (5,))
    assert v["verdict"] == "not measured" and v["note"] == "kan-fast error: kan-fast error"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "9"], "--repeats: expected a whole number of at least 10"),
        (["--device", "tpu"], "unknown device 'tpu'; valid devices: cpu, cuda"),
        (["--device", "mps"], "unknown device 'mps'; valid devices: cpu, cuda"),
        (["--grids", "5,x"], "--grids must be positive integers separated by commas, got '5,x'"),
        (["--grids", "0"], "--grids must be positive integers"),
        (["--batch", "0"], "--batch: expected a positive integer"),
        (["--widths", "6,5,3"], "--widths needs --quick"),
        (["--quick", "--widths", "6"], "widths must be two or more positive integers"),
        (["--threads", "0"], "threads must be a positive integer"),
        (["--repeats", "many"], "argument --repeats: invalid int value: 'many'"),
        (["--widht", "6,5"], "unrecognized arguments: --widht"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, results, capsys):
    assert targets.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not results.exists()  # nothing ran, no run folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_but_absent(results, capsys):
    assert targets.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda' was asked for but cuda is not available" in err[0]
