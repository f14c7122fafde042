"""FLOP counts of the timed work, and the derived figures of the tidy table, against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.core.case import ADAM_FLOPS_PER_PARAMETER, Case, phase_flops
from benchmarks.core.record import BENCH_COLUMNS
from benchmarks.core.record import bench_table as tidy
from benchmarks.suite.summary import summary


def test_phase_flops_by_hand():
    assert phase_flops(1000, "forward", parameters=10) == 1000
    assert phase_flops(1000, "backward", parameters=10) == 2000
    assert phase_flops(1000, "forward+backward", parameters=10) == 3000
    assert phase_flops(1000, "train", parameters=10) == 3000 + 13 * 10
    assert ADAM_FLOPS_PER_PARAMETER == 3 + 4 + 3 + 3  # lerp_, mul_+addcmul_, sqrt/div/add, addcdiv_
    with pytest.raises(ValueError, match="valid phases: forward, backward, forward[+]backward, train"):
        phase_flops(1000, "inference", parameters=10)


def test_forward_flops_come_from_the_registry():
    from kan import zoo

    case = Case("kan", "train", widths=(2, 5, 1), batch=8, grid_size=5)
    assert case.forward_flops() == zoo.flops("kan", [2, 5, 1], batch=8, grid_size=5)


def test_case_names_and_fields():
    case = Case("kan", "backward", "cpu", "float32", [784, 64, 10], batch=256, grid_size=20)
    assert case.id == "kan-backward-cpu-float32-784x64x10-b256-g20"
    assert Case("mlp", grid_size=None).id == "mlp-forward-cpu-float32-2x5x1-b64"
    assert case.record() == {"model": "kan", "phase": "backward", "device": "cpu", "dtype": "float32",
                             "widths": "784x64x10", "batch": 256, "grid_size": 20}
    with pytest.raises(ValueError, match="unknown dtype 'float8'; valid dtypes: float32, bfloat16, float64"):
        Case("kan", dtype="float8")
    with pytest.raises(ValueError, match="unknown phase"):
        Case("kan", phase="predict")


def _row(model, median, batch=256, grid=5, phase="forward", family="kan", status="ok", flops=1_000_000,
         **measured):
    return {"benchmark": f"{model}-{phase}-{batch}-{grid}", "model": model, "family": family, "phase": phase,
            "device": "cpu", "dtype": "float32", "widths": "784x64x10", "batch": batch, "grid_size": grid,
            "status": status, "median_s": median, "iqr_s": median / 10, "mean_s": median, "min_s": median,
            "max_s": median, "rounds": 10, "flops": flops, "machine": "m", "threads": 2, **measured}


ROWS = [
    _row("kan", 0.004, grid=5),
    _row("kan", 0.010, grid=20),
    _row("mlp", 0.001, grid=None, family="mlp"),  # width-matched: no grid, matches every grid size
    _row("mlp-param", 0.002, grid=5, family="mlp"),
    _row("mlp-param", 0.005, grid=20, family="mlp"),
    _row("kan", 0.008, batch=512, grid=5),  # no MLP measured at this batch
    _row("kan", 0.004, phase="train", grid=5),  # nor in this phase
    _row("rbf-kan", 0.003, grid=5, status="nonfinite"),
    _row("fourier-kan", 0.002, grid=5, flops=None),  # a model without a FLOP count is still timed
]


def test_throughput_gflops_and_mlp_ratios_by_hand():
    frame = tidy(ROWS)
    assert list(frame.columns) == BENCH_COLUMNS
    kan5, kan20, mlp, mlp_p5, mlp_p20, kan512, kan_train, bad, no_flops = (frame.iloc[i] for i in range(9))
    assert kan5["throughput"] == pytest.approx(256 / 0.004)  # samples per second
    assert kan5["gflops"] == pytest.approx(1e6 / 0.004 / 1e9)
    assert kan5["x_mlp"] == pytest.approx(4.0)
    assert kan20["x_mlp"] == pytest.approx(10.0)  # the grid-less MLP serves every grid size
    assert kan5["x_mlp_param"] == pytest.approx(2.0)
    assert kan20["x_mlp_param"] == pytest.approx(2.0)  # against mlp-param at grid 20, not grid 5
    assert mlp["x_mlp"] == pytest.approx(1.0) and math.isnan(mlp["x_mlp_param"])
    assert mlp_p5["x_mlp"] == pytest.approx(2.0)
    assert math.isnan(kan512["x_mlp"]) and math.isnan(kan512["x_mlp_param"])
    assert math.isnan(kan_train["x_mlp"])
    # a non-finite measurement carries no time and nothing derived from one
    for column in ["median_s", "iqr_s", "throughput", "gflops", "x_mlp", "x_mlp_param", "rounds"]:
        assert pd.isna(bad[column]), column
    assert bad["status"] == "nonfinite"
    assert pd.isna(no_flops["gflops"]) and no_flops["throughput"] == pytest.approx(256 / 0.002)
    assert no_flops["x_mlp"] == pytest.approx(2.0)


def test_summary_shows_model_by_phase_with_the_mlp_ratio():
    text = summary(tidy(ROWS))
    assert "9 measurements: 8 ok, 1 nonfinite" in text
    assert "cpu float32 [784, 64, 10] batch 256, grid 5" in text
    line = " ".join(next(l for l in text.splitlines() if l.split()[1:2] == ["kan"] and "4 ms" in l).split())
    assert line == "forward kan 4 ms 4.00 no interval measured"  # a table made without rounds: no verdict
    assert any(l.split()[1:2] == ["rbf-kan"] and "nonfinite" in l for l in text.splitlines())


def test_summary_words_follow_the_interval_and_stability():
    rows = [
        _row("kan", 0.004, x_mlp=4.0, x_mlp_low=3.9, x_mlp_high=4.1, stable="stable"),
        _row("kan-fast", 0.001, x_mlp=0.98, x_mlp_low=0.95, x_mlp_high=1.02, stable="stable"),
        _row("fourier-kan", 0.0005, x_mlp=0.5, x_mlp_low=0.49, x_mlp_high=0.51, stable="stable"),
        _row("rbf-kan", 0.002, x_mlp=2620.4, x_mlp_low=2000, x_mlp_high=3000, stable="unstable",
             unstable_reason="interval ±20%"),  # as an older harness wrote it: read as imprecise
        _row("mlp", 0.001, grid=None, family="mlp", x_mlp=1.0, x_mlp_low=1.0, x_mlp_high=1.0, stable="stable"),
    ]
    lines = {l.split()[1]: " ".join(l.split()) for l in summary(tidy(rows)).splitlines() if l.startswith("  forward")}
    assert lines["kan"].endswith("4.00 [3.90, 4.10] 4.00x slower than the MLP")
    assert lines["kan-fast"].endswith("no clear difference from the MLP")
    assert lines["fourier-kan"].endswith("2.00x faster than the MLP")
    # imprecise is said beside the direction and size, never instead of them
    assert lines["rbf-kan"].endswith("2,620 [2,000, 3,000] 2,620x slower than the MLP; imprecise (interval ±20%)")
    assert lines["mlp"].endswith("the baseline")


def test_summary_of_many_workloads_gives_geometric_means():
    rows = []
    for batch, ratio in ((64, 2.0), (128, 8.0)):
        rows += [_row("kan", 0.001 * ratio, batch=batch), _row("mlp", 0.001, batch=batch, grid=None, family="mlp")]
    text = summary(tidy(rows), max_blocks=1)
    line = next(l for l in text.splitlines() if l.startswith("kan "))
    assert "x4.00" in line  # sqrt(2 * 8)


def test_the_summary_counts_kan_rows_and_states_the_reference_kan_first():
    """The counts are of KAN rows only (the baselines are not measurements of a KAN), and the
    reference KAN's ratio is said with its interval however wide that interval is."""
    rows = [
        _row("kan", 0.0675, x_mlp=67.5, x_mlp_low=65.3, x_mlp_high=71.7, imprecise="interval to mlp ±6.1%"),
        _row("kan-fast", 0.001, x_mlp=0.98, x_mlp_low=0.95, x_mlp_high=1.02, imprecise="interval to mlp-param ±9%"),
        _row("mlp", 0.001, grid=None, family="mlp", x_mlp=1.0, x_mlp_low=1.0, x_mlp_high=1.0,
             imprecise="interval of the median ±7%"),
        _row("mlp-param", 0.002, family="mlp", x_mlp=2.0, x_mlp_low=1.8, x_mlp_high=2.3,
             imprecise="interval to mlp ±12%", interference="9 of 12 samples disturbed"),
    ]
    text = summary(tidy(rows))
    first = text.splitlines()[0]
    assert first == ("4 measurements: 4 ok; of the 2 KAN rows, 2 imprecise (1 in the ratio to the MLP, 1 to mlp-param); "
                     "their direction and size are still said")
    assert text.splitlines()[1] == ("forward, the reference KAN (kan): 67.5x slower than the width-matched MLP "
                                    "(95% interval 65.3\u201371.7); imprecise (1 of 1 workloads)")
    line = next(" ".join(l.split()) for l in text.splitlines() if l.split()[1:2] == ["mlp-param"])
    assert line.endswith("2.00x slower than the MLP; imprecise (interval to mlp ±12%); disturbed (9 of 12 samples disturbed)")
    assert "unstable" not in text
    # the row about the width-matched MLP never names the other baseline's interval
    fast = next(" ".join(l.split()) for l in text.splitlines() if l.split()[1:2] == ["kan-fast"])
    assert fast.endswith("no clear difference from the MLP") and "mlp-param" not in fast


