"""What an accelerator row adds: how busy the device was, and how near the device's limit.

On a GPU a step is a queue of kernels. Where the queue is short (small shapes), the call's
wall time is Python and kernel launches, and a ratio of two such rows compares overheads,
not models. This module gives each accelerator row what is needed to say so:

- :func:`device_seconds`: the device's time in kernels, copies and memsets per call, from a
  short torch.profiler pass over a few calls after the timing (:func:`profile_calls`), read
  from its Chrome trace (:func:`trace_device_seconds`), overlapping intervals merged so that
  concurrent streams are not counted twice. ``device_busy`` (computed in
  :func:`benchmarks.core.record.bench_table`) is that time over the timed median; a row below
  :data:`LAUNCH_BOUND_BELOW` is launch-bound.
- :func:`peaks`: the device's dense peak FLOP/s for the math that ran (fp32, tf32 where
  ``torch.backends.cuda.matmul.allow_tf32``, bf16, fp16, fp64) and its memory bandwidth, from
  :data:`DATASHEETS` for known devices, else from a short matmul-and-copy probe (:func:`probe`)
  run once per process (so once per bench run) and kept in the run folder (``device.json``).
- :func:`bytes_moved`: an estimate of the least memory traffic of a call, for the roofline.
- :func:`graphed_step`: the case's step with the model captured in CUDA graphs
  (``torch.cuda.make_graphed_callables``: one graph for the forward, one for the backward),
  so that its time is the model's without Python's; the loss and the optimizer step still run
  eagerly.

Nothing here runs on the CPU: CPU rows keep these columns empty.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.core.schema import LAUNCH_BOUND_BELOW  # noqa: F401 - the rule lives with the table
from benchmarks.core.errors import one_line
PROFILED_CALLS = 5  # calls of the profiler pass after timing
CALL = "bench.call"  # torch.profiler label of one profiled call (the step and its device wait)
DEVICE_ACTIVITY = ("kernel", "gpu_memcpy", "gpu_memset")  # device-side work in a Chrome trace
DEVICE_FILE = "device.json"  # the run folder's record of the peaks used (and the probe's figures)

# Dense peak rates (FLOP/s, no structured sparsity) and memory bandwidth (bytes/s) from the
# vendors' datasheets. Matched in order against the name torch reports, so the specific
# patterns (H100 PCIe, A100 80GB) come before the general ones.
_T, _G = 1e12, 1e9
DATASHEETS = [
    (r"H200", "NVIDIA H200 SXM", dict(fp64=34 * _T, fp32=67 * _T, tf32=494.5 * _T, bf16=989.5 * _T,
                                      fp16=989.5 * _T, bandwidth=4800 * _G)),
    (r"H100.*PCIe", "NVIDIA H100 PCIe", dict(fp64=26 * _T, fp32=51 * _T, tf32=378 * _T, bf16=756.5 * _T,
                                            fp16=756.5 * _T, bandwidth=2000 * _G)),
    (r"H100.*NVL", "NVIDIA H100 NVL", dict(fp64=30 * _T, fp32=60 * _T, tf32=417.5 * _T, bf16=835.5 * _T,
                                          fp16=835.5 * _T, bandwidth=3900 * _G)),
    (r"H100", "NVIDIA H100 SXM", dict(fp64=34 * _T, fp32=67 * _T, tf32=494.5 * _T, bf16=989.5 * _T,
                                      fp16=989.5 * _T, bandwidth=3350 * _G)),
    (r"A100.*80GB.*PCIe", "NVIDIA A100 80GB PCIe", dict(fp64=9.7 * _T, fp32=19.5 * _T, tf32=156 * _T,
                                                       bf16=312 * _T, fp16=312 * _T, bandwidth=1935 * _G)),
    (r"A100.*80GB", "NVIDIA A100 80GB SXM", dict(fp64=9.7 * _T, fp32=19.5 * _T, tf32=156 * _T, bf16=312 * _T,
                                                fp16=312 * _T, bandwidth=2039 * _G)),
    (r"A100", "NVIDIA A100 40GB", dict(fp64=9.7 * _T, fp32=19.5 * _T, tf32=156 * _T, bf16=312 * _T,
                                       fp16=312 * _T, bandwidth=1555 * _G)),
    (r"L40S", "NVIDIA L40S", dict(fp32=91.6 * _T, tf32=183 * _T, bf16=362 * _T, fp16=362 * _T,
                                  bandwidth=864 * _G)),
    (r"\bL4\b", "NVIDIA L4", dict(fp32=30.3 * _T, tf32=60 * _T, bf16=121 * _T, fp16=121 * _T,
                                  bandwidth=300 * _G)),
    (r"A10G", "NVIDIA A10G", dict(fp32=31.2 * _T, tf32=62.5 * _T, bf16=125 * _T, fp16=125 * _T,
                                  bandwidth=600 * _G)),
    # GeForce tensor rates with FP32 accumulation (what PyTorch's matmuls use)
    (r"RTX 4090", "NVIDIA GeForce RTX 4090", dict(fp32=82.6 * _T, tf32=82.6 * _T, bf16=165.2 * _T,
                                                  fp16=165.2 * _T, bandwidth=1008 * _G)),
    (r"RTX 3090", "NVIDIA GeForce RTX 3090", dict(fp32=35.6 * _T, tf32=35.6 * _T, bf16=71 * _T,
                                                  fp16=71 * _T, bandwidth=936 * _G)),
    (r"V100", "NVIDIA V100 SXM2", dict(fp64=7.8 * _T, fp32=15.7 * _T, fp16=125 * _T, bandwidth=900 * _G)),
    (r"\bT4\b", "NVIDIA T4", dict(fp32=8.1 * _T, fp16=65 * _T, bandwidth=320 * _G)),
]


@dataclass(frozen=True)
class Peak:
    """The limits a row is set against: FLOP/s of its math, bytes/s of memory, and where from."""

    math: str  # "fp32", "tf32", "bf16", "fp16", "fp64"
    flops: float | None  # FLOP/s; None where neither datasheet nor probe gives one
    bandwidth: float | None  # bytes/s
    source: str  # "datasheet: NVIDIA H200 SXM", or "probe: ..."


def math_of(dtype: str) -> str:
    """The math a matmul in ``dtype`` runs on CUDA here: tf32 for float32 where torch allows it."""
    import torch

    if dtype == "float32":
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return {"bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}.get(dtype, dtype)


def datasheet(name: str) -> tuple[str, dict] | None:
    """(label, rates) of the first DATASHEETS entry matching the device name, or None."""
    for pattern, label, rates in DATASHEETS:
        if re.search(pattern, name, re.IGNORECASE):
            return label, rates
    return None


def peak(device: str, dtype: str) -> Peak | None:
    """The peaks for a row on ``device`` in ``dtype``; None off CUDA (the CPU has no row of these)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    math = math_of(dtype)
    name = torch.cuda.get_device_name(device)
    known = datasheet(name)
    if known is not None:
        label, rates = known
        # a rate the datasheet lacks (tf32 before Ampere) falls back as the hardware does
        flops = rates.get(math) or (rates.get("fp32") if math == "tf32" else None)
        return Peak(math, flops, rates.get("bandwidth"), f"datasheet: {label}")
    measured = probe(device, dtype)
    return Peak(math, measured["flops"], measured["bandwidth"], f"probe: {name}, {measured['how']}")


