"""Build, check, load and call the fast KAN's CPU kernels (``kan/_native.cpp``).

The kernels are plain C++ with OpenMP and no PyTorch headers: they take data
pointers, so one ``g++`` call builds them (every spline order from 0 to MAX_ORDER,
float and double), without PyTorch's headers, whose parsing lengthens the build, and
without a tie to the installed torch's C++ ABI, so that a torch upgrade needs no rebuild. They are built on first use, or ahead of it by
``python -m kan.native build``, into a cache folder (``$KAN_NATIVE_CACHE``, else
``$XDG_CACHE_HOME/kan-harness`` or ``~/.cache/kan-harness``), one file per source,
compiler, flags and CPU, with its sha256 beside it. They are loaded with ``ctypes``
after ``torch``, so they share the OpenMP runtime that ``torch`` loaded and its thread
pool. ``python -m kan.native status`` says where the library is and whether it is
current and sound.

Before a cached library is loaded (``dlopen`` runs its constructors), the cache folder
(resolved once) must belong to this user and be writable by nobody else, every folder
above it must belong to this user or root and be writable by nobody else unless sticky,
and the file must be ours and match its recorded checksum. These checks are made on
descriptors opened one folder at a time without following links, and the library is
loaded from the very descriptor whose bytes were hashed (``/proc/self/fd/N``), so no path
is resolved twice. After loading, a self-test compares every kernel with the PyTorch
formulas on a small input, in a clean state (no autocast, dispatch or torch-function
modes, grad mode on, float32 default): a library that fails it in a fresh process as well
is removed and rebuilt once; one that fails only in this process is kept. A build lock
(``flock`` on a file in the cache folder) makes processes that start together build once.
A folder that is not safe is refused with a warning, and the library is built into a
fresh private temporary folder instead. A build that outlasts
``$KAN_NATIVE_BUILD_TIMEOUT`` seconds (default 300, at most a day) is stopped, its whole
process group killed. Whenever the kernels
cannot be used, one warning says why and callers take the PyTorch paths in ``kan.fast``,
which compute the same function. ``KAN_NATIVE=0``, read once at import, turns them off.
docs/native-kernels.md tells the whole of it.
``KAN_NATIVE_SANITIZE=1`` builds them with AddressSanitizer and UBSan (a separate cache
entry; run Python with the ASan runtime preloaded, as ``tests/sanitize.sh`` does).

Each kernel is a PyTorch operator ``kan_native::<kernel>``, declared once in
:data:`KERNELS`: the C parameters in order, from which both the ``ctypes`` argument
types and the operator's schema are derived. Pointers become tensors (``const`` ones
inputs, the others written in place), sizes and strides are derived from the tensors'
shapes, and every call checks dtypes, shapes and contiguity before a pointer reaches
C++, so a wrong call is a ``ValueError``, not corrupted memory. The operators write
into tensors their callers allocate (the dense path reuses one cache-sized buffer, the
weight scaling writes into strided views), so they are out-style and have no autograd
formula of their own: gradients come from the layers' ``autograd.Function``s in
``kan.fast``, whose backward passes combine several kernels (the spline weight and
scaler gradients straight from the gather sums) in ways no per-kernel formula gives.
They are defined with ``torch.library.Library`` rather than ``torch.library.custom_op``,
whose Python autograd and mutation wrappers cost several times the dispatch itself on
every call (the C++ work of a small layer is of the same order); ``register_fake``
gives each one its shape checks for fake tensors and ``torch.compile``, and
``torch.library.opcheck`` checks them (tests/test_native.py). The Python functions
below allocate the outputs and call the operators by keyword: through the dispatcher
where torch.compile, export or a dispatch mode (fake tensors) may be watching, else
straight into the operator's implementation, the same checks and C call without the
dispatcher's cost per call.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import math
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

import torch

from kan.regions import region

SOURCE = Path(__file__).with_name("_native.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
# The sanitized build keeps -O3: the same code paths and floating-point contractions as the
# build it checks, so that tests with tight tolerances judge the same arithmetic.
SANITIZE_FLAGS = ("-O3", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-march=native",
                  "-fopenmp", "-shared", "-fPIC", "-std=c++17")
MAX_ORDER = 7  # the highest spline order the kernels are built for (kMaxOrder in _native.cpp)
BUILD_TIMEOUT = 300.0  # seconds; $KAN_NATIVE_BUILD_TIMEOUT overrides
_NO = ("0", "false", "no", "off")
ENABLED = os.environ.get("KAN_NATIVE", "1").lower() not in _NO  # read once: KAN_NATIVE=0 turns the kernels off

_state: dict = {"functions": None, "error": None, "path": None, "max_order": MAX_ORDER, "opened": set(),
               "private": None, "notice": None}
_lock = threading.RLock()


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


def flags() -> tuple[str, ...]:
    """The compiler flags of this build."""
    return SANITIZE_FLAGS if sanitized() else FLAGS


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
    if _state["private"] is None:
        folder = _temporary_folder()
        problem = _folder_problem(folder)
        if problem is not None:
            raise NativeError(f"the temporary folder is unsafe as well: {problem}")
        _state["private"] = folder
    return _state["private"]


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


def _between_check_and_load(library: Path) -> None:
    """Called after ``library`` was checked and before it is loaded: nothing happens here;
    tests swap the cache folder at this point to show that what is loaded is what was checked."""


def _remove(library: Path) -> None:
    for path in (library, _checksum_path(library)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _compile(cxx: str, target: Path, timeout: float) -> None:
    """Compile the source into ``target``, with its checksum beside it; both by rename, so a
    reader never sees a partial file, and the checksum before the library it vouches for."""
    print("kan.native: building kan-fast's C++ kernels, about 30 s, once", file=_state["notice"] or sys.stderr,
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
        except OSError as error:
            raise NativeError(f"cannot create the cache folder {folder}: {error.strerror}") from None
    folder = Path(os.path.realpath(folder))
    refused = _folder_problem(folder)
    if refused is not None:
        folder = _private_temporary_folder()
    prefix = "kan_native_asan" if sanitized() else "kan_native"
    return Place(folder / f"{prefix}_{key}.so", refused)


def _dlopen(checked: Checked, library: Path) -> ctypes.CDLL:
    """Load the file behind ``checked.fd``, the one that was hashed, never a path resolved
    again: ``/proc/self/fd/N`` names that open file. ``dlopen`` returns an already loaded
    library for a name it loaded before, so each load gets a descriptor number not used
    by an earlier one. Where there is no /proc (macOS), the bytes that were hashed are
    written to a fresh private folder and loaded from there."""
    try:
        if not os.path.isdir("/proc/self/fd"):
            path = _temporary_folder() / library.name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
            with os.fdopen(descriptor, "wb") as file:
                file.write(checked.data)
            _state["opened"].add(str(path))
            return ctypes.CDLL(str(path))
        spare, fd = [], checked.fd
        try:
            while f"/proc/self/fd/{fd}" in _state["opened"]:
                fd = fcntl.fcntl(checked.fd, fcntl.F_DUPFD_CLOEXEC, fd + 1)
                spare.append(fd)
            _state["opened"].add(f"/proc/self/fd/{fd}")
            return ctypes.CDLL(f"/proc/self/fd/{fd}")
        finally:
            for extra in spare:
                os.close(extra)
    finally:
        os.close(checked.fd)


def _bind(library: ctypes.CDLL) -> dict:
    """Every kernel's C function for float32 and float64, with its argument types."""
    functions = {}
    for name, params in KERNELS.items():
        argtypes = [_CTYPES[p.c] for p in params]
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            try:
                function = getattr(library, f"kan_{name}_{suffix}")
            except AttributeError:
                raise NativeError(f"the library lacks kan_{name}_{suffix}") from None
            function.argtypes = argtypes
            function.restype = None
            functions[name, dtype] = function
    try:
        _state["max_order"] = min(MAX_ORDER, int(library.kan_max_order_f32()))
    except AttributeError:
        raise NativeError("the library lacks kan_max_order_f32") from None
    return functions


