"""The fast B-spline KAN (kan.fast) against the reference KAN built from the same state dict.

The reference (kan.reference, efficient-kan semantics, itself checked against scipy's
B-splines in test_reference.py) is the independent truth: every check builds a reference
layer or model, randomises its parameters so that the spline part of the output is as
large as the base part, loads its state dict into the fast one with ``strict=True`` and
compares outputs and gradients on inputs inside the grid, beyond it, far outside it and
exactly on the knots.

Only the public surface of kan.fast is used. Both contractions are forced through the
layers' ``contraction`` option, each computed both by the C++ kernels (``backend="native"``,
kan.native) and by PyTorch (``backend="torch"``); every layer is built with its
``torch.compile``'d kernels off (``compile="off"``) except in the few tests of compilation.
"""

from __future__ import annotations

import itertools
import shutil
import warnings
from typing import NamedTuple

import pytest
import torch

import kan.fast
import kan.native
import kan.reference
from kan import zoo
from kan.fast import FastBSplineKAN, FastBSplineKANLinear, knot_geometry
from kan.reference import KAN, KANLinear

FLOAT32_TOLERANCE = 1e-5  # outputs, relative to max(1, max |reference|)
FLOAT64_TOLERANCE = 1e-10
GRADIENT_TOLERANCE = 1e-4  # float32 gradients, relative to max(1, max |reference gradient|)
FAR_OUTSIDE = (-100.0, -3.0, 3.0, 100.0)


# --------------------------------------------------------------------------- fixtures


EAGER = {"compile": "off"}  # the layers' uniform-grid kernels not compiled: the tests of compilation say otherwise


@pytest.fixture
def compiler():
    """torch.compile's toolchain for the CPU, or a skip: the compiled kernels serve the PyTorch backend."""
    if not kan.fast.can_compile("cpu"):
        pytest.skip("torch.compile kernels unavailable here (kan.fast.can_compile('cpu') is False: no C++ compiler)")


class Forced(NamedTuple):
    """A contraction ('dense' or 'gather') and a backend ('native' or 'torch') for every layer,
    and whether their kernels are compiled (``compile``, off unless a test says otherwise)."""

    name: str
    backend: str
    compile: str = "off"

    @property
    def options(self) -> dict:
        return {"contraction": self.name, "backend": self.backend, "compile": self.compile}


@pytest.fixture(params=["dense-native", "dense-torch", "gather-native", "gather-torch"])
def contraction(request):
    """One contraction for every layer, computed by the C++ kernels or by PyTorch.

    '-native' with kan.native's C++ kernels (skipped where they cannot be built),
    '-torch' with PyTorch, as on a machine without a compiler and on CUDA.
    """
    forced = Forced(*request.param.split("-"))
    if forced.backend == "native" and not kan.native.available():
        pytest.skip(f"C++ kernels unavailable here: {kan.native.error()}")
    return forced


# --------------------------------------------------------------------------- helpers


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn from N(0, 1), so the spline part weighs as much as the base part."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def layer_pair(in_features, out_features, grid_size, order, dtype=torch.float32, seed=0, forced=None, **options):
    """A randomised reference ``KANLinear`` and a ``FastBSplineKANLinear`` (with the ``forced``
    contraction and backend, if given) loaded from its state dict."""
    torch.manual_seed(seed)
    reference = KANLinear(in_features, out_features, grid_size=grid_size, spline_order=order, **options)
    randomise(reference, seed)
    fast_options = {**options, **(forced.options if forced else EAGER)}
    fast = FastBSplineKANLinear(in_features, out_features, grid_size=grid_size, spline_order=order, **fast_options)
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference.to(dtype), fast.to(dtype)


def model_pair(widths, grid_size=5, order=3, dtype=torch.float32, seed=0, forced=None, **options):
    """A randomised reference ``KAN`` and a ``FastBSplineKAN`` (with the ``forced`` contraction
    and backend, if given) loaded from its state dict."""
    torch.manual_seed(seed)
    reference = KAN(widths, grid_size=grid_size, spline_order=order, **options)
    randomise(reference, seed)
    fast_options = {**options, **(forced.options if forced else EAGER)}
    fast = FastBSplineKAN(widths, grid_size=grid_size, spline_order=order, **fast_options)
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference.to(dtype), fast.to(dtype)


