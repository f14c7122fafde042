"""A child process that measures on command, spoken to in JSON lines (the gate's sides, the peers).

The parent writes one JSON object per line to the child's stdin and reads one per line from
its stdout; the child sends its stderr to a file the parent reads back when it fails, so a
dead child is reported with the last lines it wrote, in one error, never a hang.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path


class ChildError(Exception):
    """The child stopped, or answered with an error: one message, with its stderr's tail."""


class Child:
    """``argv`` started with pipes; ``label`` names it in errors (``the base side``, ``pykan``)."""

    def __init__(self, label: str, argv: list[str], cwd: Path, env: dict[str, str], error=ChildError):
        self.label, self._error = label, error
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, cwd=cwd, env=env)

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise self._error(f"the {self.label} process stopped (exit {self.proc.returncode})" + self.stderr_tail())
        message = json.loads(line)
        if "error" in message:
            raise self._error(f"the {self.label} process: {message['error']}")
        return message

    def ask(self, command: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait(timeout=30)
            raise self._error(f"the {self.label} process stopped (exit {self.proc.returncode})"
                              + self.stderr_tail()) from None
        return self.receive()

    def stderr_tail(self, lines: int = 15) -> str:
        self._stderr.seek(0)
        tail = self._stderr.read().strip().splitlines()[-lines:]
        return (":\n    " + "\n    ".join(tail)) if tail else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
