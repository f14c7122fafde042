"""Entry points: `nox -s tests`, and the harness sessions.

All sessions share one virtual environment, `.nox/harness`, so that torch (hundreds
of MB to several GB) is installed once, not once per session. It is rebuilt when
pyproject.toml or the torch requirement changes.

Which torch: `$KAN_TORCH` when set, as pip arguments (for example
`KAN_TORCH="torch --index-url https://download.pytorch.org/whl/cpu"` for the CPU-only
build on a machine without a GPU, or `KAN_TORCH=torch==2.13.0` where a CPU-only wheel of
that version is at hand), else plain `torch` from the package index, which on Linux is
the CUDA build (several GB). To use an environment you already have instead, set
`KAN_PYTHON=/path/to/python` (that environment needs `pip install -e '.[test]'`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"

ROOT = Path(__file__).parent
HARNESS_ENV = ROOT / ".nox" / "harness"
# On Ctrl-C the terminal interrupts nox and the command it runs (one process group). nox's own
# habit is to wait 0.3 s and then terminate and kill the command, which loses what a bench run
# writes as it stops (its table, its summary, the mark that it is partial). The harness's commands
# stop themselves on Ctrl-C, so the sessions wait for them; a second Ctrl-C stops the waiting.
WAIT_ON_INTERRUPT = {"interrupt_timeout": None}


def harness_python(session: nox.Session) -> str:
    """The interpreter of the shared environment, created or updated as needed."""
    if os.environ.get("KAN_PYTHON"):
        return os.environ["KAN_PYTHON"]
    torch_spec = os.environ.get("KAN_TORCH", "torch")
    python = HARNESS_ENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    wanted = hashlib.sha256(
        ((ROOT / "pyproject.toml").read_bytes() + torch_spec.encode())
    ).hexdigest()
    stamp = HARNESS_ENV / "installed.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    if "KAN_TORCH" not in os.environ and sys.platform == "linux" and not _nvidia_driver():
        session.log("no NVIDIA driver here: the default torch is the CUDA build (about 4 GB of it unused); "
                    "KAN_TORCH='torch --index-url https://download.pytorch.org/whl/cpu' takes the CPU build")
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(HARNESS_ENV), external=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    session.run(*pip, *shlex.split(torch_spec), external=True)
    session.run(*pip, "-e", f"{ROOT}[test]", external=True)
    stamp.write_text(wanted)
    return str(python)


def _nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def run_command(session: nox.Session, python: str, *args: str, success_codes=(0,)) -> Path | None:
    """Run ``python -m ARGS`` and return the run folder it wrote (``$KAN_RUN_FILE``), or None."""
    with tempfile.TemporaryDirectory() as scratch:
        run_file = Path(scratch) / "run"
        session.run(python, "-m", *args, external=True, success_codes=list(success_codes),
                    env={"KAN_RUN_FILE": str(run_file)}, **WAIT_ON_INTERRUPT)
        return Path(run_file.read_text().strip()) if run_file.exists() else None


def build_kernels(session: nox.Session, python: str) -> None:
    """Build kan-fast's C++ kernels now (once per source, compiler and CPU), so that no
    test or measurement waits for the build inside its first forward. A failed build is said in
    one line; the PyTorch paths then run instead."""
    session.run(python, "-m", "kan.native", "build", external=True, success_codes=[0, 1])


def render(session: nox.Session, python: str, run: Path) -> None:
    session.run(python, "-m", "reports", "--run", str(run), external=True)


@nox.session
def sanitize(session: nox.Session) -> None:
    """kan-fast's kernel tests against an AddressSanitizer/UBSan build of the kernels (tests/sanitize.sh).

    Its own build (a separate cache entry) takes minutes; pytest arguments pass through.
    """
    python = harness_python(session)
    session.run("sh", str(ROOT / "tests" / "sanitize.sh"), *session.posargs, external=True, env={"PYTHON": python})


# The kernels' own tests (tests/sanitize.sh runs the same ones under the sanitizers).
KERNEL_TESTS = ("tests/test_native.py", "tests/test_nonfinite.py", "tests/test_native_values.py",
                "tests/test_native_self_test.py")


@nox.session
def portable(session: nox.Session) -> None:
    """kan-fast's kernel tests against a build for x86-64 CPUs without AVX-512 (KAN_NATIVE_ARCH=x86-64-v3).

    The default build is for this machine's CPU: where it has AVX-512, the kernels' other vector
    paths (those of AVX2 CPUs) would otherwise go untested. Pytest arguments pass through.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        session.skip(f"x86-64 builds only; this machine is {platform.machine()}")
    python = harness_python(session)
    env = {"KAN_NATIVE_ARCH": "x86-64-v3"}
    session.run(python, "-m", "kan.native", "build", external=True, env=env)
    session.run(python, "-m", "pytest", *KERNEL_TESTS, "-m", "not slow or sweep", "-q", "-p", "no:cacheprovider",
                *session.posargs, external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the project's tests (pytest arguments pass through: `nox -s tests -- -k fast`).

    The whole suite by default (what .ci/run runs); `nox -s tests -- -m "not slow"` is the quick
    run, with a covering sample of each large parametrised sweep (tests/conftest.py). The tests
    run in one worker process per CPU (pytest-xdist); `-- -n 0` runs them in one process (for
    `--pdb`, `-s`)."""
    python = harness_python(session)
    build_kernels(session, python)
    workers = parallel(session, python)
    # One worker per CPU, each with torch's threads: a thread that spins at an operator's barrier
    # (OpenMP's default while it waits) takes a CPU that another worker needs.
    waiting = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")} if workers else {}
    session.run(python, "-m", "pytest", *workers, *session.posargs, external=True, env=waiting)


def parallel(session: nox.Session, python: str) -> list[str]:
    """pytest-xdist's option for one worker process per CPU this process may use, where that
    environment has pytest-xdist (the test extra); else none, and the tests run in one process."""
    found = session.run(python, "-c", "import importlib.util as u; print(u.find_spec('xdist') is not None)",
                        external=True, silent=True)
    if (found or "").strip() != "True":
        session.log("pytest-xdist is not installed in that environment (pip install -e '.[test]'): "
                    "the tests run in one process")
        return []
    return ["-n", "auto"]


@nox.session
def bench(session: nox.Session) -> None:
    """Time every registered model on every device present, into a new run folder under results/.

    Arguments pass through: `nox -s bench -- --suite full --device cuda --model kan,mlp`;
    `nox -s bench -- --help` lists the choices. The run is then rendered as a report (the
    session finds it through `$KAN_RUN_FILE`, never by listing results/). Ctrl-C stops the
    suite and keeps what finished: the session waits while the bench writes its table and
    summary and marks the run partial.
    """
    python = harness_python(session)
    build_kernels(session, python)
    folder = run_command(session, python, "benchmarks", *session.posargs, success_codes=(0, 1))
    if folder is None:
        return
    record = _record()
    run = record.Run(folder)
    if run.has_bench():
        render(session, python, folder)
    failed = [r for r in run.read_jsonl(record.MEASUREMENTS) if r.get("status") in ("error", "nonfinite")]
    if failed:
        session.error(f"{len(failed)} measurement(s) failed (error or NaN/inf output); see {folder}")


def _record():
    """The run-folder module, through which a session reads the run a command wrote (it imports
    the standard library only)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.core import record

    return record


@nox.session
def gate(session: nox.Session) -> None:
    """Speed gate: the working tree against a base commit (`nox -s gate -- --base HEAD~1`).

    Exit 1 on a significant slowdown, 2 when the gate cannot run; see benchmarks/gate/cli.py.
    """
    python = harness_python(session)
    build_kernels(session, python)
    session.run(python, "-m", "benchmarks.gate", *session.posargs, external=True, **WAIT_ON_INTERRUPT)


@nox.session
def report(session: nox.Session) -> None:
    """Render a run as one self-contained HTML page, report.html in its folder.

    `nox -s report` renders the newest run with the newest bench, profile, quality and gate
    runs of its machine and commit, on one page; `nox -s report -- RUN` a named one (run id
    or folder); `-- --against OLD_RUN` adds a new/old comparison per benchmark; `-- --merge
    RUN ...` puts runs from other machines (or a suite's shards) on the same page.
    `-- --help` for the rest.
    """
    python = harness_python(session)
    session.run(python, "-m", "reports", *session.posargs, external=True)


@nox.session
def profile(session: nox.Session) -> None:
    """Where the time goes: cProfile, py-spy and torch.profiler, and the attribution table.

    `nox -s profile` profiles the reference KAN [784, 64, 10], batch 1024, on the CPU in
    every phase with all three profilers, into a new run folder under results/; arguments
    pass through: `nox -s profile -- --model kan mlp --device cuda --phase train loop`
    (`-- --help` lists them). The run is then rendered as a report. Fails when a scenario failed or a requested profiler could not
    run here (py-spy missing or not permitted; the message says how to enable it).
    """
    python = harness_python(session)
    build_kernels(session, python)
    folder = run_command(session, python, "profiles", *session.posargs, success_codes=(0, 1, 3))
    run = _record().Run(folder) if folder is not None else None
    if run is None or not run.has("profile.json"):
        return
    if run.has("attribution.csv"):
        render(session, python, folder)
    outcome = run.read_json("profile.json")
    problems = outcome.get("failures", []) + [
        f"{name}: {said}" for name, said in outcome.get("profilers", {}).items() if said != "ok"
    ]
    if problems:
        session.error("; ".join(problems))


@nox.session
def quality(session: nox.Session) -> None:
    """Accuracy next to training time: every registered model trained on fixed tasks, into a new run folder.

    Arguments pass through: `nox -s quality -- --budget quick --task digits --model kan,fourier-kan`;
    `nox -s quality -- --help` lists the tasks and budgets. The run is then rendered as a report.
    """
    python = harness_python(session)
    build_kernels(session, python)
    run = run_command(session, python, "benchmarks.quality", *session.posargs, success_codes=(0, 1))
    if run is not None:
        render(session, python, run)


@nox.session(name="all")
def all_sessions(session: nox.Session) -> None:
    """Bench, profile and quality with their defaults, then one page of the three (`nox -s all`).

    Each step's failures are reported at the end; the page shows whatever finished.
    """
    python = harness_python(session)
    build_kernels(session, python)
    failed = []
    for what, command, ok in (("bench", ["benchmarks"], (0, 1)), ("profile", ["profiles"], (0, 1, 3)),
                              ("quality", ["benchmarks.quality"], (0, 1))):
        codes = (*ok, 2, 130)  # the page still shows what the others made
        folder = run_command(session, python, *command, success_codes=codes)
        if folder is None:
            failed.append(f"{what} wrote no run")
    session.run(python, "-m", "reports", external=True)
    if failed:
        session.error("; ".join(failed))


def peer_python(session: nox.Session, name: str) -> str:
    """The interpreter of a peer's own environment, ``.nox/peer-NAME``, made or updated as needed:
    the torch of ``$KAN_TORCH``, the peer pinned, and what it imports. A failing install ends the
    session in one line, exit 2."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.catalog import PEERS  # the standard library only, at import

    peer = PEERS[name]
    env = ROOT / ".nox" / f"peer-{name}"
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    torch_spec = os.environ.get("KAN_TORCH", "torch")
    wanted = hashlib.sha256(" ".join([torch_spec, peer.spec, *peer.needs]).encode()).hexdigest()
    stamp = env / "installed.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    try:
        if not python.exists():
            session.run(sys.executable, "-m", "venv", str(env), external=True, silent=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        session.run(*pip, *shlex.split(torch_spec), *peer.needs, external=True, silent=True)
        session.run(*pip, "--no-deps", peer.spec, external=True, silent=True)
    except nox.command.CommandFailed as e:
        print(f"peers: installing {peer.spec} into {env} failed ({e.reason or 'pip failed'}); "
              f"rerun with -v to see pip's output", file=sys.stderr)
        raise SystemExit(2)
    stamp.write_text(wanted)
    return str(python)


@nox.session
def peers(session: nox.Session) -> None:
    """Other KAN packages (pykan, flashkan, inkan) timed beside ours, each in its own environment.

    `nox -s peers` builds `.nox/peer-<name>` for each (pinned; its own torch, as $KAN_TORCH
    says) and runs `python -m benchmarks.peers` with them; `-- --peer flashkan --grids 5,50`
    chooses, `-- --help` lists the rest. The run is then rendered.
    """
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.catalog import PEERS

    chosen = list(PEERS)
    if "--peer" in session.posargs[:-1]:
        chosen = [p.strip() for p in session.posargs[session.posargs.index("--peer") + 1].split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        print(f"peers: unknown peer {unknown[0]!r}; valid peers: {', '.join(PEERS)}", file=sys.stderr)
        raise SystemExit(2)
    python = harness_python(session)
    if {"-h", "--help"} & set(session.posargs):  # the choices, without building the peers' environments
        session.run(python, "-m", "benchmarks.peers", "--help", external=True)
        return
    build_kernels(session, python)
    interpreters = [f"--python={name}={peer_python(session, name)}" for name in chosen]
    run = run_command(session, python, "benchmarks.peers", *interpreters, *session.posargs, success_codes=(0, 130))
    if run is not None:
        render(session, python, run)