@contextlib.contextmanager
def _clean_state() -> Iterator[None]:
    """The state the self-test runs in, whatever the caller's: no autocast, no dispatch
    modes (fake tensors, export's and make_fx's tracing), no torch-function modes (a
    default device set by ``torch.set_default_device``, export's non-strict tracing),
    grad mode on outside inference mode, float32 as the default dtype. The self-test makes
    its own tensors on the CPU; under the caller's state it would fail for reasons that
    are not the library's (and a failed self-test removes the library)."""
    from torch.utils._python_dispatch import _disable_current_modes

    dtype = torch.get_default_dtype()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_disable_current_modes())
        stack.enter_context(torch._C.DisableTorchFunction())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(dtype)


def _self_test_clean() -> str | None:
    """``_self_test`` in ``_clean_state``: what differs, or None."""
    with _clean_state():
        return _self_test()


def _load_checked(library: Path, confirm: bool = True) -> dict:
    """Check, load, bind and self-test ``library``: its bound functions (in _state too).

    _Faulty where the file itself is wrong (missing, changed, no kernels, a failed
    self-test, confirmed in a fresh process where ``confirm``); NativeError where it is
    unsafe to load from here, or its self-test failed here but not in a fresh process."""
    checked = _check(library)
    _between_check_and_load(library)
    try:
        functions = _bind(_dlopen(checked, library))
    except (OSError, NativeError) as error:
        raise _Faulty(str(error)) from None
    _state["functions"] = functions
    try:
        problem = _self_test_clean()
    except Exception as error:  # a kernel that fails its own checks, or anything the test raises
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        _state["functions"] = None
        if confirm and _self_test_in_a_fresh_process(library) is None:
            raise NativeError(f"the self-test failed in this process ({problem}) but passed in a fresh one, "
                              "so the library is kept; something in this process's state disturbs it")
        raise _Faulty(problem)
    return functions


