"""Load kan-fast's C++ kernels: check, ``dlopen``, bind and self-test the built library.

The library that ``kan.native.build`` made (or finds in its cache) is loaded from the very
descriptor whose bytes were checked, bound with the argument types of
``kan.native.schema.KERNELS``, and self-tested against PyTorch in a clean state; a library
that fails its self-test in a fresh process as well is removed and rebuilt once. Whenever the
kernels cannot be used, one warning says why and :func:`available` says no.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator

import torch

from kan.native.build import (
    _NO,
    Checked,
    NativeError,
    Place,
    _build_lock,
    _check,
    _compile,
    _Faulty,
    _remove,
    _temporary_folder,
    build_timeout,
    compiler,
    fcntl,
    library_path,
)
from kan.native.schema import _CTYPES, KERNELS, MAX_ORDER

ENABLED = os.environ.get("KAN_NATIVE", "1").lower() not in _NO  # read once: KAN_NATIVE=0 turns the kernels off

_state: dict = {"functions": None, "error": None, "path": None, "max_order": MAX_ORDER, "opened": set()}
_lock = threading.RLock()


def _between_check_and_load(library: Path) -> None:
    """Called after ``library`` was checked and before it is loaded: nothing happens here;
    tests swap the cache folder at this point to show that what is loaded is what was checked."""


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
    default device set by ``torch.set_default_device``, export's non-strict tracing), no
    ``torch.func`` transform (``grad``, ``vmap``, ``jvp``: a first call may come inside one),
    grad mode on outside inference mode, float32 as the default dtype. The self-test makes
    its own tensors on the CPU; under the caller's state it would fail for reasons that
    are not the library's (and a failed self-test removes the library)."""
    from torch.utils._python_dispatch import _disable_current_modes

    dtype = torch.get_default_dtype()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_disable_current_modes())
        stack.enter_context(torch._C.DisableTorchFunction())
        stack.enter_context(torch._C._DisableFuncTorch())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(dtype)


def _self_test_clean() -> str | None:
    """``kan.native.selftest._self_test`` in ``_clean_state``: what differs, or None.

    Imported here, on the first load, not at the top: the self-test calls the kernels through
    ``kan.native.operators``, which loads them through this module."""
    from kan.native import selftest

    with _clean_state():
        return selftest._self_test()


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
    code = "import sys, kan.native.library as n; sys.exit(n._verify_only(sys.argv[1]))"
    package_parent = str(Path(__file__).resolve().parents[2])
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
