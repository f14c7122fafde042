"""py-spy: sample the scenarios in a child process, and the time of each part.

py-spy runs ``python -m profiles.scenario ...`` as its own child (``py-spy record --
python ...``: nothing is attached to a running process), with ``--idle`` so that a
thread waiting for the device still counts (the samples measure wall time) and
``--native`` where py-spy supports it (Linux, Windows), so that C++ frames
(``at::_ops::linear::call``, ``torch::autograd::Engine::...``, BLAS ``sgemm``) are on
the stacks. One child runs every phase of one model on one device; the samples are
split by scenario afterwards: a sample belongs to a scenario when its stack passes
through :func:`profiles.scenario.measured` and then that scenario's step function.
Each scenario's samples are written as a speedscope JSON and a flame graph SVG.

Attribution. A sample belongs to the part of the outermost matching frame on its
stack (profiles.attribution); inside the backward, to the gradient its innermost
node frame names (``torch::autograd::generated::MmBackward0::apply``, by the node
table NODE_RULES: a node's name, not where its forward operator ran, so two parts'
nodes of one kind count as one part's), else to ``autograd``. A sample no part claims is "python" when its innermost
frame is Python code or the interpreter (libpython), and "other" when it is in
another library. Without native frames py-spy cannot tell a Python line from the C
call it makes, and unclaimed samples are all "other".

Faults. A missing py-spy, or one not permitted to trace (no ptrace in a container,
macOS without sudo), raises :class:`Unavailable` with one line saying how to enable it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from profiles.attribution import classify, classify_gradient, outermost_part, resolve

ROOT = Path(__file__).resolve().parents[1]  # the repository, where `python -m profiles.scenario` runs

HOW_TO_INSTALL = "install it with `pip install py-spy`"
HOW_TO_PERMIT = (
    "run as root (Linux), with `--cap-add SYS_PTRACE` added to `docker run` in a container, "
    "or with `sudo` on macOS"
)


class Unavailable(RuntimeError):
    """py-spy is missing or may not trace processes here; the message says how to enable it."""


def executable() -> str | None:
    """The py-spy program: on PATH, or beside this Python (a virtual environment's bin/)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / ("py-spy.exe" if sys.platform == "win32" else "py-spy")
    return str(beside) if beside.exists() else None


def native_supported() -> bool:
    return sys.platform.startswith("linux") or sys.platform == "win32"


_NOT_PERMITTED = re.compile(r"permission denied|operation not permitted|ptrace|sudo|requires root", re.I)


def _run_in_own_group(command: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    """Run ``command`` (py-spy, which starts the scenario child) in a process group of its own, so
    that past ``timeout`` seconds both are stopped, not py-spy alone (the child would run on,
    holding the device); ``RuntimeError`` saying so then."""
    posix = os.name == "posix"
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=posix)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if posix:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.communicate()
        raise RuntimeError(f"py-spy and its child ran past {timeout:g} s and were stopped") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def record(
    args: Sequence[str], output: Path, rate: int = 100, native: bool | None = None,
    program: str | None = None, timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """``py-spy record`` the scenario child with ``args`` into speedscope JSON ``output``.

    ``Unavailable`` when py-spy is missing or not permitted; ``RuntimeError`` with
    py-spy's last line when it fails otherwise (a scenario that failed in the child is
    not an error here: the output still holds the other scenarios' samples).
    """
    program = program or executable()
    if program is None:
        raise Unavailable(f"py-spy is not installed: {HOW_TO_INSTALL}")
    native = native_supported() if native is None else native
    command = [program, "record", "--format", "speedscope", "--output", str(output),
               "--rate", str(rate), "--idle", *(["--native"] if native else []),
               "--", sys.executable, "-m", "profiles.scenario", *args]
    try:
        done = _run_in_own_group(command, timeout)
    except FileNotFoundError:
        raise Unavailable(f"py-spy is not installed ({program} not found): {HOW_TO_INSTALL}") from None
    except PermissionError:
        raise Unavailable(f"py-spy could not be started ({program}): {HOW_TO_PERMIT}") from None
    if output.exists() and output.stat().st_size > 0:
        return done
    said = (done.stderr or done.stdout or "").strip()
    if done.returncode != 0 and _NOT_PERMITTED.search(said):
        raise Unavailable(f"py-spy is not permitted to trace processes here: {HOW_TO_PERMIT}")
    last = said.splitlines()[-1] if said else f"exit status {done.returncode}"
    raise RuntimeError(f"py-spy wrote no profile: {last}")


@dataclass
class Samples:
    """Sampled stacks: frames (name, file), stacks of frame indices (root first), seconds each."""

    frames: list[tuple[str, str]]
    stacks: list[tuple[int, ...]]
    weights: list[float]

    @property
    def seconds(self) -> float:
        return float(sum(self.weights))

    @property
    def native(self) -> bool:
        """Whether the stacks hold native (C/C++) frames, i.e. py-spy ran with --native."""
        return any(not _is_python_code(file) for _, file in self.frames
                   if file and not _is_interpreter(file))


def read(path: Path | str) -> Samples:
    """Every thread's samples from a py-spy speedscope JSON file."""
    try:
        doc = json.loads(Path(path).read_text())
        frames = [(f["name"], f.get("file") or "") for f in doc["shared"]["frames"]]
        stacks, weights = [], []
        for p in doc["profiles"]:
            if p.get("type") != "sampled":
                continue
            stacks += [tuple(s) for s in p["samples"]]
            weights += [float(w) for w in p["weights"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a py-spy speedscope profile ({type(e).__name__}: {e})") from None
    return Samples(frames, stacks, weights)


def _in_scenario_module(file: str) -> bool:
    return file.replace("\\", "/").endswith("profiles/scenario.py")


def _is_measured(frame: tuple[str, str]) -> bool:
    name, file = frame
    return name == "measured" and _in_scenario_module(file)


def select(samples: Samples, step_name: str) -> Samples:
    """The samples of one scenario: stacks through ``measured`` and then step function ``step_name``.

    The step function is the frame ``measured`` calls, in profiles/scenario.py: a frame
    of the same name deeper down is not it (the loops call the core's ``train_step``,
    which must not put their samples in the train phase's).
    """
    step_frames = {i for i, (name, file) in enumerate(samples.frames)
                   if name == step_name and _in_scenario_module(file)}
    measured_frames = {i for i, f in enumerate(samples.frames) if _is_measured(f)}
    stacks, weights = [], []
    for stack, weight in zip(samples.stacks, samples.weights):
        for depth, i in enumerate(stack):
            if i in measured_frames:
                if depth + 1 < len(stack) and stack[depth + 1] in step_frames:
                    stacks.append(stack[depth + 1:])  # the measured step, from its step function down
                    weights.append(weight)
                break
    return Samples(samples.frames, stacks, weights)


def _is_python_code(file: str) -> bool:
    return file.endswith((".py", ".pyw")) or file.startswith("<")


def _is_interpreter(file: str) -> bool:
    return bool(re.search(r"libpython|[/\\]python[\d.]*(?:\.exe)?$|python\d*\.dll", file))


def attribute(samples: Samples) -> dict[str, float]:
    """Seconds per part in ``samples`` (see the module's docstring for the rules)."""
    parts = [classify(name, file) for name, file in samples.frames]
    gradients = [classify_gradient(name, file) for name, file in samples.frames]
    native = samples.native
    seconds: dict[str, float] = defaultdict(float)
    for stack, weight in zip(samples.stacks, samples.weights):
        part = outermost_part(parts[i] for i in stack)
        part = resolve(part, outermost_part(gradients[i] for i in reversed(stack)))
        if part is None:
            _, leaf_file = samples.frames[stack[-1]] if stack else ("", "")
            python = _is_python_code(leaf_file) or _is_interpreter(leaf_file)
            part = "python" if native and python else "other"
        seconds[part] += weight
    return dict(seconds)


def write_speedscope(samples: Samples, path: Path, name: str) -> Path:
    """``samples`` as a speedscope JSON file (only the frames they use)."""
    used = sorted({i for stack in samples.stacks for i in stack})
    index = {old: new for new, old in enumerate(used)}
    doc = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "kan-harness profiles (py-spy samples)",
        "activeProfileIndex": 0,
        "shared": {"frames": [{"name": samples.frames[i][0], "file": samples.frames[i][1]} for i in used]},
        "profiles": [{
            "type": "sampled", "name": name, "unit": "seconds",
            "startValue": 0, "endValue": samples.seconds,
            "samples": [[index[i] for i in stack] for stack in samples.stacks],
            "weights": samples.weights,
        }],
    }
    path.write_text(json.dumps(doc))
    return path
