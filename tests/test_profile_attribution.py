"""Attribution from profiles whose truth is known by construction.

Truths used: a program whose functions busy-wait for set times, profiled by cProfile;
hand-written py-spy speedscope documents and torch.profiler chrome traces whose shares
are counted by hand; the documented classify table, checked name by name against
frames as each profiler spells them.
"""

from __future__ import annotations

import cProfile
import json
import time
import xml.etree.ElementTree as ET

import pytest

from benchmarks import record
from profiles import attribution, cprof, flamegraph, pyspy, torch_trace
from profiles.attribution import classify


def test_parts_are_the_record_schema():
    assert attribution.PARTS == record.PARTS
    rows = attribution.rows("cprofile", {"scenario": "step", "model": "kan", "device": "cpu",
                                         "phase": "train", "synchronized": True},
                            {"basis": 1.0, "matmul": 3.0})
    assert [list(r) for r in rows] == [record.ATTRIBUTION_COLUMNS] * len(record.PARTS)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert {r["part"]: r["share"] for r in rows}["matmul"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="empty"):
        attribution.shares({})
    with pytest.raises(ValueError, match="unknown part"):
        attribution.shares({"gpu": 1.0})


@pytest.mark.parametrize("name, file, part", [
    # cProfile: Python functions by name and file, C functions in pstats' spelling
    ("b_splines", "/x/kan/reference.py", "basis"),
    ("basis", "/x/kan/fourier.py", "basis"),
    ("dense_bases", "/x/kan/fast.py", "basis"),
    ("<built-in method torch._C._nn.linear>", "", "matmul"),
    ("<built-in method torch.mm>", "", "matmul"),
    ("<method 'to' of 'torch._C.TensorBase' objects>", "", "transfer"),
    ("<method 'item' of 'torch._C.TensorBase' objects>", "", "transfer"),
    ("<method 'run_backward' of 'torch._C._EngineBase' objects>", "", "autograd"),
    ("backward", "/x/site-packages/torch/_tensor.py", "autograd"),
    ("step", "/x/site-packages/torch/optim/adam.py", "optimizer"),
    ("zero_grad", "C:\\x\\site-packages\\torch\\optim\\optimizer.py", "optimizer"),
    ("step", "/x/my_scheduler.py", None),  # a "step" outside torch/optim is nobody's
    ("forward", "/x/kan/reference.py", None),
    ("<built-in method torch._C._nn.silu>", "", None),
    # py-spy: Python qualnames and C++ symbols
    ("KANLinear.b_splines", "/x/kan/reference.py", "basis"),
    ("Tensor.backward", "/x/torch/_tensor.py", "autograd"),
    ("Adam.step", "/x/torch/optim/adam.py", "optimizer"),
    ("torch::autograd::THPVariable_linear", "/x/libtorch_python.so", "matmul"),
    ("at::_ops::addmm::call", "/x/libtorch_cpu.so", "matmul"),
    ("mkl_blas_def_sgemm_kernel_0_zen", "/x/libtorch_cpu.so", "matmul"),
    ("torch::autograd::Engine::execute", "/x/libtorch_cpu.so", "autograd"),
    ("THPEngine_run_backward", "/x/libtorch_python.so", "autograd"),
    ("at::_ops::_to_copy::call", "/x/libtorch_cpu.so", "transfer"),
    ("torch::autograd::THPVariable_item", "/x/libtorch_python.so", "transfer"),
    ("at::_ops::mul_Tensor::call", "/x/libtorch_cpu.so", None),
    ("Module._call_impl", "/x/torch/nn/modules/module.py", None),
    # torch.profiler: record_function labels and aten:: ops
    ("kan.basis", "", "basis"),
    ("kan.spline_product", "", None),
    ("kan.native::gather_forward", "", "matmul"),
    ("kan.native::gather_table_grad", "", "matmul"),
    ("kan.native::dense_bases", "", "basis"),
    ("kan.native::spline_grads", "", None),
    # the C++ kernels' Python wrappers (cProfile, py-spy)
    ("gather_input_grad", "/x/kan/native.py", "matmul"),
    ("gather_weight_grads", "/x/kan/native.py", "matmul"),
    ("silu", "/x/kan/native.py", None),
    ("dense_bases", "/x/kan/native.py", "basis"),
    ("gather_forward", "/x/somewhere/else.py", None),
    ("aten::mm", "", "matmul"),
    ("aten::linear", "", "matmul"),
    ("aten::copy_", "", "transfer"),
    ("aten::_local_scalar_dense", "", "transfer"),
    ("Memcpy HtoD (Pageable -> Device)", "", "transfer"),
    ("autograd::engine::evaluate_function: MmBackward0", "", "autograd"),
    ("Optimizer.step#AdamW.step", "", "optimizer"),
    ("profiles.backward", "", "autograd"),
    ("aten::silu", "", None),
    # the scenario's device waits, in every spelling
    ("wait_for_basis", "/x/profiles/scenario.py", "basis"),
    ("profiles.wait_for_autograd", "", "autograd"),
    ("wait_for_optimizer", "/x/profiles/scenario.py", "optimizer"),
    ("wait_for_transfer", "/x/profiles/scenario.py", "transfer"),
    ("wait_for_forward", "/x/profiles/scenario.py", None),
])
def test_classify(name, file, part):
    assert classify(name, file) == part


