"""`python -m benchmarks.studies.busy`: its comparison of a quiet and a busy run, from their measurements.

The two runs are written by hand (measurements.jsonl only, as a bench run stopped before its
table would leave them), with ratios to the MLP chosen so that each check's answer is known.
"""

from __future__ import annotations

import pytest

from benchmarks.core import record
from benchmarks.core.case import Case
from benchmarks.core.measurement import Measurement, Ratio
from benchmarks.studies import busy


def bench_run(path, ratios: dict[str, Ratio]):
    """A bench run folder holding a measurement per model (``ratios``: each KAN's paired ratio to the MLP)."""
    run = record.Run(path)
    run.path.mkdir(parents=True)
    n = 10
    for model in ("mlp", *ratios):
        case = Case(model, "forward", "cpu", "float32", (4, 3), 8, None if model == "mlp" else 5)
        m = Measurement(case, name=case.id, threads=1, clock="wall", samples=(0.001,) * n, rounds=tuple(range(n)),
                        disturbed=(False,) * n, ratios={} if model == "mlp" else {"x_mlp": ratios[model]},
                        facts={"family": "mlp" if model == "mlp" else "kan", "machine": "here"})
        run.append_jsonl(record.MEASUREMENTS, m.to_json())
    return run.path


def test_the_comparison_derives_from_both_runs_measurements(tmp_path):
    quiet = bench_run(tmp_path / "quiet", {"kan": Ratio(4.0, 3.96, 4.04, 10), "kan-fast": Ratio(1.2, 1.19, 1.21, 10),
                                           "chebyshev-kan": Ratio(0.8, 0.79, 0.81, 10)})
    busy_ = bench_run(tmp_path / "busy", {"kan": Ratio(4.2, 4.16, 4.24, 10),  # 5% more: kept
                                          "kan-fast": Ratio(1.5, 1.49, 1.51, 10),  # 25% more, stable: moved
                                          "chebyshev-kan": Ratio(1.2, 1.19, 1.21, 10)})  # faster -> slower
    table = busy.compare(busy.bench_of(quiet), busy.bench_of(busy_)).set_index("model")
    assert sorted(table.index) == ["chebyshev-kan", "kan", "kan-fast"]  # the MLP is the baseline, not a row
    assert table.loc["kan", "change"] == pytest.approx(4.2 / 4.0 - 1)
    assert table.loc["kan-fast", "change"] == pytest.approx(1.5 / 1.2 - 1)
    assert table["kept"].to_dict() == {"chebyshev-kan": False, "kan": True, "kan-fast": False}
    assert table.loc["chebyshev-kan", "said_quiet"] == "faster" and table.loc["chebyshev-kan", "said_busy"] == "slower"
    assert table["flipped"].to_dict() == {"chebyshev-kan": True, "kan": False, "kan-fast": False}
    assert table.loc["kan", "interval_busy"] == "[4.16, 4.24]"
    checks = busy.judge(table.reset_index(), busy.bench_of(busy_), "full", 60.0)
    assert list(checks.values()) == [False, False, True]  # moved, flipped, none of the busy rows flagged
