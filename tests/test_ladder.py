"""The full suite's ladder on an accelerator (benchmarks.suite.ladder, the runner's climb).

No GPU is needed: the groups are measured by a fake measurer that returns the device activity
a test injects (a busy share per rung, or a fixed overhead plus work at a fixed rate, or an
out-of-memory error as torch raises it), and recorded H200 figures (tests/fixtures, and the
dated note docs/measured/2026-12-04-h200.md) set the busy share where one is read back. The
CUDA device is made present for the runner only; nothing runs on it.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.core import device, record
from benchmarks.core.case import Case, phase_flops
from benchmarks.core.cli import one_line
from benchmarks.core.measurement import Measurement
from benchmarks.core.phases import SUITE_PHASES
from benchmarks.suite import cli, ladder, runner, suites
from benchmarks.suite.suites import FULL_LADDER, SUITES, Selection

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = ("kan", "kan-fast", "mlp", "mlp-param")  # the models of the recorded CPU case list
SAMPLES = 10


# --------------------------------------------------------------------------- the suites


def test_the_full_cpu_suite_is_the_case_list_it_was():
    """The CPU's full suite, case by case and in order, is what main had before the ladder
    (tests/fixtures/full-cpu-cases.txt, written from main at 8abd113 for MODELS), and what
    docs/bench.md's table says, counted here by hand: 8 shape-batches x 3 phases x 2 dtypes x
    (3 gridded models x 3 grids + the MLP)."""
    recorded = (FIXTURES / "full-cpu-cases.txt").read_text().split()
    for graphs in (False, True):  # graphs are CUDA's: the CPU list is the same with them asked for
        assert [c.id for c in suites.select("full", MODELS, ["cpu"], graphs=graphs).cases()] == recorded
    shapes = {"2x5x1": (1, 64, 1024), "784x64x10": (64, 256, 1024), "256x256x256x256": (64, 1024)}
    expected = {f"{m}-{p}-cpu-{t}-{w}-b{b}" + ("" if m == "mlp" else f"-g{g}")
                for (w, batches), p, t, m, g in itertools.product(shapes.items(), SUITE_PHASES,
                                                                 ("float32", "bfloat16"), MODELS, (5, 20, 50))
                for b in batches}
    assert len(recorded) == 8 * 3 * 2 * (3 * 3 + 1) == len(expected)
    assert set(recorded) == expected


@pytest.mark.parametrize("suite", ["smoke", "quick", "full"])
def test_no_ladder_rung_on_the_cpu(suite):
    cases = SUITES[suite].cases(["kan", "mlp"], ["cpu"])
    assert not [c for c in cases if FULL_LADDER.index(c) is not None]
    assert all(FULL_LADDER.index(dataclasses.replace(c, device="cpu")) is None
               for c in SUITES["full"].cases(["mlp"], ["cuda"]))  # the same shapes, on the CPU: no rung


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_the_ladder_is_the_full_suites_on_cuda_and_mps_only(kind):
    full = SUITES["full"].cases(["kan", "mlp"], [kind])
    rungs = [(r.widths, r.batch) for r in FULL_LADDER.rungs]
    assert [s for s in dict.fromkeys((c.widths, c.batch) for c in full) if s in rungs] == rungs  # in order
    fixed = [c for c in full if FULL_LADDER.index(c) is None]
    assert [c.id.replace(f"-{kind}-", "-cpu-") for c in fixed] == [c.id for c in SUITES["full"].cases(["kan", "mlp"], ["cpu"])]
    quick = SUITES["quick"].cases(["kan", "mlp"], [kind])  # the quick suite keeps its one fixed busy shape
    assert SUITES["quick"].ladder is None and {c.widths for c in quick} == {(2, 5, 1), (784, 64, 10), (1024, 1024, 1024)}


def test_the_full_ladders_rungs_grow_by_four_in_work_and_are_square():
    works = [r.work for r in FULL_LADDER.rungs]
    assert works[0] == 1024 * 2 * 256 * 256  # batch x (in x out) summed over the two layers
    assert [b / a for a, b in zip(works, works[1:])] == [8, 4, 4, 4, 4]
    assert all(len(set(r.widths)) == 1 and len(r.widths) == 3 for r in FULL_LADDER.rungs)
    assert FULL_LADDER.rungs[3] == ladder.Rung((1024, 1024, 1024), 8192)  # the quick suite's busy shape


def test_a_ladder_must_grow_and_not_repeat_a_fixed_shape():
    with pytest.raises(ValueError, match="must grow in work"):
        ladder.Ladder((ladder.Rung((8, 8, 8), 64), ladder.Rung((8, 8, 8), 64)))
    with pytest.raises(ValueError, match="repeats one of the suite's shapes"):
        dataclasses.replace(SUITES["full"], ladder=ladder.Ladder((ladder.Rung((2, 5, 1), 64),)))


@pytest.mark.parametrize("error, expected", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB."), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 60.00 GB, other allocations: 2.00 GB)"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    (ValueError("grid_size must be >= 1"), False),
])
def test_out_of_memory_is_read_from_the_rows_reason(error, expected):
    case = Case("kan", "train", "cuda", widths=(8, 8, 8), batch=8)
    m = Measurement(case, status="error", reason=one_line(error))
    assert ladder.out_of_memory(m) is expected
    assert not ladder.out_of_memory(dataclasses.replace(m, status="skipped"))  # already said


# --------------------------------------------------------------------------- the busy share


def test_growth_share_hand_computed():
    # a call of 1 ms overhead plus work at 1e12 FLOP/s: 1e9 FLOPs take 2 ms, 4e9 take 5 ms, of
    # which the device works 4 ms: busy 0.8
    assert ladder.growth_share(2e-3, 1e9, 5e-3, 4e9) == pytest.approx(0.8)
    assert ladder.growth_share(1e-3, 1e9, 4e-3, 4e9) == pytest.approx(1.0)  # time proportional to work
    assert ladder.growth_share(2e-3, 1e9, 2e-3, 4e9) == 0.0  # time that did not grow: all overhead
    assert ladder.growth_share(2e-3, 1e9, 1.9e-3, 4e9) == 0.0  # noise below: clipped
    assert ladder.growth_share(2e-3, 4e9, 5e-3, 4e9) is None  # no growth in work: nothing to say


def test_busy_share_is_the_tables_device_busy_on_recorded_h200_device_time():
    """The H200 quick run's kan-fast training row with the device time traced on the H200: the
    ladder's share is the table's device_busy, and both call it launch-bound."""
    row = pd.read_csv(FIXTURES / "h200-bench.csv").to_dict("records")[1]
    traced = float(np.median(device.trace_device_seconds(FIXTURES / "h200-kan-fast-cuda-train.trace.json.gz",
                                                         label="profiles.measured")))
    case = Case(row["model"], row["phase"], "cuda", widths=(784, 64, 10), batch=256, grid_size=5)
    m = Measurement(case, samples=(row["median_s"],) * 3, rounds=(0, 1, 2), disturbed=(False,) * 3, clock="wall",
                    facts={"device_s": traced})
    table = record.bench_table([{**m.row(), "machine": "h200"}]).iloc[0]
    assert ladder.busy_share(m) == pytest.approx(traced / row["median_s"]) == pytest.approx(table["device_busy"])
    assert ladder.busy_share(m) < 0.5 and table["launch_bound"] == "yes"
    assert ladder.busy_share(dataclasses.replace(m, facts={})) is None  # no device time (MPS)


# --------------------------------------------------------------------------- the climb


class Device:
    """A fake accelerator behind ``measure``: each case's samples and device time, as a test sets them.

    ``share(case)``: the device's busy share of the case's call (None: no device time recorded);
    ``seconds(case)``: its time per call; ``out_of_memory(case)``: True to fail the case as torch
    does (its group's measurement raises, ``raise_group``, or its row says so).
    """

    def __init__(self, share=lambda case: 0.1, seconds=lambda case: 1e-3, out_of_memory=lambda case: False,
                 raise_group=True, interrupt=lambda case: False):
        self.share, self.seconds, self.oom, self.raise_group, self.interrupt = (share, seconds, out_of_memory,
                                                                                raise_group, interrupt)
        self.measured: list[Case] = []

    def measure(self, group, suite, *, threads):
        if any(self.interrupt(c) for c in group.cases):
            raise KeyboardInterrupt
        self.measured += group.cases
        if self.raise_group and any(self.oom(c) for c in group.cases):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB. GPU 0 has ...")
        return {c.id: self.one(c) for c in group.cases}

    def one(self, case) -> Measurement:
        if self.oom(case):
            return Measurement(case, status="error", threads=1,
                               reason=one_line(RuntimeError("MPS backend out of memory (MPS allocated: 60 GB)")))
        t, share = self.seconds(case), self.share(case)
        facts = {"flops": flops(case)}
        if share is not None:
            facts["device_s"] = share * t
        return Measurement(case, status="ok", threads=1, clock="wall", samples=(t,) * SAMPLES,
                           rounds=tuple(range(SAMPLES)), disturbed=(False,) * SAMPLES, facts=facts)


def flops(case) -> int:
    """A dense step's FLOPs at the case's shape (the multiply-adds of its layers, 2 each)."""
    forward = 2 * case.batch * sum(a * b for a, b in zip(case.widths, case.widths[1:]))
    return phase_flops(forward, case.phase, 0)


def rung_of(case) -> int | None:
    """1-based, as the summary counts rungs."""
    i = FULL_LADDER.index(case)
    return None if i is None else i + 1


def run_ladder(tmp_path, monkeypatch, fake: Device, devices=("cuda",), dtypes=("float32",), models=("kan", "mlp"),
               only=(), name="run"):
    """The full suite's ladder alone (the fixed shapes left out, one grid) through the runner, with
    the devices made present, in a run folder opened as the bench opens it (run.json); (measurements,
    the run's settings, printed lines)."""
    from benchmarks.core import manifest

    monkeypatch.setattr(runner, "runnable", lambda case: True)
    suite = dataclasses.replace(SUITES["full"], shapes=(), grid_sizes=(5,))
    run = record.Run(tmp_path / name)
    run.path.mkdir()
    manifest.begin(run, "bench", ["python", "-m", "benchmarks", "--suite", "full"], {"suite": "full"})
    said: list[str] = []
    try:
        out = runner.run_suite(Selection(suite, models, devices, dtypes), run, threads=1, only=only,
                               say=said.append, measure=fake.measure)
    finally:
        assert not run.has(record.BENCH_SETTINGS)  # the climb is kept in run.json's settings
    return out, run.settings(), said


def by_rung(shares):
    """A share per 1-based rung for the MLP's training step; every other row busy."""
    return lambda case: shares[rung_of(case) - 1] if (case.model, case.phase) == ("mlp", "train") else 1.0


def test_the_climb_stops_at_the_first_busy_rung(tmp_path, monkeypatch):
    fake = Device(share=by_rung([0.05, 0.2, 0.5, 0.81, 0.9, 1.0]))
    out, settings, said = run_ladder(tmp_path, monkeypatch, fake)
    assert sorted({rung_of(c) for c in fake.measured}) == [1, 2, 3, 4]  # 5 and 6 never measured
    assert {rung_of(m.case) for m in out} == {1, 2, 3, 4} and all(m.status == "ok" for m in out)
    climb = settings["ladder"]["climbs"][0]
    assert (climb["device"], climb["dtype"], climb["rungs"], climb["ran"], climb["stopped"]) == \
        ("cuda", "float32", 6, 4, "busy")
    assert [s["busy"] for s in climb["steps"]] == pytest.approx([0.05, 0.2, 0.5, 0.81])
    assert climb["steps"][-1]["busy_from"] == "device time"
    assert climb["line"] == ("ladder cuda float32: 4 of 6 rungs ran; stopped at rung 4 ([1024, 1024, 1024] batch 8192): "
                             "device busy 81% in the MLP's training step (at or above 75%); 2 rungs above not run")
    assert said[-1].strip() == climb["line"]
    assert settings["ladder"]["busy_at"] == ladder.BUSY_AT and settings["suite"] == "full"  # the rest kept


def test_the_h200s_recorded_busy_shape_stops_the_climb_there(tmp_path, monkeypatch):
    """docs/measured/2026-12-04-h200.md: the MLP's training step at [1024, 1024, 1024] batch 8192
    took 2.45 ms with the device busy 81%; every smaller rung gets the quick suite's launch-bound
    figures (its MLP training step, 1.43 ms, with a tenth of it on the device)."""
    mlp_train = pd.read_csv(FIXTURES / "h200-bench.csv").query("model == 'mlp' and phase == 'train'").iloc[0]
    at_busy_shape = lambda c: (c.widths, c.batch) == ((1024,) * 3, 8192)  # noqa: E731
    fake = Device(seconds=lambda c: 2.45e-3 if at_busy_shape(c) else mlp_train["median_s"],
                  share=lambda c: 0.81 if at_busy_shape(c) else 0.1)
    _, settings, _ = run_ladder(tmp_path, monkeypatch, fake, models=("mlp",))
    climb = settings["ladder"]["climbs"][0]
    assert climb["stopped"] == "busy" and climb["ran"] == 4
    assert climb["steps"][-1]["busy"] == pytest.approx(0.81)


def test_only_the_mlp_judges_while_it_is_there(tmp_path, monkeypatch):
    """The KANs keep the device busy from the first rung; the MLP, the denominator of their ratios,
    does not until rung 3, so the ratios below compare overheads and the climb goes on."""
    fake = Device(share=lambda c: 1.0 if c.model != "mlp" else [0.1, 0.3, 0.9, 1, 1, 1][rung_of(c) - 1])
    _, settings, _ = run_ladder(tmp_path, monkeypatch, fake)
    assert settings["ladder"]["climbs"][0]["ran"] == 3
    # without the MLP, the least busy eager row of the rung judges
    fake = Device(share=lambda c: {"forward": 0.9, "backward": [0.2, 0.8, 1, 1, 1, 1][rung_of(c) - 1],
                                   "train": 0.95}[c.phase])
    _, settings, _ = run_ladder(tmp_path, monkeypatch, fake, models=("kan",), name="without-mlp")
    climb = settings["ladder"]["climbs"][0]
    assert climb["ran"] == 2 and climb["steps"][0]["judged_by"] == "kan backward"


def test_the_climb_reaches_the_top_when_the_device_never_gets_busy(tmp_path, monkeypatch):
    fake = Device(share=by_rung([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake)
    climb = settings["ladder"]["climbs"][0]
    assert (climb["ran"], climb["stopped"]) == (6, "top")
    assert {rung_of(m.case) for m in out} == set(range(1, 7))
    assert climb["line"].startswith("ladder cuda float32: 6 of 6 rungs ran; reached the top, rung 6 "
                                    "([4096, 4096, 4096] batch 8192), without the device busy: device busy 60%")


def test_out_of_memory_skips_the_rows_and_stops_the_climb(tmp_path, monkeypatch):
    """kan's training step at rung 3 runs out of device memory (torch.cuda.OutOfMemoryError from
    its group): those rows are skipped with the reason, the rest of rung 3 is measured, and the
    climb stops although the device was not busy."""
    oom = lambda c: rung_of(c) == 3 and c.model == "kan" and c.phase == "train"  # noqa: E731
    fake = Device(share=lambda c: 0.2, out_of_memory=oom)
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake)
    assert max(rung_of(c) for c in fake.measured) == 3
    skipped = [m for m in out if m.status == "skipped"]
    assert skipped and all(oom(m.case) or (m.case.model, m.case.phase) == ("mlp", "train") for m in skipped)
    assert all(m.reason.startswith("out of device memory on ladder rung 3 ([512, 512, 512] batch 8192): "
                                   "OutOfMemoryError: CUDA out of memory") for m in skipped)
    assert not runner.failed(out)  # a device too small is no failure of the run
    assert {m.status for m in out if rung_of(m.case) == 3 and m.case.phase != "train"} == {"ok"}
    climb = settings["ladder"]["climbs"][0]
    assert (climb["ran"], climb["stopped"], climb["steps"][-1]["out_of_memory"]) == (3, "out of memory", len(skipped))
    assert climb["line"] == (f"ladder cuda float32: 3 of 6 rungs ran; stopped at rung 3 ([512, 512, 512] batch 8192): "
                             f"out of device memory in {len(skipped)} rows (recorded as skipped); "
                             f"3 rungs above not run")


def test_out_of_memory_in_a_row_on_mps_is_skipped_too(tmp_path, monkeypatch):
    oom = lambda c: rung_of(c) == 2 and c.model == "kan"  # noqa: E731
    fake = Device(share=lambda c: None, out_of_memory=oom, raise_group=False)
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake, devices=("mps",))
    skipped = [m for m in out if m.status == "skipped"]
    assert {m.case.id for m in skipped} == {m.case.id for m in out if oom(m.case)}
    assert "MPS backend out of memory" in skipped[0].reason
    assert settings["ladder"]["climbs"][0]["stopped"] == "out of memory"


def test_out_of_memory_off_the_ladder_stays_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "runnable", lambda case: True)
    run = record.Run(tmp_path / "run")
    run.path.mkdir()
    fake = Device(out_of_memory=lambda c: c.model == "kan")
    selection = Selection(SUITES["quick"], ("kan", "mlp"), ("cuda",), ("float32",))
    out = runner.run_suite(selection, run, threads=1, say=lambda line: None, measure=fake.measure)
    assert {m.status for m in out if m.case.model == "kan"} == {"error"}
    assert not run.has(record.BENCH_SETTINGS)  # no ladder, nothing kept of one


def test_without_device_time_the_share_is_estimated_from_the_times_growth(tmp_path, monkeypatch):
    """MPS records no device activity: each call takes 1 ms of overhead plus its FLOPs at 5e12
    FLOP/s, so the MLP's training step is busy 0.56 at rung 2 and 0.84 at rung 3 (by hand: its
    work over the whole call); the climb knows nothing at rung 1 and stops at rung 3."""
    fake = Device(share=lambda c: None, seconds=lambda c: 1e-3 + flops(c) / 5e12)
    _, settings, _ = run_ladder(tmp_path, monkeypatch, fake, devices=("mps",))
    climb = settings["ladder"]["climbs"][0]
    steps = climb["steps"]
    assert steps[0]["busy"] is None and climb["ran"] == 3 and climb["stopped"] == "busy"
    for step in steps[1:]:
        work = flops(Case("mlp", "train", "mps", widths=FULL_LADDER.rungs[step["rung"] - 1].widths,
                          batch=FULL_LADDER.rungs[step["rung"] - 1].batch, grid_size=None)) / 5e12
        assert step["busy"] == pytest.approx(work / (1e-3 + work))
        assert step["busy_from"] == "time's growth with FLOPs"
    assert "estimated from the time's growth with FLOPs" in climb["line"]


def test_each_device_and_dtype_climbs_on_its_own(tmp_path, monkeypatch):
    shares = {"float32": [0.1, 0.2, 0.8, 1, 1, 1], "bfloat16": [0.1, 0.1, 0.1, 0.2, 0.5, 0.9]}
    fake = Device(share=lambda c: shares[c.dtype][rung_of(c) - 1])
    _, settings, said = run_ladder(tmp_path, monkeypatch, fake, dtypes=("float32", "bfloat16"), models=("mlp",))
    ran = {(c["dtype"]): c["ran"] for c in settings["ladder"]["climbs"]}
    assert ran == {"float32": 3, "bfloat16": 6}
    lines = ladder.lines(settings)
    assert len(lines) == 2 and lines[1].startswith("ladder cuda bfloat16: 6 of 6 rungs ran; stopped at rung 6")


def test_an_interrupted_climb_says_where_it_stopped(tmp_path, monkeypatch):
    fake = Device(share=lambda c: 0.1, interrupt=lambda c: rung_of(c) == 2)
    with pytest.raises(KeyboardInterrupt):
        run_ladder(tmp_path, monkeypatch, fake)
    settings = record.Run(tmp_path / "run").settings()
    climb = settings["ladder"]["climbs"][0]
    assert climb["ran"] == 1 and climb["stopped"] is None
    assert climb["line"].startswith("ladder cuda float32: 1 of 6 rungs ran; the run stopped after rung 1")


def test_a_rung_left_out_by_k_is_not_climbed(tmp_path, monkeypatch):
    fake = Device(share=by_rung([0.1] * 6))
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake, only=["-b8192"])
    climb = settings["ladder"]["climbs"][0]
    assert climb["rungs"] == 5 and {rung_of(c) for c in fake.measured} == {2, 3, 4, 5, 6}


