"""The run folder's schema: every file's name and every table's columns, the parts of the
profiles' attribution, and the derived figures of the bench table (computed here, once).

It imports nothing heavy (pandas where a table is built), so that the report, the terminal
summaries and the peers' processes read the same declarations as the commands that write them.
The folder itself (creating, reading and writing it) is :mod:`benchmarks.core.record`.
"""

from __future__ import annotations

import math
from typing import Any

# Columns of benchmarks.csv, in order. Times are seconds; memory is bytes.
BENCH_COLUMNS = [
    "benchmark",  # pytest-benchmark's test name, the key into benchmark.json
    "model", "family", "phase", "device", "dtype",
    "widths", "batch", "grid_size",  # widths as "784x64x10"; grid_size empty for models without a grid
    "status",  # "ok", or "nonfinite" (NaN/inf in the output: not a valid timing), or "error",
               # or "skipped" (the model's module cannot be imported here)
    "median_s", "iqr_s", "mean_s", "min_s", "max_s", "rounds",
    "first_call_s",  # the first, cold call, measured apart from the steady state
    "throughput",  # samples per second at the median
    "flops", "gflops",  # analytic FLOPs of the timed work, and GFLOP/s at the median
    "param_bytes", "saved_bytes", "peak_bytes",
    # time / the matching MLP's time in this run: the median of the ratios of samples taken in
    # the same round, with its 95% bootstrap interval (a table made without rounds: medians' ratio)
    "x_mlp", "x_mlp_low", "x_mlp_high", "x_mlp_param", "x_mlp_param_low", "x_mlp_param_high",
    "stable",  # "stable", or "unstable" where an interval is wider than +/-5% or too many samples were disturbed
    "unstable_reason",  # (both as older harnesses wrote them; the two flags below split them)
    "imprecise",  # why the precision asked for was not reached ("interval to mlp ±6.1%"); empty when it was
    "interference",  # the OS evidence that the machine disturbed the samples used; empty when none
    "disturbed",  # samples during which the OS took a core from the process (kept, counted)
    "used_rounds",  # the rounds the median and ratios use (the undisturbed ones where enough)
    "load_before", "load_after",  # 1-minute load average around the workload's measurement
    "clock",  # "wall" (device-aware), or "cpu": the process's CPU time, for the CPU on one thread
    "threads", "machine",
    "parameters",  # trainable scalars of the model (kan.zoo.parameter_count)
    "package",  # a peer's package and version (benchmarks.peers): "flashkan 0.2.0"; empty for ours
    "equivalence",  # a peer's output against our reference's given the same weights, or why not compared
                    # (and kan-fast's against kan's on the workload's own inputs: benchmarks.core.equivalence)
    "max_rel_difference",  # kan-fast's largest output difference from kan given kan's weights, over the
                           # largest |kan output|, on the workload's inputs (forward rows)
    # Accelerator rows only (benchmarks.core.device); empty on the CPU:
    "mode",  # "cuda graph": the model captured in CUDA graphs (--graphs); empty: eager
    "device_s",  # the device's time in kernels, copies and memsets per call (torch.profiler, overlaps merged)
    "device_busy",  # device_s / median_s (at most 1): the share of the call the device was busy
    "launch_bound",  # "yes" where the device sat idle more than half the call (device_busy < 0.5), else "no"
    "math",  # the math the device's matmuls ran: fp32, tf32, bf16, fp16, fp64
    "peak_flops", "peak_bandwidth",  # the device's dense peak FLOP/s for that math, its memory bytes/s
    "peak_source",  # "datasheet: <device>" or "probe: ..." (device.json in the run folder)
    "flop_share",  # flops / median_s / peak_flops
    "bytes_moved",  # an estimate of the least memory traffic of one call (device.bytes_moved)
    "bandwidth_share",  # bytes_moved / median_s / peak_bandwidth
    "reason",  # one line saying why a row is not "ok"; empty when it is
]

ATTRIBUTION_COLUMNS = [
    "profiler",  # "cprofile", "py-spy", "torch"
    "scenario", "model", "device", "phase", "synchronized",
    "part",  # one of PARTS: forward parts, the backward's by the forward part it differentiates, the rest
    "seconds", "share",
]

MEASUREMENTS = "measurements.jsonl"  # the bench stage's rows, one JSON object per finished case
BENCH_SETTINGS = "bench.json"  # the bench run's suite, models, threads (and why), shard, and its state:
# "running" while it runs (so a killed run says so), then "complete" or "interrupted"; "cases" planned
RUNNING, COMPLETE, INTERRUPTED = "running", "complete", "interrupted"

