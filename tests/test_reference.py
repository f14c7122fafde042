"""The reference B-spline KAN against independent truths.

The oracle for the bases is scipy's B-splines (de Boor's algorithm in compiled
code, written independently of our Cox-de Boor recursion); the oracle for a whole
layer is that same basis with the layer's formula written out in float64 numpy.
"""

import inspect
import math

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from kan import KAN, KANLinear, zoo


def scipy_bases(x: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """All B-spline bases of ``order`` on ``knots`` at points x (n,) -> (n, len(knots) - order - 1).

    Outside a basis function's support scipy gives NaN (extrapolate=False): that is zero.
    """
    count = len(knots) - order - 1
    out = np.empty((len(x), count))
    for j in range(count):
        element = BSpline.basis_element(knots[j : j + order + 2], extrapolate=False)
        out[:, j] = np.nan_to_num(element(x), nan=0.0)
    return out


def layer_oracle(layer: KANLinear, x: np.ndarray) -> np.ndarray:
    """The layer's output computed in float64 numpy from its state: x (n, in) -> (n, out)."""
    state = {k: v.detach().double().numpy() for k, v in layer.state_dict().items()}
    silu = x / (1 + np.exp(-x))
    out = silu @ state["base_weight"].T
    scale = state.get("spline_scaler", np.ones(state["base_weight"].shape))
    for i in range(layer.in_features):
        bases = scipy_bases(x[:, i], state["grid"][i], layer.spline_order)  # (n, coeff)
        out += bases @ (state["spline_weight"][:, i, :] * scale[:, i, None]).T
    return out


def probe_points(layer: KANLinear, count: int, generator: torch.Generator) -> torch.Tensor:
    """Points that exercise every case: random ones inside and outside grid_range,
    every knot exactly, and both ends of the range."""
    knots = layer.grid[0]
    lo, hi = float(knots[0]), float(knots[-1])
    random = torch.rand(count, generator=generator, dtype=torch.float64) * (hi - lo + 2) + lo - 1
    return torch.cat([random, knots.double(), torch.tensor([-1.0, 1.0])])


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("grid_size", [1, 5, 12])
def test_b_splines_match_scipy(order, grid_size):
    torch.manual_seed(0)
    layer = KANLinear(3, 2, grid_size=grid_size, spline_order=order).double()
    g = torch.Generator().manual_seed(order * 100 + grid_size)
    points = probe_points(layer, 200, g)
    x = points.unsqueeze(1).expand(-1, 3).contiguous()  # (n, in): every feature sees every point

    ours = layer.b_splines(x).numpy()  # (n, in, coeff)
    for i in range(3):
        expected = scipy_bases(points.numpy(), layer.grid[i].numpy(), order)
        np.testing.assert_allclose(ours[:, i, :], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_b_splines_match_scipy_on_updated_nonuniform_grid(order):
    torch.manual_seed(1)
    layer = KANLinear(2, 3, grid_size=6, spline_order=order).double()
    samples = torch.cat(
        [torch.randn(500, 1, dtype=torch.float64) ** 3, torch.randn(500, 1, dtype=torch.float64).exp() - 2], dim=1
    )  # skewed, so the quantile grid is far from uniform
    layer.update_grid(samples)
    steps = layer.grid.diff(dim=1)
    assert (steps.max(dim=1).values / steps.min(dim=1).values > 1.5).all(), "grid should be non-uniform"

    g = torch.Generator().manual_seed(7)
    for i in range(2):
        knots = layer.grid[i]
        points = torch.cat([torch.rand(300, generator=g, dtype=torch.float64) * 8 - 4, knots])
        x = torch.zeros(len(points), 2, dtype=torch.float64)
        x[:, i] = points
        ours = layer.b_splines(x)[:, i, :].numpy()
        np.testing.assert_allclose(ours, scipy_bases(points.numpy(), knots.numpy(), order), atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_partition_of_unity_inside_grid_range(order):
    layer = KANLinear(4, 1, grid_size=7, spline_order=order).double()
    x = torch.linspace(-1, 1, 1001, dtype=torch.float64)[:-1].unsqueeze(1).expand(-1, 4)
    total = layer.b_splines(x).sum(dim=-1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-12, rtol=0)


@pytest.mark.parametrize("standalone", [True, False])
def test_forward_matches_float64_oracle(standalone):
    torch.manual_seed(2)
    layer = KANLinear(5, 4, grid_size=5, spline_order=3, enable_standalone_scale_spline=standalone).double()
    x = torch.randn(64, 5, dtype=torch.float64) * 1.5  # some points outside grid_range
    np.testing.assert_allclose(layer(x).detach().numpy(), layer_oracle(layer, x.numpy()), atol=1e-12, rtol=1e-12)


def test_forward_accepts_leading_dimensions():
    layer = KANLinear(3, 2)
    x = torch.randn(4, 5, 3)
    y = layer(x)
    assert y.shape == (4, 5, 2)
    torch.testing.assert_close(y.reshape(-1, 2), layer(x.reshape(-1, 3)))


@pytest.mark.sweep
@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("standalone", [True, False])
def test_gradcheck_input_and_parameters(order, standalone):
    torch.manual_seed(3)
    layer = KANLinear(3, 2, grid_size=4, spline_order=order, enable_standalone_scale_spline=standalone).double()
    x = (torch.rand(6, 3, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    params = list(layer.parameters())

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            layer, dict(zip([n for n, _ in layer.named_parameters()], ps))
        ):
            return layer(x)

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in params]))


def test_kan_stacks_layers_and_matches_oracle():
    torch.manual_seed(4)
    model = KAN([3, 4, 2], grid_size=3, spline_order=2).double()
    assert isinstance(model.layers, torch.nn.ModuleList) and len(model.layers) == 2
    x = torch.randn(20, 3, dtype=torch.float64)
    hidden = layer_oracle(model.layers[0], x.numpy())
    expected = layer_oracle(model.layers[1], hidden)
    np.testing.assert_allclose(model(x).detach().numpy(), expected, atol=1e-12)


# efficient-kan's state dict layout, written out: names and shapes (in=3, out=2, grid 5, order 3).
EFFICIENT_KAN_LAYOUT = {
    "layers.0.grid": (3, 5 + 2 * 3 + 1),
    "layers.0.base_weight": (2, 3),
    "layers.0.spline_weight": (2, 3, 5 + 3),
    "layers.0.spline_scaler": (2, 3),
    "layers.1.grid": (2, 12),
    "layers.1.base_weight": (1, 2),
    "layers.1.spline_weight": (1, 2, 8),
    "layers.1.spline_scaler": (1, 2),
}


def test_state_dict_has_efficient_kan_layout():
    model = KAN([3, 2, 1])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == EFFICIENT_KAN_LAYOUT


def test_efficient_kan_state_dict_loads_strictly_and_gives_its_outputs():
    # A state dict as efficient-kan saves it: its extended uniform grid on [-1, 1]
    # (h = 2/5, knots -1 - 3h ... 1 + 3h), arbitrary weights.
    g = torch.Generator().manual_seed(5)
    foreign = {}
    for name, shape in EFFICIENT_KAN_LAYOUT.items():
        if name.endswith("grid"):
            foreign[name] = (torch.arange(-3, 5 + 3 + 1) * 0.4 - 1).expand(shape[0], -1).clone()
        else:
            foreign[name] = torch.randn(*shape, generator=g)
    model = KAN([3, 2, 1])
    model.load_state_dict(foreign, strict=True)

    x = torch.rand(50, 3, generator=g) * 2.2 - 1.1
    hidden = layer_oracle(model.layers[0], x.double().numpy())
    expected = layer_oracle(model.layers[1], hidden)
    np.testing.assert_allclose(model(x).detach().numpy(), expected, atol=1e-5, rtol=1e-5)

    # and the other way round: our state dict into a fresh model of the same layout
    again = KAN([3, 2, 1])
    again.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(again(x), model(x), atol=1e-6, rtol=0)


def test_wrong_width_is_a_value_error_naming_both_widths():
    layer = KANLinear(4, 2)
    with pytest.raises(ValueError, match=r"width 4.*width 3"):
        layer(torch.randn(5, 3))
    with pytest.raises(ValueError, match="width 4"):
        KAN([4, 2])(torch.randn(5, 7))


def test_update_grid_keeps_the_function_on_the_samples():
    torch.manual_seed(6)
    layer = KANLinear(4, 3, grid_size=8)
    x = torch.rand(2000, 4) ** 2 * 2 - 1  # inside grid_range, skewed towards -1
    with torch.no_grad():  # smooth splines that dominate the output: sin(k x) on every edge
        k = torch.arange(1, 4).float()  # (out,)
        layer.spline_weight.copy_(layer.curve2coeff(x, torch.sin(x.unsqueeze(-1) * k)))
        layer.base_weight.mul_(0.01)
    before = layer(x).detach()
    layer.update_grid(x)
    after = layer(x).detach()
    # The refit is a least-squares projection onto the new spline space, so the change
    # is the approximation error of the old (smooth) spline in the new space: within
    # 1% of the output scale. Refitting against the scaled weights (the original's
    # behaviour) moves it by tens of percent.
    scale = before.abs().max()
    assert (after - before).abs().max() / scale < 0.01
    assert layer.grid.diff(dim=1).min() > 0


def test_update_grid_with_constant_and_duplicated_columns_gives_no_nan():
    torch.manual_seed(7)
    layer = KANLinear(3, 2, grid_size=5)
    x = torch.randn(256, 3)
    x[:, 0] = 0.25  # constant
    x[:, 1] = torch.randint(0, 3, (256,)).float() / 2  # three distinct values, many duplicates
    layer.update_grid(x)
    assert torch.isfinite(layer.grid).all() and torch.isfinite(layer.spline_weight).all()
    assert torch.isfinite(layer(x)).all()


def test_update_grid_keeps_float64_and_device():
    torch.manual_seed(8)
    model = KAN([2, 3, 1], grid_size=4).double()
    x = torch.randn(300, 2, dtype=torch.float64)
    before = model(x).detach()
    model(x, update_grid=True)
    for layer in model.layers:
        assert layer.grid.dtype == torch.float64 and layer.spline_weight.dtype == torch.float64
        assert layer.grid.device == x.device
    after = model(x).detach()
    assert after.dtype == torch.float64
    assert (after - before).abs().max() / before.abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_update_grid_on_cuda_with_constant_column():
    layer = KANLinear(3, 2).cuda()
    x = torch.randn(128, 3, device="cuda")
    x[:, 2] = 0.5
    layer.update_grid(x)
    assert layer.grid.device.type == "cuda" and torch.isfinite(layer(x)).all()


def test_regularization_loss_by_hand():
    layer = KANLinear(2, 1, grid_size=1, spline_order=1)
    with torch.no_grad():
        layer.spline_weight.copy_(torch.tensor([[[1.0, -3.0], [0.5, 0.5]]]))  # (out, in, coeff)
    # mean |w| per edge: 2 and 0.5; L1 = 2.5; p = (0.8, 0.2); entropy = -(0.8 ln 0.8 + 0.2 ln 0.2)
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert layer.regularization_loss().item() == pytest.approx(2.5 + entropy)
    assert layer.regularization_loss(2.0, 0.0).item() == pytest.approx(5.0)


def test_initialisation_recipe():
    torch.manual_seed(9)
    layer = KANLinear(50, 40, grid_size=5, scale_noise=0.1)
    bound = 1 / math.sqrt(50)  # kaiming_uniform with a = sqrt(5): sqrt(6 / ((1 + 5) * fan_in))
    assert layer.base_weight.abs().max() <= bound + 1e-7
    assert layer.base_weight.abs().max() > 0.9 * bound
    # splines fitted to noise of amplitude scale_noise / grid_size / 2 at the grid points
    knots = layer.grid[:, 3:-3].T  # (grid_size + 1, in)
    values = torch.einsum("bic,oic->bio", layer.b_splines(knots), layer.spline_weight)
    assert values.abs().max() <= 0.1 / 5 / 2 + 1e-4


# --------------------------------------------------------------------------- edge cases


def test_spline_order_zero_is_piecewise_constant():
    """Order 0: basis j is the indicator of [t_j, t_(j+1)) (by hand), and the layer is the oracle's."""
    torch.manual_seed(11)
    layer = KANLinear(2, 3, grid_size=4, spline_order=0).double()
    knots = layer.grid[0]
    assert torch.equal(knots, torch.linspace(-1, 1, 5, dtype=torch.float64))
    points = torch.cat([torch.rand(200, dtype=torch.float64) * 3 - 1.5, knots])
    x = points.unsqueeze(1).expand(-1, 2).contiguous()
    expected = ((points.unsqueeze(1) >= knots[:-1]) & (points.unsqueeze(1) < knots[1:])).double()  # (n, 4)
    assert torch.equal(layer.b_splines(x)[:, 0], expected)
    inside = torch.rand(50, 2, dtype=torch.float64) * 1.8 - 0.9  # off the knots (scipy closes the last interval)
    np.testing.assert_allclose(layer(inside).detach().numpy(), layer_oracle(layer, inside.numpy()), atol=1e-12)


BAD_OPTIONS = [
    (dict(grid_size=0), "grid_size must be an integer >= 1"),
    (dict(grid_size=-3), "grid_size must be an integer >= 1"),
    (dict(grid_size=2.5), "grid_size must be an integer >= 1"),
    (dict(spline_order=-1), "spline_order must be an integer >= 0"),
    (dict(grid_range=(0, 0)), "low < high"),
    (dict(grid_range=(1, -1)), "low < high"),
    (dict(grid_range=(0, math.inf)), "finite"),
    (dict(grid_range=(math.nan, 1)), "finite"),
    (dict(grid_range=(1,)), "two numbers"),
    (dict(grid_range=(-3e38, 3e38)), r"extended knots .* overflow torch.float32"),  # finite ends, knots past them
    (dict(grid_range=(-1e308, 1e308)), r"extended knots .* overflow"),  # high - low overflows float64 too
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
@pytest.mark.parametrize("model", ["kan", "kan-fast"])
def test_options_that_describe_no_spline_are_one_line_value_errors(model, options, message):
    from kan import zoo

    with pytest.raises(ValueError, match=message) as raised:
        zoo.build(model, [3, 2], **options)
    assert "\n" not in str(raised.value)


def test_huge_finite_inputs_have_zero_bases_and_non_finite_ones_nan():
    """By hand: beyond the knots every basis is 0, however far (3e38 used to overflow to
    inf * 0 = NaN in float32); NaN and +-inf have NaN bases from order 1 on, 0 at order 0."""
    for order in (0, 1, 3):
        layer = KANLinear(1, 1, grid_size=5, spline_order=order)
        far = torch.tensor([[3e38], [-3e38], [1e30], [-1e30], [3.4e38]])
        assert torch.equal(layer.b_splines(far), torch.zeros(5, 1, 5 + order))
        special = layer.b_splines(torch.tensor([[math.nan], [math.inf], [-math.inf]]))
        assert (special.isnan().all() if order else torch.equal(special, torch.zeros_like(special)))


def test_empty_batch_gives_an_empty_output_and_zero_gradients():
    torch.manual_seed(12)
    model = KAN([3, 4, 2])
    x = torch.zeros(2, 0, 3, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 0, 2)
    out.sum().backward()
    assert x.grad.shape == (2, 0, 3)
    for parameter in model.parameters():
        assert torch.equal(parameter.grad, torch.zeros_like(parameter))


def test_update_grid_on_an_empty_batch_or_non_finite_samples_is_a_value_error():
    layer = KANLinear(3, 2)
    grid = layer.grid.clone()
    with pytest.raises(ValueError, match="empty batch"):
        layer.update_grid(torch.zeros(0, 3))
    for value in (math.nan, math.inf, -math.inf):
        x = torch.randn(50, 3)
        x[7, 1] = value
        with pytest.raises(ValueError, match="finite samples"):
            layer.update_grid(x)
    assert torch.equal(layer.grid, grid)  # nothing was changed


@pytest.mark.sweep
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("grid_size", [5, 20, 50])
@pytest.mark.parametrize("model", ["kan", "kan-fast"])
def test_update_grid_keeps_the_output_on_data_with_few_distinct_values(model, grid_size, dtype, tolerance):
    """Seven distinct values per feature (rounded normals, clipped to [-3, 3]), at most as many as
    coefficients (grid_size + 3 >= 8): a spline on the new knots passes through the old
    values there (the quantile knots put them in distinct supports), so the refit is an
    interpolation, exact but for rounding: the SVD solve's residual is a few units of the
    dtype's rounding times the basis matrix's condition, measured at most 1.6e-6 (float32)
    and 1.1e-15 (float64) of the output scale; the tolerances leave 60 times and a
    million times that (a failure means a fit, not rounding, went wrong).
    The solver this replaced (gelsy) returned near-zero weights here and moved the output
    by as much as its own size."""
    from kan import zoo

    torch.manual_seed(13)
    net = zoo.build(model, [6, 4], grid_size=grid_size).to(dtype)
    with torch.no_grad():
        net.layers[0].spline_weight.normal_()
    x = torch.round(torch.randn(2000, 6, dtype=dtype)).clamp(-3, 3)
    assert all(len(torch.unique(column)) == 7 for column in x.T)
    with torch.no_grad():
        before = net(x)
        net(x, update_grid=True)
        after = net(x)
    assert net.layers[0].grid.diff(dim=1).min() > 0
    assert (after - before).abs().max() <= tolerance * before.abs().max()


EFFICIENT_KAN_OPTIONS = ["grid_size", "spline_order", "scale_noise", "scale_base", "scale_spline",
                         "enable_standalone_scale_spline", "base_activation", "grid_eps", "grid_range"]


def test_the_spline_options_are_efficient_kans_by_position_and_by_name_for_every_b_spline_model():
    from kan.fast import FastBSplineKAN, FastBSplineKANLinear

    for model in (KANLinear, FastBSplineKANLinear):
        assert list(inspect.signature(model).parameters)[2:11] == EFFICIENT_KAN_OPTIONS, model
    for model in (KAN, FastBSplineKAN):
        assert list(inspect.signature(model).parameters)[1:10] == EFFICIENT_KAN_OPTIONS, model
    assert list(zoo.options("kan")) == EFFICIENT_KAN_OPTIONS
    assert list(zoo.options("kan-fast")) == [*EFFICIENT_KAN_OPTIONS, "backend", "contraction", "compile"]
    # efficient-kan's positional order: grid_size, spline_order, scale_noise, ... (same seed, same layer)
    torch.manual_seed(3)
    by_position = KANLinear(4, 2, 7, 2, 0.2, 1.0, 1.0, False)
    torch.manual_seed(3)
    by_name = KANLinear(4, 2, grid_size=7, spline_order=2, scale_noise=0.2, enable_standalone_scale_spline=False)
    assert (by_position.grid_size, by_position.spline_order, by_position.scale_noise) == (7, 2, 0.2)
    assert not hasattr(by_position, "spline_scaler")
    # (equal to the rounding of the least-squares fit of the initial coefficients, which two fits
    # from one seed may differ by)
    for name, tensor in by_name.state_dict().items():
        torch.testing.assert_close(by_position.state_dict()[name], tensor, msg=name)
    torch.manual_seed(3)
    fast = FastBSplineKAN([4, 2], 7, 2, 0.2, 1.0, 1.0, False, compile="off")
    for name, tensor in by_name.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[f"layers.0.{name}"], tensor, msg=name)
    with pytest.raises(TypeError, match="colour"):
        KAN([3, 2], colour="red")
