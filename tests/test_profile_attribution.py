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

from benchmarks.core import schema
from profiles import attribution, cprof, flamegraph, pyspy, torch_trace
from profiles.attribution import classify


def test_parts_are_the_record_schema():
    assert attribution.PARTS == schema.PARTS
    rows = attribution.rows("cprofile", {"scenario": "step", "model": "kan", "device": "cpu",
                                         "phase": "train", "synchronized": True},
                            {"basis": 1.0, "matmul": 3.0})
    assert [list(r) for r in rows] == [schema.ATTRIBUTION_COLUMNS] * len(schema.PARTS)
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
    ("dense_bases", "/x/kan/fast/dense.py", "basis"),
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
    ("gather_input_grad", "/x/kan/native/operators.py", "matmul"),
    ("gather_weight_grads", "/x/kan/native/operators.py", "matmul"),
    ("silu", "/x/kan/native/operators.py", None),
    ("dense_bases", "/x/kan/native/operators.py", "basis"),
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


# cProfile on a program that spends set times in functions named like the parts. The profiler
# reads a fake clock that moves only while time.sleep (a C function, as the kernels' calls are)
# runs, by exactly the seconds asked: the attribution is then exact whatever the machine does,
# and each wait records those seconds under the part it belongs to: the truth.

truth: dict[str, float] = {}


class FakeClock:
    """cProfile's timer: called once per profiler event. ``wait(s)`` arms ``s``; the clock moves
    by it between the call event of the time.sleep that follows and that call's return event."""

    def __init__(self):
        self.now, self.armed, self.pending = 0.0, None, 0.0

    def wait(self, seconds: float) -> None:
        self.armed = seconds
        time.sleep(0)
        self.armed = None

    def __call__(self) -> float:
        if self.armed is not None:  # the sleep's call event, then its return event
            self.pending, self.armed = self.armed, None
        elif self.pending:
            self.now, self.pending = self.now + self.pending, 0.0
        return self.now


clock = FakeClock()


def spin(seconds: float, part: str) -> None:
    clock.wait(seconds)
    truth[part] = truth.get(part, 0.0) + seconds


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
    profiler = cProfile.Profile(clock)
    profiler.enable()
    program()
    profiler.disable()
    path = tmp_path / "program.pstats"
    profiler.dump_stats(str(path))
    seconds = cprof.attribute(path)
    assert set(seconds) <= {*truth, "python"}
    for part, expected in truth.items():
        assert seconds[part] == pytest.approx(expected, abs=1e-9), part
    assert seconds.get("python", 0.0) < 1e-9


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
    ("loop_step", "/x/profiles/scenario.py"),                      # 14
    ("_loop", "/x/profiles/scenario.py"),                          # 15
    ("train_step", "/x/benchmarks/core/case.py"),                  # 16: the core's step, which the loop calls
]
SAMPLES = [  # (stack root first, count); each sample weighs 0.01 s
    ((0, 1, 2, 3, 4), 10),        # basis (Python code of b_splines)
    ((0, 1, 2, 3, 4, 5), 4),      # .to inside b_splines: basis
    ((0, 1, 2, 3, 6, 7), 8),      # linear -> sgemm: matmul
    ((0, 1, 2, 8, 7), 5),         # sgemm inside backward, no node frame unwound: an MmBackward0's
    ((0, 1, 2, 9, 10), 3),        # optimizer
    ((0, 1, 2, 3, 10), 2),        # an unclaimed elementwise op: other
    ((0, 1, 2, 3), 6),            # the interpreter in forward: python
    ((0, 1, 2, 3, 11), 1),        # libpython: python
    ((0, 1, 2, 5), 2),            # .to called by the step itself: transfer
    ((0, 13, 3, 4), 50),          # outside measured (setup): not counted
    ((0, 1, 12, 3, 4), 7),        # another scenario's step
    ((0, 1, 14, 15, 16, 3, 4), 9),  # the loop, through the core's train_step: the loop's, not train's
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
    expected = {"basis": 0.14, "matmul": 0.08, "spline product grad": 0.05, "optimizer": 0.03,
                "other": 0.02, "python": 0.07, "transfer": 0.02}
    assert seconds == pytest.approx(expected)
    assert pyspy.attribute(pyspy.select(samples, "forward_step")) == pytest.approx({"basis": 0.07})
    assert pyspy.attribute(pyspy.select(samples, "loop_step")) == pytest.approx({"basis": 0.09})

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
    """A real torch.profiler trace of labelled ranges that wait; the truth is each range's own
    duration as the trace records it, read here apart from the attribution code."""
    import json

    import torch
    from torch.profiler import record_function

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with record_function("profiles.measured"):
            with record_function("kan.basis"):
                time.sleep(0.03)
            with record_function("profiles.backward"):
                time.sleep(0.02)
            time.sleep(0.01)  # no operator covers it: the interpreter's time
    path = tmp_path / "real.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    duration = {e["name"]: e["dur"] / 1e6 for e in events if e.get("ph") == "X"
                and e["name"] in ("profiles.measured", "kan.basis", "profiles.backward")}
    seconds = torch_trace.attribute(path)
    assert seconds["basis"] == pytest.approx(duration["kan.basis"], rel=1e-6)
    assert seconds["autograd"] == pytest.approx(duration["profiles.backward"], rel=1e-6)
    # the interpreter's time: the rest of the measured range (the sleep, entering and leaving ranges)
    rest = duration["profiles.measured"] - duration["kan.basis"] - duration["profiles.backward"]
    assert seconds["python"] == pytest.approx(rest, rel=1e-6, abs=1e-9)
    assert seconds["basis"] >= 0.03 and seconds["autograd"] >= 0.02  # the ranges held their sleeps


