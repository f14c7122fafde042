"""The C++ kernels' self-test: every kernel against PyTorch formulas on small inputs.

``kan.native.library`` runs it on every library it loads, in a clean state; a library that
fails it in a fresh process as well is removed and rebuilt once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kan.bspline import knot_geometry, local_b_splines
from kan.native import operators as kernels


def _self_test() -> str | None:
    """Every kernel against the PyTorch formulas of kan.bspline on small inputs wide enough for
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


def flat(tensors) -> torch.Tensor:
    """The tensors' elements, one after another: (n,)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def _compare_case(case: _SelfTestCase, generator: torch.Generator, tolerance: float) -> str | None:
    """The kernels of both contractions on one case against PyTorch: what differs, or None."""
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
    n_first, n_values, n_slopes = kernels.local_bases(x, g, derivative=True)
    if not torch.equal(n_first, first):
        return "local_bases gives other knot spans than PyTorch"
    sigmoid = torch.sigmoid(grad_out)
    gather_table = torch.empty(features, g.coeff, out, dtype=dtype).permute(2, 0, 1)  # the gather layout
    dense_weight = torch.empty(out, g.coeff + 1, features, dtype=dtype)[:, : g.coeff].transpose(1, 2)  # the dense one
    scaled = weight * scaler.unsqueeze(-1)  # (out, in, coeff)
    weight_grads = flat([scaled_grad * scaler.unsqueeze(-1), (scaled_grad * weight).sum(-1)])  # both, flattened
    checks = {
        "local_bases": (n_values, values), "local_bases slopes": (n_slopes, slopes),
        "gather_forward": (kernels.gather_forward(x, table, g), flat_bases @ table.reshape(-1, out)),
        "gather_table_grad": (kernels.gather_table_grad(x, grad_out, g).permute(2, 0, 1), scaled_grad),
        "gather_weight_grads": (flat(kernels.gather_weight_grads(x, grad_out, g, weight, scaler)), weight_grads),
        "gather_input_grad": (kernels.gather_input_grad(x, table, grad_out, g),
                              ((grad_out @ table.reshape(-1, out).t()).view(x.size(0), features, -1) * dslope).sum(-1)),
        "dense_bases": (kernels.dense_bases(x, x, g).view(x.size(0), -1, features)[:, : g.coeff],
                        bases.transpose(1, 2)),
        "scale_spline": (kernels.scale_spline(weight, scaler, torch.empty_like(weight)), scaled),
        "scale_spline into the gather table": (kernels.scale_spline(weight, scaler, gather_table), scaled),
        "scale_spline into the dense weight": (kernels.scale_spline(weight, scaler, dense_weight), scaled),
        "spline_grads": (flat(kernels.spline_grads(scaled_grad.contiguous(), weight, scaler)), weight_grads),
        "spline_grads from the gather layout": (kernels.spline_grads(scaled_grad, weight, scaler)[1],
                                                (scaled_grad * weight).sum(-1)),
        "silu": (kernels.silu(grad_out), torch.nn.functional.silu(grad_out)),
        "silu_grad": (kernels.silu_grad(grad_out, grad_out), grad_out * sigmoid * (1 + grad_out * (1 - sigmoid))),
    }
    if kernels.can_save(g):
        result, saved = kernels.gather_forward(x, table, g, save=True)
        checks["gather_forward saving spans"] = (result, checks["gather_forward"][1])
        checks["gather_table_grad from saved spans"] = (
            kernels.gather_table_grad(None, grad_out, g, saved=saved).permute(2, 0, 1), scaled_grad)
        checks["gather_weight_grads from saved spans"] = (
            flat(kernels.gather_weight_grads(None, grad_out, g, weight, scaler, saved=saved)), weight_grads)
    for what, (actual, truth) in checks.items():
        if actual.shape != truth.shape or not torch.allclose(actual, truth, rtol=tolerance, atol=tolerance):
            return f"{what} differs from PyTorch"
    return None