def probe_inputs(layer: KANLinear, generator: torch.Generator, count: int = 48) -> torch.Tensor:
    """Inputs (n, in) that exercise every case, column i on feature i's own knots.

    Random points across the knots and one unit beyond them; points inside grid_range;
    far outside it (+-3, +-100); every knot exactly, the first and the last included;
    and both ends of grid_range (-1 and 1 in these tests).
    """
    grid = layer.grid  # (in, knots)
    in_features = grid.size(0)
    lo, hi = grid[:, 0], grid[:, -1]  # (in,)
    across = lo - 1 + torch.rand(count, in_features, generator=generator, dtype=grid.dtype) * (hi - lo + 2)
    inside = torch.rand(count, in_features, generator=generator, dtype=grid.dtype) * 2 - 1  # (count, in)
    far = torch.tensor(FAR_OUTSIDE, dtype=grid.dtype).unsqueeze(1).expand(-1, in_features)  # (4, in)
    ends = torch.tensor([-1.0, 1.0], dtype=grid.dtype).unsqueeze(1).expand(-1, in_features)  # (2, in)
    return torch.cat([across, inside, far, grid.T, ends]).contiguous()  # (n, in)


def sample_rows(pool: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A batch (batch, in) whose column i takes random values from column i of pool (n, in)."""
    rows = torch.randint(0, pool.size(0), (batch, pool.size(1)), generator=generator)  # (batch, in)
    return pool.gather(0, rows)


def assert_close(actual, expected, tolerance, what=""):
    """max |actual - expected| <= tolerance * max(1, max |expected|); NaN fails."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(1.0, expected.abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"{what}: max |fast - reference| = {error:.3g} > {tolerance:g} * {scale:.3g}"


def gradients(model: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict[str, torch.Tensor]:
    """d(sum(upstream * model(x))) by the input and by every parameter, by name."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model(x).backward(upstream)
    found = {"input": x.grad}
    found.update({name: parameter.grad for name, parameter in model.named_parameters()})
    return found


def assert_same_gradients(reference, fast, x, generator, tolerance=GRADIENT_TOLERANCE):
    """Gradients of fast and reference agree for a random upstream gradient."""
    with torch.no_grad():
        out_features = reference(x).size(-1)
    upstream = torch.randn(*x.shape[:-1], out_features, generator=generator, dtype=x.dtype)  # (..., out)
    expected = gradients(reference, x, upstream)
    actual = gradients(fast, x, upstream)
    assert set(actual) == set(expected) and len(expected) >= 4  # input, base_weight, spline_weight, spline_scaler
    for name in expected:
        assert actual[name] is not None, f"no gradient for {name}"
        assert_close(actual[name], expected[name], tolerance, f"gradient of {name}")


def nonuniform_sample(in_features: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(500, in) skewed samples: x**3 of a normal in even columns, an exponential in odd ones."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(500, in_features, generator=generator, dtype=dtype)
    cubed = normal**3
    exponential = torch.empty(500, in_features, dtype=dtype).exponential_(generator=generator) - 1
    odd = torch.arange(in_features) % 2 == 1  # (in,)
    return torch.where(odd, exponential, cubed)


def away_from_knots(layer: KANLinear, count: int, seed: int, margin: float = 1e-3) -> torch.Tensor:
    """(count, in) fixed points across and beyond the knots, none within ``margin`` of a knot of its feature."""
    generator = torch.Generator().manual_seed(seed)
    grid = layer.grid.double()  # (in, knots)
    columns = []
    for knots in grid:
        lo, hi = knots[0].item() - 1, knots[-1].item() + 1
        candidates = torch.rand(20 * count, generator=generator, dtype=torch.float64) * (hi - lo) + lo
        candidates = torch.cat([torch.tensor([-3.0, 3.0], dtype=torch.float64), candidates])
        distance = (candidates.unsqueeze(1) - knots.unsqueeze(0)).abs().amin(dim=1)  # (candidates,)
        kept = candidates[distance >= margin][:count]
        assert kept.numel() == count
        columns.append(kept)
    return torch.stack(columns, dim=1).to(layer.grid.dtype)  # (count, in)


# --------------------------------------------------------------------------- outputs


SHAPES = [(1, 1, 1), (3, 2, 5), (9, 4, 1), (2, 9, 64), (5, 7, 17), (9, 9, 3), (4, 1, 2)]  # (in, out, batch)
GRID_SIZES = [1, 2, 5, 12, 30]


def sweep() -> list:
    """Every spline order with every grid size, the (in, out, batch) shapes taken in turn."""
    cases = []
    for n, (order, grid) in enumerate(itertools.product(range(1, 6), GRID_SIZES)):
        i, o, b = SHAPES[n % len(SHAPES)]
        cases.append(pytest.param(order, grid, i, o, b, id=f"order{order}-grid{grid}-in{i}-out{o}-batch{b}"))
    return cases


@pytest.mark.sweep
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("order, grid_size, in_features, out_features, batch", sweep())
def test_outputs_equal_reference(order, grid_size, in_features, out_features, batch, dtype, contraction):
    reference, fast = layer_pair(in_features, out_features, grid_size, order, dtype, seed=order * 100 + grid_size,
                                 forced=contraction)
    assert fast.uses_gather() == (contraction.name == "gather")
    tolerance = FLOAT32_TOLERANCE if dtype == torch.float32 else FLOAT64_TOLERANCE
    generator = torch.Generator().manual_seed(order * 100 + grid_size)
    pool = probe_inputs(reference, generator)  # (n, in): every special point in every column
    x = sample_rows(pool, batch, generator)  # (batch, in)
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), tolerance, "outputs on the probe points")
        assert_close(fast(x), reference(x), tolerance, f"outputs on a batch of {batch}")


@pytest.mark.parametrize("order", [1, 3, 5], ids=lambda v: f"order{v}")
@pytest.mark.parametrize("grid_size", GRID_SIZES, ids=lambda v: f"grid{v}")
def test_default_contraction_choice_and_outputs(order, grid_size):
    """At the module's own threshold: the layer says which contraction it takes, and it is exact."""
    reference, fast = layer_pair(3, 2, grid_size, order, seed=grid_size)
    native_kernels = kan.native.supports(fast.grid, order)
    assert fast.uses_gather() == (grid_size + order >= kan.fast.gather_min_coeff(native_kernels))
    pool = probe_inputs(reference, torch.Generator().manual_seed(grid_size))  # (n, 3)
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, "outputs")


def test_both_contractions_taken_over_the_sweep():
    """The sweep's smallest and largest layers fall on either side of the default threshold."""
    smallest = FastBSplineKANLinear(2, 2, grid_size=min(GRID_SIZES), spline_order=1)
    largest = FastBSplineKANLinear(2, 2, grid_size=max(GRID_SIZES), spline_order=5)
    assert not smallest.uses_gather() and largest.uses_gather()


def test_options_reach_every_layer_through_the_registry_and_are_not_state():
    assert {"backend": "auto", "contraction": "auto", "compile": "auto"}.items() <= zoo.options("kan-fast").items()
    torch.manual_seed(13)
    reference = zoo.build("kan", [3, 4, 2], grid_size=6)
    randomise(reference, 13)
    pool = probe_inputs(reference.layers[0], torch.Generator().manual_seed(13))  # (n, 3)
    backends = ["torch"] + (["native"] if kan.native.available() else [])
    for backend, name in itertools.product(backends, ["dense", "gather"]):
        fast = zoo.build("kan-fast", [3, 4, 2], grid_size=6, backend=backend, contraction=name, **EAGER)
        assert all(layer.backend == backend and layer.contraction == name for layer in fast.layers)
        assert all(layer.uses_gather() == (name == "gather") for layer in fast.layers)
        assert all(layer.uses_native(pool) == (backend == "native") for layer in fast.layers)
        assert set(fast.state_dict()) == set(reference.state_dict())
        fast.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, f"{backend} {name}")
        reference.load_state_dict(fast.state_dict(), strict=True)  # and back