# The backward, split by the forward part each node differentiates.

def test_parts_have_one_colour_each_shared_by_the_report_and_the_flame_graphs():
    from reports import charts

    assert list(schema.PART_COLOURS) == schema.PARTS
    assert len(set(schema.PART_COLOURS.values())) == len(schema.PARTS)
    assert charts.PART_COLORS is schema.PART_COLOURS
    assert set(attribution.GRADIENT_PARTS) <= set(schema.PARTS)
    assert {part for part, _, _ in attribution.GRADIENT_RULES + attribution.NODE_RULES} <= set(
        attribution.GRADIENT_PARTS)


@pytest.mark.parametrize("name, file, nodes, part", [
    # py-spy's C++ node classes, by the node table
    ("torch::autograd::generated::MmBackward0::apply", "/x/libtorch_cpu.so", True, "spline product grad"),
    ("torch::autograd::generated::MulBackward0_apply_functional", "/x/libtorch_cpu.so", True, "basis grad"),
    ("torch::autograd::generated::SiluBackward0::apply", "/x/libtorch_cpu.so", True, "base branch grad"),
    ("torch::autograd::generated::MseLossBackward0::apply", "/x/libtorch_cpu.so", True, "loss grad"),
    ("mkl_blas_avx512_sgemm_kernel_0", "/x/libtorch_cpu.so", True, "spline product grad"),
    ("torch::autograd::AccumulateGrad::apply", "/x/libtorch_cpu.so", True, None),
    ("torch::autograd::validate_outputs_impl<torch::autograd::Edge>", "/x/libtorch_cpu.so", True, None),
    # torch.profiler does not read node names: it links nodes by sequence number
    ("MmBackward0", "", False, None),
    ("kan.basis", "", False, "basis grad"),
    ("kan.spline_product", "", False, "spline product grad"),
    ("kan.base_branch", "", False, "base branch grad"),
    ("aten::mse_loss", "", False, "loss grad"),
    ("aten::mm", "", False, None),
    # Python frames: custom autograd Functions' backward in kan.fast, basis functions
    ("backward", "/x/kan/fast/gather.py", True, "spline product grad"),
    ("DenseSplineProduct.backward", "/x/kan/fast/dense.py", True, "spline product grad"),
    ("backward", "/x/torch/_tensor.py", True, None),
    ("dense_bases", "/x/kan/fast/dense.py", True, "basis grad"),
])
def test_classify_gradient(name, file, nodes, part):
    assert attribution.classify_gradient(name, file, nodes) == part