_PROBED: dict[tuple[str, str], dict] = {}


def probe(device: str, dtype: str, size: int = 4096, copy_bytes: int = 1 << 28, repeats: int = 10) -> dict:
    """A short matmul-and-copy probe of an unknown device, once per process and (device, dtype).

    FLOP/s: the best of ``repeats`` square matmuls of ``size`` (2 size^3 FLOPs each) in
    ``dtype``; bandwidth: the best of ``repeats`` copies of ``copy_bytes`` (read and written,
    so twice the bytes). Both are what this code reaches, a floor under the true peaks.
    """
    key = (str(device), dtype)
    if key in _PROBED:
        return _PROBED[key]
    import torch

    from benchmarks.core.case import DTYPES

    kind = DTYPES.get(dtype, torch.float32)
    a = torch.randn(size, size, device=device, dtype=kind)  # (size, size)
    b = torch.randn(size, size, device=device, dtype=kind)
    src = torch.empty(copy_bytes // 4, device=device, dtype=torch.float32)  # (copy_bytes / 4,)
    dst = torch.empty_like(src)

    def best(work) -> float:
        work()
        torch.cuda.synchronize(device)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return min(times)

    matmul_s = best(lambda: torch.mm(a, b))
    copy_s = best(lambda: dst.copy_(src))
    _PROBED[key] = out = {
        "flops": 2 * size ** 3 / matmul_s, "bandwidth": 2 * copy_bytes / copy_s,
        "how": f"best of {repeats} {size}x{size} matmuls and {copy_bytes >> 20} MiB copies",
    }
    return out


def record_peaks(run, peaks: list[Peak]) -> None:
    """Keep the peaks a run used (and any probe's figures) in its folder."""
    if peaks:
        run.write_json(DEVICE_FILE, {"peaks": [asdict(p) for p in dict.fromkeys(peaks)],
                                     "probes": {f"{d} {t}": v for (d, t), v in _PROBED.items()}})


_PEAKS: dict[tuple[str, str], "Peak | None"] = {}


def row_peak(device: str, dtype: str) -> Peak | None:
    """:func:`peak`, looked up once per process (the bench's pytest runs in the command's process,
    so once per run) and remembered for :func:`peaks_used`."""
    key = (str(device), dtype)
    if key not in _PEAKS:
        _PEAKS[key] = peak(device, dtype)
    return _PEAKS[key]


def peaks_used() -> list[Peak]:
    """Every peak looked up in this process."""
    return [p for p in _PEAKS.values() if p is not None]


# --------------------------------------------------------------------------- device time


def merged(intervals) -> list[tuple[float, float]]:
    """The union of ``(start, end)`` intervals as sorted, disjoint intervals."""
    out: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def _load(trace) -> dict:
    if isinstance(trace, dict):
        return trace
    path = Path(trace)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def trace_device_seconds(trace, label: str = CALL) -> list[float]:
    """Per host range named ``label`` in a torch.profiler Chrome trace (a path, .gz or not, or the
    loaded JSON): the seconds of device activity (kernels, copies, memsets) inside it, overlaps merged.

    A range must end after the device finished the call's work (the bench's ranges end with a
    device wait); device time outside every range is no call's.
    """
    doc = _load(trace)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    windows = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                     if e.get("ph") == "X" and e.get("name") == label and e.get("cat") == "user_annotation")
    device = merged((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                    if e.get("ph") == "X" and e.get("cat") in DEVICE_ACTIVITY and "dur" in e)
    out = []
    for start, end in windows:
        inside = sum(max(0.0, min(end, e) - max(start, s)) for s, e in device if s < end and e > start)
        out.append(inside / 1e6)  # trace times are microseconds
    return out


def profile_calls(step, calls: int = PROFILED_CALLS) -> list[float]:
    """Device seconds of each of ``calls`` calls of ``step`` under torch.profiler (CUDA only).

    Each call is ``setup()`` (untimed, ends idle) then the timed ``fn()`` and a device wait,
    inside a ``CALL`` range, so that all the call's queued work runs inside its range.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from benchmarks.core.timer import synchronize

    device = step.case.device
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            step.setup()
            with record_function(CALL):
                step.fn()
                synchronize(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.trace.json"
        prof.export_chrome_trace(str(path))
        return trace_device_seconds(path)


def device_seconds(step) -> float | None:
    """The median device seconds per call of ``step`` on CUDA; None elsewhere or where the
    profiler saw no device activity (a CUPTI that is not permitted)."""
    import torch

    if torch.device(step.case.device).type != "cuda" or hasattr(step, "timed_call"):
        return None
    seconds = sorted(profile_calls(step))
    if not seconds or max(seconds) <= 0:
        return None
    return seconds[len(seconds) // 2]


# --------------------------------------------------------------------------- memory traffic


ADAM_TENSORS_MOVED = 7  # Adam reads parameter, gradient, two moments; writes parameter, two moments


def bytes_moved(phase: str, param_bytes: int, saved_bytes: int, io_bytes: int) -> int:
    """An estimate of the least memory traffic of one call: what must be read or written once.

    forward: the parameters read, the tensors saved for backward written, inputs and outputs;
    backward: the saved tensors and parameters read, the gradients written; train: both and
    Adam's reads and writes. Intermediates that a kernel keeps on chip are not counted, so the
    estimate is a floor, and a row's share of bandwidth from it a floor too.
    """
    forward = param_bytes + saved_bytes + io_bytes
    backward = 2 * param_bytes + saved_bytes + io_bytes
    if phase == "forward":
        return forward
    if phase == "backward":
        return backward
    if phase == "forward+backward":
        return forward + backward
    return forward + backward + ADAM_TENSORS_MOVED * param_bytes


__all__ = ["LAUNCH_BOUND_BELOW", "DATASHEETS", "Peak", "math_of", "datasheet", "peak", "probe", "row_peak",
           "peaks_used", "record_peaks", "merged", "trace_device_seconds", "profile_calls", "device_seconds",
           "bytes_moved"]
