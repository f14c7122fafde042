"""`python -m benchmarks.studies.targets`: its rows, its ratio arithmetic, missing peers, bad input.

The runs here use tiny widths and run ``torch.compile``'d code eagerly (Dynamo off): they
check the script, not the speed of the models, in seconds.
"""

from __future__ import annotations

import argparse
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
                ("kan-fast", "train"), ("mlp-param", "train"),
                ("kan-fast", "saved for backward"), ("kan", "saved for backward")}
    assert set(zip(rows.model, rows.phase)) == expected
    assert (rows.grid_size == 5).all() and (rows.widths == "6x5x3").all() and (rows.batch == 16).all()
    counted = rows.phase == "saved for backward"  # counted bytes, not timed: no math ran for them
    assert (rows[~counted].math == "fp32").all() and rows[counted].math.isna().all()

    timed = rows[(rows.status == "ok") & (rows.phase != "saved for backward")]
    assert {"kan-fast", "kan", "dense floor", "mlp-param"} <= set(timed.model)
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
    v = by_target[("train: time / the parameter-matched MLP's", 5)]
    assert v.ratio == pytest.approx(_row(rows, "kan-fast", "train").median_s
                                    / _row(rows, "mlp-param", "train").median_s)
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
            sides = {_holds(v.ci_low, v.direction, v.bound), _holds(v.ci_high, v.direction, v.bound)}
            assert v.clear == ("exact" if math.isnan(v.ci_low) else "yes" if len(sides) == 1 else "no")
        printed = [line for line in out.splitlines() if line.startswith(f"{v.target}  ") and
                   line[len(v.target):].split()[:3] == ["6x5x3", "16", str(v.grid_size)]]
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
    chosen = targets.targets_for(settings["device"], settings["widths"], settings["batch"])
    assert [dataclasses.asdict(t) for t in chosen] == [
        {**t, "shape": {**t["shape"], "widths": tuple(t["shape"]["widths"])}} for t in settings["targets"]]
    rows, verdicts = targets.tables(measured, chosen, tuple(settings["grids"]))
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
    measure = targets.measure_point

    def interrupted_at_grid_50(shape, grid_size, *args):
        if grid_size == 50:
            raise KeyboardInterrupt
        return measure(shape, grid_size, *args)

    monkeypatch.setattr(targets, "measure_point", interrupted_at_grid_50)
    assert targets.main(TINY + ["--grids", "5,50"]) == 130
    _, rows, _ = _run_tables(results)
    assert set(rows.grid_size) == {5} and (rows.model == "kan-fast").sum() == 4
    assert "interrupted: kept the 10 finished rows" in capsys.readouterr().out
    (run,) = record.runs(results)
    said = run.read_json("run.json")  # the frame's manifest: what ran, with what, and how it ended
    assert (said["kind"], said["state"], said["exit_status"]) == ("targets", "interrupted", 130)
    assert said["settings"]["grids"] == [5, 50] and said["command"][-2:] == ["--grids", "5,50"]


def _rows(shape=targets.Shape((6, 5, 3), 16), device="cpu", **medians):
    """Hand-made measurements at ``shape``: ``name=(model, phase, grid, value)`` with ten equal samples
    (or the saved bytes), or a status string."""
    from benchmarks.core.measurement import Measurement

    out = []
    for key, (model, phase, grid, value) in medians.items():
        case = targets.case_of(model, phase, shape, grid, device)
        m = Measurement(case, name=targets.name_of(phase, case), threads=1, clock="wall")
        if model == targets.DENSE_FLOOR:
            m = dataclasses.replace(m, facts={"stands_for": list(shape.widths)})
        if isinstance(value, str):
            m = dataclasses.replace(m, status=value, reason=f"{model} {value}")
        elif phase == targets.SAVED:
            m = dataclasses.replace(m, facts={"saved_bytes": value})
        else:
            m = dataclasses.replace(m, samples=(value,) * 10, rounds=tuple(range(10)), disturbed=(False,) * 10)
        out.append(m)
    return out


TINY_CPU = targets.targets_for("cpu", (6, 5, 3), 16)


