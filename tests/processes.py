"""Whether a process the tests started, and then stopped, has ended."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended: absent, or a zombie that its new parent has yet to reap
    (in a container whose first process does not reap orphans, a killed grandchild stays one, and
    ``os.kill(pid, 0)`` still finds it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_until_gone(pid: int, seconds: float = 30.0) -> bool:
    """Whether process ``pid`` ends within ``seconds`` (:func:`gone`)."""
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