# One row per benchmark of gate.json's "benchmarks" list.
GATE_COLUMNS = [
    "benchmark", "model", "phase", "status", "ratio", "ci_low", "ci_high", "p_slower", "p_faster",
    "median_base", "median_head", "n_base", "n_head", "calls_per_sample", "test", "reason", "failed_side",
    "disturbed_head", "disturbed_base",  # turns in which the machine disturbed every call (the sample is then
                                         # the fastest disturbed call)
]

# kan-fast's target study (benchmarks.studies.targets): fast_targets.csv, its verdicts, and
# the contraction crossover study (benchmarks.studies.crossover): fast_crossover.csv.
TARGETS, TARGET_VERDICTS, CROSSOVER = "fast_targets", "fast_targets_verdicts", "fast_crossover"
QUALITY, QUALITY_SUMMARY = "quality", "quality_summary"  # benchmarks.quality
# The busy-machine study (benchmarks.studies.busy): one row per model, phase and shape of two runs.
BUSY = "busy"
# kan-fast's Triton kernels compiled without a GPU (benchmarks.studies.triton_compile): one row per
# kernel launch of each layer of the CUDA targets.
TRITON_COMPILE = "triton_compile"

# Every CSV table of a run folder (name without .csv) and its columns, in order.
TABLES = {
    "benchmarks": BENCH_COLUMNS,
    "attribution": ATTRIBUTION_COLUMNS,
    TARGETS: [
        "model", "phase", "grid_size", "widths", "batch", "device", "dtype",
        "math",  # what float32 matrix products ran: "fp32", or "tf32" where torch allowed it on CUDA
        "threads",
        "status",  # "ok", "not installed", "error", "nonfinite"
        "median_s", "iqr_s", "first_call_s", "rounds",
        "saved_bytes",  # phase "saved for backward" only
        "reason",  # one line where status is not "ok"
    ],  # (older runs' have "samples_s" too, the timed calls; measurements.jsonl keeps them now)
    TARGET_VERDICTS: [
        "target", "phase", "widths", "batch", "grid_size", "other",
        "ratio",  # other / kan-fast for "x faster" (">="), kan-fast / other for "at most" ("<=")
        "ci_low", "ci_high",  # 95% bootstrap interval of the ratio of medians (timings only)
        "bound", "direction", "verdict",  # "PASS", "MISS" or "not measured"
        "clear",  # "yes": the interval lies on the verdict's side of the bound; "no": it holds it; "exact": bytes
        "note",
    ],
    CROSSOVER: ["backend", "grid_size", "coeff", "dense_ms", "gather_ms", "threads", "widths", "batch"],
    TRITON_COMPILE: [
        "widths", "batch", "grid_size", "order", "layer", "contraction", "kernel",
        "cardinal",  # the grid's float32 knots evenly spaced to rounding: the cardinal recursion, else de Boor's
        "programs", "warps",
        "registers", "spill_stores", "spill_loads", "stack", "shared", "compile_s",
        # the kernel's main loop (its innermost loop with the most multiply-adds), per thread and
        # iteration, from its machine code (empty: no loop)
        "loop_instructions", "loop_fma", "loop_loads",
        "error",  # one line where the kernel did not compile
        "constants",  # the launch code's compile-time constants (JSON)
    ],
    # Accuracy next to training time (benchmarks.quality): one row per task, model, grid-update
    # variant and seed (quality.jsonl holds the same rows, appended as each group of a task and
    # seed finishes), and the summary over seeds with each task's Pareto front.
    QUALITY: [
        "task", "kind", "model", "family",
        "grid_updates",  # update_grid calls made (pykan's schedule); 0: trained without
        "seed",
        "status",  # "ok", "diverged" (NaN/inf loss or test output: no metric), "error", "skipped"
        "metric", "value",  # "test rmse" or "test accuracy", and its value at the last step
        "test_rmse", "test_accuracy",
        "final_loss",  # the training loss of the last step
        "target", "time_to_target_s",  # the task's fixed target; training seconds at the first checkpoint meeting it
        "train_s",  # every step and grid update, each timed on the device-synchronised clock
        "step_median_s", "step_iqr_s",  # steps after the first
        "first_step_s",  # the first step, apart (lazy initialisation, kernel builds)
        "grid_update_s",
        "steps", "diverged_step", "parameters",
        "flops_per_step",  # core's phase_flops(zoo.flops(...), "train", parameters)
        "widths", "grid_size", "batch", "learning_rate", "budget", "device", "dtype", "threads",
        "reason",
        "curve",  # JSON list of [step, training seconds so far, test metric] at each checkpoint
    ],
    QUALITY_SUMMARY: [
        "task", "metric", "label", "model", "family", "grid_updates",
        "seeds", "ok", "diverged", "failed",  # seeds run; trained to the end; diverged; errors or skipped
        "value_mean", "value_std", "value_min", "value_max",  # over the ok seeds only
        "train_s", "step_median_s", "first_step_s",  # medians over seeds
        "target", "reached_target", "time_to_target_s",  # seeds that met the target; their median seconds
        "parameters", "flops_per_step",
        "pareto",  # no other model of the task as accurate in at most the time (one strictly better)
        "dominated_by",
    ],
    BUSY: [
        "model", "phase", "widths", "batch", "grid_size",
        "x_mlp_quiet", "interval_quiet", "stable_quiet", "said_quiet", "disturbed_quiet",
        "x_mlp_busy", "interval_busy", "stable_busy", "said_busy", "disturbed_busy",
        "change",  # x_mlp_busy / x_mlp_quiet - 1
        "kept",  # unstable on the busy machine (so not relied on), or within 15% of the quiet ratio
        "flipped",  # said slower in one run and faster in the other
    ],
}
WHOLE_COLUMNS = {"batch", "grid_size", "rounds", "saved_bytes", "threads", "coeff"}  # empty where unknown

