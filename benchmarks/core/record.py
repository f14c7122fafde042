"""The run record: one folder per run, and the one module that reads and writes it.

Every command (bench, profile, gate, the studies, quality) writes into a run folder, and
every reader (the report, the nox sessions, the gate's comparisons) reads through this
module only; every file's name and columns are declared here:

    results/<run-id>/
        environment.json      what changes numbers: versions, devices, CPU, threads, load, commit
        benchmark.json        pytest-benchmark's own JSON (raw samples kept), valid for
                              `pytest-benchmark compare`
        measurements.jsonl    one JSON line per finished bench case, appended and fsynced as
                              each ends, so that an interrupted run keeps what finished
        benchmarks.csv        the tidy table built from it (BENCH_COLUMNS; bench_table computes
                              the derived figures, once)
        bench.json            the bench run's settings: suite, models, threads and why, shard
        attribution.csv       share of time per part, per profiler (ATTRIBUTION_COLUMNS)
        profile.json          what the profile stage ran: settings, each profiler's outcome,
                              the files under profiles/ per scenario
        profiles/             per scenario, the files of PROFILE_FILES (.pstats, speedscope,
                              flamegraph SVG, chrome trace, top-N tables)
        gate.json             the speed gate's verdict (rows of GATE_COLUMNS, raw samples)
        fast_targets.csv, fast_targets_verdicts.csv, fast_targets.json, fast_targets.jsonl
                              kan-fast's target study (TABLES)
        fast_crossover.csv    kan-fast's contraction crossover study (TABLES)
        quality.csv, quality_summary.csv, quality.jsonl, quality.json
                              accuracy next to training time (benchmarks.quality; TABLES)
        busy.csv, busy.json   the busy-machine study: a quiet and a busy run compared (TABLES)
        report.html           the rendered page

A run id is ``<UTC time>-<short commit>`` (plus ``-<label>`` when given), created
with an exclusive mkdir, so no run ever overwrites another. The root folder is
``results/`` in the working directory, or ``$KAN_RESULTS`` when set.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
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
    "unstable_reason",
    "disturbed",  # samples during which the OS took a core from the process (kept, counted)
    "used_rounds",  # the rounds the median and ratios use (the undisturbed ones where enough)
    "load_before", "load_after",  # 1-minute load average around the workload's measurement
    "clock",  # "wall" (device-aware), or "cpu": the process's CPU time, for the CPU on one thread
    "threads", "machine",
    "parameters",  # trainable scalars of the model (kan.zoo.parameter_count)
    "package",  # a peer's package and version (benchmarks.peers): "flashkan 0.2.0"; empty for ours
    "equivalence",  # a peer's output against our reference's given the same weights, or why not compared
    "reason",  # one line saying why a row is not "ok"; empty when it is
]

ATTRIBUTION_COLUMNS = [
    "profiler",  # "cprofile", "py-spy", "torch"
    "scenario", "model", "device", "phase", "synchronized",
    "part",  # one of PARTS: forward parts, the backward's by the forward part it differentiates, the rest
    "seconds", "share",
]

MEASUREMENTS = "measurements.jsonl"  # the bench stage's rows, one JSON object per finished case
BENCH_SETTINGS = "bench.json"  # the bench run's suite, models, threads (and why), shard

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

# Every CSV table of a run folder (name without .csv) and its columns, in order.
TABLES = {
    "benchmarks": BENCH_COLUMNS,
    "attribution": ATTRIBUTION_COLUMNS,
    TARGETS: [
        "model", "phase", "grid_size", "widths", "batch", "device", "dtype", "threads",
        "status",  # "ok", "not installed", "error", "nonfinite"
        "median_s", "iqr_s", "first_call_s", "rounds",
        "saved_bytes",  # phase "saved for backward" only
        "reason",  # one line where status is not "ok"
        "samples_s",  # the timed calls, in order, as a JSON list
    ],
    TARGET_VERDICTS: [
        "target", "phase", "grid_size", "other",
        "ratio",  # other / kan-fast for "x faster" (">="), kan-fast / other for "at most" ("<=")
        "ci_low", "ci_high",  # 95% bootstrap interval of the ratio of medians (timings only)
        "bound", "direction", "verdict",  # "PASS", "MISS" or "not measured"
        "note",
    ],
    CROSSOVER: ["backend", "grid_size", "coeff", "dense_ms", "gather_ms", "threads", "widths", "batch"],
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
_WHOLE_COLUMNS = {"batch", "grid_size", "rounds", "saved_bytes", "threads", "coeff"}  # empty where unknown

# Bench rows are matched to their MLP baselines on these; the parameter-matched MLP's grid
# size must match too (its widths follow the KAN's parameter count).
MLP_MATCH = ["machine", "device", "dtype", "phase", "widths", "batch"]
MLP_BASELINES = (("x_mlp", "mlp", False), ("x_mlp_param", "mlp-param", True))
_TIME_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "rounds", "throughput", "gflops"]
_INTEGER_COLUMNS = ["batch", "grid_size", "rounds", "flops", "param_bytes", "saved_bytes", "peak_bytes",
                    "threads", "parameters", "disturbed", "used_rounds"]
_FLOAT_COLUMNS = ["median_s", "iqr_s", "mean_s", "min_s", "max_s", "first_call_s", "throughput", "gflops",
                  "x_mlp", "x_mlp_low", "x_mlp_high", "x_mlp_param", "x_mlp_param_low", "x_mlp_param_high",
                  "load_before", "load_after"]
_TEXT_COLUMNS = ["benchmark", "model", "family", "phase", "device", "dtype", "widths", "status", "machine",
                 "reason", "stable", "unstable_reason", "package", "equivalence", "clock"]

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


def bench_table(rows: list[dict]):
    """The tidy table of a bench run (BENCH_COLUMNS, in order) from its measurement rows.

    The derived figures are computed here, once, and the report only reads them:

    - ``throughput`` = batch / median_s (samples per second);
    - ``gflops`` = flops / median_s / 1e9, with ``flops`` the analytic count of the timed work;
    - ``x_mlp`` and ``x_mlp_param``: as measured (paired, with intervals), else :func:`mlp_ratios`.

    Only rows whose status is "ok" carry times and the figures derived from them.
    """
    import pandas as pd

    frame = _conform(pd.DataFrame(list(rows)))
    ok = frame["status"] == "ok"
    frame.loc[~ok, _TIME_COLUMNS + [c for c in _FLOAT_COLUMNS if c.startswith("x_mlp")]] = math.nan
    frame["throughput"] = (frame["batch"] / frame["median_s"]).where(ok)
    frame["gflops"] = (frame["flops"] / frame["median_s"] / 1e9).where(ok)
    frame = mlp_ratios(frame, only_missing=True)
    for column in _INTEGER_COLUMNS:  # whole numbers stay whole in the CSV, empty where unknown
        frame[column] = frame[column].round().astype("Int64")
    return frame


def empty_bench_table():
    """A bench table with no rows, its columns of the kinds a read table has."""
    import pandas as pd

    return _conform(pd.DataFrame())


def _conform(frame):
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


def results_root() -> Path:
    return Path(os.environ.get("KAN_RESULTS", "results"))


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def commit_info(cwd: Path | None = None) -> dict[str, Any]:
    """The git commit, branch and dirty flag of ``cwd`` (the working directory by default)."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"id": None, "dirty": None, "branch": None}
    status = _git("status", "--porcelain", cwd=cwd) or ""  # untracked files count: they can be imported
    return {
        "id": commit,
        "short": commit[:9],
        "dirty": bool(status),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
        "time": _git("show", "-s", "--format=%cI", "HEAD", cwd=cwd),
    }