@pytest.mark.parametrize("option, value", [("backend", "cuda"), ("contraction", "sparse"), ("backend", None),
                                           ("compile", True)])
def test_a_bad_option_is_one_line_naming_the_valid_values(option, value):
    valid = {"backend": "auto, native, torch, triton", "contraction": "auto, dense, gather",
             "compile": "auto, on, off"}[option]
    for build in (lambda: FastBSplineKANLinear(2, 3, **{option: value}),
                  lambda: zoo.build("kan-fast", [2, 3], **{option: value})):
        with pytest.raises(ValueError) as raised:
            build()
        assert str(raised.value) == f"{option} must be one of {valid}; got {value!r}"


def test_native_backend_where_the_kernels_cannot_run_says_why():
    layer = FastBSplineKANLinear(2, 3, backend="native").to(torch.float16)
    with pytest.raises(ValueError, match="backend='native' cannot run here: .*float16") as raised:
        layer(torch.zeros(4, 2, dtype=torch.float16))
    assert "\n" not in str(raised.value)
    high = FastBSplineKANLinear(2, 3, spline_order=kan.native.MAX_ORDER + 1, backend="native")
    if kan.native.available():
        with pytest.raises(ValueError, match="spline orders 0 to"):
            high(torch.zeros(4, 2))
    auto = FastBSplineKANLinear(2, 3, spline_order=kan.native.MAX_ORDER + 1)
    assert not auto.uses_native(torch.zeros(4, 2)), "auto takes PyTorch where the kernels cannot run"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_multilayer_model_equals_reference(dtype, contraction):
    reference, fast = model_pair([4, 7, 3], grid_size=8, order=3, dtype=dtype, seed=3, forced=contraction)
    assert all(layer.uses_gather() == (contraction.name == "gather") for layer in fast.layers)
    pool = probe_inputs(reference.layers[0], torch.Generator().manual_seed(3))  # (n, 4)
    tolerance = FLOAT32_TOLERANCE if dtype == torch.float32 else FLOAT64_TOLERANCE
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), tolerance, "model outputs")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_forward_without_grad_mode_is_the_forward_with_it(mode, contraction):
    """Where autograd records nothing, the C++ products run their forward without the autograd
    Function: the same outputs, to the bit, as the recorded forward (which saves for backward),
    and no graph."""
    reference, fast = model_pair([4, 7, 3], grid_size=8, order=3, seed=5, forced=contraction)
    pool = probe_inputs(reference.layers[0], torch.Generator().manual_seed(5))
    recorded = fast(pool)
    assert recorded.requires_grad
    with getattr(torch, mode)():
        unrecorded = fast(pool)
        nonfinite = fast(torch.cat([pool, torch.full_like(pool[:2], float("nan"))]))
    assert not unrecorded.requires_grad and unrecorded.grad_fn is None
    assert torch.equal(unrecorded, recorded.detach())
    assert torch.isnan(nonfinite[-2:]).all()  # the reference's operations, for a batch with NaN
    with torch.no_grad():
        assert_close(nonfinite[:-2], reference(pool), FLOAT32_TOLERANCE, "the finite rows beside them")