def _self_test_in_a_fresh_process(library: Path) -> str | None:
    """Check, load and self-test ``library`` in a new Python process, whose state is nobody
    else's: what fails there, or None. A library is removed only when its self-test fails
    there too, never for a failure that this process's state alone causes."""
    code = "import sys, kan.native as n; sys.exit(n._verify_only(sys.argv[1]))"
    package_parent = str(Path(__file__).resolve().parents[1])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_parent, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        result = subprocess.run([sys.executable, "-c", code, str(library)], capture_output=True, text=True,
                                env=environment, timeout=build_timeout(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None  # not shown to fail: keep the library
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def _verify_only(path: str) -> int:
    """In the fresh process of ``_self_test_in_a_fresh_process``: 0 where ``path`` passes
    its checks and self-test; else 1, the reason printed. Never builds or removes."""
    try:
        _load_checked(Path(path), confirm=False)
    except _Faulty as problem:
        print(problem)
        return 1
    except NativeError as problem:  # unsafe from here, or not reproduced: not shown faulty
        print(problem)
        return 0
    return 0


def _open(place: Place) -> dict:
    """Build if needed, check, load and self-test the library; remove and rebuild it once
    if it is faulty. The bound functions; NativeError naming the cause otherwise. The
    build lock is held throughout, so that another process never sees a half-made state."""
    cxx, timeout = compiler(), build_timeout()
    library = place.library
    for attempt in range(2):
        with _build_lock(library, timeout):
            if not library.exists():
                _compile(cxx, library, timeout)
            try:
                functions = _load_checked(library)
                _state["path"] = library
                return functions
            except _Faulty as faulty:
                problem = str(faulty)
            if attempt == 1:
                raise NativeError(f"{library.name} unusable after a rebuild: {problem}")
            _remove(library)
    raise AssertionError("unreachable")


def _load() -> dict | None:
    """The kernels' bound functions, building and checking them on the first call; None if
    they cannot be used (``error()`` says why; one warning said so)."""
    if _state["functions"] is not None or _state["error"] is not None:
        return _state["functions"]
    with _lock:
        if _state["functions"] is None and _state["error"] is None:
            try:
                place = library_path()
                if place.refused is not None:
                    warnings.warn(f"kan.native: refusing the cache folder ({place.refused}); "
                                  f"building into the private folder {place.library.parent}")
                _state["functions"] = _open(place)
            except (OSError, NativeError) as error:
                _state["error"] = str(error) if isinstance(error, NativeError) else f"{type(error).__name__}: {error}"
                warnings.warn(f"kan.native: C++ kernels unavailable ({_state['error']}); using the PyTorch paths")
    return _state["functions"]


def available() -> bool:
    """Whether the C++ kernels are on, built and sound (builds them on the first call)."""
    return ENABLED and _load() is not None


def expected() -> bool:
    """Whether the kernels are on and should work, without building them: built already, or
    a compiler is there and no build has failed."""
    if not ENABLED or _state["error"] is not None:
        return False
    return _state["functions"] is not None or compiler() is not None


def error() -> str | None:
    """Why the kernels could not be built or loaded, if they could not."""
    if not ENABLED:
        return "turned off by KAN_NATIVE=0"
    return _state["error"]


def takes(x: torch.Tensor) -> bool:
    """Whether the kernels take this tensor: on the CPU, float32 or float64, and built."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and available()


def supports(x: torch.Tensor, order: int) -> bool:
    """Whether the spline kernels take this input: ``takes(x)`` and a spline order they handle."""
    return takes(x) and 0 <= order <= _state["max_order"]


# --------------------------------------------------------------------------- the kernels' signatures


class Param(NamedTuple):
    """One C parameter of a kernel, in order.

    ``c``: its C type, ``T`` being the kernel's float type. Pointers are tensors of the
    operator (``const`` ones read, the others written); ``int`` parameters with
    ``given`` are the operator's integer arguments; other integers are derived by
    ``rule`` from the arguments (sizes, strides), and ``threads`` is torch's thread
    count. For tensors, ``rule`` gives the shape they must have; ``strided`` ones may
    have any strides (the kernel takes them), the others must be contiguous.
    """

    name: str
    c: str
    given: bool = True
    optional: bool = False
    rule: Callable[[dict], object] | None = None
    strided: bool = False

    @property
    def tensor(self) -> bool:
        return self.c.endswith("*")

    @property
    def written(self) -> bool:
        return self.tensor and not self.c.startswith("const ")


_CTYPES = {"const T*": ctypes.c_void_p, "T*": ctypes.c_void_p, "const int16_t*": ctypes.c_void_p,
           "int16_t*": ctypes.c_void_p, "int64_t*": ctypes.c_void_p, "int64_t": ctypes.c_int64, "int": ctypes.c_int}
_ELEMENT = {"int16_t": torch.int16, "int64_t": torch.int64}


def _coeff(a: dict) -> int:
    return a["knots"] - 1 - a["order"]


def _size(name: str, rule: Callable[[dict], int]) -> Param:
    return Param(name, "int64_t", given=False, rule=rule)


_THREADS = Param("threads", "int", given=False)
# The knots, as kan.fast.KnotGeometry holds them; origin and inv_step on uniform grids only;
# cardinal (0 or 1): whether the cardinal recursion gives these knots' B-splines (else de Boor's).
_GEOMETRY = (
    _size("in_features", lambda a: a["knots_ext"].size(0)),
    Param("order", "int"),
    _size("knots", lambda a: a["knots_ext"].size(1) - 2),
    Param("knots_ext", "const T*", rule=lambda a: (a["in_features"], a["knots"] + 2)),
    Param("knots_padded", "const T*", rule=lambda a: (a["in_features"], a["knots"] + 2 * a["order"])),
    Param("origin", "const T*", optional=True, rule=lambda a: (a["in_features"],)),
    Param("inv_step", "const T*", optional=True, rule=lambda a: (a["in_features"],)),
    Param("cardinal", "int"),
)
_BATCH_IN = lambda a: (a["batch"], a["in_features"])  # noqa: E731
_IN_BATCH = lambda a: (a["in_features"], a["batch"])  # noqa: E731
_OUT_IN_COEFF = lambda a: (a["O"], a["I"], a["C"])  # noqa: E731

# kernel -> its C parameters, in the order of ``kan_<kernel>_f32`` / ``_f64`` in _native.cpp
# (tests/test_native.py reads that file and compares).
KERNELS: dict[str, tuple[Param, ...]] = {
    "gather_forward": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("table", "const T*", rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        _size("out", lambda a: a["table"].size(-1)),
        Param("result", "T*", rule=lambda a: (a["batch"], a["out"])),
        Param("saved_u", "T*", optional=True, rule=_IN_BATCH),
        Param("saved_span", "int16_t*", optional=True, rule=_IN_BATCH),
        _THREADS,
    ),
    "gather_table_grad": (
        *_GEOMETRY,
        Param("x", "const T*", optional=True, rule=_BATCH_IN),
        Param("saved_u", "const T*", optional=True, rule=_IN_BATCH),
        Param("saved_span", "const int16_t*", optional=True, rule=_IN_BATCH),
        _size("batch", lambda a: a["grad_out"].size(0)),
        Param("grad_out", "const T*", rule=lambda a: (a["batch"], a["out"])),
        _size("out", lambda a: a["grad_out"].size(-1)),
        Param("grad_table", "T*", optional=True, rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        Param("w", "const T*", optional=True, rule=lambda a: (a["out"], a["in_features"], _coeff(a))),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["out"], a["in_features"])),
        Param("grad_w", "T*", optional=True, rule=lambda a: (a["out"], a["in_features"], _coeff(a))),
        Param("grad_scaler", "T*", optional=True, rule=lambda a: (a["out"], a["in_features"])),
        _THREADS,
    ),
    "gather_input_grad": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("table", "const T*", rule=lambda a: (a["in_features"], _coeff(a), a["out"])),
        Param("grad_out", "const T*", rule=lambda a: (a["batch"], a["out"])),
        _size("out", lambda a: a["table"].size(-1)),
        Param("grad_x", "T*", rule=_BATCH_IN),
        _THREADS,
    ),
    "dense_bases": (
        *_GEOMETRY,
        Param("x", "const T*", rule=lambda a: (a["rows"], a["in_features"])),
        Param("base", "const T*", rule=lambda a: (a["rows"], a["in_features"])),
        _size("rows", lambda a: a["x"].size(0)),
        Param("result", "T*", rule=lambda a: (a["rows"], (_coeff(a) + 1) * a["in_features"])),
        _THREADS,
    ),
    "local_bases": (
        *_GEOMETRY,
        Param("x", "const T*", rule=_BATCH_IN),
        _size("batch", lambda a: a["x"].size(0)),
        Param("first", "int64_t*", rule=_BATCH_IN),
        Param("value", "T*", rule=lambda a: (a["batch"], a["in_features"], a["order"] + 1)),
        Param("slope", "T*", optional=True, rule=lambda a: (a["batch"], a["in_features"], a["order"] + 1)),
        _THREADS,
    ),
    "scale_spline": (
        Param("w", "const T*", rule=_OUT_IN_COEFF),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _size("O", lambda a: a["w"].size(0)),
        _size("I", lambda a: a["w"].size(1)),
        _size("C", lambda a: a["w"].size(2)),
        Param("dst", "T*", rule=_OUT_IN_COEFF, strided=True),
        _size("so", lambda a: a["dst"].stride(0)),
        _size("si", lambda a: a["dst"].stride(1)),
        _size("sc", lambda a: a["dst"].stride(2)),
        _THREADS,
    ),
    "silu": (
        Param("x", "const T*"),
        _size("n", lambda a: a["x"].numel()),
        Param("y", "T*", rule=lambda a: a["x"].shape),
        _THREADS,
    ),
    "silu_grad": (
        Param("x", "const T*"),
        Param("grad", "const T*", rule=lambda a: a["x"].shape),
        _size("n", lambda a: a["x"].numel()),
        Param("out", "T*", rule=lambda a: a["x"].shape),
        Param("accumulate", "int"),
        _THREADS,
    ),
    "spline_grads": (
        Param("G", "const T*", rule=_OUT_IN_COEFF, strided=True),
        _size("so", lambda a: a["G"].stride(0)),
        _size("si", lambda a: a["G"].stride(1)),
        _size("sc", lambda a: a["G"].stride(2)),
        Param("w", "const T*", rule=_OUT_IN_COEFF),
        Param("scaler", "const T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _size("O", lambda a: a["w"].size(0)),
        _size("I", lambda a: a["w"].size(1)),
        _size("C", lambda a: a["w"].size(2)),
        Param("grad_w", "T*", rule=_OUT_IN_COEFF),
        Param("grad_scaler", "T*", optional=True, rule=lambda a: (a["O"], a["I"])),
        _THREADS,
    ),
}


def _geometry_rules(a: dict) -> str | None:
    if not 0 <= a["order"] <= MAX_ORDER:
        return f"order must be in [0, {MAX_ORDER}], got {a['order']}"
    if _coeff(a) < 1:
        return f"{a['knots']} knots leave no coefficient at order {a['order']}"
    if (a["origin"] is None) != (a["inv_step"] is None):
        return "origin and inv_step come together (a uniform grid) or not at all"
    if a["cardinal"] not in (0, 1) or (a["cardinal"] and a["origin"] is None):
        return f"cardinal must be 0, or 1 on a uniform grid (origin and inv_step), got {a['cardinal']}"
    return None


def _saved_rules(a: dict) -> str | None:
    if (a["saved_u"] is None) != (a["saved_span"] is None):
        return "saved_u and saved_span come together"
    if a["saved_u"] is not None and (not a["cardinal"] or a["knots"] >= 2**15):
        return "saving spans needs a cardinal grid of under 32768 knots"
    return None


def _table_grad_rules(a: dict) -> str | None:
    if a["batch"] > 2**31 - 64:  # the kernel sorts sample indices as int32 (with a few of padding)
        return f"takes at most {2**31 - 64} samples, got {a['batch']}"
    if a["x"] is None and a["saved_u"] is None:
        return "the table gradient needs x or the spans gather_forward saved"
    if a["grad_table"] is None and (a["w"] is None or a["grad_w"] is None):
        return "needs grad_table, or w and grad_w"
    if a["grad_scaler"] is not None and (a["scaler"] is None or a["w"] is None):
        return "grad_scaler needs w and scaler"
    return _saved_rules(a)


# What the shapes alone do not say: kernel -> a check giving the problem, or None.
_RULES: dict[str, Callable[[dict], str | None]] = {
    "gather_forward": lambda a: _geometry_rules(a) or _saved_rules(a),
    "gather_table_grad": lambda a: _geometry_rules(a) or _table_grad_rules(a),
    "gather_input_grad": _geometry_rules,
    "dense_bases": _geometry_rules,
    "local_bases": _geometry_rules,
    "silu_grad": lambda a: None if a["accumulate"] in (0, 1) else "accumulate must be 0 or 1",
    "spline_grads": lambda a: "grad_scaler needs scaler" if a["grad_scaler"] is not None and a["scaler"] is None
    else None,
}


def schema(name: str) -> str:
    """The operator schema of kernel ``name``, derived from its C parameters."""
    arguments, written = [], 0
    for p in KERNELS[name]:
        if not p.given:
            continue
        if p.tensor:
            alias = ""
            if p.written:
                alias, written = f"({chr(ord('a') + written)}!)", written + 1
            arguments.append(f"Tensor{alias}{'?' if p.optional else ''} {p.name}")
        else:
            arguments.append(f"int {p.name}")
    return f"{name}({', '.join(arguments)}) -> ()"


class _Plan(NamedTuple):
    """A kernel's table entry, laid out for the per-call checks (which run on every call)."""

    name: str
    arguments: tuple[str, ...]  # the operator's arguments, in order
    floats: tuple[str, ...]  # T tensors, the data before the knot tables: the first present gives T
    sizes: tuple[tuple[str, Callable], ...]  # derived integers and their rules
    # each tensor: name, optional, dtype (None: T), shape rule, strided
    tensors: tuple[tuple[str, bool, torch.dtype | None, Callable | None, bool], ...]
    c_arguments: tuple[tuple[str, bool], ...]  # every C parameter: name, whether a pointer
    rule: Callable[[dict], str | None] | None


def _plan(name: str) -> _Plan:
    params = KERNELS[name]
    given = [p for p in params if p.given]
    floats = [p.name for p in given if p.c.endswith("T*")]
    return _Plan(
        name=name,
        arguments=tuple(p.name for p in given),
        floats=tuple([n for n in floats if n not in _GEOMETRY_NAMES] + [n for n in floats if n in _GEOMETRY_NAMES]),
        sizes=tuple((p.name, p.rule) for p in params if not p.given and p.rule is not None),
        tensors=tuple((p.name, p.optional, None if p.c.endswith("T*") else _ELEMENT[p.c.replace("const ", "")[:-1]],
                       p.rule, p.strided) for p in given if p.tensor),
        c_arguments=tuple((p.name, p.tensor) for p in params),
        rule=_RULES.get(name),
    )


def _checked(plan: _Plan, a: dict) -> tuple[dict, torch.dtype]:
    """The operator's arguments ``a`` (by name) with the derived sizes added, and the float
    dtype T, after checking every tensor's presence, dtype, device, shape and contiguity;
    ValueError naming the first problem."""
    name = plan.name
    for tensor, optional, *_ in plan.tensors:  # before the sizes, which read the tensors
        if a.get(tensor) is None:
            if not optional:
                raise ValueError(f"kan_native::{name}: {tensor} is required")
        elif not isinstance(a[tensor], torch.Tensor):
            raise ValueError(f"kan_native::{name}: {tensor} must be a tensor, got {type(a[tensor]).__name__}")
    reference = next((n for n in plan.floats if a[n] is not None), plan.floats[0])
    dtype = None if a[reference] is None else a[reference].dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        raise ValueError(f"kan_native::{name}: {reference} must be float32 or float64, got {dtype}")
    for size, rule in plan.sizes:
        a[size] = rule(a)
    problem = plan.rule(a) if plan.rule else None  # first: the shapes below assume a valid order
    if problem:
        raise ValueError(f"kan_native::{name}: {problem}")
    for tensor, optional, element, shape, strided in plan.tensors:
        t = a[tensor]
        if t is None:
            if not optional:
                raise ValueError(f"kan_native::{name}: {tensor} is required")
            continue
        element = element or dtype
        if t.layout is not torch.strided:
            raise ValueError(f"kan_native::{name}: {tensor} must be a dense (strided) tensor, got {t.layout}")
        if t.dtype is not element or not (t.is_cpu or t.is_meta):  # meta: the fake kernel's tensors
            raise ValueError(f"kan_native::{name}: {tensor} must be a CPU {element} tensor "
                             f"(as {reference}), got {t.device.type} {t.dtype}")
        if shape is not None and t.shape != shape(a):
            raise ValueError(f"kan_native::{name}: {tensor} must be {tuple(shape(a))}, got {tuple(t.shape)}")
        if not strided and not t.is_contiguous():
            raise ValueError(f"kan_native::{name}: {tensor} must be contiguous")
    return a, dtype


_GEOMETRY_NAMES = frozenset(p.name for p in _GEOMETRY)


def _threads() -> int:
    """torch's intra-op thread count, which the kernels never exceed (they clamp it too)."""
    return max(1, torch.get_num_threads())


def _pointers(plan: _Plan, a: dict) -> list:
    """The C arguments of a checked call: each tensor's data pointer, after checking that it has
    memory here (a meta or fake tensor passes the shape checks with a null pointer: refused),
    and the integers as they are. ValueError naming the first tensor without memory."""
    values = []
    for n, pointer in plan.c_arguments:
        value = a[n]
        if pointer and value is not None:
            address = value.data_ptr()
            if address == 0 and value.numel() > 0:
                raise ValueError(f"kan_native::{plan.name}: {n} has no memory on this machine "
                                 f"({value.device.type} tensor: meta or fake); the kernels take CPU tensors")
            value = address
        values.append(value)
    return values


def _value_rules(name: str, a: dict) -> str | None:
    """What the kernels index with, checked on the values (the fake kernel cannot: it has no
    values): the saved knot spans that gather_table_grad reads within [-1, knots - 1], by one
    min and max per call (gather_forward writes them)."""
    span = a.get("saved_span") if name == "gather_table_grad" else None
    if span is not None and span.numel() > 0:
        low, high = torch.aminmax(span)
        low, high = int(low), int(high)
        if low < -1 or high > a["knots"] - 1:
            return (f"saved_span must hold knot spans in [-1, {a['knots'] - 1}], got values in [{low}, {high}] "
                    "(spans saved by gather_forward for this geometry)")
    return None


def _kernel(name: str):
    """The CPU implementation of operator ``kan_native::<name>``: check, then call C. The
    dispatcher passes the arguments in schema order; ``_call`` passes them by name."""
    plan = _plan(name)
    label = f"kan.native::{name}"

    def run(*args, **by_name):
        a, dtype = _checked(plan, by_name or dict(zip(plan.arguments, args)))
        problem = _value_rules(name, a)
        if problem:
            raise ValueError(f"kan_native::{name}: {problem}")
        functions = _state["functions"] or (_load() if ENABLED else None)
        if functions is None:
            raise RuntimeError(f"kan.native: C++ kernels unavailable ({error()})")
        a["threads"] = _threads()
        values = _pointers(plan, a)
        with region(label):
            functions[name, dtype](*values)

    return run


def _fake(name: str):
    plan = _plan(name)

    def check(*args):
        a, _ = _checked(plan, dict(zip(plan.arguments, args)))
        # the dispatcher sends a call here when any tensor is a meta one: with others on the CPU,
        # that is a mistake (the CPU tensors would never be written), not a shape inference
        devices = {a[t].device.type for t, *_ in plan.tensors if a[t] is not None}
        if len(devices) > 1:
            raise ValueError(f"kan_native::{name}: tensors on more than one device ({', '.join(sorted(devices))})")

    return check


_RUN = {name: _kernel(name) for name in KERNELS}


def _call(name: str, **arguments) -> None:
    """Run operator ``kan_native::<name>`` with ``arguments``: through the dispatcher where
    something may trace or fake tensors (torch.compile, export, a dispatch mode such as
    fake tensors), so that it sees the operator; else its implementation directly, the same
    checks and C call without the dispatcher's per-call cost, which small layers feel."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        getattr(ops, name)(**arguments)
    else:
        _RUN[name](**arguments)


def _register() -> torch.library.Library:
    library = torch.library.Library("kan_native", "DEF")
    for name in KERNELS:
        library.define(schema(name))
        library.impl(name, _RUN[name], "CPU")
        torch.library.register_fake(f"kan_native::{name}", _fake(name), lib=library)
    return library


# Registered once per process: not in the copy that ``python -m kan.native`` runs as __main__,
# which calls into the imported module instead.
if __name__ != "__main__":
    _LIBRARY = _register()
    ops = torch.ops.kan_native


# --------------------------------------------------------------------------- self-test


def _self_test() -> str | None:
    """Every kernel against the PyTorch formulas of kan.fast on small inputs wide enough for
    the kernels' vector blocks (``_self_test_cases``), in float32 and float64: what differs,
    or None. On one thread: waking a team of threads for inputs this small would cost more
    than the work, on a busy machine far more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _compare_with_pytorch()
    finally:
        torch.set_num_threads(threads)


class _SelfTestCase(NamedTuple):
    """One input of the self-test: knots (in, knots) of spline order ``order`` and inputs x (batch, in)."""

    name: str
    grid: torch.Tensor
    order: int
    x: torch.Tensor
    out_features: int


# The self-test's widths: 9 features and 17 outputs, so that every kernel runs its vector
# blocks (whole vectors of 8 float lanes, the 8 x 8 transposes of the weight kernels, groups
# of 8 samples when spans are saved) as well as a cut vector after them.
_SELF_TEST_IN, _SELF_TEST_OUT = 9, 17


def _self_test_cases(dtype: torch.dtype, generator: torch.Generator):
    """The self-test's inputs in ``dtype``: the default layer's knots (grid 5, order 3, a
    cardinal grid), a larger uniform grid (20, order 3: in float32 uneven by rounding, so de
    Boor's triangle in the vector path), and an uneven grid (the scalar path); inputs inside
    the grid (the kernels' whole-vector interior path), across and beyond it, and on knots."""
    features = _SELF_TEST_IN

    def uniform(grid_size: int, order: int) -> torch.Tensor:
        step = 2.0 / grid_size
        return (torch.arange(-order, grid_size + order + 1, dtype=dtype) * step - 1).expand(features, -1).contiguous()

    default = uniform(5, 3)  # (9, 12)
    uneven = (default + torch.rand(features, default.size(1), generator=generator, dtype=dtype) * 0.1).cummax(1).values
    for name, grid, order in (("default grid", default, 3), ("grid 20", uniform(20, 3), 3),
                              ("uneven grid", uneven.contiguous(), 3)):
        inside = torch.rand(16, features, generator=generator, dtype=dtype) * 1.6 - 0.8  # (16, in)
        spread = torch.rand(8, features, generator=generator, dtype=dtype) * 3 - 1.5
        x = torch.cat([inside, spread, grid[:, order + 1 : order + 3].t()]).contiguous()  # (26, in)
        yield _SelfTestCase(name, grid, order, x, _SELF_TEST_OUT)


def _compare_with_pytorch() -> str | None:
    """Every kernel against the PyTorch formulas of kan.fast on each of ``_self_test_cases``,
    in float32 and float64: what differs, or None."""
    generator = torch.Generator().manual_seed(0)
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        for case in _self_test_cases(dtype, generator):
            problem = _compare_case(case, generator, tolerance)
            if problem is not None:
                return f"{problem} ({dtype}, {case.name})"
    return None


def _compare_case(case: _SelfTestCase, generator: torch.Generator, tolerance: float) -> str | None:
    """The kernels of both contractions on one case against PyTorch: what differs, or None."""
    from kan.fast import knot_geometry, local_b_splines

    x, dtype, out = case.x, case.x.dtype, case.out_features
    features, width = x.size(1), case.order + 1
    g = knot_geometry(case.grid, case.order)
    first, values, slopes = local_b_splines(x, g, derivative=True)
    index = (first.unsqueeze(-1) + torch.arange(width)).clamp(0, g.coeff - 1)
    bases = x.new_zeros(*x.shape, g.coeff).scatter_add_(2, index, values)  # (batch, in, coeff)
    dslope = x.new_zeros(*x.shape, g.coeff).scatter_add_(2, index, slopes)
    weight = torch.randn(out, features, g.coeff, generator=generator, dtype=dtype)  # (out, in, coeff)
    scaler = torch.randn(out, features, generator=generator, dtype=dtype)
    grad_out = torch.randn(x.size(0), out, generator=generator, dtype=dtype)
    table = (weight * scaler.unsqueeze(-1)).permute(1, 2, 0).contiguous()  # (in, coeff, out)
    flat_bases = bases.reshape(x.size(0), -1)
    scaled_grad = (flat_bases.t() @ grad_out).view(features, g.coeff, out).permute(2, 0, 1)  # (out, in, coeff)
    n_first, n_values, n_slopes = local_bases(x, g, derivative=True)
    if not torch.equal(n_first, first):
        return "local_bases gives other knot spans than PyTorch"
    sigmoid = torch.sigmoid(grad_out)
    gather_table = torch.empty(features, g.coeff, out, dtype=dtype).permute(2, 0, 1)  # the gather layout
    dense_weight = torch.empty(out, g.coeff + 1, features, dtype=dtype)[:, : g.coeff].transpose(1, 2)  # the dense one
    checks = {
        "local_bases": (n_values, values), "local_bases slopes": (n_slopes, slopes),
        "gather_forward": (gather_forward(x, table, g), flat_bases @ table.reshape(-1, out)),
        "gather_table_grad": (gather_table_grad(x, grad_out, g).permute(2, 0, 1), scaled_grad),
        "gather_weight_grads": (torch.cat([t.reshape(-1) for t in gather_weight_grads(x, grad_out, g, weight, scaler)]),
                                torch.cat([(scaled_grad * scaler.unsqueeze(-1)).reshape(-1),
                                           (scaled_grad * weight).sum(-1).reshape(-1)])),
        "gather_input_grad": (gather_input_grad(x, table, grad_out, g),
                              ((grad_out @ table.reshape(-1, out).t()).view(x.size(0), features, -1) * dslope).sum(-1)),
        "dense_bases": (dense_bases(x, x, g).view(x.size(0), -1, features)[:, : g.coeff], bases.transpose(1, 2)),
        "scale_spline": (scale_spline(weight, scaler, torch.empty_like(weight)), weight * scaler.unsqueeze(-1)),
        "scale_spline into the gather table": (scale_spline(weight, scaler, gather_table), weight * scaler.unsqueeze(-1)),
        "scale_spline into the dense weight": (scale_spline(weight, scaler, dense_weight), weight * scaler.unsqueeze(-1)),
        "spline_grads": (torch.cat([t.reshape(-1) for t in spline_grads(scaled_grad.contiguous(), weight, scaler)]),
                         torch.cat([(scaled_grad * scaler.unsqueeze(-1)).reshape(-1),
                                    (scaled_grad * weight).sum(-1).reshape(-1)])),
        "spline_grads from the gather layout": (spline_grads(scaled_grad, weight, scaler)[1],
                                                (scaled_grad * weight).sum(-1)),
        "silu": (silu(grad_out), torch.nn.functional.silu(grad_out)),
        "silu_grad": (silu_grad(grad_out, grad_out), grad_out * sigmoid * (1 + grad_out * (1 - sigmoid))),
    }
    if can_save(g):
        result, saved = gather_forward(x, table, g, save=True)
        checks["gather_forward saving spans"] = (result, checks["gather_forward"][1])
        checks["gather_table_grad from saved spans"] = (
            gather_table_grad(None, grad_out, g, saved=saved).permute(2, 0, 1), scaled_grad)
        checks["gather_weight_grads from saved spans"] = (
            torch.cat([t.reshape(-1) for t in gather_weight_grads(None, grad_out, g, weight, scaler, saved=saved)]),
            checks["gather_weight_grads"][1])
    for what, (actual, truth) in checks.items():
        if actual.shape != truth.shape or not torch.allclose(actual, truth, rtol=tolerance, atol=tolerance):
            return f"{what} differs from PyTorch"
    return None


# --------------------------------------------------------------------------- the kernels, for kan.fast


def _geometry(geometry) -> dict:
    """The kernels' geometry arguments (see _GEOMETRY)."""
    g = geometry
    return dict(order=g.order, knots_ext=g.knots_ext, knots_padded=g.knots_padded, origin=g.origin,
                inv_step=g.inv_step, cardinal=int(g.cardinal))


def _contiguous(*tensors: torch.Tensor):
    for t in tensors:
        if t.layout is not torch.strided:  # .contiguous() of a sparse tensor fails with PyTorch's wording
            raise ValueError(f"kan.native: the kernels take dense (strided) tensors, got {t.layout}")
    return [t.detach().contiguous() for t in tensors]


class SavedSpans(NamedTuple):
    """What ``gather_forward(..., save=True)`` keeps of each input on a uniform grid, for
    the table gradient: u (in, batch), the local coordinate in its knot span, and span
    (in, batch) int16, the span in [-1, knots - 1]; feature-major, input [b, i] at [i, b]."""

    u: torch.Tensor
    span: torch.Tensor


def can_save(geometry) -> bool:
    """Whether ``gather_forward`` can save spans for this geometry: a cardinal grid (whose
    bases the local coordinate alone gives), and spans that fit int16."""
    return geometry.cardinal and geometry.knots < 2**15


def _spans(saved: SavedSpans | None) -> dict:
    return dict(saved_u=None, saved_span=None) if saved is None else dict(saved_u=saved.u, saved_span=saved.span)


def gather_forward(x: torch.Tensor, table: torch.Tensor, geometry, save: bool = False):
    """x (batch, in), table (in, coeff, out) -> (batch, out): each input's local bases times their table rows.

    With ``save`` (a geometry that ``can_save``), returns (result, SavedSpans) for
    ``gather_weight_grads``, which then needs no x."""
    x, table = _contiguous(x, table)
    if save and not can_save(geometry):
        raise ValueError("kan.native.gather_forward: saving spans needs a cardinal grid of under 32768 knots")
    batch = x.size(0)
    result = x.new_empty(batch, table.size(-1))
    saved = None
    if save:
        saved = SavedSpans(x.new_empty(x.size(1), batch), x.new_empty(x.size(1), batch, dtype=torch.int16))
    _call("gather_forward", **_geometry(geometry), x=x, table=table, result=result,
                       **_spans(saved))
    return (result, saved) if save else result


def gather_table_grad(x: torch.Tensor | None, grad_out: torch.Tensor, geometry,
                      saved: SavedSpans | None = None) -> torch.Tensor:
    """x (batch, in), grad_out (batch, out) -> (in, coeff, out): the gradient of gather_forward's table.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None or saved is not None else x.detach().contiguous()
    grad = grad_out.new_empty(geometry.knots_ext.size(0), geometry.coeff, grad_out.size(-1))
    _call("gather_table_grad", **_geometry(geometry), x=x, **_spans(saved),
                          grad_out=grad_out, grad_table=grad, w=None, scaler=None, grad_w=None, grad_scaler=None)
    return grad


def gather_weight_grads(x: torch.Tensor | None, grad_out: torch.Tensor, geometry, spline_weight: torch.Tensor,
                        scaler: torch.Tensor | None, need_scaler: bool = True, saved: SavedSpans | None = None):
    """The gradients of ``spline_weight`` (out, in, coeff) and its ``scaler`` (out, in) through a
    gather table made by ``scale_spline``: ``spline_grads(gather_table_grad(...).permute(2, 0, 1), ...)``
    in one pass, without the table gradient. Returns (grad_weight, grad_scaler), as spline_grads.
    The bases come from x, or from ``saved`` (then x may be None)."""
    (grad_out,) = _contiguous(grad_out)
    x = None if x is None or saved is not None else x.detach().contiguous()
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call("gather_table_grad", **_geometry(geometry), x=x, **_spans(saved),
                          grad_out=grad_out, grad_table=None, w=w, scaler=s, grad_w=grad_weight,
                          grad_scaler=grad_scaler)
    return grad_weight, grad_scaler


def gather_input_grad(x: torch.Tensor, table: torch.Tensor, grad_out: torch.Tensor, geometry) -> torch.Tensor:
    """x (batch, in), table (in, coeff, out), grad_out (batch, out) -> (batch, in): gather_forward's x gradient."""
    x, table, grad_out = _contiguous(x, table, grad_out)
    grad = torch.empty_like(x)
    _call("gather_input_grad", **_geometry(geometry), x=x, table=table, grad_out=grad_out, grad_x=grad)
    return grad


def dense_bases(x: torch.Tensor, base: torch.Tensor, geometry, out: torch.Tensor | None = None) -> torch.Tensor:
    """x, base (rows, in) -> (rows, (coeff + 1) * in): the coeff bases of every feature, then base.

    Basis-major: column ``c * in + i`` is basis c of feature i, ``coeff * in + i`` base[:, i].

    ``out``, where given, is written instead of a new tensor (it must be contiguous and
    of that shape and x's dtype).
    """
    x, base = _contiguous(x, base)
    if out is None:
        out = x.new_empty(x.size(0), (geometry.coeff + 1) * x.size(1))
    _call("dense_bases", **_geometry(geometry), x=x, base=base, result=out)
    return out


def scale_spline(spline_weight: torch.Tensor, scaler: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """out (out_features, in, coeff), any strides, = spline_weight * scaler.unsqueeze(-1) (or a copy)."""
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    _call("scale_spline", w=w, scaler=s, dst=out)
    return out


def spline_grads(grad_scaled: torch.Tensor, spline_weight: torch.Tensor, scaler: torch.Tensor | None,
                 need_scaler: bool = True):
    """Gradients of spline_weight (out, in, coeff) and of its scaler (out, in) from grad_scaled.

    grad_scaled: the gradient of ``spline_weight * scaler.unsqueeze(-1)``, (out, in, coeff)
    with any strides. Returns (grad_weight, grad_scaler); grad_scaler is None without a
    scaler or when not needed.
    """
    w = spline_weight.detach().contiguous()
    s = None if scaler is None else scaler.detach().contiguous()
    grad_weight = torch.empty_like(w)
    grad_scaler = torch.empty_like(s) if s is not None and need_scaler else None
    _call("spline_grads", G=grad_scaled.detach(), w=w, scaler=s, grad_w=grad_weight, grad_scaler=grad_scaler)
    return grad_weight, grad_scaler


def local_bases(x: torch.Tensor, geometry, derivative: bool = False):
    """The same triple as ``kan.fast.local_b_splines``, from the C++ kernels."""
    (x,) = _contiguous(x)
    batch, in_features = x.shape
    width = geometry.order + 1
    first = x.new_empty(batch, in_features, dtype=torch.int64)
    values = x.new_empty(batch, in_features, width)
    slopes = x.new_empty(batch, in_features, width) if derivative else None
    _call("local_bases", **_geometry(geometry), x=x, first=first, value=values, slope=slopes)
    return first, values, slopes


def silu(x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.silu(x)`` (no autograd), for float32/float64 CPU tensors."""
    (x,) = _contiguous(x)
    y = torch.empty_like(x)
    _call("silu", x=x, y=y)
    return y


def silu_grad(x: torch.Tensor, grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``grad * silu'(x)``, written to a new tensor, or added into ``out`` (contiguous, x's shape)."""
    x, grad = _contiguous(x, grad)
    accumulate = out is not None
    if out is None:
        out = torch.empty_like(x)
    _call("silu_grad", x=x, grad=grad, out=out, accumulate=int(accumulate))
    return out


# --------------------------------------------------------------------------- python -m kan.native


def build() -> Path:
    """Build the library if it is not current, verify, load and self-test it: its path.
    NativeError naming the cause where that fails."""
    if not ENABLED:
        raise NativeError("the C++ kernels are turned off by KAN_NATIVE=0")
    if _load() is None:
        raise NativeError(_state["error"])
    return _state["path"]


def status() -> tuple[bool, list[str]]:
    """Whether the kernels are usable, and lines saying where the library is and in what state."""
    lines = [f"source: {SOURCE}", f"compiler: {compiler() or 'none found'}; flags: {' '.join(flags())}"]
    if not ENABLED:
        return False, lines + ["off: KAN_NATIVE=0"]
    try:
        place = library_path()
    except NativeError as problem:
        return False, lines + [f"unusable: {problem}"]
    if place.refused:
        lines.append(f"warning: cache folder {cache_dir()} refused: {place.refused}; "
                     "this process would build into a private temporary folder instead")
    library = place.library
    lines.append(f"library: {library}")
    if not library.exists():
        return False, lines + ["current: no (not built for this source, compiler, flags and CPU); "
                               "python -m kan.native build builds it"]
    lines.append("current: yes (built for this source, compiler, flags and CPU)")
    try:
        checked = _check(library)
    except NativeError as problem:
        return False, lines + [f"checksum: {problem}",
                               "loads: not tried (it would be removed and rebuilt on first use)"]
    lines.append("checksum: ok")
    try:
        with _lock:
            _state["functions"] = _bind(_dlopen(checked, library))
            problem = _self_test_clean()
    except Exception as error:  # a kernel that fails its own checks, or anything the test raises
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        _state["functions"] = None
        return False, lines + [f"loads: no, or fails its self-test: {problem}"]
    return True, lines + ["loads: yes; self-test: passed"]


def main(argv: list[str] | None = None) -> int:
    """``python -m kan.native build|status``; exit 0 where the kernels are usable, else 1."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["build"]:
        started = time.perf_counter()
        _state["notice"] = sys.stdout  # stderr is for the one line saying why a build failed
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the one line below says it
                path = build()
        except NativeError as problem:
            print(f"kan.native: build failed: {problem}", file=sys.stderr)
            return 1
        print(f"kan.native: {path} ready in {time.perf_counter() - started:.1f} s")
        return 0
    if argv == ["status"]:
        usable, lines = status()
        print("\n".join(lines))
        return 0 if usable else 1
    print("usage: python -m kan.native build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    from kan import native as _imported  # the module kan.fast uses, whose operators are registered

    sys.exit(_imported.main())
