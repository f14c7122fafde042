"""The device-aware clock that every timing goes through.

On CUDA and MPS a call returns once its kernels are queued, not run, so a host clock read
right after it measures the launch. :class:`DeviceTimer` waits for the device exactly once
per measurement, just before the stop reading, so a measurement covers the queued work:

    >>> timer = DeviceTimer("cuda")
    >>> start = timer()            # a host clock reading; the device must be idle here
    >>> fn()
    >>> seconds = timer() - start  # waits for the device once, then reads the clock

It is a pytest-benchmark clock: ``pytest.mark.benchmark(timer=DeviceTimer(device))``.
pytest-benchmark computes ``end - start`` once per round, so with ``iterations > 1`` the
device is synchronised after the last call of the round, never between calls. The device
must be idle when a round starts: the timer's own wait leaves it so after each round, and
the ``setup`` of :func:`benchmarks.core.case.make_step` ends with :func:`synchronize`.

How the clock is used (the first, cold call apart; rounds; turns across candidates) is
:mod:`benchmarks.core.protocol`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch

DEVICE_TYPES = ("cpu", "cuda", "mps")


def device_type(device: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` for ``device``; ``ValueError`` naming the valid ones otherwise."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        kind = None
    if kind not in DEVICE_TYPES:
        raise ValueError(f"unknown device {str(device)!r}; valid devices: {', '.join(DEVICE_TYPES)}")
    return kind


def synchronize(device: str | torch.device) -> None:
    """Wait until all work queued on ``device`` has run (nothing to wait for on the CPU)."""
    kind = device_type(device)
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


class Reading(float):
    """A host clock reading (seconds). ``later - earlier`` waits for the device first.

    The subtraction is where a measurement ends, so that is where the timer synchronises:
    it waits for the device, reads the clock again and returns the seconds since
    ``earlier``. A reading used as a plain number is just ``time.perf_counter()``.
    """

    __slots__ = ("_timer",)

    def __sub__(self, other):
        if isinstance(other, Reading):
            return self._timer.elapsed_since(other)
        return float(self) - other


class DeviceTimer:
    """A clock for ``device`` that counts queued device work; see the module docstring.

    ``sync`` replaces :func:`synchronize` (tests pass a counting fake device).
    """

    def __init__(self, device: str | torch.device = "cpu", sync: Callable[[], None] | None = None):
        self.device = str(device)
        if sync is None:
            kind = device_type(device)  # an unknown device fails here, not in the middle of a run
            sync = _nothing if kind == "cpu" else (lambda: synchronize(device))
        self._sync = sync
        self.clock = "wall"
        self.__name__ = f"DeviceTimer({self.device})"  # how pytest-benchmark names its timer

    def __call__(self) -> Reading:
        reading = Reading(time.perf_counter())
        reading._timer = self
        return reading

    def elapsed_since(self, start: float) -> float:
        """Seconds from ``start`` until all work queued on the device so far has run."""
        self._sync()
        return time.perf_counter() - float(start)

    def __repr__(self) -> str:
        return self.__name__


def _nothing() -> None:
    pass


class CpuTimer:
    """The CPU time of this process (all its threads), for CPU work on one thread.

    A single-threaded call's CPU time is its run time without the time the OS gave its core
    to other processes: on a machine shared with other work it measures the model, where the
    wall clock measures the queue as well. (With several threads it would add up the threads'
    time, so it is not used there.)"""

    __name__ = "CpuTimer(cpu)"
    clock = "cpu"

    def __call__(self) -> float:
        return time.process_time()

    def __repr__(self) -> str:
        return self.__name__


CLOCKS = ("wall", "cpu")


def clock_name(device: str, threads: int) -> str:
    """The clock a run times work on ``device`` with ``threads`` intra-op threads by: "cpu" (the
    process's CPU time) for the CPU on one thread, else "wall" (the device-aware wall clock).

    A run decides this once and hands the name to every process that times for it (the gate's
    sides, the peers' children), so that two candidates compared are always timed by one clock."""
    return "cpu" if device_type(device) == "cpu" and threads == 1 else "wall"


def make_clock(name: str, device: str) -> "DeviceTimer | CpuTimer":
    """The clock called ``name`` ("wall" or "cpu") for ``device``; ``ValueError`` for another
    name, or for the CPU clock on a device other than the CPU (it cannot see queued device work)."""
    if name == "wall":
        return DeviceTimer(device)
    if name == "cpu":
        if device_type(device) != "cpu":
            raise ValueError(f"the cpu clock times the CPU device only, not {device!r}")
        return CpuTimer()
    raise ValueError(f"unknown clock {name!r}; valid clocks: {', '.join(CLOCKS)}")


def clock_for(device: str, threads: int) -> tuple["DeviceTimer | CpuTimer", str]:
    """(clock, its name) for timing work on ``device`` with ``threads`` threads (:func:`clock_name`)."""
    name = clock_name(device, threads)
    return make_clock(name, device), name


def max_threads() -> int:
    """The most intra-op threads a run may ask for: the cores this process may use."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(n: object) -> int:
    """``n`` as a thread count; ``ValueError`` unless it is a whole number from 1 to :func:`max_threads`."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or int(n) != n or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    if n > max_threads():
        raise ValueError(f"threads must be at most {max_threads()} (the cores this process may use), got {n}")
    return int(n)


def torch_threads() -> int:
    """torch's own intra-op thread count: what a run takes when it is given none (read once, at
    the run's start, before anything applies a count)."""
    return torch.get_num_threads()


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[int]:
    """Apply ``n`` intra-op threads to torch while the block runs (validated by
    :func:`check_threads`), and restore the count that was in force before on exit.

    The run keeps ``n`` itself and passes it on (to the rows, the children, the disturbed-sample
    test); nothing reads torch's global back to learn what the run asked for."""
    n = check_threads(n)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def default_threads(idle: float | None, torch_default: int) -> tuple[int, str]:
    """The thread count a run takes when none is given, and why, from the idle cores at its start.

    As many threads as cores sat idle (rounded, at least 1, at most torch's own default):
    a thread for which no core is free waits for one, and an OpenMP region waits for its
    slowest thread, so on a busy machine fewer threads measure the model, not the queue.
    """
    if idle is None:
        return torch_default, f"{torch_default} (torch's default; idle cores unknown here)"
    n = max(1, min(torch_default, int(idle + 0.5)))
    if n == torch_default:
        return n, f"{n} (torch's default; {idle:g} cores idle at the start)"
    idle_said = "no core was" if idle <= 0 else f"only {idle:g} cores were"
    return n, f"{n}, not torch's {torch_default}: {idle_said} idle at the start (--threads to choose)"
