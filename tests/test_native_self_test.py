"""kan.native's load-time self-test catches a library that is wrong only in its vector blocks.

The kernels run different code for whole vectors of 8 float lanes and 8 x 8 blocks of the
weight kernels than for the rest: a library wrong only there, with a valid checksum, must
fail the self-test. Without a rebuild, such a library is made from the loaded one: each
kernel's C function is wrapped so that a float32 call wide enough for those blocks (every
width at least 8) gets its output corrupted; calls narrower than that are left right. The
self-test must name the kernel. The unwrapped library passes it.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from kan import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C++ kernels unavailable: {native.error()}")

# the widths of a call (C parameter names): all of those it has must be at least 8
WIDTHS = ("in_features", "out", "O", "I")
BLOCK_KERNELS = ["gather_forward", "gather_table_grad", "gather_input_grad", "dense_bases", "local_bases",
                 "scale_spline", "spline_grads"]


def wrong_in_vector_blocks(name: str, function):
    """``function`` (a kernel's float32 C function), but with the first value of its first
    float output off by 0.25 in calls whose widths are all at least 8."""
    params = native.KERNELS[name]
    outputs = [i for i, p in enumerate(params) if p.c == "T*"]
    widths = [i for i, p in enumerate(params) if p.name in WIDTHS]

    def run(*values):
        function(*values)
        if all(values[i] >= 8 for i in widths):
            pointer = next((values[i] for i in outputs if values[i]), None)
            if pointer:
                ctypes.c_float.from_address(pointer).value += 0.25

    return run


def test_the_loaded_library_passes_the_self_test():
    assert native.selftest._self_test() is None


@pytest.mark.parametrize("name", BLOCK_KERNELS)
def test_a_library_wrong_only_in_its_vector_blocks_fails_the_self_test(name, monkeypatch):
    functions = dict(native.library._state["functions"])
    functions[name, torch.float32] = wrong_in_vector_blocks(name, functions[name, torch.float32])
    monkeypatch.setitem(native.library._state, "functions", functions)
    problem = native.selftest._self_test()
    assert problem is not None and "float32" in problem
    assert problem.split()[0].startswith(name.split("_")[0]), problem
