"""Build the page: read the runs, make the tables and charts, fill the template, write one file."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from benchmarks.core import record
from reports import charts, compare, profile_tables, roofline, tables
from reports.quality_chart import quality_front
from reports.units import is_missing
from reports.data import ReportError, RunData, default_runs, environment_items, load, load_all, open_run

TEMPLATES = Path(__file__).parent / "templates"
# A significant change within ±10% reads "no significant change": on a shared machine a model's
# time over the MLP moves by several percent between two runs of one commit (docs/reading-the-page.md).
DEFAULT_THRESHOLD = 1.10

SYNC_LESSON = [
    "On CUDA and MPS the host only queues work for the device, so a host-side profiler (cProfile, "
    "py-spy) blames whichever call has to wait for the device, a .to() or an .item(), for all the "
    "work queued before it.",
    "Synchronising the device after each phase makes the host wait where the work was queued, "
    "which moves the time back to the parts that did it.",
]


@dataclass
class Group:
    """The rows of one machine and device (and dtype, where a run measured several)."""

    where: str
    rows: pd.DataFrame
    headline: tables.Table | None = None
    sentences: list[str] = field(default_factory=list)
    timings: list[tables.Table] = field(default_factory=list)
    details: tables.Table | None = None


def groups(bench: pd.DataFrame) -> list[Group]:
    """One group per machine (in the order the runs were named) and device."""
    keys = ["machine", "device"] + (["dtype"] if bench["dtype"].nunique() > 1 else [])
    if "mode" in bench.columns and bench["mode"].notna().any():
        keys.append("mode")  # steps captured in CUDA graphs: a group of their own beside the eager one
    machines = list(dict.fromkeys(bench["machine"]))
    several_machines = len(machines) > 1
    out = []
    for k, rows in sorted(bench.groupby(keys, dropna=False, sort=True), key=lambda kg: machines.index(kg[0][0])):
        parts = list(k)[0 if several_machines else 1:]
        out.append(Group(" · ".join(str(p) for p in parts if not is_missing(p)), rows))
    return out


def device_groups(bench: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The accelerator rows per machine and device, eager and graphed together (set side by side)."""
    out = []
    for g in groups(bench.assign(mode=None) if "mode" in bench.columns else bench):
        rows = bench.loc[g.rows.index]
        if not roofline.accelerator(rows).empty:
            out.append((g.where, rows))
    return out


def profile_table(files: list, page: Path) -> dict | None:
    """Profile files as rows (what was profiled) and columns (kind), each cell a list of links."""
    if not files:
        return None
    kinds = [k for k in PROFILE_ORDER if any(f.kind == k for f in files)]
    kinds += sorted({f.kind for f in files} - set(kinds))
    rows: dict[str, dict[str, list]] = {}
    for f in files:
        rows.setdefault(f.stem, {}).setdefault(f.kind, []).append({"name": f.path.name, "href": _link(f.path, page)})
    return {"kinds": kinds, "rows": [(stem, [by_kind.get(k, []) for k in kinds]) for stem, by_kind in rows.items()]}


PROFILE_ORDER = ["flamegraph", "speedscope", "chrome trace", "cProfile stats", "top functions",
                 "torch.profiler table", "text", "other"]


def _link(target: Path, page: Path) -> str:
    relative = os.path.relpath(target.resolve(), page.parent.resolve())
    return urllib.parse.quote(Path(relative).as_posix())


def context(runs: list[RunData], against: RunData | None, page: Path, threshold: float) -> dict:
    """Everything the template shows, computed from the runs."""
    tables_with_rows = [r.benchmarks for r in runs if not r.benchmarks.empty] or [runs[0].benchmarks]
    bench = pd.concat(tables_with_rows, ignore_index=True)
    page_groups = bench_groups(bench)
    device = device_sections(bench)
    figures = bench_figures(page_groups)
    attribution = [r.attribution.assign(machine=r.machine) for r in runs if r.attribution is not None]
    attribution = pd.concat(attribution, ignore_index=True) if attribution else None
    lesson, lesson_table = [], None
    if attribution is not None:
        figures["attribution"], lesson, lesson_table = attribution_context(attribution, runs)
    figures = {k: [c for c in v if c is not None] for k, v in figures.items()}

    overhead = [(r.machine, profile_tables.overhead_table(r.profile.get("overhead") or {}),
                 profile_tables.profiler_sentence(r.profile.get("settings") or {})) for r in runs if r.attribution is not None]
    overhead = [o for o in overhead if o[1] is not None]

    comparison = comparison_context(runs[0], against, threshold) if against is not None else None
    sources = {
        "bench": [r.name for r in runs if not r.benchmarks.empty],
        "profile": [r.name for r in runs if r.attribution is not None],
        "quality": [r.name for r in runs if r.quality is not None],
        "gate": [r.name for r in runs if r.gate is not None],
    }
    return {
        "sources": sources,
        "runs": [{
            "name": r.name, "machine": r.machine, "environment": environment_items(r.environment),
            "partial": r.partial,
            "profiles": profile_table(r.profile_files, page),
            "quality": tables.frame_table(r.quality) if r.quality is not None else None,
            **quality_context(r, several=len(runs) > 1),
        } for r in runs],
        "machines": list(dict.fromkeys(bench["machine"])),
        "gates": [(r.machine, gate_context(r.gate)) for r in runs if r.gate is not None],
        "groups": page_groups,
        "device": device,
        "ladder": ladder_lines(runs),
        "figures": figures,
        "attribution": attribution is not None,
        "backward_notes": {k: v for r in runs for k, v in (r.profile.get("backward") or {}).items()},
        "overhead": overhead,
        "profiler_sentence": profile_tables.profiler_sentence(next((r.profile.get("settings") for r in runs
                                                            if r.attribution is not None and r.profile), {}) or {}),
        "facts": page_facts(runs, bench),
        "lesson": lesson,
        "lesson_table": lesson_table,
        "comparison": comparison,
        "failed": int((~bench["status"].isin(["ok", "skipped"])).sum()),
        "skipped": int((bench["status"] == "skipped").sum()),
    }


