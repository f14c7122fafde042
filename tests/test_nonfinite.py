"""NaN, infinite and huge inputs: kan-fast against the reference (kan.reference) on the same weights.

The truth is the reference layer or model in the same dtype, loaded from the same state
dict: its outputs and the gradients of the input and of every parameter. For NaN and
infinite values the reference's pattern is what its dense products make of them (NaN
bases from order 1 on, ``0 * inf = NaN`` in its matrix products), and kan-fast must have
NaN, +inf and -inf in exactly the same places; everywhere else the values agree to
float32 rounding. Every position of the input gets every value in turn, on every path
(C++ kernels and PyTorch, dense and gather contractions), uniform and adapted grids,
spline orders 0 to 5, with and without the standalone scaler. Seeded and deterministic.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

import kan.fast
import kan.native
from kan.fast import FastBSplineKAN, FastBSplineKANLinear
from kan.reference import KAN, KANLinear
from nonfinite_patterns import VALUES, assert_same_pattern, outputs_and_gradients

PATHS = ["dense-native", "dense-torch", "gather-native", "gather-torch"]


class Path(str):
    """A path's name ("gather-native") with the kan-fast options that take it (the PyTorch
    path's kernels not compiled)."""

    @property
    def options(self) -> dict:
        contraction, backend = self.split("-")
        return {"contraction": contraction, "backend": backend, "compile": "off"}


@pytest.fixture(params=PATHS)
def path(request):
    """Every kan-fast layer of a test on one path: 'dense' or 'gather', by the C++ kernels
    ('native') or by PyTorch ('torch'), through the layers' options."""
    chosen = Path(request.param)
    if chosen.options["backend"] == "native" and not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    return chosen


# --------------------------------------------------------------------------- helpers


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter from N(0, 1): the spline part weighs as much as the base part."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


def pair(path, widths, grid_size, order, adapted, scaler, seed=0):
    """A randomised reference (layer for two widths, else model) and kan-fast on ``path``
    loaded from its state dict.

    ``adapted``: the knots moved by ``update_grid`` to skewed data (a non-uniform grid).
    """
    options = dict(grid_size=grid_size, spline_order=order, enable_standalone_scale_spline=scaler)
    torch.manual_seed(seed)
    if len(widths) == 2:
        reference = KANLinear(*widths, **options)
        fast = FastBSplineKANLinear(*widths, **options, **path.options)
    else:
        reference, fast = KAN(widths, **options), FastBSplineKAN(widths, **options, **path.options)
    randomise(reference, seed)
    if adapted:
        generator = torch.Generator().manual_seed(seed + 1)
        data = torch.randn(64, widths[0], generator=generator) ** 3
        first = reference if len(widths) == 2 else reference.layers[0]
        first.update_grid(data)
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference, fast


def assert_matches_reference(reference, fast, x, upstream, what) -> None:
    expected = outputs_and_gradients(reference, x, upstream)
    actual = outputs_and_gradients(fast, x, upstream)
    assert set(actual) == set(expected)
    for name in expected:
        assert_same_pattern(actual[name], expected[name], f"{what}, {name}")


def grid_inputs(batch: int, in_features: int, seed: int) -> torch.Tensor:
    """(batch, in) ordinary inputs across and beyond the default grid (-1, 1)."""
    return torch.rand(batch, in_features, generator=torch.Generator().manual_seed(seed)) * 3 - 1.5


# --------------------------------------------------------------------------- fuzz


@pytest.mark.sweep
@pytest.mark.parametrize("adapted", [False, True], ids=["uniform", "adapted"])
@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_every_value_in_every_position_of_a_layer(path, order, adapted):
    """Layer [3, 2], batch 4: each of the 12 positions takes each special value, alone."""
    for scaler in (True, False):
        reference, fast = pair(path, [3, 2], 4, order, adapted, scaler, seed=order)
        clean = grid_inputs(4, 3, seed=order)
        upstream = torch.randn(4, 2, generator=torch.Generator().manual_seed(7))
        for position in range(clean.numel()):
            for value in VALUES:
                x = clean.clone()
                x.view(-1)[position] = value
                assert_matches_reference(reference, fast, x, upstream,
                                         f"{path}, order {order}, scaler {scaler}, x[{position}] = {value}")


