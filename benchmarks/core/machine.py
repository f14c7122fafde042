"""What the machine is and how busy it is: the environment recorded with every run (versions,
devices, CPU, threads, load, commit), its label in merged reports, and the load probes that
the commands' busy-machine warnings read."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.core.git import commit_info

def cpu_model() -> str:
    """The CPU's marketing name where the platform tells it, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Everything that changes numbers, read now: versions, build, devices, CPU, threads, commit."""
    import torch  # imported here so that reading records does not need torch

    devices = [{"type": "cpu", "name": cpu_model()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"type": "cuda", "index": i, "name": props.name,
                            "memory_bytes": props.total_memory,
                            "capability": f"{props.major}.{props.minor}"})
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append({"type": "mps", "name": f"Apple {platform.machine()} GPU"})
    return {
        "machine": machine_label(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),  # other work competing for the CPU when the run began
        "torch": {
            "version": torch.__version__,
            "git": getattr(torch.version, "git_version", None),
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "debug": bool(torch.version.debug),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "config": torch.__config__.show().strip().splitlines()[:3],
        },
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "devices": devices,
        "commit": commit_info(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages where the platform tells them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def idle_cores(interval: float = 0.5) -> float | None:
    """How many of this process's cores sat idle over the next ``interval`` seconds (Linux's
    /proc/stat); None where the platform does not tell."""
    import time

    def busy_and_total() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    first = busy_and_total()
    if first is None:
        return None
    time.sleep(interval)
    second = busy_and_total()
    total = second[1] - first[1]
    if total <= 0:
        return None
    cores = os.cpu_count() or 1
    return round(cores * (1 - (second[0] - first[0]) / total), 2)


def machine_label() -> str:
    """A name for this machine in merged reports: ``$KAN_MACHINE`` or the host name."""
    return os.environ.get("KAN_MACHINE") or socket.gethostname()
