"""The HTML report, rendered from run folders made here through the record module.

The runs are synthetic but shaped like the real thing: every model in the registry,
three phases, shapes that vary batch, grid size and width one at a time, raw samples in
a pytest-benchmark-shaped benchmark.json, attribution from three profilers, profile
files, a quality table. The expected figures are computed here from the rows written,
never from the report's own output.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.core import record, schema, stats

ROOT = Path(__file__).resolve().parents[1]

KANS = {"kan": 9.0, "kan-fast": 3.0, "fourier-kan": 5.0, "rbf-kan": 2.5, "chebyshev-kan": 4.0}
MLPS = {"mlp": 1.0, "mlp-param": 2.2}
BASE = ("784x64x10", 256, 5)
SHAPES = [BASE] + [("784x64x10", b, 5) for b in (64, 1024)] + [("784x64x10", 256, g) for g in (3, 10)] + \
    [("784x%dx10" % w, 256, 5) for w in (32, 128)]
PHASE_COST = {"forward": 1.0, "backward": 2.1, "train": 3.6}


def true_median(model: str, factor: float, phase: str, widths: str, batch: int, grid: int, device: str,
                speedup: dict) -> float:
    """A made-up but plausible cost model: MLP FLOPs, times a per-model factor growing with the grid for KANs."""
    w = [int(x) for x in widths.split("x")]
    flops = 2 * batch * sum(a * b for a, b in zip(w, w[1:]))
    if model not in MLPS:
        factor *= (grid + 3) / 8
    rate = 4e9 if device == "cpu" else 4e11
    return (20e-6 + factor * flops / rate) * PHASE_COST[phase] * speedup.get(model, 1.0) * speedup.get((model, phase), 1.0)


def make_run(root: Path, name: str, machine: str = "laptop", device: str = "cpu", speedup: dict | None = None,
             rounds: int = 15, attribution: bool = True, quality: bool = True, seed: int = 0,
             models: dict | None = None, shapes: list | None = None, skip: str | None = None,
             load: float | None = None, drift: float = 0.0, noise: float = 0.03,
             commit: str = "0123456789abcdef") -> record.Run:
    """Write a run folder through the record module; return it.

    As the bench stage does: the width-matched MLP has no grid size (one measurement per
    widths and batch), and a model that cannot be imported (``skip``) has "skipped" rows.
    ``speedup``: a time factor per model, or per (model, phase). Each sample is the true median
    times a log-normal factor of its own (``noise``) and one its round shares with every model
    (``drift``: the machine's load moving, which the models timed in turns all feel); ``load`` is
    recorded in the environment and each row.
    """
    rng = np.random.default_rng(seed)
    shared = np.exp(rng.normal(0, drift, (len(shapes or SHAPES), 3, rounds)))  # (shapes, phases, rounds)
    run = record.Run(root / name)
    run.path.mkdir(parents=True)
    run.write_json("environment.json", {
        "machine": machine, "time": "2025-06-01T12:00:00+00:00", "python": "3.11.2",
        "platform": "Linux-6.1.0-x86_64-with-glibc2.36", "cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu_count": 2,
        "torch": {"version": "2.13.0+cpu", "git": "abc123", "cuda": None, "hip": None, "debug": False,
                  "mkldnn": True, "config": ["PyTorch built with:", "  - GCC 11.2"]},
        "threads": 2, "interop_threads": 2,
        "devices": [{"type": "cpu", "name": "Intel(R) Xeon(R) CPU @ 2.20GHz"}] + (
            [{"type": "cuda", "index": 0, "name": "NVIDIA H200", "memory_bytes": 150 * 2**30, "capability": "9.0"}]
            if device == "cuda" else []),
        "commit": {"id": commit, "short": commit[:9], "dirty": False, "branch": "main"},
        **({"load_average": [load, load, load]} if load is not None else {}),
    })
    rows, benchmarks, samples = [], [], {}
    models = models or {**KANS, **MLPS}
    done = set()
    for k, (widths, batch, grid) in enumerate(shapes or SHAPES):
        for model, factor in models.items():
            for j, phase in enumerate(PHASE_COST):
                g = None if model == "mlp" else grid
                if (model, phase, widths, batch, g) in done:
                    continue
                done.add((model, phase, widths, batch, g))
                if model == skip:
                    rows.append({"benchmark": f"test_case[{model}-{phase}-{device}-float32-{widths}-b{batch}-g{g}]",
                                 "model": model, "family": "kan", "phase": phase, "device": device, "dtype": "float32",
                                 "widths": widths, "batch": batch, "grid_size": g, "status": "skipped",
                                 "machine": machine, "reason": f"model {model!r} cannot be imported here"})
                    continue
                median = true_median(model, factor, phase, widths, batch, grid, device, speedup or {})
                data = median * np.exp(rng.normal(0, noise, rounds)) * shared[k, j]  # (rounds,)
                samples[(model, phase, widths, batch, g)] = data
                q1, q3 = np.percentile(data, [25, 75])
                name = f"test_case[{model}-{phase}-{device}-float32-{widths}-b{batch}" + (f"-g{g}]" if g else "]")
                benchmarks.append({
                    "group": phase, "name": name, "fullname": f"benchmarks/test_speed.py::{name}",
                    "params": {"model": model}, "param": f"{model}-{device}",
                    "extra_info": {"device": device, "phase": phase}, "options": {"timer": "device"},
                    "stats": {"min": data.min(), "max": data.max(), "mean": data.mean(), "stddev": data.std(),
                              "rounds": rounds, "median": float(np.median(data)), "iqr": q3 - q1, "q1": q1, "q3": q3,
                              "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": data.min(),
                              "hd15iqr": data.max(), "ops": 1 / data.mean(), "total": data.sum(),
                              "data": data.tolist(), "iterations": 1},
                })
                is_kan = model not in MLPS
                params = 4 * (int(widths.split("x")[1]) * 794) * ((grid + 4) if is_kan else 1)
                rows.append({
                    "benchmark": name, "model": model, "family": "mlp" if model in MLPS else "kan", "phase": phase,
                    "device": device, "dtype": "float32", "widths": widths, "batch": batch,
                    "grid_size": g, "status": "ok", "median_s": float(np.median(data)), "iqr_s": q3 - q1,
                    "mean_s": data.mean(), "min_s": data.min(), "max_s": data.max(), "rounds": rounds,
                    "first_call_s": 5 * median, "throughput": batch / np.median(data), "flops": 1e6,
                    "gflops": 1e-3 / np.median(data), "param_bytes": params,
                    "saved_bytes": 4 * batch * 64 * ((grid + 4) if is_kan else 2),
                    "peak_bytes": params * (3 if phase == "train" else 1) + 4 * batch * 800,
                    "x_mlp": np.nan, "x_mlp_param": np.nan, "threads": 2, "machine": machine,
                    "load_before": load, "load_after": load, "used_rounds": rounds,
                })
    for row in rows:  # as the bench measures them: paired ratios (sample i with sample i) and intervals
        if row["status"] != "ok" or row["model"] == "mlp":
            continue
        key = (row["model"], row["phase"], row["widths"], row["batch"], row["grid_size"])
        spreads = {}
        for column, base_key in (("x_mlp", ("mlp", *key[1:4], None)), ("x_mlp_param", ("mlp-param", *key[1:]))):
            if base_key in samples and base_key != key:
                r = stats.paired_ratio_interval(samples[key], samples[base_key])
                row.update({column: r.ratio, f"{column}_low": r.ci_low, f"{column}_high": r.ci_high})
                spreads[base_key[0]] = r.spread
        wide = [f"interval to {m} ±{s:.0%}" for m, s in spreads.items() if s > stats.CLEAR_WITHIN]
        row.update(stable="unstable" if wide else "stable", unstable_reason="; ".join(wide) or None,
                   imprecise="; ".join(wide) or None)
    bench = pd.DataFrame(rows, columns=record.BENCH_COLUMNS)
    run.write_table("benchmarks", bench)
    for row in rows:  # measurements.jsonl as the bench wrote it before it had versions: each row and its samples
        key = (row["model"], row["phase"], row["widths"], row["batch"], row["grid_size"])
        run.append_jsonl(record.MEASUREMENTS, {**row, "samples": samples[key].tolist() if key in samples else []})
    run.write_json("benchmark.json", {
        "machine_info": {"node": machine, "processor": "x86_64", "python_version": "3.11.2"},
        "commit_info": {"id": "0123456789abcdef", "dirty": False}, "benchmarks": benchmarks,
        "datetime": "2025-06-01T12:00:00", "version": "5.3.1",
    })
    if attribution:
        run.write_table("attribution", attribution_rows(device="mps" if device == "cpu" else device))
        profiles = run.path / "profiles"
        profiles.mkdir()
        for stem in ("kan-mps-loop", "kan-mps-loop-synchronized"):  # named as the profile stage names them
            (profiles / f"{stem}.flamegraph.svg").write_text(
                '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="20"><rect width="200" height="20"/></svg>')
            (profiles / f"{stem}.speedscope.json").write_text('{"profiles": []}')
            (profiles / f"{stem}.trace.json").write_text('{"traceEvents": []}')
            (profiles / f"{stem}.pstats").write_bytes(b"\x00")
            (profiles / f"{stem}.cprofile.txt").write_text("ncalls tottime")
    if quality:
        run.write_table("quality", pd.DataFrame({
            "model": list(KANS) + list(MLPS), "task": "sin(pi x) + y^2",
            "metric": "test rmse", "value": [0.011, 0.011, 0.02, 0.018, 0.015, 0.04, 0.03],
        }))
    return run


def attribution_rows(device: str = "mps") -> pd.DataFrame:
    """A training loop profiled with and without synchronisation: unsynchronised, transfer gets the blame."""
    shares = {
        False: {"basis": 0.05, "matmul": 0.04, "autograd": 0.08, "optimizer": 0.03, "transfer": 0.72, "python": 0.05, "other": 0.03},
        True: {"basis": 0.41, "matmul": 0.18, "autograd": 0.25, "optimizer": 0.06, "transfer": 0.03, "python": 0.04, "other": 0.03},
    }
    rows = []
    for profiler in ("cprofile", "py-spy", "torch"):
        for sync in (False, True):
            for part, share in shares[sync].items():
                rows.append({"profiler": profiler, "scenario": "train-loop", "model": "kan", "device": device,
                             "phase": "train", "synchronized": sync, "part": part, "seconds": 12.0 * share, "share": share})
    for part, share in shares[True].items():
        rows.append({"profiler": "cprofile", "scenario": "forward", "model": "kan", "device": "cpu",
                     "phase": "forward", "synchronized": True, "part": part, "seconds": 3 * share, "share": share})
    return pd.DataFrame(rows, columns=schema.ATTRIBUTION_COLUMNS)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its contents."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}



# --- reading runs and the figures the report computes -------------------------------------------

from reports import charts, compare, data, profile_tables, tables  # noqa: E402
from reports.__main__ import main  # noqa: E402
from reports.render import render  # noqa: E402

SMALL = dict(models={"kan": 9.0, "kan-fast": 3.0, "mlp": 1.0, "mlp-param": 2.2},
             shapes=[("784x64x10", 256, 5), ("784x64x10", 1024, 5)], attribution=False, quality=False)


def test_headline_is_geometric_mean_of_kan_over_mlp(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv"))
    rows = data.load(run).benchmarks.assign(imprecise=None)  # here the means, not the precision
    table = tables.headline(rows, "cpu")
    cells = {row[0].text: row for row in table.rows}
    assert list(cells) == ["kan-fast", "kan"]  # fastest first
    for model in ("kan", "kan-fast"):
        for i, phase in enumerate(["forward", "backward", "train"]):
            at = bench[(bench.model == model) & (bench.phase == phase)]
            expected = math.exp(np.mean(np.log(at["x_mlp"])))
            low, high = (math.exp(np.mean(np.log(at[c]))) for c in ("x_mlp_low", "x_mlp_high"))
            cell = cells[model][1 + 2 * i]
            assert cell.text == f"{stats.plain(expected)}× slower" and low > 1  # the interval excludes 1
            assert cell.cls == "slower"
            assert cell.sub == f"{stats.plain(expected)}× [{stats.plain(low)}, {stats.plain(high)}], 2 shapes"


def test_the_headline_says_direction_and_size_and_precision_apart(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = data.load(run).benchmarks.assign(imprecise=None)
    kan_fwd = (bench.model == "kan") & (bench.phase == "forward")
    bench.loc[kan_fwd, ["x_mlp_low", "x_mlp_high"]] = [0.9, 11.0]  # an interval that includes 1
    fast_fwd = (bench.model == "kan-fast") & (bench.phase == "forward")
    bench.loc[fast_fwd & (bench.batch == 256), "imprecise"] = "interval to mlp ±12%"
    bench.loc[fast_fwd & (bench.batch == 1024), "imprecise"] = "interval to mlp-param ±9%"  # another ratio's
    bench.loc[(bench.model == "kan") & (bench.phase == "train"), ["x_mlp_low", "x_mlp_high"]] = np.nan
    cells = {row[0].text: row for row in tables.headline(bench, "cpu").rows}
    assert cells["kan"][1].text == "no clear difference" and cells["kan"][1].cls == "same"
    fast = bench[fast_fwd]
    expected = math.exp(np.mean(np.log(fast["x_mlp"])))
    # imprecise: said beside the direction and size, never instead of them
    assert cells["kan-fast"][1].text == f"{stats.plain(expected)}× slower"
    assert cells["kan-fast"][1].cls == "slower imprecise" and cells["kan-fast"][1].sub.endswith("; imprecise")
    assert cells["kan-fast"][1].title.endswith("; imprecise (1 of 2 shapes: interval to mlp ±12%)")
    assert "imprecise" in cells["kan-fast"][2].title and "mlp-param ±9%" in cells["kan-fast"][2].title
    assert cells["kan"][5].text == "no interval measured"
    sentences = tables.headline_sentences(bench, "cpu")
    assert "unstable" not in " ".join(sentences)
    # the reference KAN is always stated, first
    assert sentences[0].startswith("cpu, forward: the reference KAN (kan): no clear difference from the width-matched MLP")
    assert "kan-fast: " in sentences[0] and "x slower than the width-matched MLP (95% interval" in sentences[0]
    assert sentences[1].startswith("cpu, backward: the reference KAN (kan): ") and "x slower than the width" in sentences[1]
    assert "95% interval" in sentences[1]
    # no interval: no verdict, and the ratio measured is still said
    train = math.exp(np.mean(np.log(bench[(bench.model == "kan") & (bench.phase == "train")]["x_mlp"])))
    assert sentences[2].startswith(f"cpu, train: the reference KAN (kan): {stats.plain(train)}x the width-matched "
                                   "MLP's time, no interval measured")


def test_fmt_ratio_reads_slower_faster_and_same():
    assert tables.fmt_ratio(3.2) == ("3.2× slower", "slower")
    assert tables.fmt_ratio(0.5) == ("2× faster", "faster")
    assert tables.fmt_ratio(1.01)[1] == "same"
    assert tables.fmt_ratio(float("nan")) == ("–", "")


def test_missing_mlp_ratios_are_filled_from_the_mlp_rows(tmp_path):
    """A table without ratios (an older harness's): the record fills them as ratios of medians."""
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv"))
    bench[["x_mlp", "x_mlp_param", "x_mlp_low", "x_mlp_high", "x_mlp_param_low", "x_mlp_param_high"]] = np.nan
    run.write_table("benchmarks", bench)
    filled = data.load(run).benchmarks
    kan = (bench["family"] == "kan").to_numpy()
    median = bench.set_index(["model", "phase", "batch"])["median_s"]
    for i in np.flatnonzero(kan):
        row = bench.iloc[i]
        assert filled["x_mlp"].iloc[i] == pytest.approx(row.median_s / median[("mlp", row.phase, row.batch)])
        assert filled["x_mlp_param"].iloc[i] == pytest.approx(row.median_s / median[("mlp-param", row.phase, row.batch)])
    # the record's one rule covers the baselines too: the width-matched MLP is 1x itself
    assert (filled.loc[filled["model"] == "mlp", "x_mlp"] == 1.0).all()


def test_scaling_slopes_recover_known_exponents():
    """Time = batch^0.7 * width * (grid + 3)^0.5, measured one variable at a time around a base shape."""
    shapes = {(64, b, 5) for b in (64, 256, 1024, 4096)} | {(w, 256, 5) for w in (32, 64, 128)} | \
        {(64, 256, g) for g in (3, 5, 10, 20)}
    frame = pd.DataFrame([
        dict(model="kan", phase="forward", widths=f"784-{w}-10", batch=b, grid_size=g,
             median_s=1e-9 * b**0.7 * w * (g + 3) ** 0.5) for w, b, g in sorted(shapes)
    ]).assign(status="ok", dtype="float32", family="kan")
    (batch,) = charts.scaling_series(frame, "batch")
    assert batch["slope"] == pytest.approx(0.7, abs=1e-9)
    assert list(batch["x"]) == [64, 256, 1024, 4096] and batch["fixed"] == "784-64-10 · grid 5"
    (width,) = charts.scaling_series(frame, "width")
    assert width["slope"] == pytest.approx(1.0, abs=1e-9) and width["fixed"] == "784-*-10 · batch 256 · grid 5"
    (grid,) = charts.scaling_series(frame, "grid_size")
    x, y = np.log([3, 5, 10, 20]), 0.5 * np.log([6, 8, 13, 23])  # least squares by hand
    assert grid["slope"] == pytest.approx(np.cov(x, y)[0, 1] / np.var(x, ddof=1), abs=1e-9)


def test_without_a_width_sweep_size_is_the_parameter_count():
    """Architectures that differ in more than one width: time against parameters, time = 1e-9 * parameters^1.5."""
    frame = pd.DataFrame([
        dict(model="kan", phase="train", widths=w, batch=64, grid_size=5, parameters=p, median_s=1e-9 * p**1.5)
        for w, p in (("2x5x1", 150), ("784x64x10", 407_040), ("256x256x256x256", 1_572_864))
    ]).assign(status="ok", dtype="float32", family="kan", param_bytes=np.nan)
    assert charts.scaling_series(frame, "width") == []
    (size,) = charts.scaling_series(frame, "parameters")
    assert list(size["x"]) == [150, 407_040, 1_572_864] and size["slope"] == pytest.approx(1.5, abs=1e-9)
    assert size["fixed"] == "various widths · batch 64 · grid 5"


def test_comparison_finds_the_changes_that_were_made(tmp_path):
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.5, **SMALL)
    new = make_run(tmp_path, "20250602T120000-bbbbbbb", seed=2, speedup={"kan-fast": 0.8, "kan": 1.3}, load=0.5,
                   **SMALL)
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.05)
    assert len(frame) == 4 * 2 * 3
    verdicts = frame.groupby("model")["verdict"].agg(set).to_dict()
    assert verdicts == {"kan-fast": {"faster"}, "kan": {"slower"}, "mlp": {"no significant change"},
                        "mlp-param": {"no significant change"}}
    kan = frame[frame.model == "kan"]
    assert ((kan.ci_low < 1.3) & (1.3 < kan.ci_high)).mean() >= 0.8  # the intervals hold the true ratio
    assert (kan.n_new == 15).all() and (kan.n_old == 15).all()