# --------------------------------------------------------------------------- gradients


@pytest.mark.sweep
@pytest.mark.parametrize("order", [1, 2, 3, 5], ids=lambda v: f"order{v}")
@pytest.mark.parametrize("grid_size", [2, 7, 26], ids=lambda v: f"grid{v}")
def test_gradients_equal_reference(order, grid_size, contraction):
    reference, fast = layer_pair(4, 3, grid_size, order, seed=order * 10 + grid_size, forced=contraction)
    assert fast.uses_gather() == (contraction.name == "gather")
    generator = torch.Generator().manual_seed(order * 10 + grid_size)
    pool = probe_inputs(reference, generator)  # (n, 4): on knots, across them, far outside
    assert_same_gradients(reference, fast, pool, generator)
    assert_same_gradients(reference, fast, sample_rows(pool, 1, generator), generator)  # batch of one


@pytest.mark.parametrize("activation", [torch.nn.SiLU, torch.nn.Tanh, torch.nn.GELU], ids=lambda a: a.__name__)
def test_base_activation_outputs_and_gradients_equal_reference(activation, contraction):
    """SiLU (the default) runs through the C++ kernel on the native paths; any other activation module, as is."""
    reference, fast = layer_pair(5, 9, 6, 3, seed=7, base_activation=activation, forced=contraction)
    assert type(fast.base_activation) is activation
    generator = torch.Generator().manual_seed(7)
    pool = probe_inputs(reference, generator)  # (n, 5)
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, "outputs")
    assert_same_gradients(reference, fast, pool, generator)


def test_model_gradients_equal_reference(contraction):
    reference, fast = model_pair([3, 5, 2], grid_size=6, order=3, seed=4, forced=contraction)
    generator = torch.Generator().manual_seed(4)
    pool = probe_inputs(reference.layers[0], generator)  # (n, 3)
    assert_same_gradients(reference, fast, pool, generator)


# --------------------------------------------------------------------------- non-uniform grids


