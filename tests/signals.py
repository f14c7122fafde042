"""Stopping a command as CI stops a job: SIGTERM once it has written its first result."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def terminated_after_first_result(argv: list[str], results: Path, pattern: str, env: dict, cwd: Path,
                                  wait_s: float = 120) -> tuple[int, str]:
    """Run ``argv``, send it SIGTERM as soon as a file matching ``pattern`` (a glob below
    ``results``) exists, and return its exit status and its output (stdout and stderr)."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + wait_s
        while not list(results.glob(pattern)):
            assert time.monotonic() < deadline and child.poll() is None, "no result written"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return child.returncode, output
