"""``python -m benchmarks.studies.triton_gpu``: kan-fast's Triton kernels on one CUDA GPU, checked then timed.

    python -m benchmarks.studies.triton_gpu [--budget-s 220] [--rounds 7] [--round-s 0.02]
                                            [--shapes all|small|big] [--tf32]

For each shape and grid that kan-fast's CUDA targets name (``benchmarks.studies.targets``,
``TARGETS["cuda"]``): ``[2,5,1]`` b1024 G5; ``[784,64,10]`` b256 G5, b4096 G5 and G50;
``[256,256,256,256]`` b4096 G5; ``[1024,1024,1024]`` b8192 G5, G20 and G50:

1. correctness on CUDA: kan-fast with ``backend="triton"`` loaded from the reference's
   state dict (``kan``), its output and the gradients of the input and every parameter
   (MSE loss) against the reference in float64 on the same weights; the error relative to
   max(1, max |float64 value|), beside the float32 reference's own error;
2. timing by CUDA events, the models taking turns (order rotated every round, ``--rounds``
   rounds, each of as many calls as fill ``--round-s`` seconds): ``forward`` (no grad) and
   ``fwd+bwd`` (zero_grad, forward, MSE loss, backward; no optimizer) for kan-fast(triton)
   (``contraction="auto"``), kan-fast(triton) with the other contraction (``kan-fast(triton,
   dense)`` or ``kan-fast(triton, gather)``: the two sets of kernels side by side, which
   measures ``TRITON_GATHER_MIN_COEFF``), kan-fast(backend="torch"; eager unless
   ``--compile``), kan, mlp-param, and the pip peers inkan and flashkan where they import;
   medians, and the spread (max - min) / median;
3. the dense floor beside the forward (the targets study's: one matrix product at the
   operand sizes of the first layer's combined spline + base product), and the bytes
   autograd saves for backward (the targets study's ``saved_bytes``, parameters
   left out);
4. per shape and phase, which contraction of kan-fast(triton) was faster and by how much
   (rows of kind "contraction": what ``TRITON_GATHER_MIN_COEFF`` is to be set from);
5. those targets as rows with verdicts, kan-fast(triton) in kan-fast's place (fwd+bwd at
   least 2x faster than the faster peer, 1.2x at [1024,1024,1024] b8192 G5; fwd+bwd faster
   than mlp-param at [1024,1024,1024] b8192 G20 and G50; forward at most 1.5x the dense
   floor and saved bytes at most 1/3 of the reference's at [784,64,10] b4096 G5);
6. at the launch-bound shapes ``[2,5,1]`` b1024 and ``[784,64,10]`` b4096 (G5): whether
   kan-fast(triton)'s fwd+bwd makes the host wait for the device (``torch.cuda``'s sync debug
   mode), and kan-fast(triton) and mlp-param timed eager and captured in CUDA graphs
   (``make_graphed_callables``, as the bench's ``--graphs``), in turns: how much of the step
   is the host's (skipped with ``--shapes big``).

TF32 off unless ``--tf32`` (each row says which math the kernels ran: ``math``). Rows are
JSON lines in ``$OUT/triton_gpu.jsonl`` (``$OUT`` or a new temporary folder); a table at
the end. Shapes left when ``--budget-s`` runs out are skipped, and said so. Figures from one
process on one GPU: ratios within the run are the point, not absolute times.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings

import torch

from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError, one_line
from benchmarks.core.command import run_command
from benchmarks.core.units import format_seconds
from benchmarks.peers import catalog
from benchmarks.studies import targets as study

TARGETS = study.TARGETS["cuda"]
# (widths, batch, grid) of every target, in their order; "small" those of at most 784 features a layer
SHAPES = {"all": [(list(shape.widths), shape.batch, grid)
                  for shape, grid in study.points(TARGETS, tuple(sorted({t.grid_size for t in TARGETS})))]}
SHAPES["small"] = [point for point in SHAPES["all"] if max(point[0]) <= 784]
SHAPES["big"] = [point for point in SHAPES["all"] if max(point[0]) > 784]
# a dry run of the script itself: --device cpu under TRITON_INTERPRET=1 (figures meaningless)
SHAPES["tiny"] = [([2, 5, 1], 64, 5), ([7, 9, 3], 33, 50)]
PEERS = catalog.REFERENCE_PEERS  # the pip KANs that compute our reference's function
MINE = "kan-fast(triton)"  # backend="triton", contraction="auto": the model the targets judge


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Run:
    """The study's rows, written to ``out_dir/triton_gpu.jsonl`` as they come, and what it runs on."""

    def __init__(self, out_dir: str, budget_s: float, device: torch.device, compile: str = "off"):
        self.device = device
        self.compile = compile  # kan-fast's compile option ("auto" with --compile)
        self.path = os.path.join(out_dir, "triton_gpu.jsonl")
        self.file = open(self.path, "a")
        self.deadline = time.time() + budget_s
        self.rows: list[dict] = []

    def emit(self, **row) -> dict:
        self.rows.append(row)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        return row

    def left(self) -> float:
        return self.deadline - time.time()