def cpu_model() -> str:
    """The CPU's marketing name where the platform tells it, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Everything that changes numbers, read now: versions, build, devices, CPU, threads, commit."""
    import torch  # imported here so that reading records does not need torch

    devices = [{"type": "cpu", "name": cpu_model()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"type": "cuda", "index": i, "name": props.name,
                            "memory_bytes": props.total_memory,
                            "capability": f"{props.major}.{props.minor}"})
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append({"type": "mps", "name": f"Apple {platform.machine()} GPU"})
    return {
        "machine": machine_label(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),  # other work competing for the CPU when the run began
        "torch": {
            "version": torch.__version__,
            "git": getattr(torch.version, "git_version", None),
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "debug": bool(torch.version.debug),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "config": torch.__config__.show().strip().splitlines()[:3],
        },
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "devices": devices,
        "commit": commit_info(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages where the platform tells them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def idle_cores(interval: float = 0.5) -> float | None:
    """How many of this process's cores sat idle over the next ``interval`` seconds (Linux's
    /proc/stat); None where the platform does not tell."""
    import time

    def busy_and_total() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    first = busy_and_total()
    if first is None:
        return None
    time.sleep(interval)
    second = busy_and_total()
    total = second[1] - first[1]
    if total <= 0:
        return None
    cores = os.cpu_count() or 1
    return round(cores * (1 - (second[0] - first[0]) / total), 2)


def machine_label() -> str:
    """A name for this machine in merged reports: ``$KAN_MACHINE`` or the host name."""
    return os.environ.get("KAN_MACHINE") or socket.gethostname()


@dataclass(frozen=True)
class Run:
    """One run folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    @property
    def profiles_dir(self) -> Path:
        d = self.path / "profiles"
        d.mkdir(exist_ok=True)
        return d

    # JSON documents: environment.json, gate.json, ...
    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str))
        tmp.replace(path)  # atomic: an interrupted write never leaves half a file
        return path

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"run {self.name} has no {name}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None

    def environment(self) -> dict[str, Any]:
        return self.read_json("environment.json") if self.has("environment.json") else {}

    # Tables (pandas DataFrames as CSV): benchmarks, attribution, quality, ...
    def write_table(self, name: str, frame) -> Path:
        path = self.path / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
        return path

    def write_rows(self, name: str, rows: list[dict]) -> Path:
        """Write the table ``name`` (one of TABLES) from ``rows``: its columns in order, a missing
        value empty, a list or dict as JSON, whole-number columns without a decimal point."""
        import pandas as pd

        columns = TABLES[name]
        frame = pd.DataFrame([{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
                              for r in rows], columns=columns)
        for column in _WHOLE_COLUMNS.intersection(columns):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").round().astype("Int64")
        return self.write_table(name, frame)

    def read_table(self, name: str):
        import pandas as pd

        path = self.path / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"run {self.name} has no {name} table ({path.name})")
        return pd.read_csv(path)

    # benchmarks.csv: the bench run's tidy table, built from measurements.jsonl
    def read_bench_table(self):
        """The tidy table, with BENCH_COLUMNS filled and ratios derived where the file lacks them.

        A run stopped before it wrote ``benchmarks.csv`` (killed, out of memory) still has
        its ``measurements.jsonl``: the table is rebuilt from that.
        """
        if not self.has("benchmarks.csv"):
            if not self.read_jsonl(MEASUREMENTS):
                raise FileNotFoundError(f"run {self.name} has no benchmarks table (benchmarks.csv)")
            return bench_table(self.read_jsonl(MEASUREMENTS))
        frame = _conform(self.read_table("benchmarks"))
        frame["machine"] = frame["machine"].fillna(self.environment().get("machine") or self.name)
        frame["status"] = frame["status"].fillna("ok")  # a table without statuses holds timings only
        return mlp_ratios(frame, only_missing=True)

    def has_bench(self) -> bool:
        return self.has("benchmarks.csv") or self.has(MEASUREMENTS)

    # JSON lines: one object per line, appended as results arrive (measurements.jsonl)
    def append_jsonl(self, name: str, obj: Any) -> Path:
        """Append ``obj`` as one line to ``name`` and flush it to disk before returning."""
        path = self.path / name
        with path.open("a") as f:
            f.write(json.dumps(obj, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path

    def read_jsonl(self, name: str) -> list[Any]:
        """Every complete line of ``name``; a half-written last line (a killed run) is dropped."""
        path = self.path / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    # pytest-benchmark's JSON and its raw samples
    @property
    def benchmark_json(self) -> Path:
        return self.path / "benchmark.json"

    def samples(self) -> dict[str, list[float]]:
        """Raw timing samples (seconds) per benchmark name, from benchmark.json."""
        doc = self.read_json("benchmark.json")
        return {b["name"]: list(b["stats"].get("data") or []) for b in doc.get("benchmarks", [])}


_RUN_ID = re.compile(r"^\d{8}T\d{6}")


class RunFolderError(Exception):
    """A run folder cannot be made where asked (told in one line, naming the folder)."""


MAX_LABEL = 100  # characters of a run label: the folder name, with its time and commit, must fit 255 bytes


def check_label(label: str | None) -> None:
    """:class:`RunFolderError` in one line where ``label`` is too long to name a run folder."""
    if label is not None and len(label.encode()) > MAX_LABEL:
        raise RunFolderError(f"the run label is {len(label)} characters long; a label (--label) names the run "
                             f"folder and may have at most {MAX_LABEL}")


def new_run(label: str | None = None, root: Path | None = None) -> Run:
    """Create a fresh run folder (never an existing one) and write its environment.json.

    :class:`RunFolderError` where the label is too long or the results folder cannot be written.
    """
    check_label(label)
    root = Path(root) if root is not None else results_root()
    try:
        return _new_run(label, root)
    except OSError as e:
        raise RunFolderError(
            f"cannot write a run folder under {root}/ ({e.strerror or e}); choose another with $KAN_RESULTS"
        ) from None


def _new_run(label: str | None, root: Path) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    commit = (commit_info().get("short") or "nogit")
    base = f"{stamp}-{commit}" + (f"-{_safe(label)}" if label else "")
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}.{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        run = Run(path)
        run.write_json("environment.json", environment())
        return run
    raise RuntimeError(f"could not create a new run folder under {root}")


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"


def runs(root: Path | None = None) -> list[Run]:
    """Every run folder under ``root``, oldest first."""
    root = Path(root) if root is not None else results_root()
    if not root.is_dir():
        return []
    return sorted(
        (Run(p) for p in root.iterdir() if p.is_dir() and _RUN_ID.match(p.name)), key=lambda r: r.name
    )


def latest(root: Path | None = None, having: str | None = None) -> Run:
    """The newest run (that has file ``having``, when given); ``FileNotFoundError`` if none."""
    found = [r for r in runs(root) if having is None or r.has(having)]
    if not found:
        where = Path(root) if root is not None else results_root()
        what = f" with {having}" if having else ""
        raise FileNotFoundError(f"no run{what} under {where}/; run `nox -s bench` first")
    return found[-1]


def open_run(name: str | os.PathLike, root: Path | None = None) -> Run:
    """A run by folder path or by run id under ``root``; ``FileNotFoundError`` naming the choices."""
    path = Path(name)
    if path.is_dir():
        return Run(path)
    root = Path(root) if root is not None else results_root()
    if (root / str(name)).is_dir():
        return Run(root / str(name))
    known = [r.name for r in runs(root)][-10:]
    raise FileNotFoundError(
        f"no run {str(name)!r} under {root}/; recent runs: {', '.join(known) or '(none)'}"
    )