def test_comparison_without_raw_samples_judges_the_ratios_alone(tmp_path):
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", load=0.5, **SMALL)
    new = make_run(tmp_path, "20250602T120000-bbbbbbb", load=0.5, **SMALL)
    old.file(record.MEASUREMENTS).unlink()  # the raw samples' one home
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.05)
    assert set(frame["time_verdict"]) == {"no samples"}
    mlp = frame[frame.model == "mlp"]
    assert set(mlp["verdict"]) == {"not judged"} and mlp["note"].str.contains("no raw samples").all()
    assert set(frame[frame.model != "mlp"]["verdict"]) <= {"no significant change", "slower", "faster"}
    assert frame["ratio"].notna().all()


# A shared 2-core machine: each round's samples move together by 20% (the load), each sample by 3%.
BUSY = dict(SMALL, models={"kan": 9.0, "kan-fast": 3.0, "rbf-kan": 2.5, "mlp": 1.0, "mlp-param": 2.2},
            shapes=[("784x64x10", 256, 5), ("784x64x10", 1024, 5), ("784x128x10", 256, 5)], drift=0.2, rounds=20)


def test_a_uniformly_slower_machine_cancels_out(tmp_path):
    """The same code on a machine 30% slower (busier) in the second run: at most 1 row in 20 called changed,
    and the absolute times, which did change, are shown but not judged, the loads differing."""
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.4, **BUSY)
    slower = {m: 1.3 for m in BUSY["models"]}
    new = make_run(tmp_path, "20250601T120700-aaaaaaa", seed=2, load=3.5, speedup=slower, **BUSY)
    conditions = compare.environments(data.load(new), data.load(old))
    assert not conditions["matched"] and conditions["differences"] == ["load 0.4 then 3.5 on 2 cores (within 0.5 would match)"]
    assert conditions["same_commit"] == "0123456789abcdef"
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.05)
    changed = frame["verdict"].isin(["slower", "faster"]).sum()
    assert len(frame) == 45 and changed <= len(frame) / 20, frame[["model", "phase", "ratio", "verdict"]]
    assert set(frame[frame.model == "mlp"]["verdict"]) == {"not judged"}
    assert (frame["time_ratio"] > 1.1).mean() > 0.9  # the times did move: they are shown
    assert set(frame["time_verdict"]) == {"not judged"}