# Bench rows are matched to their MLP baselines on these; the parameter-matched MLP's grid
# size must match too (its widths follow the KAN's parameter count).
MLP_MATCH = ["machine", "device", "dtype", "phase", "widths", "batch", "mode"]
MLP_BASELINES = (("x_mlp", "mlp", False), ("x_mlp_param", "mlp-param", True))
_TIME_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "rounds", "throughput", "gflops",
                 "device_s", "device_busy", "flop_share", "bandwidth_share"]
_INTEGER_COLUMNS = ["batch", "grid_size", "rounds", "flops", "param_bytes", "saved_bytes", "peak_bytes",
                    "threads", "parameters", "disturbed", "used_rounds", "bytes_moved"]
_FLOAT_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "first_call_s", "throughput", "gflops",
                  "x_mlp", "x_mlp_low", "x_mlp_high", "x_mlp_param", "x_mlp_param_low", "x_mlp_param_high",
                  "load_before", "load_after", "max_rel_difference", "device_s", "device_busy", "peak_flops",
                  "peak_bandwidth", "flop_share", "bandwidth_share"]
_TEXT_COLUMNS = ["benchmark", "model", "family", "phase", "device", "dtype", "widths", "status", "machine",
                 "reason", "stable", "unstable_reason", "imprecise", "interference", "package", "equivalence",
                 "clock", "mode", "launch_bound", "math", "peak_source"]

# The parts of attribution.csv (profiles.attribution says which frames belong to each). The
# backward is split by the forward part whose gradient it computes ("... grad"); "autograd"
# is what is left of it: the engine, and nodes no profiler can place.
PARTS = ["basis", "matmul", "basis grad", "spline product grad", "base branch grad", "loss grad",
         "autograd", "optimizer", "transfer", "python", "other"]
# One colour per part, on every chart and flame graph (a gradient a lighter shade of its forward part).
PART_COLOURS = {
    "basis": "#4c78a8", "matmul": "#f58518", "basis grad": "#6b9fd1", "spline product grad": "#e89a3c",
    "base branch grad": "#4f9e98", "loss grad": "#d9687a", "autograd": "#54a24b", "optimizer": "#b279a2",
    "transfer": "#e45756", "python": "#eeca3b", "other": "#9d9d9d",
}

# The files a profiler writes per scenario under profiles/, by suffix: (profiler, what it is).
PROFILE_FILES = {
    ".pstats": ("cprofile", "cProfile stats"),
    ".cprofile.txt": ("cprofile", "top functions"),
    ".speedscope.json": ("py-spy", "speedscope"),
    ".flamegraph.svg": ("py-spy", "flamegraph"),
    ".trace.json": ("torch", "chrome trace"),
    ".torch.txt": ("torch", "torch.profiler table"),
}


def profile_files(profiler: str) -> list[str]:
    """The suffixes of the files ``profiler`` writes per scenario."""
    return [suffix for suffix, (name, _) in PROFILE_FILES.items() if name == profiler]


