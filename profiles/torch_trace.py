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

The backward is split exactly: autograd numbers each node it records in the forward,
and the trace carries that "Sequence number" on the forward operator that made the
node and on the engine's ``autograd::engine::evaluate_function: <Node>`` event that
runs it. The node's own event under it (``MmBackward0``) goes to the gradient of the
model region its forward operator ran in (:func:`forward_gradients`); the engine's
work around the nodes (summing a gradient to its input's shape, adding gradients of
a tensor used twice) and ``AccumulateGrad`` (which has no number) stay ``autograd``,
as py-spy sees them. A region label
inside a backward (a custom autograd Function's, kan.fast) names its part there.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from profiles import scenario as scenarios
from profiles.attribution import classify, classify_gradient, resolve
from profiles.scenario import MEASURED

_DEVICE_SIDE = ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "ac2g", "Trace")
_LABEL = ("user_annotation", "python_function")  # the interpreter's own time when unclaimed
_NESTING_SLACK_US = 0.01  # timestamps are rounded to 1 ns; a child may overhang its parent by that


def profile(s: scenarios.Scenario, trace_path: Path, table_path: Path, top: int = 30,
            measured: list | None = None) -> dict[str, float]:
    """Run ``s`` under torch.profiler; write the chrome trace and the table; seconds per part.
    ``measured``: the wall time of the measured steps, profiler included, is appended to it."""
    import torch
    from torch.profiler import ProfilerActivity, record_function

    from kan import regions

    activities = [ProfilerActivity.CPU]
    if torch.device(s.device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with regions.annotating(), torch.profiler.profile(activities=activities) as prof:
        w = scenarios.run(s, lambda: record_function(MEASURED))
        if measured is not None:
            measured.append(w.measured_s)
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


_EVALUATE = "autograd::engine::evaluate_function: "  # the engine's event around one backward node
_SEQ, _FWD_THREAD = "Sequence number", "Fwd thread id"


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
    by_thread: dict = defaultdict(list)
    for e in events:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    for mine in by_thread.values():
        mine.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
    made_by = forward_gradients(by_thread.values())
    seconds: dict[str, float] = defaultdict(float)
    for thread in threads:
        _attribute_thread(by_thread[thread], {id(m) for m in marks}, made_by, seconds)
    return dict(seconds)


def _sequence(e: dict) -> int | None:
    args = e.get("args") or {}
    return args.get(_SEQ) if isinstance(args.get(_SEQ), int) else None


def forward_gradients(threads) -> dict[int, str]:
    """{sequence number: the gradient part of the backward node it numbers}, from the forward.

    Every operator run with autograd recording carries the sequence number the next
    autograd node will take, so the node numbered N was made by the last operator to
    start that carries N. That operator's part is the innermost model region around it
    (``kan.basis`` -> "basis grad"), else its own name's (``aten::mse_loss`` -> "loss
    grad"), else "other" (a forward operator no part claims, such as the sum of the two
    products). Backward events carry the forward's number too; they are left out here.
    """
    last: dict[int, tuple[float, str]] = {}
    for events in threads:
        stack: list[tuple[float, str | None]] = []  # (end, innermost region gradient so far)
        for e in events:
            start = float(e["ts"])
            while stack and stack[-1][0] <= start + _NESTING_SLACK_US:
                stack.pop()
            name = str(e["name"])
            label = classify_gradient(name, nodes=False) if e.get("cat") in _LABEL else None
            inherited = stack[-1][1] if stack else None
            seq = _sequence(e)
            forward = (e.get("args") or {}).get(_FWD_THREAD, 0) in (0, None) and not name.startswith(_EVALUATE)
            if seq is not None and forward and e.get("cat") not in _LABEL:
                part = inherited or classify_gradient(name, nodes=False) or "other"
                if seq not in last or start >= last[seq][0]:
                    last[seq] = (start, part)
            stack.append((start + max(float(e["dur"]), 0.0), label or inherited))
    return {seq: part for seq, (_, part) in last.items()}


def _attribute_thread(events: list[dict], marks: set[int], made_by: dict[int, str],
                      seconds: dict[str, float]) -> None:
    # stack entries: [end, part (outermost claim so far), inside a measured range, own us, leftover,
    #                 gradient (innermost so far), the node an evaluate_function runs: (name, gradient)]
    stack: list[list] = []

    def close(entry: list) -> None:
        _, part, inside, own, leftover, gradient, _ = entry
        if inside and own > 0:
            seconds[resolve(part, gradient) or leftover] += own / 1e6

    for e in events:
        start, duration = float(e["ts"]), max(float(e["dur"]), 0.0)
        while stack and stack[-1][0] <= start + _NESTING_SLACK_US:
            close(stack.pop())
        parent = stack[-1] if stack else None
        if parent is not None:
            duration = min(duration, parent[0] - start)  # clamp an overhanging child
            parent[3] -= duration
        name = str(e["name"])
        inside = (parent is not None and parent[2]) or id(e) in marks
        part = (parent[1] if parent is not None else None) or classify(name)
        leftover = "python" if (id(e) in marks or e.get("cat") in _LABEL) else "other"
        gradient = parent[5] if parent is not None else None
        node = None
        if name.startswith(_EVALUATE) and _sequence(e) in made_by:
            # the node's own event (named as the engine's, less its prefix) is its forward part's;
            # the engine's work around it (summing gradients to the inputs' shapes, adding
            # into input buffers) stays autograd, as py-spy sees it
            node = (name[len(_EVALUATE):], made_by[_sequence(e)])
        elif parent is not None and parent[6] is not None and name == parent[6][0]:
            gradient = parent[6][1]
        gradient = classify_gradient(name, nodes=False) or gradient
        stack.append([start + duration, part, inside, duration, leftover, gradient, node])
    while stack:
        close(stack.pop())
