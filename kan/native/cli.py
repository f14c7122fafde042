"""``python -m kan.native build|status``: build the C++ kernels ahead of first use, or say where they are."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from kan.native.build import SOURCE, NativeError, _check, _where, cache_dir, compiler, flags, library_path
from kan.native.library import ENABLED, _bind, _dlopen, _load, _lock, _self_test_clean, _state


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
    try:
        chosen = " ".join(flags())
    except NativeError as problem:
        return False, [f"source: {SOURCE}", f"compiler: {compiler() or 'none found'}", f"unusable: {problem}"]
    lines = [f"source: {SOURCE}", f"compiler: {compiler() or 'none found'}; flags: {chosen}"]
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
        _where["notice"] = sys.stdout  # stderr is for the one line saying why a build failed
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