def bench_table(rows: list):
    """The tidy table of a bench run (BENCH_COLUMNS, in order) from its measurements
    (:class:`benchmarks.core.measurement.Measurement`, or rows as dicts: a table merged or made by hand).

    The derived figures are computed here, once, and the report only reads them:

    - ``throughput`` = batch / median_s (samples per second);
    - ``gflops`` = flops / median_s / 1e9, with ``flops`` the analytic count of the timed work;
    - ``x_mlp`` and ``x_mlp_param``: as measured (paired, with intervals), else :func:`mlp_ratios`;
    - on accelerator rows (:func:`accelerator_shares`): ``device_busy`` = device_s / median_s
      (at most 1), ``launch_bound``, ``flop_share`` and ``bandwidth_share`` of the device's peaks.

    Only rows whose status is "ok" carry times and the figures derived from them.
    """
    import pandas as pd

    frame = conform(pd.DataFrame([r.row() if hasattr(r, "row") else r for r in rows]))
    ok = frame["status"] == "ok"
    frame.loc[~ok, _TIME_COLUMNS + [c for c in _FLOAT_COLUMNS if c.startswith("x_mlp")]] = math.nan
    frame["throughput"] = (frame["batch"] / frame["median_s"]).where(ok)
    frame["gflops"] = (frame["flops"] / frame["median_s"] / 1e9).where(ok)
    frame = accelerator_shares(frame)
    frame = mlp_ratios(frame, only_missing=True)
    for column in _INTEGER_COLUMNS:  # whole numbers stay whole in the CSV, empty where unknown
        frame[column] = frame[column].round().astype("Int64")
    return frame


LAUNCH_BOUND_BELOW = 0.5  # device_busy under this: the device sat idle more than half the call


def accelerator_shares(frame):
    """The accelerator columns derived from a row's median: the device's busy share, whether the
    row is launch-bound, and the achieved rates as shares of the device's peaks. Rows without
    ``device_s`` or peaks (every CPU row) keep them empty."""
    ok = frame["status"] == "ok"
    frame["device_busy"] = (frame["device_s"] / frame["median_s"]).clip(upper=1.0).where(ok)
    frame["launch_bound"] = frame["device_busy"].map(
        lambda b: None if not isinstance(b, float) or math.isnan(b) else ("yes" if b < LAUNCH_BOUND_BELOW else "no"))
    frame["launch_bound"] = frame["launch_bound"].astype(object)
    frame["flop_share"] = (frame["flops"] / frame["median_s"] / frame["peak_flops"]).where(ok)
    frame["bandwidth_share"] = (frame["bytes_moved"] / frame["median_s"] / frame["peak_bandwidth"]).where(ok)
    return frame


def empty_bench_table():
    """A bench table with no rows, its columns of the kinds a read table has."""
    import pandas as pd

    return conform(pd.DataFrame())


def conform(frame):
    """``frame`` with every BENCH_COLUMNS column, in order, each of its kind (text, number)."""
    import pandas as pd

    for column in BENCH_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    frame = frame[BENCH_COLUMNS].copy()
    for column in _INTEGER_COLUMNS + _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].map(lambda v: None if _blank(v) else str(v)).astype(object)
    return _split_stability(frame)


def _split_stability(frame):
    """Fill ``imprecise`` and ``interference`` from ``stable``/``unstable_reason`` where a table written
    by an older harness has only those: "interval ..." is imprecision, "... disturbed" interference."""
    old = frame["imprecise"].isna() & frame["interference"].isna() & (frame["stable"] == "unstable")
    for i in frame.index[old]:
        said = [r.strip() for r in str(frame.at[i, "unstable_reason"] or "").split(";") if r.strip()]
        reasons = [r for r in said if not r.startswith("no interval")]  # none had, from too few rounds: not a flag
        if said and not reasons:
            continue
        disturbed = [r for r in reasons if "disturbed" in r]
        frame.at[i, "interference"] = "; ".join(disturbed) or None
        frame.at[i, "imprecise"] = "; ".join(r for r in reasons if r not in disturbed) or \
            (None if disturbed else "interval wider than asked")
    return frame


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def mlp_ratios(frame, only_missing: bool = False):
    """Fill ``x_mlp`` and ``x_mlp_param``: each ok row's median over its baseline MLP's median.

    The width-matched ``mlp`` and the parameter-matched ``mlp-param`` are matched on
    MLP_MATCH (same machine, device, dtype, phase, widths and batch in this run), the
    parameter-matched one on the grid size too. ``only_missing``: keep ratios already there
    (a table written by an older harness, or merged from several).
    """
    if frame.empty:
        return frame
    ok = frame["status"] == "ok"
    for column, baseline, by_grid in MLP_BASELINES:
        keys = MLP_MATCH + (["grid_size"] if by_grid else [])
        # the match as one text key: an unknown value (a column the table lacked) matches itself
        key = frame[keys].apply(lambda c: c.map(str)).agg("\x1f".join, axis=1)
        is_base = ok & (frame["model"] == baseline)
        baseline_median = frame["median_s"][is_base].groupby(key[is_base]).median()
        ratio = frame["median_s"] / key.map(baseline_median)
        if only_missing:
            frame[column] = frame[column].where(frame[column].notna(), ratio)
        else:
            frame[column] = ratio
        frame.loc[~ok, column] = math.nan
    return frame