@pytest.mark.sweep
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("order", [1, 3, 5], ids=lambda v: f"order{v}")
def test_updated_nonuniform_grid_equals_reference(order, dtype, contraction):
    reference, fast = layer_pair(3, 4, 8, order, dtype, seed=order, forced=contraction)
    assert knot_geometry(fast.grid, order).uniform  # grid 8 on (-1, 1): exact steps in any dtype
    generator = torch.Generator().manual_seed(order)
    with torch.no_grad():
        fast(probe_inputs(fast, generator))  # forward on the uniform grid first: nothing stale may remain

    samples = nonuniform_sample(3, dtype, seed=order)  # (500, 3)
    reference.update_grid(samples)
    fast.update_grid(samples)
    assert not knot_geometry(fast.grid, order).uniform
    steps = fast.grid.diff(dim=1)  # (in, knots - 1)
    assert (steps.amax(dim=1) / steps.amin(dim=1) > 1.5).all(), "the updated grid should be far from uniform"
    assert torch.equal(fast.grid, reference.grid)

    tolerance = FLOAT32_TOLERANCE if dtype == torch.float32 else FLOAT64_TOLERANCE
    pool = probe_inputs(reference, generator)  # (n, 3) on the new knots
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), tolerance, "outputs after update_grid")
        assert_close(fast(samples), reference(samples), tolerance, "outputs on the update_grid samples")
    gradient_tolerance = GRADIENT_TOLERANCE if dtype == torch.float32 else FLOAT64_TOLERANCE
    assert_same_gradients(reference, fast, pool, generator, gradient_tolerance)


def test_grid_loaded_from_a_state_dict_is_used(contraction):
    """A non-uniform grid arriving by load_state_dict (not update_grid) replaces a used uniform one."""
    reference, fast = layer_pair(2, 3, 6, 3, seed=5, forced=contraction)
    with torch.no_grad():
        fast(torch.zeros(4, 2))  # (4, 2): forward on the uniform grid first
    reference.update_grid(nonuniform_sample(2, torch.float32, seed=5))
    fast.load_state_dict(reference.state_dict(), strict=True)
    assert not knot_geometry(fast.grid, 3).uniform
    pool = probe_inputs(reference, torch.Generator().manual_seed(5))  # (n, 2)
    with torch.no_grad():
        assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, "outputs after loading a new grid")


def test_update_grid_with_a_constant_column_gives_no_nan(contraction):
    reference, fast = layer_pair(3, 2, 5, 3, seed=6, forced=contraction)
    samples = nonuniform_sample(3, torch.float32, seed=6)  # (500, 3)
    samples[:, 1] = 0.25  # a constant feature: every quantile knot is the same value
    reference.update_grid(samples)
    fast.update_grid(samples)
    for name, tensor in fast.state_dict().items():
        assert torch.isfinite(tensor).all(), f"{name} has NaN or inf after update_grid"
    generator = torch.Generator().manual_seed(6)
    pool = probe_inputs(reference, generator)  # (n, 3), column 1 on its clustered knots
    with torch.no_grad():
        out = fast(pool)
        assert torch.isfinite(out).all()
        assert_close(out, reference(pool), FLOAT32_TOLERANCE, "outputs after update_grid")
    found = gradients(fast, pool, torch.randn(pool.size(0), 2, generator=generator))
    assert all(torch.isfinite(g).all() for g in found.values())


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.sweep
@pytest.mark.parametrize("grid", ["uniform", "nonuniform"])
@pytest.mark.parametrize("order", [1, 3], ids=lambda v: f"order{v}")
def test_gradcheck_float64(order, grid, contraction):
    # grid 4 on (-1, 1): exact steps
    _, layer = layer_pair(3, 2, 4, order, torch.float64, seed=7 + order, forced=contraction)
    if grid == "nonuniform":
        layer.update_grid(nonuniform_sample(3, torch.float64, seed=order))
    assert knot_geometry(layer.grid, order).uniform == (grid == "uniform")
    assert layer.uses_gather() == (contraction.name == "gather")
    x = away_from_knots(layer, 6, seed=order).requires_grad_(True)  # (6, 3)
    names = [name for name, _ in layer.named_parameters()]
    parameters = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]

    def layer_output(x, *parameters):
        return torch.func.functional_call(layer, dict(zip(names, parameters)), (x,))

    assert torch.autograd.gradcheck(layer_output, (x, *parameters), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- state dicts and shapes


@pytest.mark.parametrize("scaler", [True, False], ids=["standalone-scaler", "no-scaler"])
def test_state_dict_round_trip(scaler):
    torch.manual_seed(8)
    reference = KAN([3, 5, 2], grid_size=6, spline_order=3, enable_standalone_scale_spline=scaler)
    randomise(reference, 8)
    fast = FastBSplineKAN([3, 5, 2], grid_size=6, spline_order=3, enable_standalone_scale_spline=scaler, **EAGER)
    expected = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in fast.state_dict().items()} == expected
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert [n for n, _ in fast.named_buffers()] == [n for n, _ in reference.named_buffers()]

    fast.load_state_dict(reference.state_dict(), strict=True)  # reference -> fast
    x = probe_inputs(reference.layers[0], torch.Generator().manual_seed(8))  # (n, 3)
    with torch.no_grad():
        assert_close(fast(x), reference(x), FLOAT32_TOLERANCE, "reference -> fast")

    randomise(fast, 9)
    back = KAN([3, 5, 2], grid_size=6, spline_order=3, enable_standalone_scale_spline=scaler)
    back.load_state_dict(fast.state_dict(), strict=True)  # fast -> reference
    for name, tensor in fast.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    with torch.no_grad():
        assert_close(fast(x), back(x), FLOAT32_TOLERANCE, "fast -> reference")


