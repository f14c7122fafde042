"""The Fourier, RBF and Chebyshev KANs against their definitions, written out here in float64.

Each truth broadcasts over (batch, out, in, k) with numpy, the direct reading of
the formula in the module docstring; the layers compute the same thing as one
matrix product, so agreement checks the reshaping as much as the maths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from kan import zoo
from kan.chebyshev import ChebyshevKAN, ChebyshevKANLinear, chebyshev_polynomials
from kan.fourier import FourierKAN, FourierKANLinear
from kan.rbf import RBFKAN, RBFKANLinear


def randomise(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64 copy of ``layer`` with every parameter drawn afresh (zero biases and unit norms test nothing)."""
    layer = layer.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    return layer


def numpy_parameters(layer: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy() for name, p in layer.named_parameters()}


# ---------------------------------------------------------------- truths


def fourier_truth(x: np.ndarray, coeffs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y[b, o] = sum_(i, k) coeffs[0, o, i, k] cos(k x[b, i]) + coeffs[1, o, i, k] sin(k x[b, i]) + bias[o]."""
    grid_size = coeffs.shape[-1]
    k = np.arange(1, grid_size + 1, dtype=np.float64)
    kx = x[:, None, :, None] * k  # (batch, 1, in, k)
    terms = np.cos(kx) * coeffs[0][None] + np.sin(kx) * coeffs[1][None]  # (batch, out, in, k)
    return terms.sum(axis=(2, 3)) + bias


def rbf_truth(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    grid_size: int,
    grid_min: float,
    grid_max: float,
    use_layernorm: bool,
    use_base_update: bool,
) -> np.ndarray:
    """FastKAN: sum_(i, k) W[o, i, k] exp(-((LN(x)_i - c_k) / h)^2) + base_linear(silu(x))."""
    batch, in_features = x.shape
    normalised = x
    if use_layernorm:
        mean = x.mean(axis=1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=1, keepdims=True)  # biased, as LayerNorm
        normalised = (x - mean) / np.sqrt(variance + 1e-5) * params["layernorm.weight"] + params["layernorm.bias"]
    centres = np.linspace(grid_min, grid_max, grid_size)
    width = (grid_max - grid_min) / (grid_size - 1)
    phi = np.exp(-(((normalised[:, None, :, None] - centres) / width) ** 2))  # (batch, 1, in, k)
    weight = params["spline_linear.weight"].reshape(-1, in_features, grid_size)  # (out, in, k)
    y = (phi * weight[None]).sum(axis=(2, 3))
    if use_base_update:
        silu = x / (1 + np.exp(-x))
        y = y + silu @ params["base_linear.weight"].T + params["base_linear.bias"]
    return y


def chebyshev_truth(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """y[b, o] = sum_(i, n) coeffs[i, o, n] cos(n arccos(tanh x[b, i]))."""
    degree = coeffs.shape[-1] - 1
    n = np.arange(degree + 1, dtype=np.float64)
    t = np.tanh(x)
    polynomials = np.cos(n * np.arccos(t[:, :, None]))  # (batch, in, n)
    terms = polynomials[:, None, :, :] * coeffs.transpose(1, 0, 2)[None]  # (batch, out, in, n)
    return terms.sum(axis=(2, 3))


# ---------------------------------------------------------------- values


def test_fourier_layer_matches_the_series_inside_and_outside_one_period():
    layer = randomise(FourierKANLinear(4, 3, grid_size=6))
    x = torch.linspace(-10, 10, 40, dtype=torch.float64).reshape(10, 4)  # well beyond [-pi, pi]
    p = numpy_parameters(layer)
    expected = fourier_truth(x.numpy(), p["fouriercoeffs"], p["bias"])
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fourier_without_bias_and_with_smooth_initialisation():
    torch.manual_seed(0)
    layer = FourierKANLinear(50, 2, grid_size=8, addbias=False, smooth_initialization=True)
    assert not hasattr(layer, "bias")
    coeffs = layer.fouriercoeffs.detach()  # (2, out, in, k), randn / (sqrt(in) * k^2)
    k = torch.arange(1, 9, dtype=coeffs.dtype)
    normalised = coeffs * math.sqrt(50) * k**2  # standard normal draws again
    assert abs(normalised.std().item() - 1) < 0.15
    x = torch.randn(5, 50, dtype=torch.float64)
    expected = fourier_truth(x.numpy(), coeffs.double().numpy(), np.zeros(2))
    np.testing.assert_allclose(layer.double()(x).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("use_layernorm", [True, False])
@pytest.mark.parametrize("use_base_update", [True, False])
def test_rbf_layer_matches_fastkan_inside_and_outside_the_grid(use_layernorm, use_base_update):
    options = dict(grid_size=5, grid_min=-1.5, grid_max=2.5)
    layer = randomise(
        RBFKANLinear(3, 4, use_layernorm=use_layernorm, use_base_update=use_base_update, **options)
    )
    x = torch.linspace(-4, 4, 36, dtype=torch.float64).reshape(12, 3)  # beyond [-1.5, 2.5]
    x[0] = torch.tensor([-30.0, 0.0, 30.0])  # far outside: the bases vanish, nothing overflows
    expected = rbf_truth(x.numpy(), numpy_parameters(layer), use_layernorm=use_layernorm,
                         use_base_update=use_base_update, **options)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_rbf_defaults_are_fastkans():
    layer = RBFKANLinear(3, 2)
    assert layer.grid.tolist() == torch.linspace(-2, 2, 8).tolist()
    assert layer.denominator == pytest.approx(4 / 7)
    assert isinstance(layer.layernorm, torch.nn.LayerNorm)
    assert isinstance(layer.base_activation, torch.nn.SiLU)
    assert layer.spline_linear.bias is None
    assert "grid" in dict(layer.named_buffers()) and "grid" not in dict(layer.named_parameters())


def test_rbf_refuses_a_layernorm_over_one_feature():
    with pytest.raises(ValueError, match="use_layernorm=False"):
        RBFKANLinear(1, 3)
    RBFKANLinear(1, 3, use_layernorm=False)


def test_chebyshev_layer_matches_the_cosine_form_including_saturated_inputs():
    layer = randomise(ChebyshevKANLinear(3, 4, grid_size=7))
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    x[0] = torch.tensor([20.0, -20.0, 0.0])  # tanh is exactly +1 and -1 in float64
    assert torch.tanh(x[0, :2]).tolist() == [1.0, -1.0]
    expected = chebyshev_truth(x.numpy(), numpy_parameters(layer)["cheby_coeffs"])
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-11, atol=1e-12)


def test_chebyshev_polynomials_and_their_slopes_at_plus_and_minus_one():
    # T_n(1) = 1, T_n(-1) = (-1)^n, T_n'(1) = n^2, T_n'(-1) = (-1)^(n+1) n^2: acos would give NaN here.
    degree = 6
    n = torch.arange(degree + 1, dtype=torch.float64)
    for end, sign in [(1.0, 1.0), (-1.0, -1.0)]:
        t = torch.tensor(end, dtype=torch.float64)
        values = chebyshev_polynomials(t, degree)
        slopes = torch.autograd.functional.jacobian(lambda s: chebyshev_polynomials(s, degree), t)
        torch.testing.assert_close(values, sign**n, rtol=0, atol=1e-15)
        torch.testing.assert_close(slopes, sign ** (n + 1) * n**2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chebyshev_gradient_is_finite_where_tanh_saturates(dtype):
    layer = ChebyshevKANLinear(2, 3, grid_size=5).to(dtype)
    x = torch.tensor([[20.0, -20.0], [1e4, -1e4]], dtype=dtype, requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.cheby_coeffs.grad).all()


# ---------------------------------------------------------------- gradients


def gradcheck_layer(layer: torch.nn.Module, x: torch.Tensor) -> None:
    """gradcheck in float64 with respect to the input and every parameter."""
    layer = randomise(layer, seed=3)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def function(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(function, (x.double().requires_grad_(), *params))


@pytest.mark.parametrize(
    "layer",
    [
        FourierKANLinear(3, 2, grid_size=3),
        RBFKANLinear(3, 2, grid_size=4),
        RBFKANLinear(3, 2, grid_size=4, use_layernorm=False),
        ChebyshevKANLinear(3, 2, grid_size=4),
    ],
    ids=["fourier", "rbf", "rbf-no-layernorm", "chebyshev"],
)
def test_gradcheck_input_and_parameters(layer):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2)) * 1.5
    gradcheck_layer(layer, x)


# ---------------------------------------------------------------- shapes and errors

LAYERS = {
    "fourier": lambda i, o: FourierKANLinear(i, o, grid_size=4),
    "rbf": lambda i, o: RBFKANLinear(i, o, grid_size=4),
    "chebyshev": lambda i, o: ChebyshevKANLinear(i, o, grid_size=4),
}


@pytest.mark.parametrize("kind", LAYERS)
def test_leading_dimensions_are_kept(kind):
    layer = LAYERS[kind](5, 3)
    x = torch.randn(2, 4, 5)
    y = layer(x)
    assert y.shape == (2, 4, 3)
    torch.testing.assert_close(y, layer(x.reshape(8, 5)).reshape(2, 4, 3))
    assert layer(torch.randn(5)).shape == (3,)


@pytest.mark.parametrize("kind", LAYERS)
def test_wrong_width_names_expected_and_received(kind):
    layer = LAYERS[kind](7, 3)
    with pytest.raises(ValueError) as error:
        layer(torch.randn(4, 11))
    assert "7" in str(error.value) and "11" in str(error.value)


@pytest.mark.parametrize("kind", LAYERS)
def test_basis_shape(kind):
    layer = LAYERS[kind](5, 3)
    features = layer.basis(torch.randn(6, 5))
    assert features.shape == {"fourier": (6, 5, 8), "rbf": (6, 5, 4), "chebyshev": (6, 5, 5)}[kind]


class LargestTensor(TorchFunctionMode):
    """Records the element count of the largest tensor made in the forward pass or kept for backward.

    A function mode sees every torch function and tensor method the forward
    calls; the saved-tensor hooks see what autograd keeps, which bounds what the
    backward pass works on.
    """

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.saved_tensors = torch.autograd.graph.saved_tensors_hooks(self._record, lambda t: t)

    def _record(self, t):
        self.largest = max(self.largest, t.numel())
        return t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._record(t)
        return out

    def __enter__(self):
        self.saved_tensors.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.saved_tensors.__exit__(*exc)


def test_fourier_never_makes_a_batch_out_in_grid_tensor():
    batch, in_features, out_features, grid_size = 16, 3, 7, 4
    forbidden = batch * out_features * in_features * grid_size  # 1344
    layer = FourierKANLinear(in_features, out_features, grid_size=grid_size)
    x = torch.randn(batch, in_features, requires_grad=True)

    with LargestTensor() as probe:
        y = layer(x)  # (batch, out)
    assert probe.largest < forbidden
    y.sum().backward()
    assert x.grad.shape == x.shape

    # The probe does see the broadcast product of the original formulation.
    with LargestTensor() as probe:
        k = torch.arange(1, grid_size + 1).reshape(1, 1, 1, grid_size)
        c = torch.cos(k * x.reshape(batch, 1, in_features, 1))  # (batch, 1, in, grid)
        (c * layer.fouriercoeffs[0:1]).sum((-2, -1))  # (batch, out, in, grid) summed
    assert probe.largest >= forbidden


# ---------------------------------------------------------------- stacked models and FLOPs


@pytest.mark.parametrize(
    "name, model_class", [("fourier-kan", FourierKAN), ("rbf-kan", RBFKAN), ("chebyshev-kan", ChebyshevKAN)]
)
@pytest.mark.parametrize("grid_size", [5, 20])
def test_zoo_builds_stacked_models(name, model_class, grid_size):
    model = zoo.build(name, [3, 6, 2], grid_size=grid_size)
    assert isinstance(model, model_class)
    assert len(model.layers) == 2
    assert [(layer.in_features, layer.out_features) for layer in model.layers] == [(3, 6), (6, 2)]
    x = torch.randn(9, 3)
    y = model(x)
    assert y.shape == (9, 2) and torch.isfinite(y).all()
    torch.testing.assert_close(y, model.layers[1](model.layers[0](x)))
    assert zoo.flops(name, [3, 6, 2], batch=9, grid_size=grid_size) > 0


def test_parameter_counts_by_formula():
    # per layer: Fourier 2 * out * in * k + out; Chebyshev in * out * (k + 1);
    # RBF out * in * k + (out * in + out) base + 2 * in LayerNorm
    i, o, k = 4, 3, 6
    assert zoo.parameter_count(FourierKANLinear(i, o, grid_size=k)) == 2 * o * i * k + o
    assert zoo.parameter_count(ChebyshevKANLinear(i, o, grid_size=k)) == i * o * (k + 1)
    assert zoo.parameter_count(RBFKANLinear(i, o, grid_size=k)) == o * i * k + o * i + o + 2 * i


def test_flops_by_hand():
    # widths [2, 3], batch 4, grid 5 (per layer, b=4, i=2, o=3):
    # Fourier: k*x, cos, sin 3*4*2*5 = 120; product 2*4*(2*2*5)*3 = 480; bias 4*3 = 12 -> 612
    assert zoo.flops("fourier-kan", [2, 3], batch=4, grid_size=5) == 612
    assert zoo.flops("fourier-kan", [2, 3], batch=4, grid_size=5, addbias=False) == 600
    # Chebyshev: tanh and 2t 2*4*2 = 16; 4 recurrence steps 2*4*2*4 = 64; product 2*4*(2*6)*3 = 288 -> 368
    assert zoo.flops("chebyshev-kan", [2, 3], batch=4, grid_size=5) == 368
    # RBF (grid 8): LayerNorm 7*4*2 + 4*4 = 72; basis 5*4*2*8 = 320; product 2*4*(2*8)*3 = 384;
    # base SiLU 4*4*2 = 32, product 2*4*2*3 = 48, bias and final add 2*4*3 = 24 -> 880
    assert zoo.flops("rbf-kan", [2, 3], batch=4, grid_size=8) == 880
    assert zoo.flops("rbf-kan", [2, 3], batch=4, grid_size=8, use_layernorm=False, use_base_update=False) == 704


@pytest.mark.parametrize("stack, layer", [
    ("kan.rbf:RBFKAN", "kan.rbf:RBFKANLinear"),
    ("kan.fourier:FourierKAN", "kan.fourier:FourierKANLinear"),
    ("kan.chebyshev:ChebyshevKAN", "kan.chebyshev:ChebyshevKANLinear"),
])
def test_a_family_takes_its_layers_options_by_position_and_by_name(stack, layer):
    import importlib
    import inspect

    def load(spec):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    stack, layer = load(stack), load(layer)
    layer_params = list(inspect.signature(layer).parameters.values())[2:]  # after the two widths
    assert list(inspect.signature(stack).parameters.values())[1:] == layer_params
    grid = layer_params[0].default + 1  # grid_size first in every family, not its default
    for model in (stack([3, 4, 2], grid), stack([3, 4, 2], grid_size=grid)):
        assert model.grid_size == grid and all(l.grid_size == grid for l in model.layers)
    torch.manual_seed(0)
    by_stack = stack([3, 4, 2], grid)
    torch.manual_seed(0)
    by_hand = [layer(3, 4, grid), layer(4, 2, grid)]  # the same seed gives the same weights
    for built, made in zip(by_stack.layers, by_hand):
        for (n, p), (m, q) in zip(built.state_dict().items(), made.state_dict().items()):
            assert n == m and torch.equal(p, q)
    with pytest.raises(TypeError, match="nope"):
        stack([3, 2], nope=1)
