"""git as the harness uses it: the commit a run measured (recorded in every run folder) and a
commit checked out into a temporary worktree (the gate's base side, the gate's evidence runs).

Functions that can fail for the user take ``error``, the exception class the calling command
reports as its one line (the gate's ``GateError``), as :class:`benchmarks.core.process.Child` does.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator


class GitError(RuntimeError):
    """git could not do what was asked: one line for the user."""


def run(*args: str, cwd: Path | None = None, timeout: float = 120,
        error: type[Exception] = GitError) -> subprocess.CompletedProcess:
    """``git *args`` in ``cwd``, its output captured; ``error`` where git cannot be run at all."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise error(f"cannot run git ({e})") from None


def output(*args: str, cwd: Path | None = None, timeout: float = 10) -> str | None:
    """The stripped output of ``git *args``; None where it fails (no git, not a repository)."""
    try:
        out = run(*args, cwd=cwd, timeout=timeout)
    except GitError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit_of(ref: str, cwd: Path | None = None) -> str | None:
    """The commit id ``ref`` names in ``cwd``'s repository; None where it names none."""
    return output("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd, timeout=120) or None


def is_shallow(cwd: Path | None = None) -> bool:
    return output("rev-parse", "--is-shallow-repository", cwd=cwd, timeout=120) == "true"


def commit_info(cwd: Path | None = None) -> dict[str, Any]:
    """The git commit, branch and dirty flag of ``cwd`` (the working directory by default)."""
    commit = output("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"id": None, "dirty": None, "branch": None}
    status = output("status", "--porcelain", cwd=cwd) or ""  # untracked files count: they can be imported
    return {
        "id": commit,
        "short": commit[:9],
        "dirty": bool(status),
        "branch": output("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
        "time": output("show", "-s", "--format=%cI", "HEAD", cwd=cwd),
    }


@contextlib.contextmanager
def worktree(commit: str, cwd: Path, prefix: str = "kan-worktree-",
             error: type[Exception] = GitError) -> Iterator[Path]:
    """``commit`` of ``cwd``'s repository checked out (detached) into a temporary worktree, removed
    afterwards, also when the body fails or is interrupted."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    tree = scratch / "tree"
    out = run("worktree", "add", "--detach", "--quiet", str(tree), commit, cwd=cwd, error=error)
    if out.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise error(f"cannot check out {commit[:9]} into a worktree: {out.stderr.strip()}")
    try:
        yield tree
    finally:
        run("worktree", "remove", "--force", str(tree), cwd=cwd, error=error)
        shutil.rmtree(scratch, ignore_errors=True)
        run("worktree", "prune", cwd=cwd, error=error)