def test_leading_dimensions_are_kept(contraction):
    reference, fast = layer_pair(4, 3, 5, 3, seed=10, forced=contraction)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(10)) * 2  # (2, 3, in)
    with torch.no_grad():
        out = fast(x)
        assert out.shape == (2, 3, 3)  # (2, 3, out)
        assert_close(out, reference(x), FLOAT32_TOLERANCE, "outputs of a (2, 3, in) input")
    reference_model, fast_model = model_pair([4, 5, 2], seed=10, forced=contraction)
    with torch.no_grad():
        assert_close(fast_model(x), reference_model(x), FLOAT32_TOLERANCE, "model outputs of a (2, 3, in) input")
        assert fast_model(x[0, 0]).shape == (2,)  # (in,) -> (out,)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)], ids=["2d", "3d", "1d"])
def test_wrong_input_width_raises_value_error(shape, contraction):
    _, fast = layer_pair(4, 3, 5, 3, forced=contraction)
    _, fast_model = model_pair([4, 5, 2], forced=contraction)
    for model in (fast, fast_model):
        with pytest.raises(ValueError) as raised:
            model(torch.zeros(shape))
        message = str(raised.value)
        assert "4" in message and "7" in message, message  # names the expected width 4 and the received 7


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_an_input_of_another_dtype_than_the_layer_is_told_in_the_users_terms(dtype, contraction):
    model = FastBSplineKAN([4, 5, 2], **contraction.options)  # float32
    with pytest.raises(ValueError) as raised:
        model(torch.zeros(3, 4, dtype=dtype))
    message = str(raised.value)
    assert f"the input is {dtype}" in message and "parameters are torch.float32" in message, message
    assert f"model.to({dtype})" in message
    with torch.autocast("cpu"):  # autocast casts for the products itself: no error
        assert model(torch.zeros(3, 4)).shape == (3, 2)