def test_an_mlp_that_alone_moved_is_a_shift_of_its_workload_not_a_change_of_every_model(tmp_path):
    """As seen on the shared machine: the MLP's forward 20% faster in the second run, nothing else changed,
    so every model's time over the MLP of that workload rose by a quarter."""
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.4, **BUSY)
    new = make_run(tmp_path, "20250601T120700-aaaaaaa", seed=2, load=0.4, speedup={("mlp", "forward"): 0.8}, **BUSY)
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.10, judge_times=False)
    forward = frame[(frame.phase == "forward") & (frame.model != "mlp")]
    assert (forward["new_x"] / forward["old_x"]).between(1.15, 1.35).all()  # the ratios did all move
    assert forward["workload_shift"].between(1.15, 1.35).all()
    assert frame["verdict"].isin(["slower", "faster"]).sum() <= len(frame) / 20
    assert forward["judged_by"].str.contains("against its workload's shift").all()


def test_a_failed_row_in_either_run_is_compared_as_failed(tmp_path):
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.4, **BUSY)
    new = make_run(tmp_path, "20250601T120700-aaaaaaa", seed=2, load=0.4, **BUSY)
    bench = pd.read_csv(new.file("benchmarks.csv"))
    bench.loc[bench.model.isin(["mlp", "kan"]), "status"] = "nonfinite"
    new.write_table("benchmarks", bench)
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.10)
    assert set(frame[frame.model.isin(["mlp", "kan"])]["verdict"]) == {"failed"}
    assert frame[~frame.model.isin(["mlp", "kan"])]["verdict"].isin(["no significant change", "not judged"]).all()


def test_one_model_25_percent_slower_in_its_forward_is_called_slower(tmp_path):
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.4, **BUSY)
    new = make_run(tmp_path, "20250601T120700-bbbbbbb", seed=2, load=3.5, speedup={("kan-fast", "forward"): 1.25},
                   commit="fedcba9876543210", **BUSY)
    frame = compare.compare_runs(data.load(new), data.load(old), threshold=1.05)
    target = (frame.model == "kan-fast") & (frame.phase == "forward")
    assert set(frame[target]["verdict"]) == {"slower"}
    assert ((frame[target]["ci_low"] < 1.25) & (1.25 < frame[target]["ci_high"])).all()
    assert frame[~target]["verdict"].isin(["slower", "faster"]).sum() <= 1


def test_the_page_says_how_it_judged_and_that_the_commit_is_the_same(tmp_path):
    old = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=0.4, **BUSY)
    new = make_run(tmp_path, "20250601T120700-aaaaaaa", seed=2, load=3.5, **BUSY)
    page = render(str(new.path), against=str(old.path)).read_text()
    assert "Absolute times are shown but <strong>not judged</strong>" in page and "load 0.4 then 3.5" in page
    assert "Both runs measured the <strong>same commit</strong>, <code>012345678</code>" in page
    quiet = make_run(tmp_path, "20250601T121400-aaaaaaa", seed=3, load=0.6, **BUSY)
    page = render(str(quiet.path), against=str(old.path)).read_text()
    assert "conditions match" in page and "absolute times are judged too" in page