# cProfile on a program that spends set times in functions named like the parts. Each
# wait records how long it really took, under the part it belongs to: the truth.

truth: dict[str, float] = {}


def spin(seconds: float, part: str) -> None:
    start = time.perf_counter()
    time.sleep(seconds)
    truth[part] = truth.get(part, 0.0) + time.perf_counter() - start


def to(seconds, part="transfer"):  # named like Tensor.to: a transfer, unless inside a part
    spin(seconds, part)


def b_splines():
    spin(0.06, "basis")
    to(0.03, "basis")  # inside basis evaluation: basis, not transfer


def linear(part="matmul"):
    spin(0.04, part)


def run_backward():
    spin(0.05, "autograd")
    linear("autograd")  # inside autograd: autograd, not matmul


def program():
    b_splines()
    linear()
    to(0.02)
    run_backward()
    spin(0.01, "other")  # time.sleep's own time, claimed by no part: a C function's


def test_cprofile_attributes_own_time_to_the_outermost_part(tmp_path):
    truth.clear()
    profiler = cProfile.Profile()
    profiler.enable()
    program()
    profiler.disable()
    path = tmp_path / "program.pstats"
    profiler.dump_stats(str(path))
    seconds = cprof.attribute(path)
    assert set(seconds) <= {*truth, "python"}
    for part, expected in truth.items():
        assert seconds[part] == pytest.approx(expected, abs=0.003), part
    assert seconds.get("python", 0.0) < 0.003


# py-spy: a hand-written speedscope document. Frames as py-spy --native names them.

FRAMES = [
    ("<module>", "/x/profiles/scenario.py"),                       # 0
    ("measured", "/x/profiles/scenario.py"),                       # 1
    ("train_step", "/x/profiles/scenario.py"),                     # 2
    ("KANLinear.forward", "/x/kan/reference.py"),                  # 3
    ("KANLinear.b_splines", "/x/kan/reference.py"),                # 4
    ("torch::autograd::THPVariable_to", "/x/libtorch_python.so"),  # 5
    ("torch::autograd::THPVariable_linear", "/x/libtorch_python.so"),  # 6
    ("mkl_blas_def_sgemm_kernel_0_zen", "/x/libtorch_cpu.so"),     # 7
    ("Tensor.backward", "/x/torch/_tensor.py"),                    # 8
    ("Adam.step", "/x/torch/optim/adam.py"),                       # 9
    ("at::_ops::mul_Tensor::call", "/x/libtorch_cpu.so"),          # 10
    ("_PyObject_Malloc", "/x/libpython3.11.so.1.0"),               # 11
    ("forward_step", "/x/profiles/scenario.py"),                   # 12
    ("backward_setup", "/x/profiles/scenario.py"),                 # 13
]
SAMPLES = [  # (stack root first, count); each sample weighs 0.01 s
    ((0, 1, 2, 3, 4), 10),        # basis (Python code of b_splines)
    ((0, 1, 2, 3, 4, 5), 4),      # .to inside b_splines: basis
    ((0, 1, 2, 3, 6, 7), 8),      # linear -> sgemm: matmul
    ((0, 1, 2, 8, 7), 5),         # sgemm inside backward: autograd
    ((0, 1, 2, 9, 10), 3),        # optimizer
    ((0, 1, 2, 3, 10), 2),        # an unclaimed elementwise op: other
    ((0, 1, 2, 3), 6),            # the interpreter in forward: python
    ((0, 1, 2, 3, 11), 1),        # libpython: python
    ((0, 1, 2, 5), 2),            # .to called by the step itself: transfer
    ((0, 13, 3, 4), 50),          # outside measured (setup): not counted
    ((0, 1, 12, 3, 4), 7),        # another scenario's step
]


def speedscope(frames=FRAMES, samples=SAMPLES) -> dict:
    stacks = [list(s) for s, n in samples for _ in range(n)]
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": n, "file": f, "line": 0} for n, f in frames]},
        "profiles": [{"type": "sampled", "name": "MainThread", "unit": "seconds", "startValue": 0,
                      "endValue": 1, "samples": stacks, "weights": [0.01] * len(stacks)}],
    }