def test_resolve_splits_only_the_backward():
    assert attribution.resolve("autograd", "basis grad") == "basis grad"
    assert attribution.resolve("autograd", None) == "autograd"
    assert attribution.resolve("basis", "basis grad") == "basis"  # a basis function in the forward
    assert attribution.resolve(None, "loss grad") is None


BACKWARD_FRAMES = [
    ("measured", "/x/profiles/scenario.py"),                                        # 0
    ("backward_step", "/x/profiles/scenario.py"),                                   # 1
    ("Tensor.backward", "/x/torch/_tensor.py"),                                     # 2
    ("torch::autograd::Engine::evaluate_function", "/x/libtorch_cpu.so"),           # 3
    ("torch::autograd::generated::MmBackward0::apply", "/x/libtorch_cpu.so"),       # 4
    ("mkl_blas_def_sgemm_kernel_0_zen", "/x/libtorch_cpu.so"),                      # 5
    ("torch::autograd::generated::MulBackward0::apply", "/x/libtorch_cpu.so"),      # 6
    ("torch::autograd::generated::SiluBackward0::apply", "/x/libtorch_cpu.so"),     # 7
    ("torch::autograd::generated::MseLossBackward0::apply", "/x/libtorch_cpu.so"),  # 8
    ("torch::autograd::validate_outputs_impl<torch::autograd::Edge>", "/x/libtorch_cpu.so"),  # 9
    ("torch::autograd::AccumulateGrad::apply", "/x/libtorch_cpu.so"),               # 10
    ("DenseSplineProduct.backward", "/x/kan/fast/dense.py"),                        # 11
    ("dense_bases", "/x/kan/fast/dense.py"),                                        # 12
]
BACKWARD_SAMPLES = [
    ((0, 1, 2, 3, 4, 5), 7),   # sgemm in MmBackward0: spline product grad
    ((0, 1, 2, 5), 2),         # sgemm, no frame unwound between: the node table's MmBackward0
    ((0, 1, 2, 3, 6), 5),      # basis grad
    ((0, 1, 2, 3, 7), 1),      # base branch grad
    ((0, 1, 2, 3, 8), 1),      # loss grad
    ((0, 1, 2, 3, 9), 3),      # the engine summing a gradient to its input's shape: autograd
    ((0, 1, 2, 3, 10), 1),     # AccumulateGrad: autograd
    ((0, 1, 2, 3), 2),         # the engine itself: autograd
    ((0, 1, 2, 11, 5), 4),     # a custom Function's backward: its own frame names it, the gemm agrees
    ((0, 1, 2, 11, 12), 6),    # a basis function inside it: the innermost frame decides
]


