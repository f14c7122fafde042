"""Build kan-fast's C++ kernels into a checked cache folder (the build half of ``kan.native``).

Where and how to build (the compiler, its flags, the cache folder, the build timeout), the
build itself in a process group of its own, the checks made before a cached library may be
loaded (folders opened one at a time without following links, owners and modes, the
library's checksum), and the build lock. Nothing here loads a library or knows its kernels:
``kan.native.library`` does that.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import math
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, NamedTuple

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

SOURCE = Path(__file__).resolve().parents[1] / "_native.cpp"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
# The sanitized build keeps -O3: the same code paths and floating-point contractions as the
# build it checks, so that tests with tight tolerances judge the same arithmetic.
SANITIZE_FLAGS = ("-O3", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-march=native",
                  "-fopenmp", "-shared", "-fPIC", "-std=c++17")
BUILD_TIMEOUT = 300.0  # seconds; $KAN_NATIVE_BUILD_TIMEOUT overrides
_NO = ("0", "false", "no", "off")

# Where this process builds when the cache folder is refused (made on first need), and where
# the line announcing a build goes (stderr unless ``python -m kan.native build`` says stdout).
_where: dict = {"private": None, "notice": None}


class NativeError(RuntimeError):
    """Why the kernels cannot be built, loaded or trusted (one line)."""


# --------------------------------------------------------------------------- where and how to build


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else ``g++``, ``c++`` or ``clang++`` on the PATH."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def sanitized() -> bool:
    """Whether the kernels are built with AddressSanitizer and UBSan (``KAN_NATIVE_SANITIZE=1``)."""
    return os.environ.get("KAN_NATIVE_SANITIZE", "0").lower() not in _NO


def arch() -> str:
    """The CPU the kernels are built for: ``$KAN_NATIVE_ARCH``, else ``native`` (this machine's).

    Another value, such as ``x86-64-v3`` (AVX2 and FMA, no AVX-512), builds the code paths of
    CPUs without this one's vector extensions, so that they can be tested here."""
    value = os.environ.get("KAN_NATIVE_ARCH", "") or "native"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", value):
        raise NativeError(f"KAN_NATIVE_ARCH must name a CPU for the compiler's -march (e.g. x86-64-v3), got {value!r}")
    return value


def flags() -> tuple[str, ...]:
    """The compiler flags of this build."""
    chosen = SANITIZE_FLAGS if sanitized() else FLAGS
    return tuple(f"-march={arch()}" if flag == "-march=native" else flag for flag in chosen)


def cache_dir() -> Path:
    """Where built libraries are kept (before the privacy check: see ``library_path``)."""
    if os.environ.get("KAN_NATIVE_CACHE"):
        return Path(os.environ["KAN_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kan-harness"


MAX_BUILD_TIMEOUT = 86400.0  # a day: more is no limit, and overflows the waits it is passed to


def build_timeout() -> float:
    """Seconds a build may take: ``$KAN_NATIVE_BUILD_TIMEOUT``, else BUILD_TIMEOUT.

    NativeError unless it is a finite number of seconds in (0, MAX_BUILD_TIMEOUT]: ``inf``,
    ``1e400`` or ``nan`` would be no limit (and overflow the waits it is passed to)."""
    text = os.environ.get("KAN_NATIVE_BUILD_TIMEOUT", "")
    if not text:
        return BUILD_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_BUILD_TIMEOUT):
        raise NativeError(f"KAN_NATIVE_BUILD_TIMEOUT must be a number of seconds above 0 and at most "
                          f"{MAX_BUILD_TIMEOUT:g}, got {text!r}")
    return seconds


def _cpu_signature() -> str:
    """The CPU model and feature flags, so ``-march=native`` builds are not shared across CPUs."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(wanted)))


def _run_compiler(arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run the compiler in a process group of its own; on timeout the whole group (driver,
    cc1plus, ld, and whatever they started) is killed and the compiler reaped, within the limit.

    Its output (stdout and stderr together) goes to a temporary file, not a pipe: a pipe
    is open until every process holding it ends, so a grandchild that keeps it would hold
    the caller for as long as it lives, past any limit. Whatever of the group is left when
    the compiler exits is killed too."""
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except OSError as error:
            raise NativeError(f"cannot run {arguments[0]}: {error.strerror or error}") from None
        finished = _exited(process, timeout)
        _kill_group(process.pid)  # the whole group; what is left of it after a normal exit too
        process.wait()
        if not finished:
            raise NativeError(f"{arguments[0]} did not finish within {timeout:g} s "
                              "(KAN_NATIVE_BUILD_TIMEOUT sets the limit)")
        output.seek(0)
        text = output.read().decode(errors="replace")
    return subprocess.CompletedProcess(arguments, process.returncode, text, "")


def _exited(process: subprocess.Popen, timeout: float) -> bool:
    """Whether ``process`` exited within ``timeout`` seconds, leaving it unreaped where the
    platform can (``waitid`` with WNOWAIT): while its leader is a zombie, the process group's
    id cannot name another group, so killing the group afterwards kills only what is ours."""
    if not hasattr(os, "waitid"):
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    pause = 0.001
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(2 * pause, 0.05)
    return True


def _kill_group(group: int) -> None:
    """SIGKILL process group ``group`` (the compiler's, whose leader is not yet reaped)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _key(cxx: str, timeout: float) -> str:
    """What the library depends on: source, compiler and its version, flags, CPU."""
    version = _run_compiler([cxx, "--version"], timeout).stdout
    parts = [SOURCE.read_text(), cxx, version, " ".join(flags()), platform.machine(), _cpu_signature()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the cache folder, checked


def _unsafe(status: os.stat_result, where: str, last: bool) -> str | None:
    """Why a folder of the cache's path is not safe to load code from, or None.

    The cache folder itself must be ours and writable by nobody else. Each folder above it
    must belong to us or to root, and be writable by nobody else unless it is sticky (as
    /tmp is: others may add entries there, but not rename or remove ours); otherwise
    whoever can write it could replace the folders below it between our checks."""
    if not stat.S_ISDIR(status.st_mode):
        return f"{where} is not a folder"
    if last:
        if status.st_uid != os.getuid():
            return f"{where} belongs to another user"
        if status.st_mode & 0o022:
            return f"{where} is writable by group or others"
        return None
    if status.st_uid not in (0, os.getuid()):
        return f"{where}, a folder above the cache folder, belongs to another user"
    if status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX:
        return f"{where}, a folder above the cache folder, is writable by group or others (and not sticky)"
    return None


def _open_folder(folder: Path) -> tuple[int, str | None]:
    """A descriptor of ``folder`` (an absolute path, resolved), opened one folder at a time
    from ``/`` without following links, each checked (``_unsafe``) on the descriptor that
    was opened, so that no check and no later use resolve a path again; and why the folder
    is unsafe, or None. OSError where a folder cannot be opened (a link: ELOOP)."""
    if os.open not in os.supports_dir_fd:
        raise OSError(errno.ENOSYS, "this platform cannot open a file relative to a folder (openat)")
    parts = folder.parts
    fd = os.open(parts[0], _DIRECTORY)
    try:
        problem = _unsafe(os.fstat(fd), parts[0], len(parts) == 1)
        for depth, part in enumerate(parts[1:], start=2):
            child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            problem = problem or _unsafe(os.fstat(fd), str(Path(*parts[:depth])), depth == len(parts))
    except BaseException:
        os.close(fd)
        raise
    return fd, problem


_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` (and the folders above it) are not safe to load code from, or None."""
    try:
        fd, problem = _open_folder(folder)
    except OSError as error:
        return f"cannot open {folder} without following links: {error.strerror or error}"
    os.close(fd)
    return problem


def _temporary_folder() -> Path:
    """A fresh folder of this process only (mode 0700), removed at exit (a loaded library
    stays mapped after its file is gone)."""
    folder = tempfile.mkdtemp(prefix="kan-native-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(os.path.realpath(folder))


def _private_temporary_folder() -> Path:
    """Where this process builds when the cache folder is refused: a folder of its own,
    checked as the cache folder is (NativeError where the temporary folder is unsafe too)."""
    if _where["private"] is None:
        folder = _temporary_folder()
        problem = _folder_problem(folder)
        if problem is not None:
            raise NativeError(f"the temporary folder is unsafe as well: {problem}")
        _where["private"] = folder
    return _where["private"]


def _checksum_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256_of(fd: int) -> tuple[str, bytes]:
    """The sha256 of what is read from descriptor ``fd`` (from its start), and those bytes."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    return hashlib.sha256(data).hexdigest(), data


class _Faulty(NativeError):
    """A library file that is wrong for what it is (missing, changed, not ours alone, no
    kernels, a self-test that fails in a fresh process too), not for where or how this
    process loads it: removing and rebuilding it may help."""


def _open_file(name: str, folder_fd: int) -> int:
    """``name`` in the folder of ``folder_fd``, opened for reading without following a link;
    _Faulty unless it is a regular file of ours that nobody else may write."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=folder_fd)
    except FileNotFoundError:
        raise _Faulty(f"{name} is missing") from None
    except OSError as error:
        raise _Faulty(f"cannot open {name} without following links: {error.strerror or error}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o022:
        os.close(fd)
        raise _Faulty(f"{name} is not a file of ours that only we may write")
    return fd


class Checked(NamedTuple):
    """A library file that passed its checks: an open descriptor of it (the file that was
    hashed) and the bytes read from it."""

    fd: int
    data: bytes


def _check(library: Path) -> Checked:
    """Open ``library`` as described in ``_open_folder`` and ``_open_file``, and compare the
    sha256 of the bytes read from that descriptor with its checksum file: the descriptor,
    for loading that same file. _Faulty where the files are wrong, NativeError where the
    folder is unsafe."""
    try:
        folder_fd, problem = _open_folder(library.parent)
    except OSError as error:
        raise NativeError(f"cannot open {library.parent} without following links: {error.strerror or error}") \
            from None
    try:
        if problem is not None:
            raise NativeError(problem)
        checksum_fd = _open_file(_checksum_path(library).name, folder_fd)
        try:
            recorded = _sha256_of(checksum_fd)[1].decode(errors="replace").split()
        finally:
            os.close(checksum_fd)
        fd = _open_file(library.name, folder_fd)
        digest, data = _sha256_of(fd)
        if not recorded or recorded[0] != digest:
            os.close(fd)
            raise _Faulty(f"{library.name} does not match its checksum (truncated or changed)")
        return Checked(fd, data)
    finally:
        os.close(folder_fd)


def _remove(library: Path) -> None:
    for path in (library, _checksum_path(library)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _compile(cxx: str, target: Path, timeout: float) -> None:
    """Compile the source into ``target``, with its checksum beside it; both by rename, so a
    reader never sees a partial file, and the checksum before the library it vouches for."""
    print("kan.native: building kan-fast's C++ kernels, about 30 s, once", file=_where["notice"] or sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        result = _run_compiler([cxx, *flags(), str(SOURCE), "-o", str(built)], timeout)
        if result.returncode != 0:
            lines = result.stdout.strip().splitlines()
            errors = [line for line in lines if "error" in line] or lines or [f"exit {result.returncode}"]
            raise NativeError(f"{cxx} failed: {errors[0]}")
        if not built.is_file():
            raise NativeError(f"{cxx} exited 0 but wrote no {built.name}")
        os.chmod(built, 0o755)
        checksum = Path(scratch) / "checksum"
        digest = hashlib.sha256(built.read_bytes()).hexdigest()
        checksum.write_text(f"{digest}  {target.name}\n")
        os.chmod(checksum, 0o644)
        os.replace(checksum, _checksum_path(target))
        os.replace(built, target)


def _lock_path(library: Path) -> Path:
    return library.with_name(library.name + ".lock")


@contextlib.contextmanager
def _build_lock(library: Path, timeout: float) -> Iterator[None]:
    """Hold the build lock of ``library`` (``fcntl.flock`` on ``<library>.lock`` beside it),
    so that processes starting at once build it once: the others wait, then find it built.
    One lock per library: building one (the sanitized build, another compiler's) never
    holds up the use of another. A holder builds for at most ``timeout``; waiting longer
    than twice that is a NativeError. The kernel releases the lock of a process that dies."""
    if fcntl is None:  # not POSIX: no lock, as before it
        yield
        return
    lock = _lock_path(library)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as error:
        raise NativeError(f"cannot open the build lock {lock}: {error.strerror or error}") from None
    try:
        deadline = time.monotonic() + 2 * timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NativeError(f"another process held the build lock {lock} for over "
                                      f"{2 * timeout:g} s (twice KAN_NATIVE_BUILD_TIMEOUT)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


class Place(NamedTuple):
    """Where this process's library is: its path, and why the cache folder was refused (or None)."""

    library: Path
    refused: str | None


def library_path() -> Place:
    """The library for this source, compiler, flags and CPU, in the cache folder (resolved
    once, here: links in its path are followed now and never again), or in a private
    temporary folder when the cache folder or a folder above it is unsafe (``_unsafe``)."""
    cxx = compiler()
    if cxx is None:
        raise NativeError("no C++ compiler found (set CXX or install g++)")
    key = _key(cxx, build_timeout())
    folder = cache_dir()
    if not folder.exists():
        try:
            folder.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass  # another process made it between the look and the make; its safety is checked below
        except OSError as error:
            raise NativeError(f"cannot create the cache folder {folder}: {error.strerror}") from None
    folder = Path(os.path.realpath(folder))
    refused = _folder_problem(folder)
    if refused is not None:
        folder = _private_temporary_folder()
    prefix = "kan_native_asan" if sanitized() else "kan_native"
    return Place(folder / f"{prefix}_{key}.so", refused)