def test_a_run_against_itself_on_a_busy_machine_is_not_said_to_differ_in_conditions(tmp_path):
    """Both sides alike but each with more work than cores: the absolute times are not judged, and the page
    says why (the load) without calling the conditions different, which they are not."""
    busy = make_run(tmp_path, "20250601T120000-aaaaaaa", seed=1, load=3.5, **BUSY)
    page = render(str(busy.path), against=str(busy.path)).read_text()
    assert "Absolute times are shown but <strong>not judged</strong>" in page
    assert "more work than cores in both runs" in page
    assert "different conditions" not in page
    frame = compare.compare_runs(data.load(busy), data.load(busy), threshold=1.10)
    assert set(frame["verdict"]) <= {"no significant change", "not judged"}


def test_failed_measurements_show_in_tables_and_stay_out_of_the_headline(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv"))
    bench.loc[bench.model == "kan", ["status", "median_s", "x_mlp"]] = ["nonfinite", np.nan, np.nan]
    run.write_table("benchmarks", bench)
    rows = data.load(run).benchmarks
    forward = tables.timings(rows, "cpu")[0]
    assert forward.columns == ["shape", "kan", "kan-fast", "mlp", "mlp-param"]
    assert [(r[1].text, r[1].cls) for r in forward.rows] == [("nonfinite", "bad")] * 2
    assert [r[0].text for r in tables.headline(rows, "cpu").rows] == ["kan-fast"]


def test_a_timing_cell_names_its_spread_the_interquartile_range_not_a_plus_minus(tmp_path):
    """The IQR is the width of the middle half of the samples: "324 µs ± 53.3 µs" would read as a range twice
    as wide. The ×MLP figure is the median of the paired per-round ratios, not the ratio of the medians."""
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    rows = data.load(run).benchmarks
    forward = tables.timings(rows, "cpu")[0]
    fast = forward.columns.index("kan-fast")
    row = rows[(rows.model == "kan-fast") & (rows.phase == "forward")].iloc[0]
    cell = next(r[fast] for r in forward.rows if r[0].text == tables.shape_label(row.widths, row.batch, row.grid_size))
    assert cell.sub == f"IQR {tables.fmt_time(row.iqr_s)} · {tables.fmt_times(row.x_mlp)} MLP"
    assert "±" not in forward.note and "paired" in forward.note


def test_the_every_figure_table_says_parameter_bytes_where_it_shows_bytes(tmp_path):
    """benchmarks.csv's `parameters` counts scalars; the page's column of param_bytes must not take that name."""
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    rows = data.load(run).benchmarks
    table = tables.details(rows, "cpu")
    assert "parameters" not in table.columns
    column = table.columns.index("parameter bytes")
    first = rows.sort_values(["model"]).iloc[0]
    assert any(r[column].text == tables.fmt_bytes(first.param_bytes) for r in table.rows)


def test_sync_lesson_compares_shares_with_and_without_synchronisation():
    attribution = data._tidy_attribution(attribution_rows(), record.Run(Path("x")))
    pairs = profile_tables.sync_pairs(attribution.assign(machine="m"))
    transfer = pairs[(pairs.part == "transfer") & (pairs.profiler == "cprofile")].iloc[0]
    assert transfer.unsynchronized == pytest.approx(0.72) and transfer.synchronized == pytest.approx(0.03)
    sentences, table = profile_tables.sync_lesson(pairs)
    assert "72% of the time in transfer without synchronisation and 3% with it" in sentences[0]
    assert len(table.groups) == 1 + 3  # one column pair per profiler
    # "as written", not "async": on the CPU nothing runs asynchronously, and the loop is the same code on any device
    assert table.columns == ["part"] + ["as written", "synchronized"] * 3


# --- the rendered page ----------------------------------------------------------------------------

XSS = "<script>alert(1)</script>"


MEDIUM = dict(models={"kan": 9.0, "kan-fast": 3.0, "rbf-kan": 2.5, "mlp": 1.0, "mlp-param": 2.2},
              shapes=[("784x64x10", 256, 5), ("784x64x10", 1024, 5), ("784x64x10", 256, 10), ("784x128x10", 256, 5)])


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A realistic run rendered alone; a smaller one merged with a GPU box's run and compared with an older run."""
    root = tmp_path_factory.mktemp("results")
    run = make_run(root, "20250601T110000-aaaaaaa", skip="chebyshev-kan")
    old = make_run(root, "20250601T120000-aaaaaaa", seed=1, **MEDIUM)
    new = make_run(root, "20250602T120000-bbbbbbb", seed=2, speedup={"kan-fast": 0.8, "kan": 1.3}, **MEDIUM)
    gpu = make_run(root, "20250602T130000-bbbbbbb", machine="gpu-box", device="cuda", seed=3, quality=False,
                   attribution=False,
                   models={"kan": 9.0, XSS + " $\\frac": 6.0, "mlp": 1.0, "mlp-param": 2.2}, shapes=MEDIUM["shapes"][:2])
    before = snapshot(root)
    start = time.perf_counter()
    single = render(str(run.path))
    seconds = time.perf_counter() - start
    full = render(str(new.path), against=str(old.path), merge=[str(gpu.path)], out=root / "merged" / "page.html")
    print(f"\nrendered a run of {len(pd.read_csv(run.file('benchmarks.csv')))} rows in {seconds:.1f} s")
    return {"root": root, "before": before, "single": single, "full": full, "run": run}


MAIN_HEADINGS = ["Headline: each KAN against the MLPs", "Time per model", "KAN / MLP over shapes and grid sizes",
                 "Scaling", "Memory", "Where the time goes", "Quality", "Tables", "Environment"]


def test_page_has_every_section_and_chart(pages):
    page = pages["single"].read_text()
    assert pages["single"] == pages["run"].path / "report.html"
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == MAIN_HEADINGS
    titles = re.findall(r"<figcaption><strong>(.*?)</strong>", page)
    assert titles == [
        "Forward and backward time per model — cpu", "KAN / MLP time over shapes and grid sizes — cpu",
        "Time against batch size — cpu", "Time against grid size — cpu", "Time against width — cpu",
        "Memory per model — cpu", "Where the time goes — train-loop", "Where the time goes — forward",
    ]
    assert page.count('<td class="bad" title="test_case[chebyshev-kan-') == 7 * 3  # skipped, with the reason
    assert "cannot be imported here" in page and "21 skipped" in page
    assert "blames whichever call has to wait for the device" in page
    assert "moves the time back to the parts that did it" in page
    for expected in ["2.13.0+cpu", "Intel(R) Xeon(R) CPU @ 2.20GHz", "0123456789abcdef on main", "test rmse",
                     "sin(pi x) + y^2"]:
        assert expected in page


def test_page_is_self_contained(pages):
    for path in (pages["single"], pages["full"]):
        page = path.read_text()
        sources = re.findall(r'\bsrc="([^"]*)"', page)
        assert sources and all(s.startswith("data:image/svg+xml;base64,") for s in sources)
        assert "<link" not in page and "@import" not in page and "url(" not in page
        for href in re.findall(r'\bhref="([^"]*)"', page):
            if not href.startswith("#"):  # links to the run's own profile files, relative to the page
                assert "://" not in href
                assert (path.parent / href).resolve().is_file(), href


def test_page_links_every_profile_file(pages):
    page = pages["single"].read_text()
    files = sorted(p.name for p in (pages["run"].path / "profiles").iterdir())
    assert len(files) == 10
    assert sorted(re.findall(r'<a href="profiles/([^"]+)"', page)) == files
    header = re.search(r"<th>profiled</th>(.*?)</tr>", page).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["flamegraph", "speedscope", "chrome trace", "cProfile stats",
                                                     "top functions"]
    assert "<td>kan-mps-loop</td>" in page and "<td>kan-mps-loop-synchronized</td>" in page


def test_profile_kinds_by_file_name():
    assert data.profile_kind("kan-cpu-train.flamegraph.svg") == ("flamegraph", "kan-cpu-train")
    assert data.profile_kind("kan-cpu-train.speedscope.json") == ("speedscope", "kan-cpu-train")
    assert data.profile_kind("kan-cpu-train.pt.trace.json.gz") == ("chrome trace", "kan-cpu-train")
    assert data.profile_kind("kan.pstats") == ("cProfile stats", "kan")
    assert data.profile_kind("notes.md") == ("other", "notes.md")


def test_record_strings_are_escaped(pages):
    page = pages["full"].read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $\\frac" in page


def test_rendering_touches_no_other_file(pages):
    after = snapshot(pages["root"])
    added = set(after) - set(pages["before"])
    assert added == {"20250601T110000-aaaaaaa/report.html", "merged/page.html"}
    assert {k: after[k] for k in pages["before"]} == pages["before"]


def test_merged_page_labels_machines_and_compares(pages):
    page = pages["full"].read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == MAIN_HEADINGS[:1] + ["What changed"] + MAIN_HEADINGS[1:]
    for label in ["laptop · cpu", "gpu-box · cuda"]:
        assert f"<caption>{label}</caption>" in page
        assert f"Forward and backward time per model — {label}" in page
    assert re.findall(r"<h3>(\w[\w-]*) · <code>", page) == ["laptop", "gpu-box"]
    counts = dict((v, int(n)) for n, v in re.findall(r"<span>(\d+) ([a-z ]+)</span>", page))
    # the width-matched MLP's 9 rows have only their times, not judged: these runs recorded no load
    assert counts == {"slower": 12, "faster": 12, "no significant change": 24, "not judged": 9}
    assert "the load of one run is not recorded" in page
    assert "New / old time over the MLP per benchmark" in page


def test_two_runs_of_one_machine_are_told_apart(tmp_path):
    a = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    b = make_run(tmp_path, "20250602T120000-bbbbbbb", **SMALL)
    labels = [d.machine for d in data.load_all([a, b])]
    assert labels == ["laptop (20250601T120000-aaaaaaa)", "laptop (20250602T120000-bbbbbbb)"]


def gate_run(root: Path) -> record.Run:
    """A speed-gate run folder as benchmarks.gate writes it: environment.json and gate.json only."""
    run = record.Run(root / "20250603T120000-ccccccc-gate")
    run.path.mkdir(parents=True)
    run.write_json("environment.json", {"machine": "ci"})
    rows = [
        dict(benchmark="kan-forward", model="kan", phase="forward", status="regression", ratio=1.31, ci_low=1.22,
             ci_high=1.40, p_slower=1e-5, p_faster=1.0, median_base=0.010, median_head=0.0131, n_base=24, n_head=24),
        dict(benchmark="kan-train", model="kan", phase="train", status="unchanged", ratio=1.02, ci_low=0.97,
             ci_high=1.06, p_slower=0.3, p_faster=0.7, median_base=0.030, median_head=0.0306, n_base=24, n_head=24),
        dict(benchmark="kan-fast-forward", model="kan-fast", phase="forward", status="new",
             reason="the base has no kan-fast"),
    ]
    run.write_json("gate.json", {
        "schema": 1, "mode": "base", "verdict": "fail", "exit_status": 1, "summary": "regression in kan-forward",
        "base": {"ref": "HEAD~1", "commit": "89abcdef0123"}, "head": {"id": "0123456789ab", "dirty": False},
        "settings": {"threshold": 1.15, "alpha": 0.01}, "benchmarks": rows, "samples": {},
    })
    return run


def test_a_gate_run_shows_its_verdict(tmp_path):
    page = render(str(gate_run(tmp_path).path)).read_text()
    assert '<span class="slower">FAIL</span>' in page
    assert "Head 012345678 against base HEAD~1 (89abcdef0): regression in kan-forward." in page
    assert '<td class="slower">slower</td>' in page and "1.220–1.400" in page and "13.1 ms" in page
    assert "<td>new<span class=\"sub\">the base has no kan-fast</span></td>" in page
    assert "1 benchmarks with no significant change" in page
    # sections with nothing to show are one line, never a heading over emptiness
    assert '<p class="empty" id="headline"><strong>Headline</strong>: no benchmark table' in page
    assert "<h2>Headline" not in page and "<h2>Time per model" not in page and "<h2>Where the time goes" not in page
    assert 'From run <code>20250603T120000-ccccccc-gate</code>.' in page  # the verdict says where it came from


def test_a_profile_run_shows_where_the_time_goes(tmp_path):
    run = record.Run(tmp_path / "20250603T120000-ccccccc-profile")
    run.path.mkdir()
    run.write_table("attribution", attribution_rows(device="cuda"))
    page = render(str(run.path)).read_text()
    assert "In this run cprofile on cuda (train-loop) put 72% of the time in transfer" in page
    assert "Where the time goes — train-loop" in page


def test_sync_lesson_on_the_cpu_alone_says_there_is_nothing_to_move():
    attribution = data._tidy_attribution(attribution_rows(device="cpu"), record.Run(Path("x")))
    sentences, _ = profile_tables.sync_lesson(profile_tables.sync_pairs(attribution.assign(machine="m")))
    assert sentences[0].startswith("This run profiled only the CPU")


# --- the command line -----------------------------------------------------------------------------

def test_cli_renders_the_newest_run_with_benchmarks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    newest = make_run(tmp_path, "20250602T120000-bbbbbbb", **SMALL)
    record.Run(tmp_path / "20250603T120000-ccccccc").path.mkdir()  # a later run without benchmarks
    assert main([]) == 0
    assert capsys.readouterr().out.strip() == str(newest.path / "report.html")
    assert "<code>20250602T120000-bbbbbbb</code>" in (newest.path / "report.html").read_text()


@pytest.mark.parametrize("case", ["unknown run", "no benchmarks.csv", "no runs", "bad columns", "unknown against",
                                  "against no benchmarks", "bad csv", "bad environment", "bad threshold"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, case):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "20250601T120000-aaaaaaa", **SMALL)
    args = [run.name]
    if case == "unknown run":
        args = ["20990101T000000-nothere"]
    elif case == "no benchmarks.csv":
        not_a_bench(run)
    elif case == "no runs":
        monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "empty"))
        args = []
    elif case == "bad columns":
        run.file("benchmarks.csv").write_text("a,b\n1,2\n")
    elif case == "unknown against":
        args += ["--against", "nothere"]
    elif case == "against no benchmarks":
        args += ["--against", str(gate_run(tmp_path / "results").path)]
    elif case == "bad threshold":
        args += ["--threshold", "0.9"]
    elif case == "bad csv":
        run.file("benchmarks.csv").write_bytes(b"")
    elif case == "bad environment":
        run.file("environment.json").write_text("{not json")
    before = snapshot(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error: ") and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["read-only run folder", "out under a file", "proc"])
def test_a_page_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, where):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "20250601T120000-aaaaaaa", **SMALL)
    args = [run.name]
    if where == "read-only run folder":
        if os.geteuid() == 0:  # root writes anywhere: stand in a folder no one can write (/proc/... is one)
            monkeypatch.setattr(Path, "write_text", _refuse)
        else:
            run.path.chmod(0o555)
    elif where == "out under a file":
        args += ["--out", str(run.file("environment.json") / "page.html")]  # a folder that cannot be made
    else:
        args += ["--out", "/proc/self/report.html"]
    try:
        assert main(args) == 2
    finally:
        run.path.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith("report: error: cannot write the page to ") and err.count("\n") == 1, err
    assert not list(run.path.glob("*.tmp"))


