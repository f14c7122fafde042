"""torch.profiler: a chrome trace, the key_averages table, and the time of each part.

The models' regions are switched on (kan.regions) so the trace names their parts
(``kan.basis``, ``kan.spline_product``, ``kan.base_branch``); the scenario labels its
measured steps (``profiles.measured``), the backward pass (``profiles.backward``)
and its device waits. The trace opens in https://ui.perfetto.dev or
chrome://tracing.

Attribution reads the chrome trace JSON, so a trace recorded anywhere (a CUDA box,
an older run) is attributed the same way. On each host thread that holds measured
ranges (``profiles.measured``; ``ProfilerStep#N`` in a trace without them), events
nest by time; an event's own time is its duration less its children's, and it
belongs to the part of the outermost matching event around it
(profiles.attribution). Time inside a measured range that no operator covers is the
interpreter's: "python", as is the unclaimed own time of a label
(``kan.spline_product``). An operator's unclaimed own time is "other". Device-side
events (kernels, memcpy on the GPU timeline) are not host time and are left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from profiles import scenario as scenarios
from profiles.attribution import classify
from profiles.scenario import MEASURED

_DEVICE_SIDE = ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "ac2g", "Trace")
_LABEL = ("user_annotation", "python_function")  # the interpreter's own time when unclaimed
_NESTING_SLACK_US = 0.01  # timestamps are rounded to 1 ns; a child may overhang its parent by that


def profile(s: scenarios.Scenario, trace_path: Path, table_path: Path, top: int = 30) -> dict[str, float]:
    """Run ``s`` under torch.profiler; write the chrome trace and the table; seconds per part."""
    import torch
    from torch.profiler import ProfilerActivity, record_function

    from kan import regions

    activities = [ProfilerActivity.CPU]
    if torch.device(s.device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    was = regions.annotation_enabled()
    regions.set_annotation(True)
    try:
        with torch.profiler.profile(activities=activities) as prof:
            scenarios.run(s, lambda: record_function(MEASURED))
    finally:
        regions.set_annotation(was)
    prof.export_chrome_trace(str(trace_path))
    sort = "self_cuda_time_total" if len(activities) > 1 else "self_cpu_time_total"
    table_path.write_text(prof.key_averages().table(sort_by=sort, row_limit=top) + "\n")
    return attribute(trace_path)


def _events(doc: dict) -> list[dict]:
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    return [
        e for e in events
        if e.get("ph") == "X" and "dur" in e and "ts" in e and e.get("cat") not in _DEVICE_SIDE
    ]


def attribute(trace: Path | str | dict) -> dict[str, float]:
    """Seconds per part in a torch.profiler chrome trace (a path or the loaded JSON)."""
    if not isinstance(trace, dict):
        try:
            trace = json.loads(Path(trace).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{trace} is not a chrome trace ({type(e).__name__}: {e})") from None
    events = _events(trace)
    marks = [e for e in events if e["name"] == MEASURED]
    if not marks:
        marks = [e for e in events if str(e["name"]).startswith("ProfilerStep#")]
    threads = {(e.get("pid"), e.get("tid")) for e in marks}
    seconds: dict[str, float] = defaultdict(float)
    for thread in threads:
        mine = sorted(
            (e for e in events if (e.get("pid"), e.get("tid")) == thread),
            key=lambda e: (float(e["ts"]), -float(e["dur"])),
        )
        _attribute_thread(mine, {id(m) for m in marks}, seconds)
    return dict(seconds)


def _attribute_thread(events: list[dict], marks: set[int], seconds: dict[str, float]) -> None:
    # stack entries: [end, part (outermost claim so far), inside a measured range, own us, leftover]
    stack: list[list] = []

    def close(entry: list) -> None:
        _, part, inside, own, leftover = entry
        if inside and own > 0:
            seconds[part or leftover] += own / 1e6

    for e in events:
        start, duration = float(e["ts"]), max(float(e["dur"]), 0.0)
        while stack and stack[-1][0] <= start + _NESTING_SLACK_US:
            close(stack.pop())
        parent = stack[-1] if stack else None
        if parent is not None:
            duration = min(duration, parent[0] - start)  # clamp an overhanging child
            parent[3] -= duration
        inside = (parent is not None and parent[2]) or id(e) in marks
        part = (parent[1] if parent is not None else None) or classify(str(e["name"]))
        leftover = "python" if (id(e) in marks or e.get("cat") in _LABEL) else "other"
        stack.append([start + duration, part, inside, duration, leftover])
    while stack:
        close(stack.pop())