def bench_groups(bench: pd.DataFrame) -> list:
    """The page's groups of bench rows (one per machine and device), each with its headline,
    sentences and tables."""
    page_groups = groups(bench)
    for g in page_groups:
        g.headline = tables.headline(g.rows, g.where)
        g.sentences = roofline.launch_bound_sentences(g.rows, g.where) + tables.headline_sentences(g.rows, g.where)
        g.timings = tables.timings(g.rows, g.where)
        g.details = tables.details(g.rows, g.where)
    return page_groups


def device_sections(bench: pd.DataFrame) -> list[dict]:
    """The accelerator sections: how busy the device was, its roofline chart, the CUDA-graph table."""
    device = []
    for where, rows in device_groups(bench):
        section = {"where": where, "table": roofline.device_table(rows, where), "chart": roofline.chart(rows, where),
                   "graphs": roofline.graphs_table(rows, where)}
        if section["table"] is not None:
            device.append(section)
    return device


def ladder_lines(runs: list[RunData]) -> list[str]:
    """Where each run's ladder climb stopped and why (the settings' ``ladder``: the full suite on a GPU)."""
    lines = []
    for r in runs:
        settings = r.run.settings()
        climbs = ((settings or {}).get("ladder") or {}).get("climbs") if isinstance(settings, dict) else None
        lines += [c["line"] for c in climbs or [] if isinstance(c, dict) and isinstance(c.get("line"), str)]
    return lines


def bench_figures(page_groups: list) -> dict[str, list]:
    """The bench's charts per group (None where a group has nothing to draw)."""
    return {
        "time": [charts.time_split(g.rows, g.where) for g in page_groups],
        "ratios": [charts.mlp_ratios(g.rows, g.where) for g in page_groups],
        "scaling": [charts.scaling(g.rows, v, g.where) for v in ("batch", "grid_size") for g in page_groups]
        # against width where one width was swept alone, else against size across the architectures measured
        + [charts.scaling(g.rows, "width", g.where) or charts.scaling(g.rows, "parameters", g.where)
           for g in page_groups],
        "memory": [charts.memory(g.rows, g.where) for g in page_groups],
    }


def attribution_context(attribution: pd.DataFrame, runs: list[RunData]) -> tuple[list, list, object]:
    """The profiles' charts, one per scenario, and the synchronisation lesson with its table."""
    # the scenario with the most bars (the training loop, with and without synchronisation) first
    scenarios = attribution.groupby("scenario").apply(lambda g: len(g.groupby(["profiler", "synchronized"], dropna=False)))
    scenarios = sorted(scenarios.index, key=lambda s: (-scenarios[s], s))
    figures = [charts.attribution(attribution, s) for s in scenarios]
    noise = [p for r in runs for p in (r.profile.get("loop_noise") or {}).get("profiles", [])]
    example, lesson_table = profile_tables.sync_lesson(profile_tables.sync_pairs(attribution), noise)
    lesson = SYNC_LESSON + example if lesson_table is not None else []
    return figures, lesson, lesson_table


def comparison_context(primary: RunData, against: RunData, threshold: float) -> dict:
    """``primary`` against an older run: the verdict per benchmark, changed and unchanged apart."""
    conditions = compare.environments(primary, against)
    frame = compare.compare_runs(primary, against, threshold, judge_times=conditions["matched"])
    same = frame["verdict"].isin(["no significant change", "not judged"])
    return {
        "new": primary.name, "old": against.name, "new_machine": primary.machine,
        "old_machine": against.machine, "threshold": threshold, "counts": compare.verdict_counts(frame),
        "conditions": conditions,
        "changed": compare.run_comparison_table(frame[~same]),
        "unchanged": compare.run_comparison_table(frame[same]),
        "chart": charts.comparison(frame, title="New / old time over the MLP per benchmark",
                                   axis="new / old (time over the MLP; the MLP itself: time)") if len(frame) else None,
        "only_new": sorted(set(primary.benchmarks["benchmark"]) - set(against.benchmarks["benchmark"])),
        "only_old": sorted(set(against.benchmarks["benchmark"]) - set(primary.benchmarks["benchmark"])),
    }