@pytest.mark.sweep
@pytest.mark.parametrize("order", [1, 3])
def test_every_value_in_every_position_of_a_model(path, order):
    """Model [3, 4, 2]: a special value in the input reaches the hidden layer, and its
    gradient comes back through the first layer's backward as a non-finite upstream gradient."""
    reference, fast = pair(path, [3, 4, 2], 5, order, adapted=False, scaler=True, seed=10 + order)
    clean = grid_inputs(3, 3, seed=3)
    upstream = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    for position in range(clean.numel()):
        for value in VALUES:
            x = clean.clone()
            x.view(-1)[position] = value
            assert_matches_reference(reference, fast, x, upstream, f"{path}, order {order}, x[{position}] = {value}")


@pytest.mark.sweep
@pytest.mark.parametrize("order", [0, 1, 3, 5])
def test_non_finite_upstream_gradient(path, order):
    """Finite inputs, each special value in each position of the upstream gradient."""
    reference, fast = pair(path, [3, 2], 6, order, adapted=order == 3, scaler=order != 5, seed=20 + order)
    x = grid_inputs(4, 3, seed=5)
    clean = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    for position in range(clean.numel()):
        for value in VALUES[:3]:
            upstream = clean.clone()
            upstream.view(-1)[position] = value
            assert_matches_reference(reference, fast, x, upstream, f"{path}, order {order}, upstream[{position}] = {value}")


def test_huge_input_overflows_in_the_hidden_layer(path):
    """The issue's case: 3e38 in a [17, 33, 5] model overflows to inf in the hidden layer."""
    reference, fast = pair(path, [17, 33, 5], 5, 3, adapted=False, scaler=True, seed=4)
    x = torch.rand(64, 17, generator=torch.Generator().manual_seed(4)) * 2 - 1
    x[5, 3] = 3e38
    with torch.no_grad():
        hidden = reference.layers[0](x)
    assert hidden[5].isinf().any()  # the case is the one described
    assert_matches_reference(reference, fast, x, torch.ones(64, 5), "[17, 33, 5], x[5, 3] = 3e38")


