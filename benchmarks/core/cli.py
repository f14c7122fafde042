"""What every command line of the harness shares: one-line errors, the busy-machine warning,
and telling the caller which run folder the command wrote.

A command returns the run folder it wrote: :func:`announce` prints it as the last line
(``run folder: results/<run-id>``) and, where the caller set ``$KAN_RUN_FILE``, writes its
path into that file, which is how the nox sessions find the run they just made (instead
of listing ``results/`` before and after, which picks up a neighbour's run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

USAGE_ERROR = 2
RUN_FILE = "KAN_RUN_FILE"  # where a caller asks for the path of the run folder a command writes


def one_line(e: BaseException) -> str:
    """An exception as one line for a person: ``Type: the first line of its message`` (the type
    alone where the message is empty), so that a row's ``reason`` or an error never spans lines."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: ... (see --help)``) and exit status 2."""

    def __init__(self, *args, error_prefix: str = "error: ", **kwargs):
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.error_prefix}{message} (see --help)\n")


def positive_ints(text: str, what: str) -> tuple[int, ...]:
    """``"5,50"`` as (5, 50); ``ValueError`` naming ``what`` when it is not positive integers."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers separated by commas, got {text!r}")
    return values


def choices(given, valid, what: str) -> list[str]:
    """Names given comma-separated or repeated (``["kan,mlp", "rbf-kan"]``), in order without
    repeats, each one of ``valid``; ``ValueError`` naming the first that is not and the valid ones."""
    names = list(dict.fromkeys(n.strip() for g in given or () for n in str(g).split(",") if n.strip()))
    for n in names:
        if n not in valid:
            raise ValueError(f"unknown {what} {n!r}; valid {what}s: {', '.join(valid)}")
    return names


def busy_warning(load: list[float] | None, cores: int | None) -> str | None:
    """A warning when other processes were keeping the CPU busy as the run began."""
    cores = cores or 1
    if not load or load[0] < cores / 2:
        return None
    return (f"warning: load average {load[0]:.1f} on {cores} cores before the run: other processes compete "
            "for the CPU, so CPU timings are noisy (multi-threaded ones most; --threads 1 helps)")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (how CI and batch systems stop a job) as Ctrl-C while the block runs, so a
    command stopped that way keeps and tables what finished, as it does on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def announce(run) -> Path:
    """Print the run folder a command wrote and hand its path to the caller (``$KAN_RUN_FILE``)."""
    print(f"run folder: {run.path}", flush=True)
    target = os.environ.get(RUN_FILE)
    if target:
        Path(target).write_text(str(Path(run.path).resolve()) + "\n")
    return run.path
