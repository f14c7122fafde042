"""``run.json``: what made a run folder, so that no reader has to guess it from the files there.

Every command that writes a run folder writes its manifest first (:mod:`benchmarks.core.command`)
and updates it as the command ends; asv's ``api_version`` is the model for the schema number::

    {"schema": 1,
     "kind": "bench" | "peers" | "profile" | "quality" | "gate" | "targets" | "crossover" | "busy",
     "command": ["python", "-m", "benchmarks.quality", "--budget", "quick"],   # as it was run
     "settings": {...},                # what the command decided from its arguments
     "started": "2026-01-02T03:04:05Z", "finished": "..." | null,
     "state": "running" | "complete" | "interrupted" | "failed: <one line>",
     "exit_status": 0 | 1 | 2 | 130 | null,
     "added": [{"kind": ..., "command": ..., "settings": ..., "started": ..., ...}]}

``added`` holds the commands that added to a folder another command made (``python -m profiles
--run RUN``). A folder made before manifests existed gets one with ``"kind": null`` when a command
adds to it; its own kinds are then read from its files, as they are for a folder without a
manifest (:func:`legacy_kinds`). It imports nothing heavy: the nox sessions read it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

FILE = "run.json"
SCHEMA = 1
KINDS = ("bench", "peers", "profile", "quality", "gate", "targets", "crossover", "busy", "triton-compile")
RUNNING, COMPLETE, INTERRUPTED = "running", "complete", "interrupted"
FAILED = "failed"  # a state "failed: <why>"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(kind: str, command: list[str], settings: dict[str, Any] | None) -> dict[str, Any]:
    """One command's record: a running one, as it starts."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of run {kind!r}; valid kinds: {', '.join(KINDS)}")
    return {"kind": kind, "command": list(command), "settings": dict(settings or {}), "started": now(),
            "finished": None, "state": RUNNING, "exit_status": None}


def read(run) -> dict[str, Any] | None:
    """The run's manifest, or None where it has none (a folder made before manifests) or the file
    is not a JSON object (a folder someone edited: read as an old one)."""
    if not run.has(FILE):
        return None
    try:
        doc = run.read_json(FILE)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def begin(run, kind: str, command: list[str], settings: dict[str, Any] | None) -> None:
    """Record that ``kind`` starts in ``run``: a new manifest, or an entry of ``added`` where the
    folder already holds another command's work."""
    mine = entry(kind, command, settings)
    doc = read(run)
    if doc is None and not _empty(run):
        doc = {"schema": SCHEMA, "kind": None, "added": []}  # an older harness's folder
    if doc is None:
        run.write_json(FILE, {"schema": SCHEMA, **mine, "added": []})
        return
    run.write_json(FILE, {**doc, "added": [*doc.get("added", []), mine]})


def _empty(run) -> bool:
    """A fresh folder: nothing but its environment.json (and no manifest)."""
    return {p.name for p in run.path.iterdir()} <= {"environment.json"}


def update(run, **fields: Any) -> None:
    """Change the latest command's record (the last of ``added``, else the manifest's own)."""
    doc = read(run)
    if doc is None:
        return
    if doc.get("added"):
        doc["added"][-1].update(fields)
    else:
        doc.update(fields)
    run.write_json(FILE, doc)


def add_settings(run, more: dict[str, Any]) -> bool:
    """Add ``more`` to the settings of the latest command's record (what it learns as it runs);
    False where the run has no manifest."""
    doc = read(run)
    if doc is None:
        return False
    latest = (doc.get("added") or [doc])[-1]
    update(run, settings={**(latest.get("settings") or {}), **more})
    return True


def finish(run, state: str, exit_status: int | None) -> None:
    update(run, state=state, exit_status=exit_status, finished=now())


def kinds(run) -> list[str]:
    """What the run holds, by the commands that wrote it: the manifest's kinds, else (a folder
    made before manifests) the kinds its files suggest."""
    doc = read(run)
    if doc is None:
        return legacy_kinds(run)
    first = legacy_kinds(run) if doc.get("kind") is None else [doc["kind"]]
    return list(dict.fromkeys([*first, *(a.get("kind") for a in doc.get("added", []) if a.get("kind"))]))


def state(run) -> str | None:
    """The state of the command that made the run: "running" (or killed), "complete",
    "interrupted", "failed: ..."; None where the manifest does not say (or there is none)."""
    doc = read(run)
    return doc.get("state") if doc is not None and doc.get("kind") is not None else None


def settings(run) -> dict[str, Any]:
    """The settings of the command that made the run ({} where the manifest does not say)."""
    doc = read(run)
    found = doc.get("settings") if doc is not None else None
    return found if isinstance(found, dict) else {}


# Kinds guessed from the files a folder holds, for folders made before manifests: what each
# command left behind, in the order a page shows them.
_LEGACY = (
    ("bench", lambda run: (run.has("benchmarks.csv") or run.has("measurements.jsonl")) and not run.has("peers.json")),
    ("peers", lambda run: run.has("peers.json")),
    ("profile", lambda run: run.has("attribution.csv")),
    ("quality", lambda run: run.has("quality.csv")),
    ("gate", lambda run: run.has("gate.json")),
    ("targets", lambda run: run.has("fast_targets.csv") or run.has("fast_targets.jsonl")),
    ("crossover", lambda run: run.has("fast_crossover.csv")),
    ("busy", lambda run: run.has("busy.csv")),
)


def legacy_kinds(run) -> list[str]:
    """The kinds a folder without a manifest holds, from its files."""
    return [kind for kind, has in _LEGACY if has(run)]