def _refuse(self, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(self))


def test_python_m_reports_without_kan(tmp_path):
    """The real entry point in a fresh interpreter: one clear line on bad input, exit 2, no `kan` imported."""
    code = ("import runpy, sys\n"
            "sys.argv = ['reports', 'nothere']\n"
            "try:\n    runpy.run_module('reports', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    status = e.code\n"
            "assert not [m for m in sys.modules if m == 'kan' or m.startswith('kan.')], 'kan was imported'\n"
            "sys.exit(status)\n")
    env = {**os.environ, "KAN_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("report: error: no run 'nothere'") and done.stderr.count("\n") == 1, done.stderr


# --- the page as a user sees it: headless Chromium over the DevTools protocol -----------------------

BROWSERS = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"]


def find_browser() -> str | None:
    """$CHROME, else the first Chromium or Chrome on PATH."""
    import shutil

    candidates = [os.environ["CHROME"]] if os.environ.get("CHROME") else BROWSERS
    return next((found for name in candidates if (found := shutil.which(name))), None)


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe``: DevTools messages on fds 3 and 4.

    Commands go out as JSON terminated by a NUL byte on fd 3; answers and events come
    back the same way on fd 4. Every event is kept in ``events`` for the test to inspect.
    """

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe"]

    def __init__(self, executable: str, profile: Path, log: Path):
        import fcntl

        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # Lift the child's ends above fd 4 so that placing them on 3 and 4 cannot clobber one another.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)

        def on_fds_3_and_4():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        with open(log, "wb") as err:
            self.process = subprocess.Popen(
                [executable, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(3, 4), preexec_fn=on_fds_3_and_4)
        os.close(child_r)
        os.close(child_w)
        self.buffer, self.last_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive(timeout)
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        seen = [e for e in self.events if e.get("method") == method]
        while not seen:
            event = self._receive(timeout)
            self.events.append(event)
            if event.get("method") == "Page.javascriptDialogOpening":
                raise AssertionError(f"the page opened a dialog: {event['params'].get('message')!r}")
            if event.get("method") == method:
                seen.append(event)
        return seen[0]

    def _receive(self, timeout: float) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError(f"the browser did not answer within {timeout} s")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed the DevTools pipe (did it start?)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


PAGE_STATE = """JSON.stringify({
  headings: [...document.querySelectorAll("h1, h2")].map(h => h.textContent.trim()),
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  escaped: document.body.innerText.includes("<script>alert(1)</script>"),
  scripts: document.scripts.length,
})"""


@pytest.mark.skipif(find_browser() is None, reason="no Chromium or Chrome installed (`apt-get install chromium`, "
                    "or set $CHROME); .ci/run installs one")
def test_page_in_headless_chromium(pages, tmp_path):
    """Open the merged page: no console errors, every image loads, the headings are there, nothing fetched."""
    import base64

    browser = Browser(find_browser(), tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": pages["full"].as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        state = json.loads(browser.send("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True},
                                        session=session)["result"]["value"])
        height = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        shot = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 16000), "scale": 1}}, session=session)
    finally:
        browser.close()
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"\nscreenshot: {screenshot}")

    errors = [e["params"] for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    fetched = [e["params"]["request"]["url"][:80] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert fetched and all(url.startswith(("file:", "data:")) for url in fetched), fetched
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert state["headings"] == ["KAN benchmark report", MAIN_HEADINGS[0], "What changed", *MAIN_HEADINGS[1:]]
    assert len(state["images"]) >= 10
    assert [i for i in state["images"] if not (i["complete"] and i["width"] > 0)] == []
    assert state["escaped"] and state["scripts"] == 0
    assert screenshot.stat().st_size > 50_000


FITS = """JSON.stringify([...document.querySelectorAll("#headline .scroll")].map(d => [d.scrollWidth, d.clientWidth]))"""


@pytest.mark.skipif(find_browser() is None, reason="no Chromium or Chrome installed (`apt-get install chromium`, "
                    "or set $CHROME); .ci/run installs one")
def test_the_headline_table_fits_a_900_pixel_window(pages, tmp_path):
    import base64

    browser = Browser(find_browser(), tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 900, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": pages["single"].as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        widths = json.loads(browser.send("Runtime.evaluate", {"expression": FITS, "returnByValue": True},
                                         session=session)["result"]["value"])
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
    finally:
        browser.close()
    (tmp_path / "headline-900.png").write_bytes(base64.b64decode(shot["data"]))
    print(f"\nscreenshot: {tmp_path / 'headline-900.png'}")
    assert widths and all(scroll <= client for scroll, client in widths), widths  # nothing to scroll to


def test_a_run_merged_with_itself_counts_once(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    (alone,) = data.load_all([run])
    twice = data.load_all([run, record.Run(run.path), record.Run(tmp_path / "." / run.name)])
    assert len(twice) == 1 and len(twice[0].benchmarks) == len(alone.benchmarks)


def test_the_shards_of_one_run_merge_as_one_machine(tmp_path):
    a = make_run(tmp_path, "20250601T120000-aaaaaaa", shapes=[("784x64x10", 256, 5)], attribution=False,
                 quality=False, models={"kan": 9.0, "mlp": 1.0})
    b = make_run(tmp_path, "20250601T120001-aaaaaaa", shapes=[("784x64x10", 1024, 5)], attribution=False,
                 quality=False, models={"kan": 9.0, "mlp": 1.0})
    c = make_run(tmp_path, "20250601T120002-aaaaaaa", shapes=[("784x64x10", 64, 5)], attribution=False,
                 quality=False, models={"kan": 9.0, "mlp": 1.0})
    for run, shard in ((a, "1/2"), (b, "2/2")):
        run.write_json(record.BENCH_SETTINGS, {"suite": "full", "shard": shard})
    merged = data.load_all([a, b])
    assert [d.machine for d in merged] == ["laptop", "laptop"]  # one machine, its shapes from both parts
    assert sorted(pd.concat([d.benchmarks for d in merged])["batch"].unique()) == [256, 1024]
    apart = data.load_all([a, c])  # c is another run of the same machine, not a shard: told apart
    assert [d.machine for d in apart] == [f"laptop ({a.name})", f"laptop ({c.name})"]


def test_the_default_page_puts_the_newest_of_each_kind_together(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    small = dict(models={"kan": 9.0, "mlp": 1.0}, shapes=[("784x64x10", 256, 5)])
    old_bench = make_run(tmp_path, "20250601T110000-aaaaaaa", attribution=False, quality=False, **small)
    bench = make_run(tmp_path, "20250601T120000-aaaaaaa", attribution=False, quality=False, **small)
    profile = make_run(tmp_path, "20250601T120500-aaaaaaa", attribution=True, quality=False, **small)
    not_a_bench(profile)  # a profile run: attribution only
    other_commit = make_run(tmp_path, "20250601T121000-bbbbbbb", attribution=False, quality=True, **small)
    not_a_bench(other_commit)
    env = other_commit.environment()
    other_commit.write_json("environment.json", {**env, "commit": {**env["commit"], "id": "fedcba9876543210"}})
    other_machine = make_run(tmp_path, "20250601T121500-aaaaaaa", machine="gpu-box", attribution=False,
                             quality=True, **small)
    not_a_bench(other_machine)
    newest = make_run(tmp_path, "20250601T122000-aaaaaaa", attribution=False, quality=True, **small)
    not_a_bench(newest)  # a quality run, the newest
    picked = [r.name for r in data.default_runs()]
    assert picked == [newest.name, profile.name, bench.name]  # not the older bench, nor other commits or machines
    assert old_bench.name not in picked
    page = render()
    assert page == newest.path / "report.html"
    (one,) = {d.machine for d in data.load_all(data.default_runs())}  # one machine: nothing relabelled
    assert one == "laptop"


def test_a_peers_run_adds_its_peers_to_the_bench_page(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    bench = make_run(tmp_path, "20250601T120000-aaaaaaa", attribution=False, quality=False, **{
        k: v for k, v in SMALL.items() if k in ("models", "shapes")})
    peers = make_run(tmp_path, "20250601T121000-aaaaaaa", attribution=False, quality=False,
                     models={"kan": 9.0, "peer:flashkan": 4.0, "mlp": 1.0, "mlp-param": 2.2},
                     shapes=[("784x64x10", 256, 5)])
    peers.write_json("peers.json", {"peers": {"flashkan": {"status": "ok", "version": "0.2.0"}}})
    picked = data.default_runs()
    assert [r.name for r in picked] == [peers.name, bench.name]
    loaded = data.load_all(picked)
    assert {d.machine for d in loaded} == {"laptop"}
    rows = pd.concat([d.benchmarks for d in loaded])
    assert (rows["model"] == "peer:flashkan").any()
    assert len(rows[rows["model"] == "kan"]) == len(bench.read_bench_table().query("model == 'kan'"))  # ours once
    page = render().read_text()
    assert "peer:flashkan" in page


def test_the_cpu_lesson_says_how_large_the_noise_between_profiled_runs_was():
    pairs = pd.DataFrame([
        {"machine": "m", "scenario": "loop", "profiler": "py-spy", "model": "kan", "device": "cpu", "phase": "loop",
         "part": "basis", "unsynchronized": 0.40, "synchronized": 0.22},
        {"machine": "m", "scenario": "loop", "profiler": "py-spy", "model": "kan", "device": "cpu", "phase": "loop",
         "part": "matmul", "unsynchronized": 0.60, "synchronized": 0.78},
    ])
    noise = [{"profiler": "py-spy", "device": "cpu", "largest_noise_points": 6.7,
              "largest_synchronized_points": 18.0, "within_noise": False}]
    (said,), table = profile_tables.sync_lesson(pairs, noise)
    assert "should agree" not in said and "noise between profiled runs" in said
    assert "moved a part's share by up to 7 points, the synchronised loop by up to 18, more than that noise" in said
    (without,), _ = profile_tables.sync_lesson(pairs)
    assert "profile the loop again" in without and table is not None
    sampled = [{**noise[0], "sampling_points": 21.2, "within_noise": True}]  # py-spy's few samples
    (said,), _ = profile_tables.sync_lesson(pairs, sampled)
    assert "up to 7 points (sampling alone moves one by up to 21), the synchronised loop by up to 18, within" in said


def test_every_chart_has_a_key_and_no_section_is_an_empty_heading(pages):
    import base64

    for name in ("single", "full"):
        page = pages[name].read_text()
        charts = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]*)"', page)
        assert len(charts) >= 6
        for data_uri, alt in charts:
            svg = base64.b64decode(data_uri).decode()
            assert re.search(r'id="legend_\d+"', svg), f"no key on the chart: {alt}"
        for section in re.findall(r"<section id=\"[^\"]+\">(.*?)</section>", page, flags=re.S):
            body = re.sub(r"<h2>.*?</h2>|<p class=\"from\">.*?</p>|\s", "", section, flags=re.S)
            assert body, f"a heading over emptiness: {section[:80]}"


# --- every text of every chart inside its picture ------------------------------------------------

def _transform(text: str | None) -> np.ndarray:
    """An SVG transform attribute as a 3x3 matrix (translate, scale, rotate, matrix; applied in order)."""
    m = np.eye(3)
    for name, args in re.findall(r"(\w+)\s*\(([^)]*)\)", text or ""):
        v = [float(a) for a in re.split(r"[\s,]+", args.strip()) if a]
        if name == "translate":
            t = np.array([[1, 0, v[0]], [0, 1, v[1] if len(v) > 1 else 0], [0, 0, 1]])
        elif name == "scale":
            t = np.diag([v[0], v[1] if len(v) > 1 else v[0], 1])
        elif name == "rotate":
            a = math.radians(v[0])
            cx, cy = (v[1], v[2]) if len(v) == 3 else (0, 0)
            r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
            t = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]]) @ r @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
        elif name == "matrix":
            t = np.array([[v[0], v[2], v[4]], [v[1], v[3], v[5]], [0, 0, 1]])
        else:
            raise AssertionError(f"unknown SVG transform {name}")
        m = m @ t
    return m


def texts_outside(svg: str, slack: float = 1.0) -> list[str]:
    """The text elements of a matplotlib SVG (text kept as text) whose box reaches out of the viewBox.

    A text's box is the width, height and descent that the font (DejaVu Sans, matplotlib's and the
    page's first choice) gives the string at its font size, placed by its text-anchor at its
    baseline, then carried through its own and its parents' transforms.
    """
    import xml.etree.ElementTree as ET

    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure = TextToPath()

    root = ET.fromstring(svg.encode())
    x0, y0, width, height = (float(v) for v in root.get("viewBox").split())
    outside = []

    def walk(node, matrix):
        matrix = matrix @ _transform(node.get("transform")) if not node.tag.endswith("text") else matrix
        if node.tag.endswith("text"):
            content = "".join(node.itertext())
            style = node.get("style", "")
            size = float(re.search(r"font-size:\s*([\d.]+)px", style).group(1))
            anchor = (re.search(r"text-anchor:\s*(\w+)", style) or [None, "start"])[1]
            x, y = float(node.get("x", 0)), float(node.get("y", 0))
            w, h, d = measure.get_text_width_height_descent(content, FontProperties(family="DejaVu Sans", size=size),
                                                            ismath=False)
            left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
            top, bottom = y - (h - d), y + d
            corners = np.array([[left, top, 1], [left + w, top, 1], [left, bottom, 1], [left + w, bottom, 1]]).T
            placed = (matrix @ _transform(node.get("transform")) @ corners)[:2]
            if (placed[0].min() < x0 - slack or placed[0].max() > x0 + width + slack
                    or placed[1].min() < y0 - slack or placed[1].max() > y0 + height + slack):
                outside.append(f"{content!r} at x {placed[0].min():.1f}..{placed[0].max():.1f}, "
                               f"y {placed[1].min():.1f}..{placed[1].max():.1f} in {width:g} x {height:g}")
            return
        for child in node:
            walk(child, matrix)

    walk(root, np.eye(3))
    return outside


def test_the_text_check_finds_a_key_that_reaches_out():
    """The checker itself, on a hand-written SVG: one text inside, one cut at the left, one rotated out."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50">'
           '<text style="font-size: 10px; text-anchor: start" x="5" y="20">inside</text>'
           '<text style="font-size: 10px; text-anchor: middle" x="3" y="40">basis</text>'
           '<g transform="translate(90 10)"><text style="font-size: 10px; text-anchor: start" x="0" y="0" '
           'transform="rotate(-90 0 0)">up and away</text></g></svg>')
    found = texts_outside(svg)
    assert len(found) == 2 and found[0].startswith("'basis'") and found[1].startswith("'up and away'")


