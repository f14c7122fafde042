"""The README and docs/ say what the code does: every command they show exists and runs
(`--help`), the run folder's page documents exactly the schema of benchmarks/core/schema.py,
and the README stays a README (short; the two first commands near the top)."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.core import manifest, record, schema

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
# `python -m MODULE` and `nox -s SESSION` wherever they appear (code blocks, inline code, tables)
PYTHON_M = re.compile(r"python -m ([A-Za-z_][\w.]*)")
NOX_S = re.compile(r"nox -s ([A-Za-z_][\w-]*)")
# Pages linked from the README that other work adds (GPU timing, the page's wording, the
# kernels' numerics and build, Triton); checked like the others once they exist.
WRITTEN_ELSEWHERE = {"docs/gpu.md", "docs/reading-the-page.md", "docs/kan-fast-numerics.md",
                     "docs/native-kernels.md", "docs/triton.md"}
# A module whose --help is its usage line with exit status 2 (it takes one word, build or status).
HELP_EXIT = {"kan.native": 2}


def found(pattern: re.Pattern) -> dict[str, list[str]]:
    """{name: [the pages that show it]} for every match of ``pattern`` in the README and docs/."""
    out: dict[str, list[str]] = {}
    for page in PAGES:
        for name in pattern.findall(page.read_text()):
            out.setdefault(name.rstrip("."), []).append(str(page.relative_to(ROOT)))
    return out


def nox_sessions() -> dict[str, list[str]]:
    """{session name: the python -m modules it runs}, read from noxfile.py without running nox."""
    source = (ROOT / "noxfile.py").read_text()
    sessions = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for d in node.decorator_list:
            call = d if isinstance(d, ast.Call) else None
            target = call.func if call else d
            if ast.unparse(target) != "nox.session":
                continue
            name = next((k.value.value for k in (call.keywords if call else []) if k.arg == "name"), node.name)
            body = ast.get_source_segment(source, node)
            modules = re.findall(r'"-m",\s*"([\w.]+)"', body)
            modules += re.findall(r'run_command\(session, python, "([\w.]+)"', body)
            modules += re.findall(r'\["([\w.]+)"\]', body)  # the all session's list of commands
            sessions[name] = modules
    return sessions


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    top = "\n".join(lines[:30])
    assert "pip install nox && nox -s tests" in top and "KAN_TORCH" in top  # set up, test; the CPU build
    assert "nox -s bench" in top and "report.html" in top  # the bench, and where its page is


def test_the_readme_and_ci_run_the_same_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^nox -s tests$", ci, re.M), ".ci/run should run the README's test command"
    assert "nox -s tests" in README.read_text()


def test_every_python_m_module_shown_exists():
    modules = found(PYTHON_M)
    assert "benchmarks" in modules and "benchmarks.peers" in modules
    missing = {m: pages for m, pages in modules.items() if importlib.util.find_spec(m) is None}
    assert not missing, f"python -m of modules that do not exist: {missing}"


def test_every_nox_session_shown_exists_and_its_commands_too():
    sessions = nox_sessions()
    assert {"tests", "bench", "gate", "sanitize", "peers"} <= set(sessions)
    shown = found(NOX_S)
    unknown = {s: pages for s, pages in shown.items() if s not in sessions}
    assert not unknown, f"nox sessions that noxfile.py does not define: {unknown}"
    behind = {m for s in shown for m in sessions[s]}
    assert {"benchmarks", "benchmarks.gate", "reports"} <= behind
    assert all(importlib.util.find_spec(m) is not None for m in behind), behind


def test_every_page_the_readme_links_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if not link.startswith("http")]
    assert "docs/run-folder.md" in local
    missing = [link for link in local if not (ROOT / link).exists() and link not in WRITTEN_ELSEWHERE]
    assert not missing, f"README links to pages that do not exist: {missing}"


def commands_to_run() -> list[str]:
    behind = nox_sessions()
    modules = set(found(PYTHON_M)) | {m for s in found(NOX_S) for m in behind.get(s, [])}
    return sorted(modules)


@pytest.mark.slow
@pytest.mark.parametrize("module", commands_to_run())
def test_every_command_shown_runs_with_help(module):
    """`python -m MODULE --help` for every module the pages show or a session they show runs."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == HELP_EXIT.get(module, 0), said[-2000:]
    assert "usage" in said.lower(), said[-2000:]


# --- the run folder's page against the schema ------------------------------------------------


def documented_columns(page: str, heading: str) -> list[str]:
    """The backticked names in the first cell of each table row under ``heading``."""
    section = page.split(heading, 1)[1].split("\n#", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


SCHEMA = [(f"### `{name}.csv`", name, columns) for name, columns in record.TABLES.items()] + [
    ("### `gate.json`: its rows", "gate.json", schema.GATE_COLUMNS)]


@pytest.mark.parametrize("heading, name, columns", SCHEMA, ids=[s[1] for s in SCHEMA])
def test_the_run_folder_page_documents_every_column_of_the_schema(heading, name, columns):
    page = (ROOT / "docs" / "run-folder.md").read_text()
    assert heading in page, f"docs/run-folder.md has no section {heading!r} for the table {name}"
    documented = documented_columns(page, heading)
    missing = [c for c in columns if c not in documented]
    assert not missing, f"docs/run-folder.md, {name}: columns not documented: {missing}"
    stale = [c for c in documented if c not in columns]
    assert not stale, f"docs/run-folder.md, {name}: documented columns the schema does not have: {stale}"


def test_the_run_folder_page_names_every_file():
    page = (ROOT / "docs" / "run-folder.md").read_text()
    files = documented_columns(page, "## Files")
    names = {f"{t}.csv" for t in record.TABLES} | {record.MEASUREMENTS, record.BENCH_SETTINGS, manifest.FILE,
                                                   "environment.json", "gate.json", "profile.json"}
    assert not names - set(" ".join(files).split()), names - set(" ".join(files).split())
    suffixes = set(re.findall(r"`(\.[\w.]+)`", page))
    assert set(schema.PROFILE_FILES) <= suffixes, set(schema.PROFILE_FILES) - suffixes