def test_pyspy_backward_split_by_node(tmp_path):
    path = tmp_path / "backward.json"
    path.write_text(json.dumps(speedscope(BACKWARD_FRAMES, BACKWARD_SAMPLES)))
    samples = pyspy.select(pyspy.read(path), "backward_step")
    expected = {"spline product grad": 0.13, "basis grad": 0.11, "base branch grad": 0.01, "loss grad": 0.01,
                "autograd": 0.06}
    assert pyspy.attribute(samples) == pytest.approx(expected)
    # the flame graph colours the node frames and what runs in them by the gradient, and its key says so
    svg = ET.parse(flamegraph.write(samples, tmp_path / "backward.svg", "backward")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    key = next(g for g in svg.iter(f"{ns}g") if g.get("class") == "key")
    names = [t.text for t in key.iter(f"{ns}text")]
    assert names == [p for p in schema.PARTS if p in expected] + ["no part"]  # backward_step: no part
    swatches = [r.get("fill") for r in key.iter(f"{ns}rect")]
    assert swatches[:-1] == [schema.PART_COLOURS[p] for p in names[:-1]]
    fills = {}
    for g in svg.iter(f"{ns}g"):
        title, rect = g.find(f"{ns}title"), g.find(f"{ns}rect")
        if g.get("class") != "key" and title is not None and rect is not None:
            fills[title.text.split(" (")[0]] = rect.get("fill")
    assert fills["torch::autograd::generated::MulBackward0::apply"] == schema.PART_COLOURS["basis grad"]
    assert fills["Tensor.backward"] == schema.PART_COLOURS["autograd"]
    assert fills["dense_bases"] == schema.PART_COLOURS["basis grad"]


def test_cprofile_splits_a_custom_backward_by_its_python_frames(tmp_path):
    """A backward whose nodes are Python (a custom autograd Function in kan/fast/dense.py) is split;
    the engine's own time stays autograd. The functions are compiled as if from those files."""
    source = (
        "def dense_bases(spin):\n    spin(0.02, 'basis grad')\n"
        "def backward(spin):\n    spin(0.03, 'spline product grad')\n    dense_bases(spin)\n"
    )
    fast = {}
    exec(compile(source, "/x/kan/fast/dense.py", "exec"), fast)
    engine = {}
    exec(compile("def run_backward(spin, node):\n    spin(0.02, 'autograd')\n    node(spin)\n",
                 "/x/torch/autograd/graph.py", "exec"), engine)
    truth.clear()
    profiler = cProfile.Profile(clock)
    profiler.enable()
    engine["run_backward"](spin, fast["backward"])
    profiler.disable()
    path = tmp_path / "custom.pstats"
    profiler.dump_stats(str(path))
    seconds = cprof.attribute(path)
    for part, expected in truth.items():
        assert seconds[part] == pytest.approx(expected, abs=1e-9), part
    assert sum(seconds.values()) == pytest.approx(sum(truth.values()), abs=1e-9)


# torch.profiler: forward operators and backward nodes linked by autograd's sequence numbers.

def op(name, ts, dur, seq=None, backward=False, cat="cpu_op"):
    e = event(name, ts, dur, cat=cat)
    if seq is not None:
        e["args"] = {"Sequence number": seq, "Fwd thread id": 1 if backward else 0}
    return e


def backward_trace():
    evaluate = "autograd::engine::evaluate_function: "
    return [
        # the forward, outside the measured range (the backward phase's setup); every op
        # carries the number of the next node, the last op to start with N made node N
        op("kan.base_branch", 0, 30, cat="user_annotation"),
        op("aten::silu", 1, 5, seq=10),                         # makes node 10
        op("aten::linear", 10, 15, seq=11),
        op("aten::mm", 12, 10, seq=11),                         # makes node 11: base branch
        op("kan.basis", 30, 20, cat="user_annotation"),
        op("aten::unsqueeze", 31, 2, seq=12),                   # no node (input without grad)
        op("aten::mul", 35, 10, seq=12),                        # makes node 12: basis
        op("kan.spline_product", 50, 30, cat="user_annotation"),
        op("aten::mm", 52, 20, seq=13),                         # makes node 13: spline product
        op("aten::add", 85, 3, seq=14),                         # makes node 14: in no region
        op("aten::mse_loss", 90, 5, seq=15),                    # makes node 15: the loss
        # the measured backward
        op("profiles.measured", 100, 1000, cat="user_annotation"),
        op("profiles.backward", 100, 1000, cat="user_annotation"),
        op(evaluate + "MseLossBackward0", 110, 20, seq=15, backward=True),
        op("MseLossBackward0", 112, 10, seq=15, backward=True),  # 10 loss grad; 10 engine
        op(evaluate + "AddBackward0", 140, 10, seq=14, backward=True),
        op("AddBackward0", 141, 4, seq=14, backward=True),       # 4 other; 6 engine
        op(evaluate + "MmBackward0", 200, 300, seq=13, backward=True),
        op("MmBackward0", 201, 250, seq=13, backward=True),      # 250 spline product grad
        op("aten::mm", 205, 240),
        op("aten::sum", 460, 30),                                # the engine's reduction: autograd
        op(evaluate + "MulBackward0", 520, 100, seq=12, backward=True),
        op("MulBackward0", 521, 90, seq=12, backward=True),      # 90 basis grad
        op(evaluate + "MmBackward0", 640, 60, seq=11, backward=True),
        op("MmBackward0", 641, 50, seq=11, backward=True),       # 50 base branch grad
        op(evaluate + "SiluBackward0", 720, 20, seq=10, backward=True),
        op("SiluBackward0", 721, 15, seq=10, backward=True),     # 15 base branch grad
        op(evaluate + "torch::autograd::AccumulateGrad", 800, 50),
        op("torch::autograd::AccumulateGrad", 801, 45),          # no number: autograd
    ]


def test_torch_trace_backward_by_sequence_number():
    seconds = torch_trace.attribute({"traceEvents": backward_trace()})
    expected = {"loss grad": 10e-6, "other": 4e-6, "spline product grad": 250e-6, "basis grad": 90e-6,
                "base branch grad": 65e-6}
    expected["autograd"] = 1000e-6 - sum(expected.values())  # the engine, the reduction, AccumulateGrad
    assert seconds == pytest.approx(expected)
    assert torch_trace.forward_gradients([sorted(backward_trace(), key=lambda e: (e["ts"], -e["dur"]))]) == {
        10: "base branch grad", 11: "base branch grad", 12: "basis grad", 13: "spline product grad",
        14: "other", 15: "loss grad"}


def test_torch_trace_backward_of_a_real_profile(tmp_path):
    """A real trace of a small model whose two products make nodes of one kind (MmBackward0):
    each is told apart by the shapes the profiler recorded on its mm, an independent truth."""
    import torch
    from torch.profiler import record_function

    torch.manual_seed(0)
    x = torch.rand(256, 3, requires_grad=True)
    base_w, spline_w = torch.rand(3, 2, requires_grad=True), torch.rand(300, 2, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("kan.base_branch"):
            base = torch.nn.functional.silu(x) @ base_w  # (256, 2)
        with record_function("kan.basis"):
            bases = (x.unsqueeze(-1) * torch.linspace(0, 1, 100)).reshape(256, 300)  # (256, 300)
        with record_function("kan.spline_product"):
            spline = bases @ spline_w  # (256, 2)
        loss = torch.nn.functional.mse_loss(base + spline, torch.zeros(256, 2))
        with record_function("profiles.measured"):
            loss.backward()
    path = tmp_path / "real-backward.json"
    prof.export_chrome_trace(str(path))
    seconds = torch_trace.attribute(path)

    # the truth: each node event's whole time (what runs inside a node is its gradient's); the
    # node of each mm is known by the shapes of the aten::mm calls it makes
    events = sorted(torch_trace._events(json.loads(path.read_text())), key=lambda e: (e["ts"], -e["dur"]))
    nodes = [e for e in events if str(e["name"]).endswith("Backward0") and not str(e["name"]).startswith("autograd::")]
    truth_s: dict = {}
    for node in nodes:
        inner = [e for e in events if node["ts"] <= e["ts"] < node["ts"] + node["dur"] and e["name"] == "aten::mm"]
        dims = str([e.get("args", {}).get("Input Dims") for e in inner])
        if node["name"] == "MmBackward0":
            part = "spline product grad" if "300" in dims else "base branch grad"
        else:
            part = {"SiluBackward0": "base branch grad", "MseLossBackward0": "loss grad",
                    "AddBackward0": "other"}.get(node["name"], "basis grad")
        truth_s[part] = truth_s.get(part, 0.0) + node["dur"] / 1e6
    for part in ("spline product grad", "base branch grad", "basis grad", "loss grad"):
        assert part in truth_s
        assert seconds[part] == pytest.approx(truth_s[part], rel=1e-6, abs=1e-9), part
