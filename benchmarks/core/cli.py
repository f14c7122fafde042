"""What every command line of the harness shares: one-line errors, the options that several
commands take (validated as they are parsed), the busy-machine warning, and telling the caller
which run folder the command wrote.

A command returns the run folder it wrote: :func:`announce` prints it as the last line
(``run folder: results/<run-id>``) and, where the caller set ``$KAN_RUN_FILE``, writes its
path into that file, which is how the nox sessions find the run they just made (instead
of listing ``results/`` before and after, which picks up a neighbour's run). How a command
runs (its run folder, its state, SIGTERM, its exit status): :mod:`benchmarks.core.command`.

The shared options (``add_models``, ``add_devices``, ``add_dtypes``, ``add_phases``,
``add_threads``, ``add_label``) check each value as argparse reads it: a bad one ends the
command with one line naming it and the valid ones, exit status 2, before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from benchmarks.core.errors import USAGE_ERROR, UsageError, one_line  # noqa: F401 - the commands' names for them

RUN_FILE = "KAN_RUN_FILE"  # where a caller asks for the path of the run folder a command writes


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: ... (see --help)``) and exit status 2."""

    def __init__(self, *args, error_prefix: str = "error: ", **kwargs):
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.error_prefix}{message} (see --help)\n")


def positive_ints(text: str, what: str, minimum: int = 1) -> tuple[int, ...]:
    """``"5,50"`` as (5, 50); ``ValueError`` naming ``what`` when it is not integers of at least
    ``minimum`` (1: positive, 0: non-negative)."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if not values or any(v < minimum for v in values):
        kind = {1: "positive integers", 0: "non-negative integers"}.get(minimum, f"integers >= {minimum}")
        raise ValueError(f"{what} must be {kind} separated by commas, got {text!r}")
    return values


def choices(given, valid, what: str) -> list[str]:
    """Names given comma-separated or repeated (``["kan,mlp", "rbf-kan"]``), in order without
    repeats, each one of ``valid``; ``ValueError`` naming the first that is not and the valid ones."""
    names = list(dict.fromkeys(n.strip() for g in given or () for n in str(g).split(",") if n.strip()))
    for n in names:
        if n not in valid:
            raise ValueError(f"unknown {what} {n!r}; valid {what}s: {', '.join(valid)}")
    return names


# --- option types: each checks a value as argparse reads it ------------------------------------


class Unreadable(ValueError):
    """Text that is not the kind of value asked for at all: argparse says so in its own words
    ("invalid int value: 'x'")."""


def _type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """``parse`` as an argparse type: its ``ValueError`` (or ``ImportError``: a registry that does
    not import) becomes argparse's one-line error, naming the option; ``name`` is what argparse
    calls the type where the text is :class:`Unreadable`."""
    def checked(text: str):
        try:
            return parse(text)
        except Unreadable:
            raise ValueError(text) from None
        except (ValueError, ImportError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    checked.__name__ = name
    return checked


def count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Unreadable(text) from None
        if value < minimum:
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(
                minimum, f"a whole number of at least {minimum}")
            raise ValueError(f"expected {what}, got {text!r}")
        return value

    return _type(parse, "int")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Unreadable(text) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite, non-negative number of seconds, got {text!r}")
    return value


seconds = _type(_seconds, "seconds")  # an argparse type: a finite, non-negative number of seconds


def int_list(what: str, minimum: int = 1) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: ``"5,50"`` as (5, 50), integers of at least ``minimum`` (``what`` names
    them in errors)."""
    return _type(lambda text: positive_ints(text, what, minimum), "list")


def widths(text: str) -> tuple[int, ...]:
    """An argparse type: layer widths, input first, ``"784,64,10"`` as (784, 64, 10)."""
    try:
        values = tuple(int(w) for w in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) < 2 or any(w <= 0 for w in values):
        raise argparse.ArgumentTypeError(
            f"widths must be two or more positive integers separated by commas, such as 784,64,10; got {text!r}")
    return values


def threads(text: str) -> int:
    """An argparse type: an intra-op thread count this process may use (1 to its cores)."""
    from benchmarks.core.timer import check_threads  # torch: only where the option is given

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads must be a positive integer, got {text!r}") from None
    try:
        return check_threads(n)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def label(text: str) -> str:
    """An argparse type: a run label short enough to name a run folder."""
    from benchmarks.core.record import RunFolderError, check_label

    try:
        check_label(text)
    except RunFolderError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def names(valid: Callable[[], Iterable[str]] | Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: names given comma-separated (``"kan,mlp"``), each one of ``valid`` (a
    sequence, or a function giving one, called when a value is read: the model registry)."""
    def parse(text: str) -> tuple[str, ...]:
        return tuple(choices([text], list(valid() if callable(valid) else valid), what))

    return _type(parse, what)


def device(valid: Sequence[str] | None = None, present: bool = True) -> Callable[[str], str]:
    """An argparse type: a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``) whose type is one of
    ``valid`` (default: every device type the harness times) and, with ``present``, one this
    machine has."""
    def parse(text: str) -> str:
        import torch

        from benchmarks.core.case import device_unavailable
        from benchmarks.core.timer import DEVICE_TYPES, device_type

        kinds = tuple(valid or DEVICE_TYPES)
        try:
            kind = device_type(text)
        except ValueError:
            kind = None
        if kind not in kinds:
            raise ValueError(f"unknown device {text!r}; valid devices: {', '.join(kinds)}")
        absent = device_unavailable(text) if present else None
        if absent:
            raise ValueError(f"device {text!r} was asked for but {absent}")
        index = torch.device(text).index
        if present and kind == "cuda" and index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} does not exist; this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
        return text

    return _type(parse, "device")


def devices(valid: Sequence[str] | None = None, present: bool = True) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: devices comma-separated, each as :func:`device` checks it."""
    one = device(valid, present)
    return _type(lambda text: tuple(dict.fromkeys(one(d.strip()) for d in text.split(",") if d.strip())), "devices")


