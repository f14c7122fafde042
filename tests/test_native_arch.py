"""KAN_NATIVE_ARCH: the CPU kan.native builds its kernels for, a cache entry of its own, and one line
for a value that could not be a CPU name."""

from __future__ import annotations

import pytest

from kan.native import build


def test_the_default_is_this_machines_cpu(monkeypatch):
    monkeypatch.delenv("KAN_NATIVE_ARCH", raising=False)
    assert build.arch() == "native" and "-march=native" in build.flags()
    monkeypatch.setenv("KAN_NATIVE_ARCH", "")
    assert build.arch() == "native"


@pytest.mark.parametrize("sanitize", ["0", "1"])
def test_another_cpu_replaces_march_in_either_build(monkeypatch, sanitize):
    monkeypatch.setenv("KAN_NATIVE_SANITIZE", sanitize)
    monkeypatch.setenv("KAN_NATIVE_ARCH", "x86-64-v3")
    chosen = build.flags()
    assert "-march=x86-64-v3" in chosen and "-march=native" not in chosen
    assert len(chosen) == len(build.SANITIZE_FLAGS if sanitize == "1" else build.FLAGS)


def test_the_cache_entry_depends_on_the_cpu_chosen(monkeypatch):
    cxx = build.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.delenv("KAN_NATIVE_ARCH", raising=False)
    native = build._key(cxx, 60.0)
    monkeypatch.setenv("KAN_NATIVE_ARCH", "x86-64-v3")
    assert build._key(cxx, 60.0) != native


@pytest.mark.parametrize("value", ["native -O0", "-mavx512f", "x86-64;rm", "../x"])
def test_a_value_that_is_no_cpu_name_is_one_line(monkeypatch, value):
    monkeypatch.setenv("KAN_NATIVE_ARCH", value)
    with pytest.raises(build.NativeError) as caught:
        build.flags()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("KAN_NATIVE_ARCH must name a CPU") and repr(value) in message


def test_status_says_why_in_one_line_and_exits_1(monkeypatch, capsys):
    from kan.native import cli

    monkeypatch.setenv("KAN_NATIVE_ARCH", "a b")
    assert cli.main(["status"]) == 1
    out = capsys.readouterr().out
    assert "unusable: KAN_NATIVE_ARCH must name a CPU" in out and "Traceback" not in out
