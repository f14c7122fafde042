"""`python -m benchmarks.studies.triton_gpu`: its shapes and verdicts are those of kan-fast's CUDA targets
(``benchmarks.studies.targets``), judged from hand-made medians; no GPU needed."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.studies import targets, triton_gpu


def test_the_shapes_are_the_cuda_targets_own():
    named = {(t.shape.widths, t.shape.batch, t.grid_size) for t in targets.TARGETS["cuda"]}
    named = [(list(widths), batch, grid) for widths, batch, grid in named]
    assert sorted(map(str, triton_gpu.SHAPES["all"])) == sorted(map(str, named))
    assert triton_gpu.SHAPES["small"] + triton_gpu.SHAPES["big"] == triton_gpu.SHAPES["all"]


def _verdicts(tmp_path, widths, batch, grid, medians, saved):
    folder = tmp_path / f"{'x'.join(map(str, widths))}-b{batch}-g{grid}"
    folder.mkdir()
    run = triton_gpu.Run(str(folder), 60.0, torch.device("cpu"))
    triton_gpu.verdicts(run, widths, batch, grid, {"medians": medians, "saved": saved})
    written = [json.loads(line) for line in open(run.path)]
    assert written == run.rows
    return {row["target"]: row for row in run.rows}


def test_verdicts_at_the_busy_mnist_shape(tmp_path):
    mine = triton_gpu.MINE
    medians = {("fwd+bwd", mine): 0.001, ("fwd+bwd", "inkan"): 0.003, ("fwd+bwd", "flashkan"): 0.0025,
               ("forward", mine): 0.0004, ("forward", "dense floor"): 0.0002}
    got = _verdicts(tmp_path, [784, 64, 10], 4096, 5, medians, {mine: 100, "kan": 400})
    assert set(got) == {"fwd+bwd: x faster than the faster peer", "forward: time / dense floor's",
                        "saved bytes / the reference's"}
    peer = got["fwd+bwd: x faster than the faster peer"]
    assert peer["ratio"] == pytest.approx(2.5) and peer["verdict"] == "met"
    assert peer["note"] == "the faster peer: flashkan"
    floor = got["forward: time / dense floor's"]
    assert floor["ratio"] == pytest.approx(2.0) and floor["verdict"] == "not met"
    memory = got["saved bytes / the reference's"]
    assert memory["ratio"] == pytest.approx(0.25) and memory["verdict"] == "met"


def test_verdicts_at_the_large_shape_and_what_is_missing(tmp_path):
    mine = triton_gpu.MINE
    got = _verdicts(tmp_path, [1024, 1024, 1024], 8192, 5,
                    {("fwd+bwd", mine): 0.010, ("fwd+bwd", "inkan"): 0.011}, {})
    peer = got["fwd+bwd: x faster than the faster peer"]
    assert peer["ratio"] == pytest.approx(1.1) and peer["verdict"] == "not met"  # 1.2x asked here
    assert peer["note"] == "the faster peer: inkan (only one peer measured)"
    got = _verdicts(tmp_path, [1024, 1024, 1024], 8192, 20, {("fwd+bwd", "mlp-param"): 0.02}, {})
    mlp = got["fwd+bwd: x faster than the parameter-matched MLP"]
    assert mlp["verdict"] == "not measured" and mlp["note"] == f"not measured: {mine}"
    assert _verdicts(tmp_path, [7, 9, 3], 33, 50, {}, {}) == {}  # no target there


def test_both_contractions_are_timed_and_the_auto_one_is_judged():
    """At each grid the study times kan-fast(triton) (contraction "auto", the one the targets judge)
    and kan-fast(triton) with the other contraction, named after it."""
    from kan.fast import TRITON_GATHER_MIN_COEFF

    assert triton_gpu.contractions(5) == ("dense", "gather")  # 8 coefficients per feature at order 3
    assert triton_gpu.contractions(50) == ("gather", "dense")
    edge = TRITON_GATHER_MIN_COEFF - 3  # the first grid whose coeff reaches the crossover at order 3
    assert triton_gpu.contractions(edge)[0] == "gather" and triton_gpu.contractions(edge - 1)[0] == "dense"
    assert triton_gpu.other_name(5) == "kan-fast(triton, gather)"
    names = set(triton_gpu.builders([2, 3], 50))
    assert {triton_gpu.MINE, "kan-fast(triton, dense)", "kan", "mlp-param"} <= names


def test_dry_run_on_the_cpu_checks_and_times_both_contractions(tmp_path):
    """--device cpu --shapes tiny under Triton's interpreter: the study's whole path (checks, turns,
    verdicts, table) on CPU tensors; its times mean nothing, its checks do."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", OUT=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "benchmarks.studies.triton_gpu", "--device", "cpu", "--shapes",
                             "tiny", "--rounds", "1", "--round-s", "0.001"], capture_output=True, text=True,
                            timeout=600, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "triton_gpu.jsonl")]
    checks = [row for row in rows if row["kind"] == "check"]
    assert len(checks) == 2 and all(row["verdict"] == "ok" for row in checks), checks
    assert set(checks[1]["errors"]) == {triton_gpu.MINE, "kan-fast(triton, dense)", "kan"}  # grid 50
    timed = {(row["shape"], row["model"]): row for row in rows if row["kind"] == "time" and row["phase"] == "fwd+bwd"}
    assert timed[("[2,5,1] b64 G5", triton_gpu.MINE)]["contraction"] == "dense"
    assert timed[("[2,5,1] b64 G5", "kan-fast(triton, gather)")]["contraction"] == "gather"
    assert timed[("[7,9,3] b33 G50", triton_gpu.MINE)]["contraction"] == "gather"
    assert not [row for row in rows if row["kind"] == "error"], [row for row in rows if row["kind"] == "error"]