def test_an_older_tables_unstable_rows_read_as_imprecise_or_disturbed():
    frame = tidy([
        _row("kan", 0.004, x_mlp=4.0, x_mlp_low=3.5, x_mlp_high=4.6, stable="unstable",
             unstable_reason="interval to mlp ±15%; 8 of 10 samples disturbed"),
        _row("kan-fast", 0.004, x_mlp=4.0, x_mlp_low=3.9, x_mlp_high=4.1, stable="stable"),
        _row("mlp", 0.001, grid=None, family="mlp"),
    ])
    kan = frame[frame.model == "kan"].iloc[0]
    assert kan["imprecise"] == "interval to mlp ±15%" and kan["interference"] == "8 of 10 samples disturbed"
    fast = frame[frame.model == "kan-fast"].iloc[0]
    assert fast["imprecise"] is None and fast["interference"] is None


def test_a_ratio_from_too_few_rounds_says_so_and_keeps_its_size():
    """Two rounds give a ratio and no interval (stats.MIN_INTERVAL_PAIRS): the row says how many
    rounds it had and how many an interval takes, the reference's line still gives the ratio, and
    nothing is counted as imprecise (there is no interval to be wide)."""
    nan = float("nan")
    rows = [_row("kan", 0.004, x_mlp=4.0, x_mlp_low=nan, x_mlp_high=nan, used_rounds=2, rounds=2,
                 stable="unstable", unstable_reason="no interval (under 6 rounds)"),
            _row("mlp", 0.001, grid=None, family="mlp", x_mlp=1.0, x_mlp_low=1.0, x_mlp_high=1.0, used_rounds=2,
                 rounds=2)]
    text = summary(tidy(rows))
    lines = text.splitlines()
    assert lines[0] == "2 measurements: 2 ok"
    assert lines[1] == "forward, the reference KAN (kan): 4.00x the width-matched MLP's time, no interval measured"
    row = next(" ".join(l.split()) for l in lines if l.split()[1:2] == ["kan"])
    assert row.endswith("4.00 no interval from 2 rounds (it takes 6)"), row
