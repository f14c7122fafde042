"""One frame for every command line: parse, open the run, run the body, mark the run, end.

    def main(argv=None) -> int:
        return run_command("quality", parser(), argv, body)

    def body(args, cmd: Command) -> int:
        plan = check(args)                         # UsageError: one line, exit 2, no run folder
        run = cmd.open(label=..., settings={...})  # the run folder, its run.json, the busy warning
        with cmd.interruptible():                  # Ctrl-C or SIGTERM: stop here, keep what finished
            ...measure, appending rows as they finish...
        ...write the tables from what finished...
        return 1 if a result failed else 0

:func:`run_command` parses the arguments (argparse's errors and the shared option types of
:mod:`benchmarks.core.cli` are one line, exit 2), runs the body with SIGTERM treated as Ctrl-C,
and ends the same way for every command: the state of the run in its manifest (``run.json``:
running, then complete, interrupted or ``failed: <why>``; :mod:`benchmarks.core.manifest`), the
busy-machine warning again, one line for an error, and the run folder last (:func:`announce`,
which hands it to ``$KAN_RUN_FILE``). Exit status: what the body returns (0 ok, 1 a result
failed or the gate found a slowdown; a command may add its own, as the profiles' 3); 2 bad input
or an unusable state (:class:`UsageError`, a run folder that cannot be made); 130 interrupted.
An unexpected exception marks the run failed, names its folder and is raised again, traceback
and all: it is a fault of the harness, not of the input.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from typing import Any, Callable, Iterator, Sequence

from benchmarks.core import manifest
from benchmarks.core.machine import load_average
from benchmarks.core.cli import USAGE_ERROR, UsageError, announce, busy_warning, one_line, terminate_as_interrupt

OK, FAILED, INTERRUPTED = 0, 1, 130


class Command:
    """What a command's body gets: the run it opens, and how it says it was interrupted."""

    def __init__(self, kind: str, command: list[str], prefix: str = "error: "):
        self.kind, self.command, self.prefix = kind, command, prefix
        self.run = None  # the record.Run, once opened
        self.warning: str | None = None  # the busy-machine warning, said at the start and again at the end
        self.interrupted = False

    def open(self, label: str | None = None, existing: str | None = None,
             settings: dict[str, Any] | None = None):
        """Make the run folder (``record.new_run(label)``) or open ``existing`` (a path or run id),
        write its manifest and say whether the machine is busy; the record's ``Run``.

        :class:`UsageError` where the folder cannot be made or ``existing`` is no run."""
        from benchmarks.core import record

        try:
            run = record.open_run(existing) if existing else record.new_run(label)
        except (FileNotFoundError, record.RunFolderError) as e:
            raise UsageError(str(e)) from None
        manifest.begin(run, self.kind, self.command, settings)
        self.run = run
        # as the run began: the new folder's environment.json, or now for a folder added to
        env = {} if existing else run.environment()
        self.warning = busy_warning(env.get("load_average", load_average()), env.get("cpu_count", os.cpu_count()),
                                    env.get("threads"))
        if self.warning:
            print(self.warning, flush=True)
        return run

    def discard(self) -> None:
        """Remove the run folder (it holds nothing worth keeping: a gate that reached no verdict)."""
        if self.run is not None:
            shutil.rmtree(self.run.path, ignore_errors=True)
            self.run = None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Ctrl-C (or SIGTERM) inside the block stops it and is remembered: the body goes on to
        keep what finished, and the command ends interrupted, exit status 130."""
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True


def command_line(prog: str, argv: Sequence[str]) -> list[str]:
    """The command as run: the program's words (``python -m benchmarks.quality``) and its arguments."""
    return [*shlex.split(prog), *argv]


def run_command(kind: str, parser, argv: Sequence[str] | None,
                body: Callable[[Any, Command], int]) -> int:
    """Run ``body(args, cmd)`` as a command of ``kind`` (a :data:`manifest.KINDS` name) with the
    arguments ``argv`` (default: the process's) parsed by ``parser``; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own one-line error
        return int(e.code or 0) if not isinstance(e.code, str) else USAGE_ERROR
    cmd = Command(kind, command_line(parser.prog, argv), getattr(parser, "error_prefix", "error: "))
    code, state, error = _run_body(body, args, cmd)
    if cmd.run is not None:
        manifest.finish(cmd.run, state, code)
    _end(cmd, error)
    return code


def _run_body(body, args, cmd: Command) -> tuple[int, str, str | None]:
    """(exit status, state of the run, the error's one line or None)."""
    try:
        with terminate_as_interrupt():
            code = int(body(args, cmd) or 0)
    except UsageError as e:
        return USAGE_ERROR, f"{manifest.FAILED}: {e}", str(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED, manifest.INTERRUPTED, None
    except BaseException as e:  # a fault of the harness: say where its run is, then the traceback
        if cmd.run is not None:
            manifest.finish(cmd.run, f"{manifest.FAILED}: {one_line(e)}", None)
            _end(cmd, None)
        raise
    if cmd.interrupted:
        return INTERRUPTED, manifest.INTERRUPTED, None
    return code, manifest.COMPLETE, None


def _end(cmd: Command, error: str | None) -> None:
    """The ending every command shares: the busy warning again, the error in one line, the run folder."""
    if cmd.warning and cmd.run is not None:
        print(cmd.warning, flush=True)
    if error is not None:
        print(f"{cmd.prefix}{error}", file=sys.stderr, flush=True)
    if cmd.run is not None:
        announce(cmd.run)
