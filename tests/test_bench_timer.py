"""The device-aware timer: it measures queued device work, and waits once per measurement.

A fake asynchronous device stands in for CUDA/MPS: ``launch`` queues work and returns at
once; ``sync`` runs (sleeps through) the queue and counts how often it was called.
"""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.core.protocol import first_call, rounds
from benchmarks.core.timer import (CpuTimer, DeviceTimer, check_threads, clock_name, make_clock, max_threads,
                                   synchronize, using_threads)


class FakeDevice:
    def __init__(self):
        self.queued = 0.0
        self.syncs = 0
        self.launches = 0

    def launch(self, seconds: float) -> None:
        self.launches += 1
        self.queued += seconds

    def sync(self) -> None:
        self.syncs += 1
        time.sleep(self.queued)
        self.queued = 0.0


def test_queued_work_is_measured_not_its_launch():
    device = FakeDevice()
    timer = DeviceTimer("fake", sync=device.sync)
    start = timer()
    device.launch(0.03)
    # the launch returned with its work still queued: a host clock read now would see the launch only
    assert (device.syncs, device.queued) == (0, 0.03)
    seconds = timer() - start
    assert seconds >= 0.03  # the sleep through the queue: never shorter than asked
    assert device.syncs == 1 and device.queued == 0


def test_a_reading_waits_only_when_a_measurement_ends():
    device = FakeDevice()
    timer = DeviceTimer("fake", sync=device.sync)
    readings = [timer() for _ in range(5)]
    assert device.syncs == 0
    assert all(isinstance(r, float) for r in readings)
    assert readings[-1] - readings[0] >= 0
    assert device.syncs == 1
    assert readings[1] - 1.0 == pytest.approx(float(readings[1]) - 1.0)  # a plain number: no wait
    assert device.syncs == 1


FAKE = FakeDevice()


@pytest.mark.benchmark(timer=DeviceTimer("fake", sync=FAKE.sync))
def test_pytest_benchmark_rounds_wait_once_each_not_per_iteration(benchmark):
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled in this run")
    FAKE.syncs = FAKE.launches = 0
    benchmark.pedantic(FAKE.launch, args=(0.001,), rounds=5, iterations=4, warmup_rounds=2)
    assert FAKE.syncs == 5 + 2  # one per round, warm-up rounds included; none between iterations
    assert FAKE.launches == (5 + 2) * 4 + 1  # pytest-benchmark makes one untimed call for the result
    samples = benchmark.stats.stats.data  # seconds per iteration
    assert len(samples) == 5
    assert min(samples) >= 0.001


def test_first_call_and_sample_follow_the_protocol():
    device = FakeDevice()
    timer = DeviceTimer("fake", sync=device.sync)
    setups = []
    seconds = first_call(lambda: device.launch(0.002), timer, setup=lambda: setups.append(1))
    assert seconds >= 0.002 and device.syncs == 1 and setups == [1]

    out = rounds(lambda: device.launch(0.001), timer, 3, warmup=2, setup=lambda: setups.append(1))
    assert len(out) == 3 and min(out) >= 0.001
    assert device.syncs == 1 + 5
    assert len(setups) == 1 + 5


def test_unknown_device_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; valid devices: cpu, cuda, mps"):
        DeviceTimer("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        synchronize("tpu")


def test_cpu_timer_measures_a_sleep():
    timer = DeviceTimer("cpu")
    start = timer()
    time.sleep(0.01)
    assert timer() - start >= 0.01
    assert "DeviceTimer(cpu)" in str(timer)


def test_a_thread_count_is_applied_for_the_block_and_the_previous_one_restored():
    before = torch.get_num_threads()
    other = 1 if before != 1 else max_threads()
    with using_threads(other) as n:
        assert n == other == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with using_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored on an error too


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None, True])
def test_a_bad_thread_count_is_refused_and_nothing_changes(bad):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        with using_threads(bad):
            pass
    assert torch.get_num_threads() == before


def test_more_threads_than_cores_is_refused():
    with pytest.raises(ValueError, match="at most"):
        check_threads(max_threads() + 1)


def test_the_clock_follows_device_and_threads_and_is_made_from_its_name():
    assert clock_name("cpu", 1) == "cpu" and clock_name("cpu", 2) == "wall" and clock_name("cuda", 1) == "wall"
    assert isinstance(make_clock("cpu", "cpu"), CpuTimer) and make_clock("cpu", "cpu").clock == "cpu"
    assert isinstance(make_clock("wall", "cpu"), DeviceTimer) and make_clock("wall", "cpu").clock == "wall"
    with pytest.raises(ValueError, match="CPU device only"):
        make_clock("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown clock 'sundial'; valid clocks: wall, cpu"):
        make_clock("sundial", "cpu")


def test_the_cpu_clock_leaves_out_a_sleep_and_the_wall_clock_counts_it():
    """The independent truth: a sleep takes wall time and next to no CPU time. The CPU clock counts
    all the process's threads, and an OpenMP team that an operator woke just before spins for some
    milliseconds a thread before it sleeps: spent once, so the least of three sleeps is free of it."""
    def slept(clock) -> float:
        start = clock()
        time.sleep(0.05)
        return clock() - start

    assert slept(make_clock("wall", "cpu")) >= 0.05
    assert min(slept(make_clock("cpu", "cpu")) for _ in range(3)) < 0.025