def shape_id(widths, batch, grid) -> str:
    return f"[{','.join(map(str, widths))}] b{batch} G{grid}"


def contractions(grid: int) -> tuple[str, str]:
    """(the contraction kan-fast(triton) takes at this grid with contraction="auto", the other one)."""
    from kan.fast import gathers

    auto = "gather" if gathers("auto", grid, 3, native_kernels=False, triton=True) else "dense"  # order 3, as built
    return auto, "dense" if auto == "gather" else "gather"


def other_name(grid: int) -> str:
    """The study's name of kan-fast(triton) with the contraction "auto" does not take at this grid."""
    return f"kan-fast(triton, {contractions(grid)[1]})"


def builders(widths, grid, compile: str = "off") -> dict:
    from kan import zoo

    other = contractions(grid)[1]
    found = {
        MINE: lambda: zoo.build("kan-fast", widths, grid_size=grid, backend="triton", compile=compile),
        other_name(grid): lambda: zoo.build("kan-fast", widths, grid_size=grid, backend="triton", contraction=other,
                                            compile=compile),
        "kan-fast(torch)": lambda: zoo.build("kan-fast", widths, grid_size=grid, backend="torch", compile=compile),
        "kan": lambda: zoo.build("kan", widths, grid_size=grid),
        "mlp-param": lambda: zoo.build("mlp-param", widths, grid_size=grid),
    }
    for name in PEERS:
        peer = catalog.PEERS[name]
        if catalog.importable(peer) is None:
            found[name] = (lambda p: lambda: p.build(widths, grid))(peer)
    return found


def relative_error(actual: torch.Tensor, truth: torch.Tensor) -> float:
    scale = max(1.0, truth.abs().max().item())
    return (actual.double() - truth).abs().max().item() / scale


def outputs_and_gradients(model, x, y) -> dict:
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.nn.functional.mse_loss(out, y.to(out.dtype)).backward()
    found = {"output": out.detach(), "input": x.grad}
    found.update({n: p.grad for n, p in model.named_parameters()})
    return found