def test_plus_infinity_then_backward_in_a_child_process():
    """The issue's crash (the table gradient writing past its buckets), where a crash cannot take pytest down."""
    script = (
        "import torch\n"
        "from kan import zoo\n"
        "torch.manual_seed(0)\n"
        "for order in (1, 3):\n"
        "    m = zoo.build('kan-fast', [4, 3], spline_order=order)\n"
        "    x = torch.rand(256, 4); x[0, 1] = float('inf')\n"
        "    m(x).sum().backward()\n"
        "    assert m.layers[0].spline_weight.grad[:, 1].isnan().all()\n"
        "    assert m.layers[0].spline_weight.grad[:, [0, 2, 3]].isfinite().all()\n"
        "print('done')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


# --------------------------------------------------------------------------- the kernels alone


@pytest.mark.parametrize("order", [1, 3])
def test_native_kernels_take_infinities_without_reading_or_writing_out_of_bounds(order):
    """kan.native's kernels on +inf, -inf, NaN and huge inputs: spans clamped, no basis, finite results.

    Truth: inputs with no basis (inf, NaN, beyond the grid) contribute nothing, so the
    results equal those of the same batch with those inputs replaced by -50 (beyond the grid too).
    """
    if not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    from kan.fast import knot_geometry

    layer = KANLinear(5, 4, grid_size=8, spline_order=order)  # steps of 0.25: a cardinal grid, whose spans are saved
    g = knot_geometry(layer.grid, order)
    x = grid_inputs(300, 5, seed=6)
    x[::2, 1] = torch.tensor(VALUES).repeat(25)  # 150 rows: every value 25 times
    clean = x.clone()
    clean[::2, 1] = -50.0
    table = torch.randn(5, g.coeff, 4)
    grad_out = torch.randn(300, 4)
    out, spans = kan.native.gather_forward(x, table, g, save=True)
    assert torch.equal(out, kan.native.gather_forward(clean, table, g))
    expected = kan.native.gather_table_grad(clean, grad_out, g)
    assert torch.equal(kan.native.gather_table_grad(x, grad_out, g), expected)
    assert torch.equal(kan.native.gather_table_grad(None, grad_out, g, saved=spans), expected)
    # steps of 2/6, uneven by rounding: de Boor's triangle over the stored knots, nothing saved
    g = knot_geometry(KANLinear(5, 4, grid_size=6, spline_order=order).grid, order)
    assert not g.cardinal
    table = torch.randn(5, g.coeff, 4)
    assert torch.equal(kan.native.gather_forward(x, table, g), kan.native.gather_forward(clean, table, g))
    assert torch.equal(kan.native.gather_table_grad(x, grad_out, g), kan.native.gather_table_grad(clean, grad_out, g))


# --------------------------------------------------------------------------- empty batch


@pytest.mark.parametrize("name", sorted(__import__("kan.zoo", fromlist=["available"]).available()))
def test_every_zoo_model_takes_an_empty_batch(name):
    """An empty output, and a backward that gives an empty input gradient and zero (or no)
    parameter gradients: the sum over no samples."""
    from kan import zoo

    torch.manual_seed(0)
    model = zoo.build(name, [4, 5, 3])
    x = torch.zeros(0, 4, requires_grad=True)
    out = model(x)
    assert out.shape == (0, 3)
    out.sum().backward()
    assert x.grad.shape == (0, 4)
    for parameter in model.parameters():
        assert parameter.grad is None or torch.equal(parameter.grad, torch.zeros_like(parameter))


def test_kan_fast_takes_an_empty_batch_on_every_path(path):
    reference, fast = pair(path, [4, 5, 3], 30, 3, adapted=False, scaler=True)
    assert_matches_reference(reference, fast, torch.zeros(0, 4), torch.zeros(0, 3), f"{path}, empty batch")
    with pytest.raises(ValueError, match="empty batch"):
        fast.layers[0].update_grid(torch.zeros(0, 4))


# --------------------------------------------------------------------------- precision at large grids


def spline_layer(grid_size: int, order: int) -> KANLinear:
    """A float32 [8, 4] reference layer whose spline part is the output: base weights 0,
    spline weights N(0, 1), scaler 1."""
    torch.manual_seed(0)
    layer = KANLinear(8, 4, grid_size=grid_size, spline_order=order)
    with torch.no_grad():
        layer.base_weight.zero_()
        layer.spline_weight.copy_(torch.randn(layer.spline_weight.shape, generator=torch.Generator().manual_seed(1)))
        layer.spline_scaler.fill_(1.0)
    return layer


@functools.lru_cache(maxsize=None)
def precision_case(grid_size: int, order: int):
    """Inputs (1000, 8) uniform in [-1, 1]; the truth: the layer's function on evenly spaced
    knots (float64, which float32 rounds), by scipy's B-splines; its scale; the float32
    reference's relative error; and the layer's state dict. Computed once per case."""
    from scipy.interpolate import BSpline

    x = torch.rand(1000, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    layer = spline_layer(grid_size, order)
    knots = np.arange(-order, grid_size + order + 1) * (2.0 / grid_size) - 1.0  # float64
    weight = layer.spline_weight.detach().double().numpy()  # (out, in, coeff)
    columns = x.double().numpy()
    truth = np.zeros((x.size(0), 4))
    for i in range(8):
        for o in range(4):
            truth[:, o] += BSpline(knots, weight[o, i], order, extrapolate=False)(columns[:, i])
    truth = torch.from_numpy(truth)
    scale = truth.abs().max().item()
    with torch.no_grad():
        error = (layer(x).double() - truth).abs().max().item() / scale
    return x, truth, scale, error, layer.state_dict()


@pytest.mark.sweep
@pytest.mark.parametrize("grid_size, order", [(100, 5), (1000, 1), (1000, 3), (1000, 5)])
def test_float32_error_at_large_grids_stays_near_the_references(path, grid_size, order):
    """Max error relative to max |output| against the float64 reference on evenly spaced
    knots: kan-fast's float32 error within 4 times the float32 reference's (both carry the
    rounding of float32 knots; the PyTorch path's local coordinate used to add the
    rounding of the knot coordinate, up to 9 times the reference's)."""
    x, truth, scale, reference_error, state = precision_case(grid_size, order)
    fast = FastBSplineKANLinear(8, 4, grid_size=grid_size, spline_order=order, **path.options)
    fast.load_state_dict(state, strict=True)
    with torch.no_grad():
        fast_error = (fast(x).double() - truth).abs().max().item() / scale
    assert fast_error <= 4 * reference_error, f"{path}: {fast_error:.3g} > 4 * {reference_error:.3g}"