def page_facts(runs: list[RunData], bench: pd.DataFrame) -> list[str]:
    """What a reader looks for next to the headline."""
    facts = []
    for r in runs:
        rows = r.benchmarks
        if rows.empty:
            continue
        prefix = f"{r.machine}: " if len([x for x in runs if not x.benchmarks.empty]) > 1 else ""
        said = [tables.same_function(rows), *tables.speedup(rows), tables.conditions(rows, r.environment)]
        facts += [prefix + s for s in said if s]
    if not any(r.gate is not None for r in runs) and not bench.empty:
        facts.append("No speed gate run on this page: these are measurements, not a verdict on a change "
                     "(`nox -s gate` times the working tree against a base commit, side by side).")
    return facts


def quality_context(r: RunData, several: bool) -> dict:
    """A quality run's chart and per-task tables (from quality_summary.csv), and its rows per seed.

    A quality.csv without its summary (an older run) is shown as the plain table above only.
    """
    if r.quality is None or r.quality_summary is None:
        return {"quality_chart": None, "quality_tables": [], "quality_rows": None}
    where = r.machine if several else ""
    per_seed = r.quality.drop(columns=[c for c in ("curve",) if c in r.quality.columns])
    return {
        "quality_chart": quality_front(r.quality_summary, where),
        "quality_tables": tables.quality_tables(r.quality_summary, f" · {where}" if where else ""),
        "quality_rows": tables.frame_table(per_seed),
    }


def gate_context(gate: object) -> dict:
    """The speed gate's verdict (gate.json) for the page: summary, chart and tables."""
    summary = tables.gate_summary(gate)
    frame = tables.gate_frame(gate)
    if frame is None or frame.empty:
        return {**summary, "chart": None, "changed": None, "unchanged": None}
    baseline = summary["mode"] == "baseline"
    value, old, new = (tables.fmt_times, "recorded × MLP", "measured × MLP") if baseline else \
        (tables.fmt_time, "base median", "head median")
    same = frame["verdict"] == "no significant change"
    return {
        **summary,
        "chart": charts.comparison(frame, title="Speed gate: head / base per benchmark", axis="head / base"),
        "changed": compare.comparison_table(frame[~same], value=value, old=old, new=new),
        "unchanged": compare.comparison_table(frame[same], value=value, old=old, new=new),
    }


CELL_LENGTH = 300  # characters of one table cell; a record's text beyond that is cut on the page


def cut(text: object, length: int = CELL_LENGTH) -> str:
    """``text`` as a string of at most about ``length`` characters, saying how much was left out."""
    text = str(text)
    return text if len(text) <= length else f"{text[:length]}… ({len(text) - length:,} more characters)"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every string from a record is escaped, whatever the template name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cut"] = cut  # a record's text (a model name of megabytes) never swamps the page
    return env


def render(
    run: str | None = None,
    against: str | None = None,
    merge: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Path:
    """Render ``run`` into one HTML file; return its path.

    Without ``run``, the page of the newest run with something to show, and with it the newest
    bench, profile, quality and gate runs of the same machine and commit (``default_runs``).
    ``merge`` adds runs (from other machines, say) to the same page; ``against`` compares
    ``run`` with an older run. The page goes to ``out``, by default ``report.html`` in the
    run folder; no other file of any run is touched.
    """
    if not threshold >= 1:
        raise ReportError(f"--threshold must be a ratio of at least 1 (1.05 for 5%), got {threshold}")
    picked = [open_run(run)] if run is not None else default_runs()
    primary = picked[0]
    runs = load_all(picked + [open_run(m) for m in merge])
    old = load(open_run(against)) if against is not None else None
    if old is not None and old.benchmarks.empty:
        raise ReportError(f"--against {against}: run {old.name} has no benchmarks table (benchmarks.csv) to compare with")
    if old is not None and runs[0].benchmarks.empty:
        raise ReportError(f"run {runs[0].name} has no benchmarks table (benchmarks.csv) to compare with --against")
    page = Path(out) if out is not None else primary.path / "report.html"
    if page.exists() and page.is_dir():
        raise ReportError(f"--out {page} is a folder; give a file name")
    html = environment().get_template("report.html.j2").render(**context(runs, old, page, threshold))
    write_page(page, html)
    return page


def write_page(page: Path, html: str) -> None:
    """Write ``html`` to ``page`` atomically (a reader never sees half a page), making its folder if
    needed; :class:`ReportError` in one line where it cannot be written (a read-only run folder, a
    folder that cannot be made, /proc/...)."""
    tmp = page.with_name(page.name + ".tmp")
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(page)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        where = "the run folder" if out_is_run_folder(page) else "that folder"
        raise ReportError(f"cannot write the page to {page} ({e.strerror or type(e).__name__}); "
                          f"{where} is not writable here: give --out a file in one that is") from None


def out_is_run_folder(page: Path) -> bool:
    try:
        return (page.parent / "environment.json").exists()
    except OSError:
        return False
