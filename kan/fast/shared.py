"""What kan-fast's PyTorch and C++ paths share: the reference's operations for non-finite
values, under ``torch.func`` transforms and in forward-mode differentiation, the base branch,
and row chunks sized to the CPU's cache."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from kan import native
from kan.bspline import KnotGeometry
from kan.fast.options import CHUNK_BYTES
from kan.reference import b_splines

# --------------------------------------------------------------------------- non-finite values
#
# The local bases and the gathers skip what the reference's dense products multiply by
# zero, and 0 * inf and 0 * NaN are NaN: on NaN or infinite values the reference's
# outputs and gradients have NaN where the fast paths' would not. So a layer whose
# input is not all finite is computed by the reference's own forward (kan.reference:
# the same operations, the same NaN and inf), and a product whose upstream gradient is
# not all finite takes its gradients by autograd through those operations. One sum
# per tensor finds them, outside the kernels' loops.


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite: NaN and inf reach its sum. A sum that
    overflows from finite values also says no, which only sends them down the exact path;
    half-precision tensors are summed in float32, whose range their sums stay within. The
    sum is judged as a Python float (exact for both dtypes): ``torch.isfinite`` on it costs
    a few more operator calls, which small layers feel."""
    wide = t.dtype in (torch.float32, torch.float64)
    return math.isfinite((t.sum() if wide else t.sum(dtype=torch.float32)).item())


def transformed(x: torch.Tensor, parameters: Iterable[torch.Tensor]) -> bool:
    """Whether a layer's call runs inside a ``torch.func`` transform (``grad``, ``vmap``,
    ``jvp``, ``jacrev``, ``hessian``, ``functional_call`` under one of them) or differentiates
    in forward mode (``torch.autograd.forward_ad``: a tangent on ``x`` or on one of
    ``parameters``). The reference's operations compose with both; kan-fast's autograd
    Functions, which call kernels on the tensors' storage, decide paths by their values and
    define no ``jvp``, do not."""
    if torch._C._functorch.maybe_current_level() is not None:
        return True
    return forward_ad._current_level >= 0 and any(
        forward_ad.unpack_dual(t).tangent is not None for t in (x, *parameters))


def reference_layer(x, spline_weight, scaler, base_weight, geometry: KnotGeometry, activation) -> torch.Tensor:
    """The reference layer's forward (``KANLinear.forward``'s operations) on these weights and knots.

    x: (batch, in), spline_weight (out, in, coeff), scaler (out, in) or None, base_weight (out, in) -> (batch, out).
    """
    bases = b_splines(x, geometry.knots_ext[:, 1:-1], geometry.order)  # (batch, in, coeff)
    scaled = spline_weight if scaler is None else spline_weight * scaler.unsqueeze(-1)
    spline = F.linear(bases.view(x.size(0), bases.size(1) * bases.size(2)), scaled.view(scaled.size(0), -1))
    return F.linear(activation(x), base_weight) + spline


def reference_grads(function, inputs: Sequence, needs: Sequence[bool], grad_out: torch.Tensor) -> list:
    """Gradients of ``function(*inputs)`` against ``grad_out``, by autograd, for the inputs
    whose flag in ``needs`` is set (None for the others); non-tensor inputs pass as they are."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(n)) if isinstance(t, torch.Tensor) else t for t, n in zip(inputs, needs)]
        wanted = [t for t, n in zip(leaves, needs) if n and isinstance(t, torch.Tensor)]
        found = iter(torch.autograd.grad(function(*leaves), wanted, grad_out, allow_unused=True) if wanted else ())
        grads = [next(found) if n and isinstance(t, torch.Tensor) else None for t, n in zip(leaves, needs)]
    return [torch.zeros_like(t) if g is None and n and isinstance(t, torch.Tensor) else g
            for g, t, n in zip(grads, inputs, needs)]


# --------------------------------------------------------------------------- base branch and row chunks


def chunk_rows(x: torch.Tensor, width: int) -> int:
    """Rows per chunk of a (rows, width) operand: cache-sized on the CPU, everything elsewhere."""
    if x.device.type != "cpu":
        return max(1, x.size(0))
    return max(8, min(x.size(0), CHUNK_BYTES // max(1, width * x.element_size())))


def activate(activation: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """activation(x), no autograd, on the C++ paths: SiLU (the default) by the C++ kernel."""
    return native.silu(x) if type(activation) is torch.nn.SiLU else activation(x)


def base_and_grad(activation: torch.nn.Module, x: torch.Tensor, grad_base: torch.Tensor,
                  native_kernels: bool) -> torch.Tensor:
    """d(activation(x))/dx applied to ``grad_base``, for any activation module; SiLU by the
    C++ kernel on the C++ paths."""
    if native_kernels and type(activation) is torch.nn.SiLU:
        return native.silu_grad(x, grad_base)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(activation(leaf), leaf, grad_base)
    return grad