def test_the_printed_ending_says_how_many_rungs_ran(tmp_path, monkeypatch, capsys):
    fake = Device(share=by_rung([0.05, 0.2, 0.5, 0.81, 0.9, 1.0]))
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake, models=("mlp",))
    frame = record.bench_table([{**m.row(), "machine": "m"} for m in out])
    cli._ending(frame, "1 (--threads)", False, settings)
    printed = capsys.readouterr().out
    assert "ladder cuda float32: 4 of 6 rungs ran; stopped at rung 4 ([1024, 1024, 1024] batch 8192): device busy 81%" \
        in printed
    cli._ending(frame, "1 (--threads)", False, {"suite": "full"})  # a CPU run: no ladder line
    assert "ladder" not in capsys.readouterr().out


def test_the_page_says_where_the_climb_stopped(tmp_path, monkeypatch):
    from reports.render import render

    fake = Device(share=by_rung([0.05, 0.2, 0.5, 0.81, 0.9, 1.0]))
    out, settings, _ = run_ladder(tmp_path, monkeypatch, fake, models=("mlp",))
    run = record.Run(tmp_path / "20261204T150229-abc-gpu")
    run.path.mkdir()
    run.write_json("environment.json", {"machine": "h200", "devices": [{"type": "cuda", "name": "NVIDIA H200"}]})
    run.write_json(record.BENCH_SETTINGS, {**settings, "state": record.COMPLETE})
    rows = [{**m.row(), "machine": "h200", "math": "fp32", "peak_flops": 67e12, "peak_bandwidth": 4.8e12,
             "peak_source": "datasheet: NVIDIA H200 SXM", "bytes_moved": 1_000_000} for m in out]
    run.write_table("benchmarks", record.bench_table(rows))
    page = render(str(run.path)).read_text()
    section = page[page.index('id="device"'):]
    assert ("Ladder cuda float32: 4 of 6 rungs ran; stopped at rung 4 ([1024, 1024, 1024] batch 8192): "
            "device busy 81% in the MLP&#39;s training step") in section


def test_the_pytest_route_skips_a_rungs_case_out_of_memory(tmp_path):
    """benchmarks/suite/test_bench.py runs every rung (no climb); a rung's case out of device
    memory is skipped there with the reason, and the same case off the ladder fails."""
    from types import SimpleNamespace

    from benchmarks.suite import test_bench

    full = Selection(SUITES["full"], ("mlp",), ("cuda",))
    request = SimpleNamespace(config=SimpleNamespace(_kan_selection=full))
    run = record.new_run(root=tmp_path)
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB.")

    def measured(case):
        raise oom

    on_rung = Case("mlp", "train", "cuda", widths=(4096, 4096, 4096), batch=8192, grid_size=None)
    with pytest.raises(pytest.skip.Exception, match="out of device memory on ladder rung 6"):
        test_bench.test_case(SimpleNamespace(extra_info={}, skipped=False), on_rung, measured, run, request)
    off = dataclasses.replace(on_rung, widths=(784, 64, 10), batch=256)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        test_bench.test_case(SimpleNamespace(extra_info={}, skipped=False), off, measured, run, request)
    assert [r["status"] for r in run.read_jsonl(record.MEASUREMENTS)] == ["skipped", "error"]