class Names(argparse.Action):
    """Collect values given comma-separated, repeated or several after one option (``nargs``),
    in order without repeats; the first value given replaces the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = values if isinstance(values, list) else [values]
        so_far = getattr(namespace, self.dest, None)
        so_far = [] if so_far is None or so_far is self.default else list(so_far)
        flat = [n for v in given for n in (v if isinstance(v, (tuple, list)) else (v,))]
        setattr(namespace, self.dest, list(dict.fromkeys([*so_far, *flat])))


def _registered_models() -> list[str]:
    from benchmarks.core.case import zoo

    return list(zoo().available())


# --- option groups: the options several commands take, added the same way --------------------


def add_models(p: argparse.ArgumentParser, default=None, nargs: str | None = None, flag: str = "--model",
               help: str = "registered model(s) (default: all, MLP baselines included)") -> None:
    p.add_argument(flag, type=names(_registered_models, "model"), action=Names, nargs=nargs, default=default,
                   metavar="NAME", help=help)


def add_devices(p: argparse.ArgumentParser, default=None, valid: Sequence[str] | None = None,
                multiple: bool = True, nargs: str | None = None, present: bool = True,
                help: str | None = None) -> None:
    """``--device``: several (comma-separated or repeated) or one (``multiple=False``), each
    checked by :func:`device` (``present=False``: a device this machine lacks is accepted, for a
    command that skips it and says so)."""
    from benchmarks.core.timer import DEVICE_TYPES

    shown = ", ".join(valid or DEVICE_TYPES)
    if multiple:
        p.add_argument("--device", type=devices(valid, present), action=Names, nargs=nargs, default=default,
                       metavar="NAME",
                       help=help or f"one or more of {shown} (default: {default or 'every one present'})")
    else:
        p.add_argument("--device", type=device(valid, present), default=default, metavar="NAME",
                       help=help or f"one of {shown} (default: {default})")


def one_of(valid: Sequence[str], what: str) -> Callable[[str], str]:
    several = names(valid, what)

    def parse(text: str) -> str:
        given = several(text)
        if len(given) != 1:
            raise argparse.ArgumentTypeError(f"one {what} only, got {text!r}")
        return given[0]

    parse.__name__ = what
    return parse


def add_dtypes(p: argparse.ArgumentParser, valid: Sequence[str], default=None, multiple: bool = False,
               help: str | None = None) -> None:
    if multiple:
        p.add_argument("--dtype", type=names(valid, "dtype"), action=Names, default=default, metavar="NAME",
                       help=help or f"one or more of {', '.join(valid)} (default: {default})")
    else:
        p.add_argument("--dtype", type=one_of(valid, "dtype"), default=default, metavar="NAME",
                       help=help or f"one of {', '.join(valid)} (default: {default})")


def add_phases(p: argparse.ArgumentParser, valid: Sequence[str], default=None, nargs: str | None = None,
               flag: str = "--phase", help: str | None = None) -> None:
    p.add_argument(flag, type=names(valid, "phase"), action=Names, nargs=nargs, default=default, metavar="PHASE",
                   help=help or f"one or more of {', '.join(valid)} (default: {', '.join(default or valid)})")


def add_threads(p: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    p.add_argument("--threads", type=threads, default=default, metavar="N",
                   help=help or "torch intra-op threads (default: torch's choice); recorded in the run")


def add_label(p: argparse.ArgumentParser, default: str | None = None, help: str | None = None) -> None:
    p.add_argument("--label", type=label, default=default, metavar="TEXT",
                   help=help or "added to the run folder's name" + (f" (default: {default})" if default else ""))


# --- what a command says around its work ------------------------------------------------------


def busy_warning(load: list[float] | None, cores: int | None, threads: int | None = None) -> str | None:
    """A warning when other processes were keeping the CPU busy as the run began; ``threads``: the
    run's own count, where known (a run already on one thread is not advised to take one)."""
    cores = cores or 1
    if not load or load[0] < cores / 2:
        return None
    advice = "" if threads == 1 else "; --threads 1 helps"
    return (f"warning: load average {load[0]:.1f} on {cores} cores before the run: other processes compete "
            f"for the CPU, so CPU timings are noisy (multi-threaded ones most{advice})")


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
