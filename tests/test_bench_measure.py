"""Cases, steps, memory figures and the NaN/inf flag of one measurement."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.core import measure as measure_module
from benchmarks.core import memory, record
from benchmarks.core.case import Case, ModelUnavailable, build_model, make_step
from benchmarks.core.measure import Group
from benchmarks.suite.suites import SUITES
from benchmarks.core.record import bench_table as tidy
from benchmarks.core.timer import max_threads


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: records what pedantic was given."""

    def __init__(self):
        self.pedantic_calls = 0
        self.extra_info = {}
        self.skipped = False

    def pedantic(self, fn, rounds, iterations, warmup_rounds):
        self.pedantic_calls += 1
        self.rounds = rounds


class NaNAfter(torch.nn.Module):
    """A linear map whose output turns NaN from call number ``after`` on (never registered)."""

    def __init__(self, widths, after: int = 1):
        super().__init__()
        self.linear = torch.nn.Linear(widths[0], widths[-1])
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += 1
        y = self.linear(x)
        return y * float("nan") if self.calls >= self.after else y


def group_of(*cases):
    return Group(tuple(cases))


def odd(models: dict):
    """A step builder that gives the cases named in ``models`` those models, the others their own."""
    return lambda case: make_step(case, model=models[case.model]()) if case.model in models else make_step(case)


def test_nonfinite_first_call_is_flagged_and_never_timed():
    case = Case("nan", "forward", widths=(2, 5, 1), batch=8, grid_size=None)
    mlp = Case("mlp", "forward", widths=(2, 5, 1), batch=8, grid_size=None)
    measured = measure_module.measure_group(group_of(case, mlp), SUITES["smoke"], threads=1,
                                            build=odd({"nan": lambda: NaNAfter(case.widths, after=1)}))
    m = measured[case.id]
    assert m.status == "nonfinite" and "NaN in the forward output" in m.reason
    assert m.samples == () and "median_s" not in m.row() and m.first_call_s is None
    assert measured[mlp.id].status == "ok"  # the others go on


def test_nonfinite_during_timing_discards_the_timing():
    case = Case("nan", "train", widths=(2, 5, 1), batch=8, grid_size=None)
    m = measure_module.measure_group(group_of(case), SUITES["smoke"], threads=1,
                                     build=odd({"nan": lambda: NaNAfter(case.widths, after=3)}))[case.id]
    assert m.status == "nonfinite" and "NaN" in m.reason and "median_s" not in m.row()


def test_nonfinite_is_flagged_in_the_record(tmp_path):
    """Through the suite's own test body: the row lands in the run with its status, the test fails."""
    from benchmarks.suite import test_bench

    case = Case("mlp", "backward", widths=(2, 5, 1), batch=8, grid_size=None)
    build = odd({"mlp": lambda: NaNAfter(case.widths)})
    measured = lambda c: measure_module.measure_group(group_of(c), SUITES["smoke"], threads=1, build=build)[c.id]  # noqa: E731
    run = record.new_run(root=tmp_path)
    request = type("Request", (), {"node": type("Node", (), {"name": "test_case[nan]"})()})()
    with pytest.raises(pytest.fail.Exception, match="NaN"):
        test_bench.test_case(FakeBenchmark(), case, measured, run, request)
    rows = run.read_jsonl(record.MEASUREMENTS)
    assert [r["status"] for r in rows] == ["nonfinite"]
    frame = tidy(run.measurements())
    assert frame.loc[0, "status"] == "nonfinite" and pd_isna(frame.loc[0, "median_s"])


def pd_isna(v) -> bool:
    return v is None or v != v


def test_a_finite_group_fills_every_figure():
    mlp = Case("mlp", "train", widths=(2, 5, 1), batch=8, grid_size=None)
    kan = Case("kan", "train", widths=(2, 5, 1), batch=8, grid_size=5)
    param = Case("mlp-param", "train", widths=(2, 5, 1), batch=8, grid_size=5)
    threads = max_threads()
    before = torch.get_num_threads()
    measured = measure_module.measure_group(group_of(kan, param, mlp), SUITES["smoke"], threads=threads)
    rows = {name: m.row() for name, m in measured.items()}
    assert torch.get_num_threads() == before  # the run's count applied while it measured, then restored
    row = rows[mlp.id]
    assert row["status"] == "ok" and row["rounds"] == 2 and len(measured[mlp.id].samples) == 2
    assert row["first_call_s"] > 0 and row["threads"] == threads
    assert row["clock"] == ("cpu" if threads == 1 else "wall")
    assert row["param_bytes"] == 4 * row["parameters"] and row["saved_bytes"] > 0
    assert row["peak_bytes"] is None  # the CPU keeps no peak
    assert row["x_mlp"] == 1.0 and "x_mlp_param" not in row  # the MLP has no grid to match mlp-param's
    k = rows[kan.id]
    for column in ("x_mlp", "x_mlp_param"):  # smoke's two rounds: a ratio, and no interval (too few rounds)
        assert k[column] > 0 and math.isnan(k[f"{column}_low"]) and math.isnan(k[f"{column}_high"])
    assert k["imprecise"] is None and k["unstable_reason"] == "no interval (under 6 rounds)"  # none had, not a wide one
    assert k["stable"] in ("stable", "unstable") and k["disturbed"] >= 0
    assert k["used_rounds"] <= k["rounds"] == 2


