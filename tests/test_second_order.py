"""Second-order gradients of kan-fast against the reference KAN (kan.reference) on the same state dict.

kan-fast's custom autograd Functions compute first-order gradients with fast kernels; a
backward that autograd records (``create_graph=True``) must still be differentiable,
so that a Hessian or a loss on ``d output / d x`` (physics-informed training) is right.
The truths: ``torch.autograd.gradgradcheck`` (finite differences of the analytic
gradient, float64) on every path, and the reference model's own second-order results
on the same weights (autograd through its plain PyTorch operations).
"""

from __future__ import annotations

import pytest
import torch

import kan.fast
import kan.native
from kan.fast import FastBSplineKAN, FastBSplineKANLinear, knot_geometry
from kan.reference import KAN, KANLinear

PATHS = ["dense-native", "dense-torch", "gather-native", "gather-torch"]


@pytest.fixture(params=PATHS)
def path(request) -> dict:
    """The kan-fast options of one path: a contraction, computed by the C++ kernels or by PyTorch
    (its kernels not compiled)."""
    contraction, backend = request.param.split("-")
    if backend == "native" and not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    return {"contraction": contraction, "backend": backend, "compile": "off"}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter N(0, 1): the spline part of the output weighs as much as the base part."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def model_pair(widths, options: dict, grid_size: int = 5, seed: int = 0):
    """A randomised float64 reference KAN and a kan-fast model with ``options`` loaded from its state dict."""
    torch.manual_seed(seed)
    reference = KAN(widths, grid_size=grid_size)
    randomise(reference, seed)
    fast = FastBSplineKAN(widths, grid_size=grid_size, **options)
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference.double(), fast.double()


def inputs(count: int, width: int, seed: int) -> torch.Tensor:
    """(count, width) float64 points inside the grid, none on a knot of grids 4 and 5 on (-1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, width, generator=generator, dtype=torch.float64) * 1.8 - 0.9
    for step in (0.5, 0.4):
        nearest = torch.round(x / step) * step
        x = torch.where((x - nearest).abs() < 1e-3, x + 3e-3, x)
    return x


@pytest.mark.parametrize("grid", ["uniform", "uneven"])
@pytest.mark.parametrize("order", [1, 3], ids=lambda v: f"order{v}")
def test_gradgradcheck_float64(order, grid, path):
    # grid 4 on (-1, 1): steps of 0.5, uniform in float64; grid 5's float32 knots are not
    torch.manual_seed(order)
    reference = KANLinear(3, 2, grid_size=4 if grid == "uniform" else 5, spline_order=order)
    randomise(reference, order)
    layer = FastBSplineKANLinear(3, 2, grid_size=4 if grid == "uniform" else 5, spline_order=order, **path)
    layer.load_state_dict(reference.state_dict())
    layer = layer.double()
    assert knot_geometry(layer.grid, order).uniform == (grid == "uniform")
    x = inputs(5, 3, seed=order).requires_grad_(True)
    names = [name for name, _ in layer.named_parameters()]
    parameters = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]

    def layer_output(x, *parameters):
        return torch.func.functional_call(layer, dict(zip(names, parameters)), (x,))

    assert torch.autograd.gradgradcheck(layer_output, (x, *parameters), eps=1e-6, atol=1e-6, rtol=1e-4)


def physics_informed_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(y**2).mean() + (g**2).mean() with g = d y.sum() / d x, kept in the graph."""
    x = x.clone().requires_grad_(True)
    y = model(x)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    return (y**2).mean() + (g**2).mean()


def test_physics_informed_loss_gradients_equal_reference(path):
    reference, fast = model_pair([2, 5, 1], path, seed=3)
    x = inputs(16, 2, seed=3)
    for model in (reference, fast):
        model.zero_grad()
        physics_informed_loss(model, x).backward()
    for (name, expected), actual in zip(reference.named_parameters(), fast.parameters()):
        assert actual.grad is not None, name
        error = (actual.grad - expected.grad).abs().max().item()
        assert error <= 1e-10 * max(1.0, expected.grad.abs().max().item()), f"{name}: {error:.3g}"


def test_hessian_equals_reference(path):
    reference, fast = model_pair([2, 5, 1], path, seed=4)
    x = inputs(3, 2, seed=4)

    def summed(model):
        return lambda x: model(x).sum()

    expected = torch.autograd.functional.hessian(summed(reference), x)
    actual = torch.autograd.functional.hessian(summed(fast), x)
    assert expected.abs().max() > 1e-3  # the reference's Hessian is not trivially zero
    assert (actual - expected).abs().max() <= 1e-10 * max(1.0, expected.abs().max().item())


