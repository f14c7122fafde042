"""The per-call checks of kan.native's operators: every kind of wrong argument is refused with
one line naming the operator and the argument, before C runs (its output is left untouched)."""

from __future__ import annotations

import pytest
import torch

import kan.native as native
from kan.native import operators

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C++ kernels unavailable: {native.error()}")

SENTINEL = 7.0


def _silu(**changes) -> torch.Tensor:
    """Call kan_native::silu on a (3, 4) float32 input with ``changes`` to its arguments; returns y."""
    arguments = dict(x=torch.linspace(-2.0, 2.0, 12).view(3, 4), y=torch.full((3, 4), SENTINEL))
    arguments.update(changes)
    operators._call("silu", **arguments)
    return arguments["y"]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(y=None), "kan_native::silu: y is required"),
        (dict(x=[[1.0, 2.0]]), "kan_native::silu: x must be a tensor, got list"),
        (dict(x=torch.zeros(3, 4, dtype=torch.int32)), "kan_native::silu: x must be float32 or float64, got torch.int32"),
        (dict(x=torch.zeros(3, 4).to_sparse()),
         "kan_native::silu: x must be a dense (strided) tensor, got torch.sparse_coo"),
        (dict(y=torch.full((3, 4), SENTINEL, dtype=torch.float64)),
         "kan_native::silu: y must be a CPU torch.float32 tensor (as x), got cpu torch.float64"),
        (dict(y=torch.full((4, 3), SENTINEL)), "kan_native::silu: y must be (3, 4), got (4, 3)"),
        (dict(y=torch.full((4, 3), SENTINEL).t()), "kan_native::silu: y must be contiguous"),
        (dict(y=torch.full((3, 4), SENTINEL, device="meta")),
         "kan_native::silu: y has no memory on this machine (meta tensor: meta or fake); the kernels take CPU tensors"),
    ],
    ids=["missing", "not-a-tensor", "integer", "sparse", "dtype", "shape", "strides", "meta"],
)
def test_each_wrong_argument_is_one_line_before_c_runs(changes, message):
    y = changes.get("y")
    with pytest.raises(ValueError) as refused:
        _silu(**changes)
    assert str(refused.value) == message
    assert "\n" not in str(refused.value)
    if isinstance(y, torch.Tensor) and y.device.type == "cpu":
        assert bool((y == SENTINEL).all()), "the kernel ran although its arguments were refused"


def test_the_checked_call_computes_silu():
    """The path through the checks reaches C: silu against float64 torch within float32 rounding."""
    x = torch.linspace(-6.0, 6.0, 97).view(1, 97)
    y = _silu(x=x, y=torch.full_like(x, SENTINEL))
    torch.testing.assert_close(y.double(), torch.nn.functional.silu(x.double()), rtol=2e-6, atol=1e-7)