def page_svgs(page: str) -> list[tuple[str, str]]:
    import base64

    return [(base64.b64decode(uri).decode(), alt)
            for uri, alt in re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]*)"', page)]


def test_every_text_of_every_chart_lies_inside_its_picture(pages, tmp_path):
    """Every chart of the pages, and the share chart with every part of a real profile (the widest key)."""
    svgs = [s for name in ("single", "full") for s in page_svgs(pages[name].read_text())]
    every_part = pd.DataFrame([
        {"profiler": profiler, "scenario": "loop", "model": "kan", "device": "cpu", "phase": "loop",
         "synchronized": sync, "part": part, "seconds": 1.0 + i, "share": np.nan}
        for profiler in ("cprofile", "py-spy", "torch") for sync in (False, True)
        for i, part in enumerate(schema.PARTS)])
    chart = charts.attribution(data._tidy_attribution(every_part, record.Run(tmp_path)), "loop")
    svgs += page_svgs(f'<img src="{chart.uri}" alt="{chart.alt}"')
    assert len(svgs) >= 15
    problems = [f"{alt}: {p}" for svg, alt in svgs for p in texts_outside(svg)]
    assert problems == []


# --- partial runs ----------------------------------------------------------------------------------

def not_a_bench(run: record.Run) -> None:
    """``run`` with neither the bench's table nor the measurements it could be rebuilt from."""
    run.file("benchmarks.csv").unlink()
    run.file(record.MEASUREMENTS).unlink()


