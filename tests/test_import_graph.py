"""No import circle among the project's modules (kan/, benchmarks/, profiles/, reports/).

The graph is read from the source, not from an import: each module's imports that run when it
is imported (module level, class bodies and ``if``/``try`` blocks included; function bodies
and ``if TYPE_CHECKING:`` blocks not), each pointing at the most specific project module it
names. A package's ``__init__`` importing its own parts is not a circle; a part importing a
name that only the ``__init__`` defines points at the package, and would close one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kan", "benchmarks", "profiles", "reports")


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runs_at_import(tree: ast.Module):
    """The import statements of ``tree`` that run when the module is imported."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict) -> str | None:
    """The longest prefix of ``name`` that is a project module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imports(name: str, path: Path, modules: dict) -> set[str]:
    """The project modules that module ``name`` (at ``path``) imports when it is imported."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runs_at_import(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        found |= {m for m in map(lambda t: _known(t, modules), targets) if m is not None and m != name}
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module, or of one that imports itself
    (Tarjan's algorithm, iteratively), each sorted; sorted."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph.get(node, ()):
                    groups.append(sorted(group))
    return sorted(groups)


def graph_of(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {name: imports(name, path, modules) for name, path in modules.items()}


def test_the_project_has_no_import_circle():
    graph = graph_of(ROOT)
    assert {"kan.fast", "kan.native", "kan.bspline", "benchmarks.core.case"} <= set(graph), "the modules were found"
    assert "kan.bspline" in graph["kan.native.selftest"], "the self-test's bases come from kan.bspline"
    assert circles(graph) == []


def test_a_circle_is_found_however_it_is_written(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.sub import helper\n",  # a package importing its part: no circle by itself
        "a.py": "import pkg.b\n",
        "b.py": "from . import c\n",  # relative
        "c.py": "try:\n    from pkg.a import thing\nexcept ImportError:\n    pass\n",  # closes a -> b -> c -> a
        "d.py": "def later():\n    import pkg.e\n",  # in a function: not at import time
        "e.py": "import pkg.d\n",
        "sub/__init__.py": "",
        "sub/helper.py": "from pkg import VERSION\n",  # a name of the package's __init__: a circle
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert circles(graph_of(tmp_path, ("pkg",))) == [["pkg", "pkg.sub.helper"], ["pkg.a", "pkg.b", "pkg.c"]]


def test_importing_the_models_leaves_dynamo_and_triton_unimported():
    """``import kan`` and its models stay light: torch.compile's machinery (torch._dynamo, seconds
    to import, and Triton with it) loads only where a model is compiled or the Triton kernels are
    asked for. Imported in a fresh interpreter, as a user's script would."""
    import subprocess
    import sys

    code = ("import sys, kan, kan.fast, kan.zoo; kan.zoo.build('kan-fast', [3, 4, 2]); "
            "print(sorted(m for m in ('torch._dynamo', 'triton') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