def test_backward_setup_runs_the_forward_and_fn_only_the_backward():
    case = Case("mlp", "backward", widths=(2, 5, 1), batch=8, grid_size=None)
    step = make_step(case)
    forwards = []
    step.model.register_forward_hook(lambda *_: forwards.append(1))
    step.setup()
    assert len(forwards) == 1 and all(p.grad is None for p in step.model.parameters())
    step.fn()
    assert len(forwards) == 1 and all(p.grad is not None for p in step.model.parameters())


def test_train_step_changes_the_parameters_and_forward_keeps_the_shape():
    case = Case("mlp", "train", widths=(2, 5, 1), batch=8, grid_size=None)
    step = make_step(case)
    before = [p.detach().clone() for p in step.model.parameters()]
    step.setup()
    step.fn()
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
    fwd = make_step(Case("kan", "forward", dtype="bfloat16", widths=(2, 5, 1), batch=8))
    fwd.setup()
    fwd.fn()
    assert fwd.state["output"].shape == (8, 1) and fwd.state["output"].dtype == torch.bfloat16
    assert fwd.inputs.min() >= -1 and fwd.inputs.max() <= 1


def test_saved_bytes_by_hand():
    x = torch.randn(8, 4)  # 128 bytes
    lin = torch.nn.Linear(4, 3)
    # linear saves its input (for the weight's gradient), silu its input (8, 3): 128 + 96
    assert memory.saved_tensor_bytes(lambda: torch.nn.functional.silu(lin(x)), exclude=lin.parameters()) == 224
    xg = torch.randn(8, 4, requires_grad=True)
    # x * x saves x twice: one storage, counted once
    assert memory.saved_tensor_bytes(lambda: xg * xg) == 128
    # x @ W^T saves x and a view of W; W, a parameter, is left out
    assert memory.saved_tensor_bytes(lambda: xg @ lin.weight.t(), exclude=lin.parameters()) == 128
    assert memory.param_bytes(lin) == (12 + 3) * 4
    assert memory.param_bytes(lin.to(torch.bfloat16)) == (12 + 3) * 2
    assert memory.DeviceMemory("cpu").read() is None


def test_a_model_that_cannot_be_imported_is_unavailable_not_a_crash(monkeypatch):
    from kan import zoo

    entry = zoo.REGISTRY["kan"]
    monkeypatch.setitem(zoo.REGISTRY, "kan", type(entry)(
        entry.name, entry.description, "kan.no_such_module:KAN", entry.flops, entry.family))
    with pytest.raises(ModelUnavailable, match="kan.no_such_module:KAN cannot be imported: ModuleNotFoundError"):
        build_model(Case("kan"))


def test_kan_fast_is_compared_with_kan_on_the_workloads_own_inputs():
    """The forward group of kan and kan-fast: kan-fast's row says how far its output is from kan's,
    given kan's weights; a variant shifted by a known amount is caught by that amount."""
    kan = Case("kan", "forward", widths=(4, 9, 3), batch=16, grid_size=5)
    fast = Case("kan-fast", "forward", widths=(4, 9, 3), batch=16, grid_size=5)
    mlp = Case("mlp", "forward", widths=(4, 9, 3), batch=16, grid_size=None)
    group = group_of(kan, fast, mlp)
    rows, candidates = measure_module.build_candidates(group, threads=1)
    from benchmarks.core.equivalence import same_function

    same_function(group, candidates, rows)
    row = rows[fast.id]
    assert 0 <= row["max_rel_difference"] <= 1e-5  # float32 outputs of a small net: within 1e-5 of their scale
    assert row["equivalence"].startswith("max |kan-fast - kan| = ") and "16 inputs, float32" in row["equivalence"]
    assert "max_rel_difference" not in rows[kan.id] and "max_rel_difference" not in rows[mlp.id]
    # a variant that computes another function is caught, by how much it is off
    rows, candidates = measure_module.build_candidates(group, threads=1)
    model = candidates[fast.id].step.model
    shifted = model.forward
    model.forward = lambda x: shifted(x) + 0.01
    same_function(group, candidates, rows)
    largest = float(candidates[kan.id].step.model(candidates[kan.id].step.inputs).abs().max())
    assert rows[fast.id]["max_rel_difference"] == pytest.approx(0.01 / largest, rel=1e-3)
    # a backward group is not checked again: once per workload, on its forward
    back = group_of(Case("kan", "backward", widths=(4, 9, 3), batch=16), Case("kan-fast", "backward", widths=(4, 9, 3), batch=16))
    rows, candidates = measure_module.build_candidates(back, threads=1)
    same_function(back, candidates, rows)
    assert all("max_rel_difference" not in r for r in rows.values())

