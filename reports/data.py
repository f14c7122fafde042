"""What a report reads: one or more run folders, through the record module only.

A :class:`RunData` holds what one run folder offers (the benchmark table, and where
present the attribution and quality tables, the gate verdict, the profile files).
Several runs from different machines merge into one page, labelled by machine.
Nothing here writes to a run folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.core import record, schema
from benchmarks.core.cli import UsageError, one_line
from benchmarks.core.phases import SUITE_PHASES

PHASES = list(SUITE_PHASES)  # a list: pandas reads a tuple as one key

# The least a benchmarks.csv must have to be reported; every other BENCH_COLUMNS column is optional.
REQUIRED_BENCH = ["model", "phase", "device", "median_s"]
REQUIRED_ATTRIBUTION = ["profiler", "part"]
# What the quality chart and tables need of quality_summary.csv (record.TABLES["quality_summary"]).
REQUIRED_QUALITY_SUMMARY = ["task", "metric", "label", "model", "value_mean", "train_s", "pareto"]


class ReportError(UsageError):
    """Bad input, told in one line: a missing run, a run without benchmarks, a malformed table."""


@dataclass
class ProfileFile:
    kind: str  # "flamegraph", "speedscope", "chrome trace", "cProfile stats", "top functions", ...
    stem: str  # what was profiled: the name without the kind's suffix ("kan-cpu-train")
    path: Path


@dataclass
class RunData:
    """One run folder, read: its tables with missing optional columns filled in."""

    run: record.Run
    machine: str  # environment.json's "machine", the label of this run's rows on a merged page
    environment: dict[str, Any]
    benchmarks: pd.DataFrame
    attribution: pd.DataFrame | None = None
    quality: pd.DataFrame | None = None
    gate: Any = None
    profile_files: list[ProfileFile] = field(default_factory=list)
    profile: dict = field(default_factory=dict)  # profile.json: settings, the loop's noise, backward notes
    quality_summary: pd.DataFrame | None = None  # per task and model over seeds, with the Pareto front
    partial: str | None = None  # why a bench run holds less than it set out to (record.Run.partial)

    @property
    def name(self) -> str:
        return self.run.name

    def samples(self) -> dict[str, list[float]]:
        """Raw timing samples per benchmark name, from measurements.jsonl; empty where the run has none."""
        try:
            return self.run.samples()
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ReportError(f"{self.run.file(record.MEASUREMENTS)} holds a malformed measurement ({e})") from None


# What a run can hold that the page shows, and the session that makes it.
REPORTABLE = {"benchmarks.csv": "nox -s bench", "attribution.csv": "nox -s profile",
              "gate.json": "nox -s gate", "quality.csv": "nox -s quality"}
PEER = "peer:"

# The kinds of run the page shows, in its order, and whether a run of that kind holds rows to show
# (a run stopped before it wrote its table holds none).
PAGE_KINDS = {
    "bench": lambda run: run.has_bench(),
    "peers": lambda run: run.has_bench(),
    "profile": lambda run: run.has("attribution.csv"),
    "quality": lambda run: run.has("quality.csv"),
    "gate": lambda run: run.has("gate.json"),
}


def kinds_of(run: record.Run) -> list[str]:
    """The kinds the page shows of ``run``: those its manifest (run.json) names, or for a folder
    made before manifests those its files suggest, that hold rows."""
    made = run.kinds()
    return [kind for kind, holds in PAGE_KINDS.items() if kind in made and holds(run)]


def reportable(run: record.Run) -> bool:
    return bool(kinds_of(run))


def open_run(name: str | None) -> record.Run:
    """The run named (a folder or a run id), or the newest run that has something to report,
    preferring a complete one to a partial one (an interrupted or killed bench run)."""
    try:
        if name is not None:
            return record.open_run(name)
        found = complete_first([r for r in record.runs() if reportable(r)])
        if not found:
            record.latest(having="benchmarks.csv")  # raises, naming the folder and `nox -s bench`
        return found[-1]
    except FileNotFoundError as e:
        raise ReportError(str(e)) from None


def complete_first(runs: list[record.Run]) -> list[record.Run]:
    """``runs`` (oldest first) with the partial bench runs moved before every complete run, so that
    the last one is the newest complete run where there is one."""
    return [r for r in runs if r.partial()] + [r for r in runs if not r.partial()]


def origin(run: record.Run) -> tuple[str | None, str | None]:
    """(machine, commit) a run was measured on, from its environment.json."""
    env = run.environment()
    return env.get("machine"), (env.get("commit") or {}).get("id")


def default_runs() -> list[record.Run]:
    """The page ``python -m reports`` shows without arguments: the newest run with something to
    show, and with it the newest run of each other kind (bench, profile, quality, gate) from the
    same machine and commit, newest first."""
    newest = open_run(None)
    picked = [newest]
    covered = set(kinds_of(newest))
    for run in reversed(complete_first([r for r in record.runs() if reportable(r)])):
        new_kinds = set(kinds_of(run)) - covered
        if new_kinds and origin(run) == origin(newest):
            picked.append(run)
            covered |= new_kinds
    return picked


def load(run: record.Run) -> RunData:
    """Read one run folder; :class:`ReportError` if it is not one or holds nothing to report.

    A run without benchmarks.csv still has a page when it holds attribution (a profile
    run), a gate verdict or quality results; its benchmark table is then empty.
    """
    if not run.path.is_dir():
        raise ReportError(f"no run folder at {run.path}")
    try:
        environment = run.environment()
    except ValueError as e:
        raise ReportError(str(e)) from None
    if not isinstance(environment, dict):
        raise ReportError(f"{run.file('environment.json')} does not hold a JSON object")
    machine = str(environment.get("machine") or run.name)
    kinds = kinds_of(run)  # what run.json says the run holds, not what its files suggest
    if not kinds:
        raise ReportError(
            f"run {run.name} has no benchmarks table (benchmarks.csv; `nox -s bench` makes one) "
            f"and nothing else to report ({', '.join(n for n in REPORTABLE if n != 'benchmarks.csv')})"
        )
    bench = _read_benchmarks(run, machine) if {"bench", "peers"} & set(kinds) else \
        _rows_for_page(schema.empty_bench_table(), run, machine)
    attribution = quality = quality_summary = gate = None
    if "profile" in kinds:
        attribution = _tidy_attribution(_read_table(run, "attribution"), run)
    if "quality" in kinds:
        quality, quality_summary = _read_quality(run)
    if "gate" in kinds:
        gate = _read_document(run, "gate.json")
    profile = _read_document(run, "profile.json") if "profile" in kinds and run.has("profile.json") else {}
    if not isinstance(profile, dict):
        raise ReportError(f"{run.file('profile.json')} does not hold a JSON object")
    return RunData(run, machine, environment, bench, attribution, quality, gate, profile_files(run),
                   profile=profile, quality_summary=quality_summary, partial=run.partial())


def _read_quality(run: record.Run) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    quality = _read_table(run, record.QUALITY)
    if not run.has(record.QUALITY_SUMMARY + ".csv"):
        return quality, None
    summary = _read_table(run, record.QUALITY_SUMMARY)
    missing = [c for c in REQUIRED_QUALITY_SUMMARY if c not in summary.columns]
    if missing:
        raise ReportError(f"{run.file(record.QUALITY_SUMMARY + '.csv')} lacks column(s) {', '.join(missing)}")
    return quality, summary


def _read_document(run: record.Run, name: str) -> Any:
    try:
        return run.read_json(name)
    except (ValueError, FileNotFoundError) as e:
        raise ReportError(str(e)) from None


def shard_of(run: record.Run) -> tuple[str, str] | None:
    """(suite and commit, "I/N") of a bench run made with ``--shard``, else None."""
    settings = run.settings()  # run.json's, or an older run's bench.json
    if not settings.get("shard"):
        return None
    commit = (run.environment().get("commit") or {}).get("id")
    return f"{settings.get('suite')} {commit}", str(settings["shard"])


def load_all(runs: list[record.Run]) -> list[RunData]:
    """Read several runs (each once); where two with benchmarks share a machine label, the run id
    is added to tell them apart, except for the shards of one suite on one commit, which are one
    run in parts."""
    unique = list({r.path.resolve(): r for r in runs}.values())
    data = [load(r) for r in unique]
    peers = {id(d): "peers" in d.run.kinds() for d in data}
    for d in data:  # beside a bench run of its machine, a peers run brings only the peers' rows
        if peers[id(d)] and any(o is not d and o.machine == d.machine and not o.benchmarks.empty
                                and not peers[id(o)] for o in data):
            d.benchmarks = d.benchmarks[d.benchmarks["model"].str.startswith(PEER)].reset_index(drop=True)
    part_of = [(shard_of(d.run) or (None, None))[0] for d in data]  # the bench run a shard belongs to
    relabel = []
    for i, d in enumerate(data):
        # runs of one machine are told apart where their benchmark rows would mix; a profile, quality
        # or gate run beside a bench run of the same machine is the same machine's page
        mates = [j for j, o in enumerate(data) if o.machine == d.machine and not o.benchmarks.empty
                 and not o.benchmarks["model"].str.startswith(PEER).all()]
        one_run_in_shards = part_of[i] is not None and {part_of[j] for j in mates} == {part_of[i]}
        only_peers = not d.benchmarks.empty and d.benchmarks["model"].str.startswith(PEER).all()
        relabel.append(not d.benchmarks.empty and not only_peers and len(mates) > 1 and not one_run_in_shards)
    for d, change in zip(data, relabel):
        if change:
            label = f"{d.machine} ({d.name})"
            d.benchmarks["machine"] = label
            if d.attribution is not None:
                d.attribution["machine"] = label
            d.machine = label
    return data


def _read_table(run: record.Run, name: str) -> pd.DataFrame:
    try:
        return run.read_table(name)
    except FileNotFoundError as e:
        raise ReportError(str(e)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportError(f"{run.file(name + '.csv')} is not a readable CSV table ({one_line(e)})") from None


def _read_benchmarks(run: record.Run, machine: str) -> pd.DataFrame:
    """The run's tidy table as the record module reads it (derived figures are the record's)."""
    if not run.has_bench():
        return _rows_for_page(schema.empty_bench_table(), run, machine)
    if run.has("benchmarks.csv"):
        columns = _read_table(run, "benchmarks").columns
        missing = [c for c in REQUIRED_BENCH if c not in columns]
        if missing:
            raise ReportError(
                f"{run.file('benchmarks.csv')} lacks column(s) {', '.join(missing)}; "
                f"expected the columns of benchmarks.core.record.BENCH_COLUMNS"
            )
    try:
        bench = run.read_bench_table()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{run.file('benchmarks.csv')} is not a readable bench table ({one_line(e)})") from None
    return _rows_for_page(bench, run, machine)


def _rows_for_page(df: pd.DataFrame, run: record.Run, machine: str) -> pd.DataFrame:
    """What the page needs beside the record's columns: a status, family, machine and benchmark name
    on every row, and the run it came from."""
    df = df.copy()
    # a table rebuilt from measurements.jsonl (a killed run) keeps whole numbers as pandas' nullable
    # integers, whose missing value (pd.NA) has no truth value; the page reads every number as a float
    for column in df.columns:
        if pd.api.types.is_extension_array_dtype(df[column].dtype) and pd.api.types.is_numeric_dtype(df[column].dtype):
            df[column] = df[column].astype("float64")
    df["status"] = df["status"].fillna("ok")
    guessed = df["model"].map(lambda m: "mlp" if str(m).startswith("mlp") else "kan")
    df["family"] = df["family"].fillna(guessed)
    df["machine"] = df["machine"].fillna(machine)
    # A timing is valid only when its status says so and its median is a positive number.
    bad_time = ~(df["median_s"] > 0)
    df.loc[bad_time & (df["status"] == "ok"), "status"] = "no time"
    if len(df):
        df["benchmark"] = df["benchmark"].fillna(df.apply(_benchmark_key, axis=1))
    df["run"] = run.name
    return df


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _benchmark_key(row: pd.Series) -> str:
    """A stand-in benchmark name for rows without one, from what identifies the measurement."""
    parts = [row["model"], row["phase"], row["device"], row["dtype"], row["widths"], row["batch"], row["grid_size"]]
    return "-".join(str(p) for p in parts if not _blank(p))


SHAPE = ["widths", "batch", "grid_size"]


def _tidy_attribution(df: pd.DataFrame, run: record.Run) -> pd.DataFrame:
    missing = [c for c in REQUIRED_ATTRIBUTION if c not in df.columns]
    if "seconds" not in df.columns and "share" not in df.columns:
        missing.append("seconds or share")
    if missing:
        raise ReportError(f"{run.file('attribution.csv')} lacks column(s) {', '.join(missing)}")
    df = df.copy()
    for column in schema.ATTRIBUTION_COLUMNS:
        if column not in df.columns:
            df[column] = np.nan
    for column in ["profiler", "scenario", "model", "device", "phase", "part"]:
        df[column] = df[column].map(lambda v: "" if _blank(v) else str(v))
    df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
    df["share"] = pd.to_numeric(df["share"], errors="coerce")
    df["synchronized"] = df["synchronized"].map(_truth)
    return df


def _truth(v: Any) -> bool | None:
    if _blank(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "synchronized", "sync"):
        return True
    if s in ("false", "0", "no", "n", "unsynchronized", "async"):
        return False
    return None


# Profile files by what opens them; the first matching suffix names the kind and ends the stem.
# The record's PROFILE_FILES first, then files that other tools name their profiles by.
PROFILE_KINDS = [(suffix, kind) for suffix, (_, kind) in schema.PROFILE_FILES.items()] + [
    (".pt.trace.json", "chrome trace"), (".prof", "cProfile stats"), (".svg", "flamegraph"), (".txt", "text"),
]
PROFILE_KINDS.sort(key=lambda pair: -len(pair[0]))  # the longest suffix that matches wins


def profile_kind(name: str) -> tuple[str, str]:
    """(kind, stem) of a profile file name: ("flamegraph", "kan-cpu-train") for kan-cpu-train.flamegraph.svg."""
    plain = name.removesuffix(".gz")
    for suffix, kind in PROFILE_KINDS:
        if plain.lower().endswith(suffix):
            return kind, plain[: -len(suffix)]
    if plain.lower().endswith(".json") and "trace" in plain.lower():
        return "chrome trace", plain[: -len(".json")]
    return "other", plain


def profile_files(run: record.Run) -> list[ProfileFile]:
    """Files under the run's profiles/ folder, by kind (read only: the folder is not created)."""
    folder = run.path / "profiles"
    if not folder.is_dir():
        return []
    return [ProfileFile(*profile_kind(p.name), p) for p in sorted(folder.rglob("*")) if p.is_file()]


