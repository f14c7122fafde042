"""A child process that measures on command, spoken to in JSON lines (the gate's sides, the peers).

The parent writes one JSON object per line to the child's stdin and reads one per line from
its stdout; the child sends its stderr to a file the parent reads back when it fails, so a
dead child is reported with the last lines it wrote, in one error, never a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable


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


# --- the child's side ------------------------------------------------------------------------


def channel() -> Callable[[dict], None]:
    """In a child: ``say(message)``, which writes one JSON line to the parent. The process's own
    stdout goes to stderr from here on, so that anything a model prints never enters the channel."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    return say


def commands(say: Callable[[dict], None], handlers: dict[str, Callable[[dict], dict]]) -> None:
    """In a child: answer each command line from stdin with its handler's reply, until "quit"."""
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        handler = handlers.get(command["cmd"])
        say(handler(command) if handler else {"error": f"unknown command {command['cmd']!r}"})


def child_main(serve: Callable[[], None]) -> None:
    """A child's entry point: a failure leaves its traceback on stderr and exits 3."""
    try:
        serve()
    except Exception:
        sys.stderr.write(traceback.format_exc())
        sys.exit(3)
