"""The run record: one folder per run, and the one module that reads and writes it.

Every command (bench, profile, gate, the studies, quality) writes into a run folder, and
every reader (the report, the nox sessions, the gate's comparisons) reads through this
module only; every file's name and columns are declared in :mod:`benchmarks.core.schema`:

    results/<run-id>/
        environment.json      what changes numbers: versions, devices, CPU, threads, load, commit
        measurements.jsonl    one Measurement per finished case (its raw samples, the one
                              place they are kept), appended and fsynced as each ends, so that
                              an interrupted run keeps what finished
        benchmark.json        pytest-benchmark's JSON exported from them, valid for
                              `pytest-benchmark compare` (never read back)
        benchmarks.csv        the tidy table built from it (BENCH_COLUMNS; bench_table computes
                              the derived figures, once)
        run.json              what made the folder: the command, its kind, settings, times and
                              state (benchmarks.core.manifest); older folders have none
        bench.json            the bench run's settings: suite, models, threads and why, shard
        attribution.csv       share of time per part, per profiler (ATTRIBUTION_COLUMNS)
        profile.json          what the profile stage ran: settings, each profiler's outcome,
                              the files under profiles/ per scenario
        profiles/             per scenario, the files of PROFILE_FILES (.pstats, speedscope,
                              flamegraph SVG, chrome trace, top-N tables)
        gate.json             the speed gate's verdict (rows of GATE_COLUMNS)
        fast_targets.csv, fast_targets_verdicts.csv, fast_targets.json
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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core import manifest, schema
from benchmarks.core.git import commit_info
from benchmarks.core.machine import environment
# The run folder's file names and its bench table, as every caller of the run folder names them.
from benchmarks.core.schema import (BENCH_COLUMNS, BENCH_SETTINGS, BUSY, COMPLETE, CROSSOVER,  # noqa: F401
                                    INTERRUPTED, MEASUREMENTS, QUALITY, QUALITY_SUMMARY, RUNNING, TABLES,
                                    TARGET_VERDICTS, TARGETS, bench_table, mlp_ratios)

def results_root() -> Path:
    return Path(os.environ.get("KAN_RESULTS", "results"))


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
        for column in schema.WHOLE_COLUMNS.intersection(columns):
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
            measurements = self.measurements()
            if not measurements:
                raise FileNotFoundError(f"run {self.name} has no benchmarks table (benchmarks.csv)")
            return bench_table([m.row() for m in measurements])
        frame = schema.conform(self.read_table("benchmarks"))
        frame["machine"] = frame["machine"].fillna(self.environment().get("machine") or self.name)
        frame["status"] = frame["status"].fillna("ok")  # a table without statuses holds timings only
        return mlp_ratios(frame, only_missing=True)

    def has_bench(self) -> bool:
        return self.has("benchmarks.csv") or self.has(MEASUREMENTS)

    def mark(self, state: str) -> None:
        """Record the run's state: RUNNING, COMPLETE, INTERRUPTED or "failed: ...", in its manifest
        (run.json), or in bench.json for a bench run without one."""
        if manifest.read(self) is not None:
            manifest.update(self, state=state)
            return
        settings = self.read_json(BENCH_SETTINGS) if self.has(BENCH_SETTINGS) else {}
        self.write_json(BENCH_SETTINGS, {**settings, "state": state})

    def kinds(self) -> list[str]:
        """What the run holds ("bench", "profile", ...), as its manifest says (:mod:`manifest`)."""
        return manifest.kinds(self)

    def settings(self) -> dict[str, Any]:
        """The settings of the command that made the run: its manifest's, else bench.json's."""
        found = manifest.settings(self)
        if found or not self.has(BENCH_SETTINGS):
            return found
        try:
            old = self.read_json(BENCH_SETTINGS)
        except ValueError:
            return {}
        return old if isinstance(old, dict) else {}

    def add_settings(self, **more: Any) -> None:
        """Add to the settings of the command running in this folder (what it learns as it runs):
        in its manifest, or in bench.json for a run without one (a bench run through pytest)."""
        if not manifest.add_settings(self, more):
            self.write_json(BENCH_SETTINGS, {**self.settings(), **more})

    def partial(self) -> str | None:
        """Why this run holds less than it set out to measure, in words, or None when it is complete.
        The state is its manifest's; a run without one (an older harness) is judged as a bench run
        by bench.json, and is complete when it wrote its table."""
        state = manifest.state(self)
        if state is None and not self.has_bench():
            return None
        settings = self.settings()
        state = state or settings.get("state")
        if state == COMPLETE or (state is None and self.has("benchmarks.csv")):
            return None
        planned = settings.get("cases")
        done = len(self.read_jsonl(MEASUREMENTS)) if self.has_bench() else None
        of = "" if done is None else f" after {done} of {planned} cases" if isinstance(planned, int) \
            else f" after {done} cases"
        if state == INTERRUPTED:
            return f"interrupted (Ctrl-C or SIGTERM){of}"
        if isinstance(state, str) and state.startswith("failed"):
            return f"stopped by an error ({state.removeprefix('failed: ')}){of}"
        return f"stopped before it finished (killed, or still running){of}"

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

    # measurements.jsonl: the bench's Measurements, and the raw samples they hold
    def measurements(self) -> list:
        """The run's :class:`benchmarks.core.measurement.Measurement` objects, from measurements.jsonl
        (rows an earlier harness wrote there too)."""
        from benchmarks.core.measurement import Measurement

        return [Measurement.from_json(doc) for doc in self.read_jsonl(MEASUREMENTS)]

    def samples(self) -> dict[str, list[float]]:
        """Raw timing samples (seconds) per benchmark name, from measurements.jsonl."""
        from benchmarks.core.measurement import samples_by_name

        return samples_by_name(self.measurements())

    @property
    def benchmark_json(self) -> Path:
        """pytest-benchmark's JSON, exported from the measurements (for ``pytest-benchmark compare``)."""
        return self.path / "benchmark.json"


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