def test_second_derivative_of_the_input_is_connected_to_the_parameters(path):
    # d/dw of (d y / d x): a first-order gradient that is itself differentiated by a parameter
    reference, fast = model_pair([2, 5, 1], path, seed=5)
    x = inputs(8, 2, seed=5).requires_grad_(True)
    results = []
    for model in (reference, fast):
        (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(g.sum(), list(model.parameters())))
    for expected, actual in zip(*results):
        assert (actual - expected).abs().max() <= 1e-10 * max(1.0, expected.abs().max().item())


# torch.func's transforms and forward-mode differentiation: kan-fast takes the reference's
# operations there (its autograd Functions compose with neither). The truths: the reference's
# derivatives by plain reverse-mode autograd, outside any transform.


def test_torch_func_transforms_equal_reference_autograd(path):
    reference, fast = model_pair([2, 5, 1], path, seed=6)
    x = inputs(6, 2, seed=6)
    jacobian = torch.autograd.functional.jacobian(reference, x)  # (6, 1, 6, 2): rows are independent
    rows = torch.arange(6)
    expected = {
        "grad": torch.autograd.functional.jacobian(lambda v: reference(v).sum(), x),
        "vmap(jacrev)": jacobian[rows, :, rows, :],
        "jvp": (jacobian.sum(dim=(0, 1)) * torch.linspace(-1, 1, 12, dtype=x.dtype).view(6, 2)).sum(),
        "hessian": torch.autograd.functional.hessian(lambda v: reference(v[None]).sum(), x[0]),
        "grad of parameters": torch.autograd.grad(reference(x).sum(), list(reference.parameters())),
    }
    parameters = dict(fast.named_parameters())
    actual = {
        "grad": torch.func.grad(lambda v: fast(v).sum())(x),
        "vmap(jacrev)": torch.func.vmap(torch.func.jacrev(lambda v: fast(v[None])[0]))(x),
        "jvp": torch.func.jvp(lambda v: fast(v).sum(), (x,), (torch.linspace(-1, 1, 12, dtype=x.dtype).view(6, 2),))[1],
        "hessian": torch.func.hessian(lambda v: fast(v[None]).sum())(x[0]),
        "grad of parameters": tuple(torch.func.grad(
            lambda p: torch.func.functional_call(fast, p, (x,)).sum())(parameters).values()),
    }
    assert expected["hessian"].abs().max() > 1e-3  # not trivially zero
    for name, truth in expected.items():
        for e, a in zip(truth if isinstance(truth, tuple) else (truth,), actual[name] if isinstance(truth, tuple)
                        else (actual[name],)):
            assert a.shape == e.shape, name
            assert (a - e).abs().max() <= 1e-10 * max(1.0, e.abs().max().item()), name


def test_torch_func_leaves_the_fast_paths_to_plain_calls(path):
    # a transform does not turn the kernels off for the calls after it
    reference, fast = model_pair([2, 5, 1], path, seed=7)
    x = inputs(4, 2, seed=7)
    torch.func.grad(lambda v: fast(v).sum())(x)
    layer = fast.layers[0]
    assert layer.uses_native(x) == (path["backend"] == "native")
    assert (fast(x) - reference(x)).abs().max() <= 1e-10


def test_forward_mode_tangents_equal_reference_autograd(path):
    import torch.autograd.forward_ad as forward_ad

    reference, fast = model_pair([2, 5, 1], path, seed=8)
    x = inputs(6, 2, seed=8)
    tangent = torch.linspace(-1, 1, 12, dtype=x.dtype).view(6, 2)
    jacobian = torch.autograd.functional.jacobian(reference, x)  # (6, 1, 6, 2)
    expected = torch.einsum("bokj,kj->bo", jacobian, tangent)
    with forward_ad.dual_level():
        found = forward_ad.unpack_dual(fast(forward_ad.make_dual(x, tangent))).tangent
    assert found is not None and found.shape == expected.shape
    assert (found - expected).abs().max() <= 1e-10 * max(1.0, expected.abs().max().item())


def test_a_dual_level_without_tangents_keeps_the_fast_path(path, monkeypatch):
    # the reference's operations only where this layer's tensors carry a tangent
    import torch.autograd.forward_ad as forward_ad

    reference, fast = model_pair([2, 5, 1], path, seed=9)
    x = inputs(4, 2, seed=9)
    calls = []
    plain = KANLinear.forward
    monkeypatch.setattr(KANLinear, "forward", lambda self, v: calls.append(v.shape) or plain(self, v))
    with forward_ad.dual_level():
        fast(x)
        assert calls == []
        fast(forward_ad.make_dual(x, torch.ones_like(x)))
    assert len(calls) == 2  # both layers: the first layer's tangent reaches the second's input