def environment_items(env: dict[str, Any]) -> list[tuple[str, str]]:
    """The environment as (key, text) pairs, the most telling first; nested objects flattened."""
    order = ["machine", "time", "commit", "python", "platform", "cpu", "cpu_count", "threads",
             "interop_threads", "torch", "devices"]
    items: list[tuple[str, str]] = []
    for key in order + [k for k in env if k not in order]:
        if key not in env:
            continue
        value = env[key]
        if key == "commit" and isinstance(value, dict):
            commit = value.get("id") or "unknown"
            text = f"{commit}" + (" (dirty tree)" if value.get("dirty") else "")
            if value.get("branch"):
                text += f" on {value['branch']}"
            items.append(("commit", text))
        elif key == "devices" and isinstance(value, list):
            for i, device in enumerate(value):
                items.append((f"device {i}", _device_text(device)))
        elif isinstance(value, dict):
            for sub, v in value.items():
                items.append((f"{key}.{sub}", _text(v)))
        else:
            items.append((key, _text(value)))
    return items


def _device_text(device: Any) -> str:
    if not isinstance(device, dict):
        return _text(device)
    kind = str(device.get("type", "?")) + (f":{device['index']}" if "index" in device else "")
    extra = [f"{k.removesuffix('_bytes')} {_bytes(v)}" if k.endswith("_bytes") else f"{k} {_text(v)}"
             for k, v in device.items() if k not in ("type", "index", "name")]
    return f"{kind} {device.get('name', '')}".strip() + (f" ({', '.join(extra)})" if extra else "")


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return " ".join(x.strip() for x in v)
    return json.dumps(v, default=str)


def _bytes(v: Any) -> str:
    try:
        return f"{float(v) / 2**30:.1f} GiB"
    except (TypeError, ValueError):
        return _text(v)