def test_under_autocast_the_output_is_in_the_parameters_dtype_and_equals_float32(contraction):
    """kan-fast's kernels take no part in autocast (docs/kan-fast-numerics.md): the reference's
    products run in bfloat16 there, kan-fast's in float32, equal to its output outside autocast."""
    reference, fast = model_pair([4, 5, 2], forced=contraction)
    x = torch.rand(16, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        plain = fast(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast, reference_cast = fast(x), reference(x)
    assert reference_cast.dtype == torch.bfloat16  # what autocast does to the reference
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)


# --------------------------------------------------------------------------- torch.compile, torch.export


def test_under_torch_compile_each_layer_runs_eagerly_and_equals_eager(contraction, monkeypatch):
    """torch.compile compiles the model around kan-fast's layers, which run as they do eagerly
    (traced, their choices by the values of the input and the knots would break the graph many
    times): outputs and every gradient equal the eager model's to the bit."""
    _, fast = model_pair([4, 5, 2], forced=contraction)
    x = torch.rand(16, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    upstream = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    expected = gradients(fast, x, upstream)
    eager = FastBSplineKANLinear._forward
    traced = []

    def spy(layer, inputs):
        traced.append(torch.compiler.is_compiling())
        return eager(layer, inputs)

    monkeypatch.setattr(FastBSplineKANLinear, "_forward", spy)
    torch._dynamo.reset()
    compiled = torch.compile(fast, backend="eager")
    leaf = x.clone().requires_grad_(True)
    fast.zero_grad(set_to_none=True)
    compiled(leaf).backward(upstream)
    assert traced == [False, False], "each layer's fast path ran once, outside the trace"
    found = {"input": leaf.grad, **{name: p.grad for name, p in fast.named_parameters()}}
    assert set(found) == set(expected)
    for name in expected:
        assert torch.equal(found[name], expected[name]), name


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
def test_torch_export_holds_the_reference_operations(contraction, strict):
    """An exported kan-fast model is the reference's operations (the fast paths choose by values,
    which a traced program cannot): no kan-fast kernel in its graph, its outputs the reference's."""
    reference, fast = model_pair([4, 5, 2], forced=contraction)
    x = torch.rand(16, 4, generator=torch.Generator().manual_seed(7)) * 2 - 1
    program = torch.export.export(fast, (x,), strict=strict)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("kan_native" in target for target in targets), targets
    other = torch.rand(16, 4, generator=torch.Generator().manual_seed(8)) * 3 - 1.5  # another batch, beyond the knots
    with torch.no_grad():
        for inputs in (x, other):
            assert_close(program.module()(inputs), reference(inputs), FLOAT32_TOLERANCE, "exported")

# --------------------------------------------------------------------------- compiled kernels, CUDA


# grid 12's float32 knots are not cardinal, so its layer runs no uniform-grid kernel: compilation must
# leave it alone; grid 8's are, so its kernels run compiled (inductor builds them: a slow case)
@pytest.mark.parametrize("grid_size", [12, pytest.param(8, marks=pytest.mark.slow)], ids=["grid12", "grid8"])
@pytest.mark.parametrize("name", ["dense", "gather"])
def test_compiled_kernels_equal_reference(name, grid_size, compiler):
    reference, fast = layer_pair(4, 3, grid_size, 3, seed=11, forced=Forced(name, "torch", compile="on"))
    assert fast.uses_gather() == (name == "gather") and not fast.uses_native(fast.grid)
    assert knot_geometry(fast.grid, 3).uniform  # the compiled kernels serve uniform grids
    generator = torch.Generator().manual_seed(11)
    pool = probe_inputs(reference, generator)  # (n, 4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch.compile failed.*")  # a silent eager fallback fails
        with torch.no_grad():
            assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, "compiled outputs")
        assert_same_gradients(reference, fast, pool, generator)
    compiled = fast.kernels(pool)
    assert isinstance(compiled, kan.fast.CompiledKernels) and compiled.failure is None, "compilation failed"
    assert bool(compiled.compiled) == knot_geometry(fast.grid, 3).cardinal, "compiled kernels ran on a cardinal grid"


def test_a_compile_failure_is_said_once_and_only_that_layer_runs_eagerly(monkeypatch):
    """torch.compile failing for one layer: one warning naming the layer and the error, and the
    reference's outputs and gradients from its eager kernels from then on; another layer built
    alike keeps its compiled kernels. torch.compile is replaced while each layer makes its
    compiled kernels (on their first call), so no compiler is needed."""
    forced = Forced("dense", "torch", compile="on")
    reference, broken = layer_pair(4, 3, 8, 3, seed=14, forced=forced)
    _, other = layer_pair(4, 3, 8, 3, seed=14, forced=forced)
    assert knot_geometry(broken.grid, 3).cardinal, "grid 8: a cardinal grid, which the compiled kernels serve"
    generator = torch.Generator().manual_seed(14)
    pool = probe_inputs(reference, generator)  # (n, 4)
    attempts = []

    def failing(kernel, **options):
        def call(*args):
            attempts.append(kernel.__name__)
            raise RuntimeError("no C++ compiler for inductor")
        return call

    monkeypatch.setattr(torch, "compile", failing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            for _ in range(2):
                assert_close(broken(pool), reference(pool), FLOAT32_TOLERANCE, "outputs after the failure")
        assert_same_gradients(reference, broken, pool, generator)
    said = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert said == ["kan.fast: torch.compile failed in FastBSplineKANLinear(in_features=4, out_features=3) "
                    "(RuntimeError: no C++ compiler for inductor); this layer runs its kernels eagerly from now on"]
    assert attempts == ["_uniform_dense_bases"], "tried once, eager for good after"

    ran = []

    def working(kernel, **options):  # a torch.compile that works: the kernel itself, counted
        def call(*args):
            ran.append(kernel.__name__)
            return kernel(*args)
        return call

    monkeypatch.setattr(torch, "compile", working)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch.compile.*")
        with torch.no_grad():
            assert_close(other(pool), reference(pool), FLOAT32_TOLERANCE, "the other layer's outputs")
            assert_close(broken(pool), reference(pool), FLOAT32_TOLERANCE, "the failed layer's outputs")
    assert ran == ["_uniform_dense_bases"], "the other layer's compiled kernel ran, the failed layer's did not"
    assert other.kernels(pool).failure is None
    assert broken.kernels(pool).failure == "RuntimeError: no C++ compiler for inductor"


def test_the_compilers_are_looked_up_once_not_per_forward(monkeypatch):
    """compile="auto" asks whether torch.compile's toolchain is here once per device type and
    process, not on every call; where it is not, the layer runs its kernels eagerly."""
    lookups = []
    monkeypatch.setattr(shutil, "which", lambda name: lookups.append(name))  # finds nothing
    kan.fast.can_compile.cache_clear()
    try:
        reference, fast = layer_pair(4, 3, 8, 3, seed=15, forced=Forced("dense", "torch", compile="auto"))
        pool = probe_inputs(reference, torch.Generator().manual_seed(15))  # (n, 4)
        with torch.no_grad():
            assert_close(fast(pool), reference(pool), FLOAT32_TOLERANCE, "eager outputs")
            looked = len(lookups)
            for _ in range(3):
                fast(pool)
        assert looked > 0 and len(lookups) == looked, lookups
        assert not isinstance(fast.kernels(pool), kan.fast.CompiledKernels)
    finally:
        kan.fast.can_compile.cache_clear()  # found again, with the real lookup, by the next user


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
# compiling the kernels for CUDA (Triton) takes seconds per shape: those cases run with the slow tests
@pytest.mark.parametrize("compile_kernels", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["eager", "compiled"])
@pytest.mark.parametrize("order, grid_size", [(1, 3), (3, 5), (3, 30), (5, 12)])
def test_cuda_equals_reference(order, grid_size, compile_kernels, contraction):
    if contraction.backend == "native":
        pytest.skip("the C++ kernels are CPU-only")
    if compile_kernels:
        if not kan.fast.can_compile("cuda"):
            pytest.skip("torch.compile kernels unavailable on CUDA here (no Triton)")
        contraction = contraction._replace(compile="on")
    reference, fast = layer_pair(5, 4, grid_size, order, seed=12, forced=contraction)
    generator = torch.Generator().manual_seed(12)
    pool = probe_inputs(reference, generator)  # (n, 5) on the CPU
    upstream = torch.randn(pool.size(0), 4, generator=generator)  # (n, out)
    expected = gradients(reference, pool, upstream)  # on the CPU
    with torch.no_grad():
        expected_out = reference(pool)
    fast = fast.cuda()
    assert fast.uses_gather() == (contraction.name == "gather")
    with torch.no_grad():
        assert_close(fast(pool.cuda()).cpu(), expected_out, FLOAT32_TOLERANCE, "CUDA outputs")
    actual = gradients(fast, pool.cuda(), upstream.cuda())
    for name in expected:
        assert_close(actual[name].cpu(), expected[name], GRADIENT_TOLERANCE, f"CUDA gradient of {name}")


# --------------------------------------------------------------------------- FLOPs


def test_forward_flops_positive_linear_in_batch_and_below_reference():
    flops = kan.fast.forward_flops
    widths = [784, 64, 10]
    assert all(flops(widths, b, grid_size=5, spline_order=3) > 0 for b in (1, 2, 4))
    one, two, four = (flops(widths, b, grid_size=5, spline_order=3) for b in (1, 2, 4))
    assert four - two == 2 * (two - one)  # affine in batch
    assert flops(widths, 1024, grid_size=5) < kan.reference.forward_flops(widths, 1024, grid_size=5)
    assert zoo.flops("kan-fast", widths, batch=1024, grid_size=5) == flops(widths, 1024, grid_size=5)
    assert zoo.entry("kan-fast").model_class() is FastBSplineKAN


@pytest.mark.parametrize("grid_size", [5, 30], ids=lambda v: f"grid{v}")
def test_forward_flops_linear_in_batch_for_both_contractions(grid_size):
    flops = kan.fast.forward_flops
    one, two, four = (flops([6, 5, 3], b, grid_size=grid_size) for b in (1, 2, 4))
    assert 0 < one < two < four and four - two == 2 * (two - one)


def test_forward_flops_count_the_contraction_the_options_choose():
    flops = kan.fast.forward_flops
    widths, batch = [6, 5, 3], 8
    dense = flops(widths, batch, grid_size=5, contraction="dense")
    gather = flops(widths, batch, grid_size=5, contraction="gather")
    assert dense != gather
    assert flops(widths, batch, grid_size=5, backend="native") == gather  # 8 coefficients: past the C++ crossover
    assert flops(widths, batch, grid_size=5, backend="torch") == dense  # below the PyTorch one
    assert zoo.flops("kan-fast", widths, batch=batch, grid_size=5, contraction="gather") == gather