def check(run: Run, widths, batch, grid, models, x, y) -> None:
    """kan-fast(triton), with either contraction, and the float32 reference against the float64
    reference, same weights."""
    reference = models["kan"]
    mine = [name for name in (MINE, other_name(grid)) if name in models]
    for name in mine:
        models[name].load_state_dict(reference.state_dict(), strict=True)
    exact = type(reference)(widths, grid_size=grid).to(x.device, torch.float64)
    exact.load_state_dict(reference.state_dict(), strict=True)
    truth = outputs_and_gradients(exact, x.double(), y.double())
    errors = {}
    for label in (*mine, "kan"):
        found = outputs_and_gradients(models[label], x, y)
        errors[label] = {k: relative_error(found[k], truth[k]) for k in truth}
    del exact, truth
    worst = {k: max(v.values()) for k, v in errors.items()}
    out_ok = all(errors[name]["output"] <= max(1e-5, 4 * errors["kan"]["output"]) for name in mine)
    grads_ok = all(errors[name][k] <= max(1e-4, 4 * errors["kan"][k]) for name in mine for k in errors["kan"])
    run.emit(kind="check", shape=shape_id(widths, batch, grid), widths=widths, batch=batch, grid=grid,
             errors=errors, worst=worst, verdict="ok" if mine and out_ok and grads_ok else "FAIL",
             rule="output <= max(1e-5, 4x float32 reference), gradients <= max(1e-4, 4x float32 reference), "
                  "relative to max(1, max |float64 reference|)")


def event_seconds(fn, calls: int, device: torch.device) -> float:
    if not torch.cuda.is_available() or device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3 / calls


def steps(model, x, y) -> dict:
    def forward():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()

    return {"forward": forward, "fwd+bwd": fwd_bwd}


def floor_step(widths, batch, grid, device: torch.device) -> callable:
    """The targets' dense floor (``benchmarks.studies.targets.DenseFloor``), which the forward's
    target is judged against: one matrix product at the operand sizes of the first layer's
    combined spline + base product, (batch, in * (coeff + 1)) by (in * (coeff + 1), out)."""
    columns, hidden = study.dense_floor_case(widths, batch, grid, device).widths
    floor = study.DenseFloor(columns, hidden).to(device)
    operand = torch.rand(batch, columns, device=device)

    def step():
        with torch.no_grad():
            floor(operand)

    return step


def time_in_turns(run: Run, phase: str, fns: dict, rounds: int, round_s: float) -> dict:
    """{name: seconds per call, one per round}: the candidates in turns, order rotated each round."""
    calls, first = {}, {}
    for name, fn in list(fns.items()):
        try:
            sync(run.device)
            t0 = time.perf_counter()
            fn()
            sync(run.device)
            first[name] = time.perf_counter() - t0
            for _ in range(2):
                fn()
            once = event_seconds(fn, 3, run.device)
            calls[name] = max(1, min(200, int(round_s / max(once, 1e-6))))
        except Exception as e:  # a peer that fails at this shape
            run.emit(kind="error", phase=phase, model=name, error=one_line(e))
            del fns[name]
    names = list(fns)
    samples = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            samples[name].append(event_seconds(fns[name], calls[name], run.device))
    return {n: (samples[n], calls[n], first[n]) for n in names}


def time_row(run: Run, widths, batch, grid, phase: str, name: str, samples, calls, first, **extra) -> dict:
    """The row of one model's times in one phase (``time_in_turns``' samples, calls per round and first
    call): median, extremes and spread (max - min) / median, and ``extra``."""
    med = median(samples)
    return run.emit(kind="time", shape=shape_id(widths, batch, grid), widths=widths, batch=batch, grid=grid,
                    phase=phase, model=name, median_s=med, min_s=min(samples), max_s=max(samples),
                    spread=(max(samples) - min(samples)) / med, rounds=len(samples), calls_per_round=calls,
                    first_call_s=first, **extra)


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def measure(run: Run, widths, batch, grid, rounds: int, round_s: float) -> dict:
    from kan import triton_spline

    torch.manual_seed(0)
    device = run.device
    x = torch.rand(batch, widths[0], device=device) * 2 - 1
    y = torch.randn(batch, widths[-1], device=device)
    models = {}
    for name, build in builders(widths, grid, run.compile).items():
        try:
            models[name] = build().to(device)
        except Exception as e:
            run.emit(kind="error", shape=shape_id(widths, batch, grid), model=name,
                     error=one_line(e))
    check(run, widths, batch, grid, models, x, y)
    auto, other = contractions(grid)
    math = {MINE: triton_spline.math_mode(x, gather=auto == "gather"),
            other_name(grid): triton_spline.math_mode(x, gather=other == "gather")}
    medians = {}
    for phase in ("forward", "fwd+bwd"):
        fns = {name: steps(model, x, y)[phase] for name, model in models.items()}
        if phase == "forward":
            fns["dense floor"] = floor_step(widths, batch, grid, device)
        for name, timed in time_in_turns(run, phase, fns, rounds, round_s).items():
            row = time_row(run, widths, batch, grid, phase, name, *timed, math=math.get(name),
                           contraction={MINE: auto, other_name(grid): other}.get(name),
                           tf32=torch.backends.cuda.matmul.allow_tf32)
            medians[(phase, name)] = row["median_s"]
    saved = {}
    for name in (MINE, "kan"):
        model = models[name]
        saved[name] = study.saved_bytes(model, x)
        run.emit(kind="saved", shape=shape_id(widths, batch, grid), model=name, saved_bytes=saved[name])
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"medians": medians, "saved": saved}