def killed_run(root: Path, name: str, rows: int = 7, state: str | None = "running") -> record.Run:
    """A bench run stopped before it wrote its table: measurements.jsonl only (whole-number figures
    missing, as a row without a peak memory has them), and bench.json still saying it runs."""
    run = make_run(root, name, **SMALL)
    table = pd.read_csv(run.file("benchmarks.csv")).to_dict("records")
    run.file("benchmarks.csv").unlink()
    run.file(record.MEASUREMENTS).unlink()
    for r in table[:rows]:
        r = {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        run.append_jsonl(record.MEASUREMENTS, {**r, "peak_bytes": None, "flops": None})
    if state is not None:
        run.write_json(record.BENCH_SETTINGS, {"suite": "quick", "cases": len(table), "state": state})
    return run


def test_a_killed_run_renders_and_is_marked_partial(tmp_path):
    run = killed_run(tmp_path, "20250601T120000-aaaaaaa")
    assert run.partial() == "stopped before it finished (killed, or still running) after 7 of 24 cases"
    page = render(str(run.path)).read_text()
    assert '(<strong class="partial">partial run</strong>)' in page
    assert "is a <strong>partial run</strong>: stopped before it finished (killed, or still running) after 7 of 24" in page
    older = killed_run(tmp_path, "20250601T110000-aaaaaaa", state=None)  # an older harness's killed run: no state
    assert older.partial() == "stopped before it finished (killed, or still running) after 7 cases"
    interrupted = killed_run(tmp_path, "20250601T130000-aaaaaaa", state=record.INTERRUPTED)
    assert interrupted.partial().startswith("interrupted (Ctrl-C or SIGTERM) after 7 of 24 cases")


def test_the_default_page_prefers_the_newest_complete_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    complete = make_run(tmp_path, "20250601T110000-aaaaaaa", **SMALL)
    complete.write_json(record.BENCH_SETTINGS, {"suite": "quick", "cases": 24, "state": record.COMPLETE})
    killed_run(tmp_path, "20250601T120000-aaaaaaa")
    assert [r.name for r in data.default_runs()] == [complete.name]
    page = render().read_text()
    assert page.count("partial run") == 0
    # with no complete run, the partial one is shown, and marked
    only = tmp_path / "only"
    monkeypatch.setenv("KAN_RESULTS", str(only))
    partial = killed_run(only, "20250601T120000-aaaaaaa", state=record.INTERRUPTED)
    assert [r.name for r in data.default_runs()] == [partial.name]
    assert "is a <strong>partial run</strong>: interrupted" in render().read_text()


def test_a_model_name_of_megabytes_is_cut_on_the_page_and_its_charts(tmp_path):
    huge = "k" * 2_000_000 + "-kan"
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", models={"kan": 9.0, huge: 3.0, "mlp": 1.0, "mlp-param": 2.2},
                   shapes=[("784x64x10", 256, 5)], attribution=False, quality=False)
    page = render(str(run.path)).read_text()
    assert len(page) < 2_000_000 and "(1,999,704 more characters)" in page
    for svg, alt in page_svgs(page):
        assert "k" * 100 not in svg and texts_outside(svg) == [], alt


