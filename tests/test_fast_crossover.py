"""`python -m benchmarks.studies.crossover`: a tiny run, its crossover rule, bad input.

The run uses tiny widths with ``torch.compile``'d code run eagerly (Dynamo off): it
checks the script, not where the crossover of the real shapes lies.
"""

from __future__ import annotations

import math

import pytest
import torch

import kan.fast
import kan.native
from benchmarks.studies import crossover
from benchmarks.core import record
from benchmarks.core.timer import max_threads


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    with torch._dynamo.config.patch(disable=True):
        yield tmp_path / "results"


def test_tiny_run_times_both_contractions_on_each_backend(results, capsys):
    backends = ["torch"] + (["native"] if kan.native.available() else [])
    code = crossover.main(["--widths", "6,5,3", "--batch", "16", "--grids", "2,9", "--repeats", "3",
                           "--backends", ",".join(backends)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = record.latest(results, having="fast_crossover.csv").read_table("fast_crossover")
    assert sorted(rows["backend"].unique()) == sorted(backends)
    assert sorted(rows["grid_size"].unique()) == [2, 9] and set(rows["coeff"]) == {5, 12}
    assert (rows["dense_ms"] > 0).all() and (rows["gather_ms"] > 0).all()
    for backend in backends:
        assert f"{backend}: gather is faster from" in out
    assert kan.fast.GATHER_MIN_COEFF == 24 and kan.fast.NATIVE_GATHER_MIN_COEFF == 5, "the run leaves them"


def test_the_rows_rebuilt_from_the_measurements_read_back_are_the_ones_written(results, tmp_path, capsys):
    from benchmarks.core.measurement import Measurement

    assert crossover.main(["--widths", "4,3", "--batch", "8", "--grids", "2,4", "--repeats", "5",
                           "--backends", "torch"]) == 0
    run = record.latest(results, having="fast_crossover.csv")
    measured = [Measurement.from_json(line) for line in run.read_jsonl(record.MEASUREMENTS)]
    assert sorted(crossover.forced_to(m) + (m.case.grid_size,) for m in measured) == [
        ("torch", "dense", 2), ("torch", "dense", 4), ("torch", "gather", 2), ("torch", "gather", 4)]
    assert all(len(m.samples) == 5 for m in measured)
    rows = crossover.table(measured)
    again = record.Run(tmp_path / "again")
    again.path.mkdir()
    again.write_rows(record.CROSSOVER, rows)
    assert again.file("fast_crossover.csv").read_text() == run.file("fast_crossover.csv").read_text()
    needle = repr(measured[0].samples[0])  # each sample is written once in the folder
    assert [p.name for p in run.path.iterdir() if needle in p.read_text()] == [record.MEASUREMENTS]


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_forced_model_takes_the_asked_contraction_and_backend(backend):
    if backend == "native" and not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    dense, gather = (crossover.forced([3, 2], 5, contraction, backend) for contraction in ("dense", "gather"))
    x = torch.zeros(4, 3)
    for model, gathers in ((dense, False), (gather, True)):
        layer = model.layers[0]
        assert layer.uses_gather() == gathers and layer.uses_native(x) == (backend == "native")
    # the same weights (to LAPACK's rounding in the initial least-squares fit)
    pairs = zip(dense.state_dict().values(), gather.state_dict().values())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in pairs)
    assert kan.fast.GATHER_MIN_COEFF == 24 and kan.fast.NATIVE_GATHER_MIN_COEFF == 5


def row(backend, coeff, dense, gather):
    return {"backend": backend, "coeff": coeff, "dense_ms": dense, "gather_ms": gather}


def test_crossover_is_where_gather_wins_from_then_on():
    rows = [row("native", 5, 1.0, 2.0), row("native", 8, 2.0, 1.5), row("native", 11, 3.0, 2.0),
            row("torch", 5, 1.0, 2.0), row("torch", 8, 2.0, 1.0), row("torch", 11, 2.0, 3.0),
            row("torch", 15, 4.0, 3.0)]
    assert crossover.crossover(rows, "native") == 8
    assert crossover.crossover(rows, "torch") == 15  # a win followed by a loss does not count
    assert crossover.crossover([row("torch", 5, 1.0, 2.0)], "torch") is None
    assert crossover.crossover([row("torch", 5, 1.0, math.nan)], "torch") is None


@pytest.mark.parametrize("argv, message", [
    (["--grids", "0,3"], "--grids must be positive integers"),
    (["--backends", "cuda"], "unknown backend 'cuda'; valid backends: native, torch"),
    (["--widths", "6"], "widths must be two or more positive integers"),
    (["--repeats", "2"], "--repeats: expected a whole number of at least 3"),
    (["--threads", "0"], "threads must be a positive integer"),
    (["--threads", str(max_threads() + 1)], f"threads must be at most {max_threads()}"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, results, capsys):
    assert crossover.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not results.exists()