# the targets' phases as this study names them
PHASES = {study.FORWARD_BACKWARD: "fwd+bwd", study.FORWARD: "forward"}


def verdicts(run: Run, widths, batch, grid, found: dict) -> None:
    """A row per target at (widths, batch, grid), kan-fast(triton) judged in kan-fast's place."""
    med, saved = found["medians"], found["saved"]
    shape = shape_id(widths, batch, grid)
    for t in TARGETS:
        if (list(t.shape.widths), t.shape.batch, t.grid_size) != (list(widths), batch, grid):
            continue
        row = dict(kind="target", shape=shape, target=t.name, what=f"{t.name} {t.describe()}")
        if t.phase == study.SAVED:
            mine, others = saved.get(MINE), {t.other: saved.get(t.other)}
        else:
            names = PEERS if t.other == study.FASTER_PEER else [t.other]
            mine, others = med.get((PHASES[t.phase], MINE)), {n: med.get((PHASES[t.phase], n)) for n in names}
        present = {name: value for name, value in others.items() if value}
        if not mine or not present:
            missing = [name for name, value in {MINE: mine, **others}.items() if not value]
            run.emit(**row, verdict="not measured", note=f"not measured: {', '.join(missing)}")
            continue
        name, other = min(present.items(), key=lambda item: item[1])
        ratio = t.ratio(mine, other)
        note = ""
        if t.other == study.FASTER_PEER:
            note = f"the faster peer: {name}" + ("" if len(present) == len(others) else " (only one peer measured)")
        run.emit(**row, ratio=ratio, verdict="met" if t.holds(ratio) else "not met", note=note)


def contraction_row(run: Run, widths, batch, grid, found: dict) -> None:
    """Which contraction of kan-fast(triton) was faster at this shape, per phase, and by how much:
    the measurement that kan.fast.TRITON_GATHER_MIN_COEFF (a count until then) waits for."""
    auto, other = contractions(grid)
    med = found["medians"]
    for phase in ("forward", "fwd+bwd"):
        mine, theirs = med.get((phase, MINE)), med.get((phase, other_name(grid)))
        if not mine or not theirs:
            continue
        times = {auto: mine, other: theirs}
        faster = min(times, key=times.get)
        slower = other if faster == auto else auto
        run.emit(kind="contraction", shape=shape_id(widths, batch, grid), grid=grid, phase=phase, auto=auto,
                 faster=faster, by=times[slower] / times[faster], dense_s=times["dense"], gather_s=times["gather"],
                 auto_faster=faster == auto)


def launch_counts(run: Run) -> None:
    """CUDA kernels per forward and per backward of one kan-fast(triton) layer of each contraction, by the profiler."""
    for contraction in ("dense", "gather"):
        launch_count(run, contraction)