def test_verdicts_from_hand_made_numbers():
    fb, fw, saved, train = targets.FORWARD_BACKWARD, targets.FORWARD, targets.SAVED, targets.TRAIN
    rows = _rows(
        a=("kan-fast", fb, 5, 0.010), b=("kan", fb, 5, 0.085),
        c=("flashkan", fb, 5, 0.012), d=("inkan", fb, 5, 0.011),
        e=("kan-fast", fw, 5, 0.003), f=("dense floor", fw, 5, 0.002),
        g=("kan-fast", saved, 5, 100), h=("kan", saved, 5, 400),
        i=("kan-fast", fb, 50, 0.050), j=("flashkan", fb, 50, 0.300), k=("inkan", fb, 50, "not installed"),
        l=("kan-fast", train, 5, 0.019), m=("mlp-param", train, 5, 0.025),
    )
    got = {(t.name, t.grid_size): targets.verdict(t, rows, (5, 50)) for t in TINY_CPU}
    assert len(got) == len(TINY_CPU) == 6
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
    mlp = got[("train: time / the parameter-matched MLP's", 5)]
    assert mlp["ratio"] == pytest.approx(0.76) and mlp["verdict"] == "PASS"
    assert (mlp["widths"], mlp["batch"]) == ("6x5x3", 16)

    assert {k: v["clear"] for k, v in got.items()} == {
        ("fwd+bwd: x faster than the reference", 5): "yes", ("fwd+bwd: x faster than the faster peer", 5): "yes",
        ("forward: time / dense floor's", 5): "yes", ("saved bytes / the reference's", 5): "exact",
        ("fwd+bwd: x faster than the faster peer", 50): "", ("train: time / the parameter-matched MLP's", 5): "yes"}

    slower = _rows(a=("kan-fast", fb, 5, 0.020), b=("kan", fb, 5, 0.085))
    v = targets.verdict(TINY_CPU[0], slower, (5,))
    assert v["ratio"] == pytest.approx(4.25) and v["verdict"] == "MISS"
    broken = _rows(a=("kan-fast", fb, 5, "error"), b=("kan", fb, 5, 0.085))
    v = targets.verdict(TINY_CPU[0], broken, (5,))
    assert v["verdict"] == "not measured" and v["note"] == "kan-fast error: kan-fast error"


@pytest.mark.parametrize("reference_samples, verdict, clear", [
    ((0.060, 0.070, 0.080, 0.090, 0.100), "PASS", "no"),  # ratios 6 to 10 about a median of 8: the bound 8 inside
    ((0.066, 0.072, 0.078, 0.084, 0.090), "MISS", "no"),  # median 7.8, the interval reaching past 8
    ((0.110, 0.115, 0.120, 0.125, 0.130), "PASS", "yes"),  # 11 to 13: wholly above 8
    ((0.040, 0.042, 0.044, 0.046, 0.048), "MISS", "yes"),  # 4 to 4.8: wholly below
])
def test_a_verdict_whose_interval_holds_the_bound_says_it_is_not_clear(reference_samples, verdict, clear):
    target = TINY_CPU[0]  # the reference / kan-fast >= 8, forward+backward, grid 5
    assert (target.name, target.bound) == ("fwd+bwd: x faster than the reference", 8)
    fast, reference = _rows(a=("kan-fast", targets.FORWARD_BACKWARD, 5, 0.010),
                            b=("kan", targets.FORWARD_BACKWARD, 5, 0.0))
    samples = reference_samples * 2  # ten samples, the spread each given twice
    reference = dataclasses.replace(reference, samples=samples, rounds=tuple(range(10)), disturbed=(False,) * 10)
    v = targets.verdict(target, [fast, reference], (5,))
    assert (v["verdict"], v["clear"]) == (verdict, clear)
    assert v["ci_low"] <= v["ratio"] <= v["ci_high"]
    assert (v["ci_low"] < 8 < v["ci_high"]) == (clear == "no")  # the rule, from the interval itself
    assert ("not clear: the 95% interval holds 8" in v["note"]) == (clear == "no")
    printed = targets.format_verdicts([v])
    assert verdict in printed and ("not clear" in printed) == (clear == "no")