# --- the profile on the page -----------------------------------------------------------------------

def test_a_profile_run_shows_its_noise_backward_notes_and_each_profilers_cost(tmp_path):
    run = record.Run(tmp_path / "20250603T120000-ccccccc-profile")
    run.path.mkdir()
    run.write_table("attribution", attribution_rows(device="cpu"))
    run.write_json("profile.json", {
        "settings": {"steps": 5, "py_spy_native": True},
        "backward": {"cprofile": "sees only the engine's one C call", "torch": "splits it exactly"},
        "loop_noise": {"profiles": [{"profiler": "cprofile", "device": "cpu", "largest_noise_points": 4.2,
                                     "largest_synchronized_points": 3.0, "within_noise": True}]},
        "overhead": {"scenarios": {"kan-cpu-loop": {"steps": 5, "bare_s": 0.5, "profilers": {
            "cprofile": {"seconds": 0.584, "factor": 1.17}, "torch": {"seconds": 0.799, "factor": 1.6},
            "py-spy": {"seconds": 12.4, "factor": 24.8}}}}},
    })
    page = render(str(run.path)).read_text()
    # profile.json is read: the noise sentence and the backward notes, never "profile the loop again"
    assert "the same loop profiled twice moved a part&#39;s share by up to 4 points" in page
    assert "profile the loop again" not in page
    assert "<dt>torch</dt><dd>splits it exactly</dd>" in page
    # each profiler's cost, and the shares compared, not the times
    assert "What each profiler costs" in page
    assert re.search(r"12.4 s<span class=\"sub\">24.8× the bare time</span>", page)
    assert "500 ms" in page and "1.17× the bare time" in page
    assert "py-spy ran with --native" in page and "pauses the process it samples" in page
    assert "compare by their shares of the time, never by their times" in page


def test_a_profiler_that_seems_to_speed_the_steps_up_is_not_given_a_cost_below_one():
    """Measured on a busy machine with --steps 2: cProfile's run 0.026 s, the bare run 0.22 s after it. No profiler
    makes the steps 8x faster: the load moved between the runs, and the cell says so instead of a factor."""
    table = profile_tables.overhead_table({"scenarios": {"kan-fast-cpu-backward": {"steps": 2, "bare_s": 0.2212,
                                                         "profilers": {"cprofile": {"seconds": 0.02596, "factor": 0.12}}},
                                                         "kan-fast-cpu-forward": {"steps": 2, "bare_s": 0.1408,
                                                         "profilers": {"cprofile": {"seconds": 0.2164, "factor": 1.54}}}}})
    backward, forward = table.rows
    assert "0.12×" not in backward[2].sub and "faster than without a profiler" in backward[2].sub
    assert forward[2].sub == "1.54× the bare time"


# --- what a user looks for next to the headline -----------------------------------------------------

def test_next_to_the_headline_the_same_function_the_speedup_no_gate_and_the_conditions(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", load=3.2, **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv"))
    fast_forward = (bench.model == "kan-fast") & (bench.phase == "forward")
    bench["equivalence"] = bench["equivalence"].astype(object)
    bench.loc[fast_forward, "max_rel_difference"] = [2.4e-7, 3.1e-7]
    bench.loc[fast_forward, "equivalence"] = ["max |kan-fast - kan| = 2.4e-07", "max |kan-fast - kan| = 3.1e-07"]
    bench["clock"] = "cpu"
    bench["threads"] = 1
    run.write_table("benchmarks", bench)
    page = render(str(run.path)).read_text()
    assert ("kan-fast computes the same function as kan: given kan&#39;s weights, its largest output difference "
            "is 3.1e-07 of kan&#39;s largest output over 2 workloads of this run&#39;s own inputs") in page
    # the speed-up, by hand: kan-fast / kan of the ratios to the MLP, geometric mean over the two shapes
    rows = data.load(run).benchmarks
    for phase in ("forward", "train"):
        at = rows[rows.phase == phase].set_index(["model", "batch"])["x_mlp"]
        expected = math.exp(np.mean([math.log(at[("kan", b)] / at[("kan-fast", b)]) for b in (256, 1024)]))
        assert f"{phase}, geometric mean over 2 workloads: kan-fast is {stats.plain(expected)}x faster than kan" in page
    assert "No speed gate run on this page" in page
    assert "Measured on the process&#39;s CPU time (one thread" in page and "1 thread; load average 3.2 on 2 cores" in page
    assert "more work than cores" in page
    # a difference beyond float32's rounding is said as such
    bench.loc[fast_forward & (bench.batch == 1024), "max_rel_difference"] = 2e-3
    run.write_table("benchmarks", bench)
    assert ("kan-fast does NOT compute the same function as kan in 1 of 2 workloads: given kan&#39;s weights, its "
            "output differs by up to 0.002 of kan&#39;s largest output (float32, 784x64x10 · batch 1024 · grid 5")\
        in render(str(run.path)).read_text()
    # an older run, without the difference recorded, says so rather than claim it
    bench = bench.drop(columns=["max_rel_difference"])
    run.write_table("benchmarks", bench)
    assert "this run did not record whether they compute the same function" in render(str(run.path)).read_text()


def test_a_ratio_outside_its_own_interval_still_draws(tmp_path):
    """An older table's x_mlp (a ratio of medians) can fall outside its interval (of per-round ratios)."""
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv"))
    kan = bench.model == "kan"
    bench.loc[kan, "x_mlp"] = bench.loc[kan, "x_mlp_high"] * 1.1
    run.write_table("benchmarks", bench)
    chart = charts.mlp_ratios(data.load(run).benchmarks, "cpu")
    assert chart is not None and "KAN / MLP time over shapes and grid sizes" in render(str(run.path)).read_text()


def test_an_older_run_with_stable_and_unstable_reason_only_still_renders_its_words(tmp_path):
    run = make_run(tmp_path, "20250601T120000-aaaaaaa", **SMALL)
    bench = pd.read_csv(run.file("benchmarks.csv")).drop(columns=["imprecise", "interference"])
    kan = (bench.model == "kan") & (bench.phase == "forward")
    bench["unstable_reason"] = bench["unstable_reason"].astype(object)
    bench.loc[kan, ["stable", "unstable_reason"]] = ["unstable", "interval to mlp ±9%; 30 of 40 samples disturbed"]
    run.write_table("benchmarks", bench)
    page = render(str(run.path)).read_text()
    assert "unstable" not in re.sub(r"<details>.*?</details>", "", page, flags=re.S)
    cells = {row[0].text: row for row in tables.headline(data.load(run).benchmarks, "cpu").rows}
    assert cells["kan"][1].text.endswith("× slower") and "imprecise" in cells["kan"][1].sub
    assert "disturbed (2 of 2 shapes: 30 of 40 samples disturbed)" in cells["kan"][1].title