def launch_count(run: Run, contraction: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from kan import zoo

    layer = zoo.build("kan-fast", [64, 32], backend="triton", contraction=contraction).cuda()
    x = torch.rand(256, 64, device="cuda") * 2 - 1
    layer(x).sum().backward()  # compiled, warm
    counts = {}
    for phase in ("forward", "backward"):
        layer.zero_grad(set_to_none=True)  # no accumulation kernels
        out = layer(x)
        upstream = torch.ones_like(out)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            if phase == "forward":
                layer(x)
            else:
                out.backward(upstream)
            torch.cuda.synchronize()
        kernels = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
        counts[phase] = kernels
    run.emit(kind="launches", contraction=contraction, forward=len(counts["forward"]), backward=len(counts["backward"]),
             kernels=counts)


# The launch-bound shapes of the targets: where a step's time may be the host's rather than the kernels'
GRAPHED_SHAPES = [([2, 5, 1], 1024, 5), ([784, 64, 10], 4096, 5)]


def graphs(run: Run, rounds: int, round_s: float, shapes=GRAPHED_SHAPES, capture=None) -> None:
    """Per shape: whether kan-fast(triton)'s fwd+bwd makes the host wait for the device (a row
    "sync", by ``host_waits``), and whether its model can be captured in CUDA graphs as the
    bench's ``--graphs`` does (``torch.cuda.make_graphed_callables``, or ``capture``); then
    kan-fast(triton) and mlp-param, eager and graphed (a model of its own), timed in turns (rows
    "time", phase "fwd+bwd graphs"): how much of the step is the host's. Failures are rows."""
    from kan import zoo

    capture = capture or torch.cuda.make_graphed_callables
    device = run.device
    for widths, batch, grid in shapes:
        shape = shape_id(widths, batch, grid)
        torch.manual_seed(0)
        x = torch.rand(batch, widths[0], device=device) * 2 - 1
        y = torch.randn(batch, widths[-1], device=device)
        fns = {}
        for name, registered, options in ((MINE, "kan-fast", {"backend": "triton"}), ("mlp-param", "mlp-param", {})):
            try:
                eager = steps(zoo.build(registered, widths, grid_size=grid, **options).to(device), x, y)["fwd+bwd"]
                eager()  # compiled, warm
                if name == MINE:
                    run.emit(kind="sync", shape=shape, model=name, host_waits=host_waits(eager, device))
                fns[name] = eager
                model = zoo.build(registered, widths, grid_size=grid, **options).to(device)  # captured in place
                fns[f"{name} graphed"] = steps(capture(model, (x,), num_warmup_iters=3), x, y)["fwd+bwd"]
            except Exception as e:  # a capture that fails is a finding: the row says why
                _settle(device)
                run.emit(kind="error", shape=shape, phase="fwd+bwd graphs", model=name, error=one_line(e))
        for name, timed in time_in_turns(run, "fwd+bwd graphs", fns, rounds, round_s).items():
            time_row(run, widths, batch, grid, "fwd+bwd graphs", name, *timed)


def _settle(device: torch.device) -> None:
    """Wait for the device after a failure; a failed capture's error, raised again by the wait, is already in its row."""
    if device.type == "cuda":
        try:
            torch.cuda.synchronize()
        except RuntimeError:
            pass


def host_waits(step, device: torch.device) -> str:
    """"none" where ``step`` makes the host wait for the device nowhere (torch's sync debug mode
    raises at the first such call: an ``.item()``, a ``bool`` of a tensor, a copy to the host),
    else that error in one line; "not checked (CUDA only)" elsewhere."""
    if device.type != "cuda":
        return "not checked (CUDA only)"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return "none"
    except RuntimeError as e:
        return one_line(e)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        _settle(device)


def table(run: Run) -> str:
    lines = []
    for row in run.rows:
        if row["kind"] == "check":
            e = row["errors"]
            mine = "  ".join(f"{name} worst {worst:.2e}" for name, worst in row["worst"].items() if name != "kan")
            lines.append(f"check  {row['shape']:28} {row['verdict']:4}  {mine}  (kan float32 worst {row['worst']['kan']:.2e})")
        elif row["kind"] == "time":
            lines.append(f"time   {row['shape']:28} {row['phase']:8} {row['model']:25} {format_seconds(row['median_s'], unit='ms', spec='.3f'):>12}"
                         f"  spread {row['spread']:6.1%}" + (f"  math {row['math']}" if row.get("math") else "")
                         + (f"  {row['contraction']}" if row.get("contraction") else ""))
        elif row["kind"] == "target":
            ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
            lines.append(f"target {row.get('shape', ''):28} {row['verdict']:12} ratio {ratio:>6}"
                         f"  {row.get('what', '')}  {row.get('note', '')}".rstrip())
        elif row["kind"] == "contraction":
            agrees = "as auto chose" if row["auto_faster"] else f"auto chose {row['auto']}"
            lines.append(f"faster {row['shape']:28} {row['phase']:8} {row['faster']} by x{row['by']:.2f} ({agrees})")
        elif row["kind"] == "saved":
            lines.append(f"saved  {row['shape']:28} {row['model']:25} {row['saved_bytes'] / 2**20:9.2f} MiB")
        elif row["kind"] in ("error", "skipped", "launches", "sync"):
            lines.append(f"{row['kind']:6} " + json.dumps({k: v for k, v in row.items() if k not in ('kind', 'kernels')}))
    return "\n".join(lines)


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.studies.triton_gpu", description=__doc__.split("\n")[0],
               error_prefix="triton_gpu: ")
    p.add_argument("--budget-s", type=float, default=220.0, help="stop starting new shapes after this (seconds)")
    p.add_argument("--rounds", type=cli.count(1), default=7)
    p.add_argument("--round-s", type=float, default=0.02, help="seconds of calls per model per round")
    p.add_argument("--shapes", choices=sorted(SHAPES), default="all")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (torch's flag; the kernels follow it)")
    p.add_argument("--compile", action="store_true",
                   help="kan-fast(torch) with its torch.compile'd kernels (off by default: compiling them "
                        "at every shape costs minutes of the budget)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of this script under TRITON_INTERPRET=1 (with --shapes tiny)")
    return p


def main(argv=None) -> int:
    return run_command("triton-gpu", parser(), argv, _study)  # rows go to $OUT, not a run folder


def _study(args, cmd) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("no CUDA device here; this study runs on a GPU")
    from kan import fast

    if fast.triton_kernels() is None:
        raise UsageError("Triton does not import here")
    warnings.filterwarnings("ignore")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    out_dir = os.environ.get("OUT") or tempfile.mkdtemp(prefix="triton-gpu-")
    os.makedirs(out_dir, exist_ok=True)
    run = Run(out_dir, args.budget_s, device, compile="auto" if args.compile else "off")
    run.emit(kind="run", torch=torch.__version__,
             device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (interpreter)",
             triton=__import__("triton").__version__, tf32=args.tf32, kan_fast_torch_compiled=args.compile,
             rounds=args.rounds, round_s=args.round_s)
    try:
        if device.type == "cuda":
            launch_counts(run)
    except Exception as e:
        run.emit(kind="error", model="launch count", error=one_line(e))
    if device.type == "cuda" and args.shapes != "big":
        graphs(run, args.rounds, args.round_s)
    for widths, batch, grid in SHAPES[args.shapes]:
        if run.left() <= 0:
            run.emit(kind="skipped", shape=shape_id(widths, batch, grid), reason="time budget spent")
            continue
        t0 = time.time()
        try:
            found = measure(run, widths, batch, grid, args.rounds, args.round_s)
            verdicts(run, widths, batch, grid, found)
            contraction_row(run, widths, batch, grid, found)
        except Exception as e:
            run.emit(kind="error", shape=shape_id(widths, batch, grid), error=one_line(e))
        print(f"{shape_id(widths, batch, grid)}: {time.time() - t0:.1f} s", flush=True)
    print(table(run))
    print(f"rows: {run.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