def test_pyspy_speedscope_attribution(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps(speedscope()))
    samples = pyspy.read(path)
    assert samples.native
    train = pyspy.select(samples, "train_step")
    seconds = pyspy.attribute(train)
    expected = {"basis": 0.14, "matmul": 0.08, "autograd": 0.05, "optimizer": 0.03,
                "other": 0.02, "python": 0.07, "transfer": 0.02}
    assert seconds == pytest.approx(expected)
    assert pyspy.attribute(pyspy.select(samples, "forward_step")) == pytest.approx({"basis": 0.07})

    # what we write is speedscope again, and reads back to the same attribution
    out = pyspy.write_speedscope(train, tmp_path / "train.speedscope.json", "train")
    assert pyspy.attribute(pyspy.read(out)) == pytest.approx(expected)
    svg = ET.parse(flamegraph.write(train, tmp_path / "train.svg", "train")).getroot()
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("KANLinear.b_splines") and t.endswith("basis") for t in titles)


def test_pyspy_without_native_frames_cannot_tell_python_from_c(tmp_path):
    frames = [("measured", "/x/profiles/scenario.py"), ("train_step", "/x/profiles/scenario.py"),
              ("KANLinear.forward", "/x/kan/reference.py"), ("KANLinear.b_splines", "/x/kan/reference.py")]
    samples = [((0, 1, 2), 3), ((0, 1, 2, 3), 1)]
    path = tmp_path / "python-only.json"
    path.write_text(json.dumps(speedscope(frames, samples)))
    read = pyspy.read(path)
    assert not read.native
    assert pyspy.attribute(pyspy.select(read, "train_step")) == pytest.approx({"other": 0.03, "basis": 0.01})


def test_pyspy_rejects_a_file_that_is_not_speedscope(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a py-spy speedscope profile"):
        pyspy.read(path)


# torch.profiler: a hand-written chrome trace (times in microseconds).

def event(name, ts, dur, cat="cpu_op", tid=1):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 7, "tid": tid}


def trace_events(mark="profiles.measured"):
    return [
        event("aten::mm", 0, 50),  # before the measured range: not counted
        event(mark, 100, 1000, cat="user_annotation"),
        event("kan.basis", 200, 300, cat="user_annotation"),
        event("aten::to", 250, 100),                 # inside basis: basis
        event("aten::_to_copy", 260, 80),
        event("kan.spline_product", 500, 200, cat="user_annotation"),
        event("aten::linear", 520, 150),             # matmul, and its children too
        event("aten::mm", 530, 120),
        event("autograd::engine::evaluate_function: MmBackward0", 700, 200),
        event("aten::mm", 720, 150),                 # inside backward: autograd
        event("aten::to", 900, 60),                  # transfer
        event("aten::copy_", 910, 40),
        event("aten::silu", 960, 40),                # unclaimed op: other
        event("aten::mm", 300, 900, tid=2),          # another thread: not counted
        event("void gemm_kernel<float>", 150, 500, cat="kernel", tid=3),  # device side: not counted
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 1, "args": {"name": "main"}},
    ]


def test_torch_trace_attribution(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": trace_events()}))
    seconds = torch_trace.attribute(path)
    # python: the measured range's uncovered time, [100, 200) and [1000, 1100): 200 us,
    # plus kan.spline_product's own time outside aten::linear: 50 us
    expected = {"basis": 300e-6, "matmul": 150e-6, "autograd": 200e-6, "transfer": 60e-6,
                "other": 40e-6, "python": 250e-6}
    assert seconds == pytest.approx(expected)
    assert sum(seconds.values()) == pytest.approx(1000e-6)


def test_torch_trace_falls_back_to_profiler_steps():
    seconds = torch_trace.attribute({"traceEvents": trace_events(mark="ProfilerStep#3")})
    assert sum(seconds.values()) == pytest.approx(1000e-6)
    assert seconds["basis"] == pytest.approx(300e-6)


def test_torch_trace_of_a_real_profile(tmp_path):
    """A real torch.profiler trace of labelled ranges that wait for set times."""
    import torch
    from torch.profiler import record_function

    truth.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with record_function("profiles.measured"):
            with record_function("kan.basis"):
                spin(0.03, "basis")
            with record_function("profiles.backward"):
                spin(0.02, "autograd")
            spin(0.01, "python")  # no operator covers it: the interpreter's time
    path = tmp_path / "real.json"
    prof.export_chrome_trace(str(path))
    seconds = torch_trace.attribute(path)
    assert seconds["basis"] == pytest.approx(truth["basis"], abs=0.002)
    assert seconds["autograd"] == pytest.approx(truth["autograd"], abs=0.002)
    # the interpreter's time also holds entering and leaving the ranges
    assert truth["python"] - 0.001 < seconds["python"] < truth["python"] + 0.01