def test_cuda_verdicts_take_each_targets_own_shape():
    """The same models measured at two batches (and a dense floor standing for each) are never mixed:
    each target reads the rows of its own widths, batch and grid."""
    fb, fw, saved = targets.FORWARD_BACKWARD, targets.FORWARD, targets.SAVED
    small, busy = targets.Shape((784, 64, 10), 256), targets.Shape((784, 64, 10), 4096)
    large = targets.Shape((1024, 1024, 1024), 8192)
    rows = (_rows(small, "cuda", a=("kan-fast", fb, 5, 0.005), b=("inkan", fb, 5, 0.002),
                  c=("flashkan", fb, 5, 0.003), d=("kan-fast", fw, 5, 0.004), e=("dense floor", fw, 5, 0.0001))
            + _rows(busy, "cuda", a=("kan-fast", fb, 5, 0.001), b=("inkan", fb, 5, 0.003),
                    c=("flashkan", fb, 5, 0.0025), d=("kan-fast", fw, 5, 0.0003), e=("dense floor", fw, 5, 0.0002),
                    f=("kan-fast", saved, 5, 100), g=("kan", saved, 5, 250))
            + _rows(large, "cuda", a=("kan-fast", fb, 20, 0.050), b=("mlp-param", fb, 20, 0.060)))
    got = {(t.name, str(t.shape), t.grid_size): targets.verdict(t, rows, (5, 20, 50)) for t in targets.TARGETS["cuda"]}
    peer = "fwd+bwd: x faster than the faster peer"
    v = got[(peer, "784x64x10 b256", 5)]
    assert v["ratio"] == pytest.approx(0.4) and v["verdict"] == "MISS" and v["note"] == "the faster peer: inkan"
    v = got[(peer, "784x64x10 b4096", 5)]
    assert v["ratio"] == pytest.approx(2.5) and v["verdict"] == "PASS" and v["note"] == "the faster peer: flashkan"
    assert (v["widths"], v["batch"]) == ("784x64x10", 4096)
    v = got[("forward: time / dense floor's", "784x64x10 b4096", 5)]
    assert v["ratio"] == pytest.approx(1.5) and v["verdict"] == "PASS"  # not the b256 floor's 40
    v = got[("saved bytes / the reference's", "784x64x10 b4096", 5)]
    assert v["ratio"] == pytest.approx(0.4) and v["verdict"] == "MISS"
    mlp = "fwd+bwd: x faster than the parameter-matched MLP"
    v = got[(mlp, "1024x1024x1024 b8192", 20)]
    assert v["ratio"] == pytest.approx(1.2) and v["verdict"] == "PASS"
    v = got[(mlp, "1024x1024x1024 b8192", 50)]
    assert v["verdict"] == "not measured" and v["note"] == "kan-fast not measured; mlp-param not measured"
    for shape in ("2x5x1 b1024", "256x256x256x256 b4096"):
        assert got[(peer, shape, 5)]["verdict"] == "not measured"


def test_each_device_measures_the_shapes_and_grids_its_targets_name():
    cuda = targets.settings(argparse.Namespace(device="cuda", threads=1, widths=None, batch=None, grids=None,
                                               quick=False, repeats=15, backend="auto"))  # no parsing: no GPU needed
    assert cuda.grids == (5, 20, 50)
    assert [(str(shape), grid) for shape, grid in targets.points(cuda.targets, cuda.grids)] == [
        ("2x5x1 b1024", 5), ("784x64x10 b256", 5), ("784x64x10 b4096", 5), ("784x64x10 b4096", 50),
        ("256x256x256x256 b4096", 5), ("1024x1024x1024 b8192", 5), ("1024x1024x1024 b8192", 20),
        ("1024x1024x1024 b8192", 50)]
    plan = targets.models_at(cuda.targets, targets.Shape((1024, 1024, 1024), 8192), 20)
    assert plan == {targets.FORWARD_BACKWARD: ["kan-fast", *targets.PEERS, "mlp-param"], targets.FORWARD: [],
                    targets.TRAIN: [], targets.SAVED: []}
    cpu = targets.settings(targets.parser().parse_args(["--grids", "50", "--batch", "64", "--threads", "1"]))
    assert cpu.grids == (50,) and {t.shape for t in cpu.targets} == {targets.Shape((784, 64, 10), 64)}
    assert targets.points(cpu.targets, cpu.grids) == [(targets.Shape((784, 64, 10), 64), 50)]


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
        (["--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
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


def test_kan_fast_is_built_with_the_backend_asked_for(results, monkeypatch, no_peers):
    built = []
    build = targets.build_model

    def recording(name, *args):
        built.append((name, args[-1]))
        return build(name, *args)

    monkeypatch.setattr(targets, "build_model", recording)
    assert targets.main(TINY + ["--grids", "5", "--backend", "torch"]) == 0
    assert ("kan-fast", "torch") in built
    run, rows, _ = _run_tables(results)
    assert run.settings()["backend"] == "torch" and (rows[rows.model == "kan-fast"].status == "ok").all()