def test_the_faster_contraction_is_named_per_phase(tmp_path):
    run = triton_gpu.Run(str(tmp_path), 60.0, torch.device("cpu"))
    medians = {("forward", triton_gpu.MINE): 0.004, ("forward", "kan-fast(triton, dense)"): 0.010,
               ("fwd+bwd", triton_gpu.MINE): 0.030, ("fwd+bwd", "kan-fast(triton, dense)"): 0.024}
    triton_gpu.contraction_row(run, [1024, 1024, 1024], 8192, 50, {"medians": medians})  # auto: gather at grid 50
    forward, both = run.rows
    assert forward["faster"] == "gather" and forward["by"] == pytest.approx(2.5) and forward["auto_faster"]
    assert both["faster"] == "dense" and both["by"] == pytest.approx(1.25) and not both["auto_faster"]
    assert (both["dense_s"], both["gather_s"]) == (0.024, 0.030)
    shown = triton_gpu.table(run).splitlines()
    assert shown[1].endswith("fwd+bwd  dense by x1.25 (auto chose gather)"), shown
    triton_gpu.contraction_row(run, [2, 5, 1], 1024, 5, {"medians": {("forward", triton_gpu.MINE): 0.001}})
    assert len(run.rows) == 2  # the other contraction not timed: no row


GRAPHS = """
import json, sys, torch
from benchmarks.studies import triton_gpu

def capture(model, inputs, num_warmup_iters):  # make_graphed_callables' stand-in on the CPU
    print("captured", type(model).__name__, tuple(inputs[0].shape), num_warmup_iters)
    return model

def refuse(model, inputs, num_warmup_iters):
    raise RuntimeError("operation not permitted when stream is capturing")

for folder, how in zip(sys.argv[1:], (capture, refuse)):
    run = triton_gpu.Run(folder, 60.0, torch.device("cpu"))
    triton_gpu.graphs(run, 2, 0.001, shapes=[([2, 5, 1], 16, 5)], capture=how)
    print(triton_gpu.table(run))
"""


def test_the_graphs_probe_times_eager_and_captured_and_says_what_failed(tmp_path):
    """``graphs`` under Triton's interpreter, a stand-in capture: the rows it writes (the sync debug
    mode and the capture itself are CUDA's, so not what is checked here)."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    folders = [tmp_path / "captured", tmp_path / "refused"]
    for folder in folders:
        folder.mkdir()
    result = subprocess.run([sys.executable, "-c", GRAPHS, *map(str, folders)], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TRITON_INTERPRET="1"),
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "captured FastBSplineKAN (16, 2) 3" in result.stdout and "captured ParamMatchedMLP (16, 2) 3" in result.stdout
    captured, refused = ([json.loads(line) for line in open(folder / "triton_gpu.jsonl")] for folder in folders)
    mine = triton_gpu.MINE
    assert [row["host_waits"] for row in captured if row["kind"] == "sync"] == ["not checked (CUDA only)"]
    timed = {row["model"]: row for row in captured if row["kind"] == "time"}
    assert set(timed) == {mine, f"{mine} graphed", "mlp-param", "mlp-param graphed"}
    assert all(row["phase"] == "fwd+bwd graphs" and row["rounds"] == 2 and row["shape"] == "[2,5,1] b16 G5"
               for row in timed.values())
    assert not [row for row in captured if row["kind"] == "error"]
    errors = [row for row in refused if row["kind"] == "error"]
    assert [(row["model"], row["error"]) for row in errors] == [
        (mine, "RuntimeError: operation not permitted when stream is capturing"),
        ("mlp-param", "RuntimeError: operation not permitted when stream is capturing")]
    assert {row["model"] for row in refused if row["kind"] == "time"} == {mine, "mlp-param"}  # eager still timed


def test_the_forward_is_judged_against_the_targets_studys_dense_floor():
    """One product of (batch, in x (coeff + 1)) by (in x (coeff + 1), out) of the first layer, as
    ``python -m benchmarks.studies.targets`` times it: 2 x 8 x (784 x 9) x 64 FLOPs at grid 5."""
    from torch.utils.flop_counter import FlopCounterMode

    step = triton_gpu.floor_step([784, 64, 10], 8, 5, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        step()
    assert counter.get_total_flops() == 2 * 8 * (784 * 9) * 64
