"""kan.native's C++ kernels against PyTorch oracles built from kan.fast.local_b_splines.

local_b_splines is itself checked against the reference KAN in test_fast.py. Here each
kernel is compared with the dense formulation it replaces: the (batch, in, coeff) basis
scattered from the local bases, contracted by a matrix product. Shapes are chosen to
hit the kernels' edges: feature counts that are not whole vectors, output widths below,
at and past one vector of registers, a batch of one, inputs on the knots, outside the
grid, and NaN. The build and its fallback are checked in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import kan.native as native
from kan.fast import knot_geometry, local_b_splines

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C++ kernels unavailable: {native.error()}")

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def uniform_grid(in_features: int, grid_size: int, order: int, dtype: torch.dtype) -> torch.Tensor:
    """The reference KAN's knots: grid_size intervals on (-1, 1), extended by order knots each side."""
    step = 2.0 / grid_size
    knots = torch.arange(-order, grid_size + order + 1, dtype=dtype) * step - 1.0
    return knots.expand(in_features, -1).contiguous()


def uneven_grid(in_features: int, grid_size: int, order: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Strictly increasing knots with random spacing, different for every feature."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.rand(in_features, grid_size + 2 * order, generator=generator, dtype=torch.float64) + 0.2
    knots = torch.cat([torch.zeros(in_features, 1, dtype=torch.float64), steps.cumsum(1)], dim=1)
    return (knots / knots[:, -1:] * 2.4 - 1.2).to(dtype)


def inputs(grid: torch.Tensor, batch: int, seed: int, inside: int | None = None) -> torch.Tensor:
    """Random inputs over and beyond the grid, with the knots themselves in the first rows.

    With ``inside`` (the spline order), uniform instead where every basis of that order
    exists, between knots ``inside`` and ``-inside - 1`` of each feature: there the
    kernels take whole vectors of lanes without their per-lane fixes.
    """
    generator = torch.Generator().manual_seed(seed)
    if inside is None:
        x = torch.randn(batch, grid.size(0), generator=generator, dtype=torch.float64).to(grid.dtype) * 1.5
    else:
        low, high = grid[:, inside].double(), grid[:, -inside - 1].double()  # (in,)
        uniform = torch.rand(batch, grid.size(0), generator=generator, dtype=torch.float64)
        x = (low + (high - low) * uniform).to(grid.dtype)
    rows = min(batch, grid.size(1))
    x[:rows] = grid[:, :rows].t()
    return x


def dense_oracle(x: torch.Tensor, geometry, derivative: bool = False) -> torch.Tensor:
    """(batch, in, coeff): every basis (or its slope) of every input, from the local ones."""
    first, values, slopes = local_b_splines(x, geometry, derivative=derivative)
    index = (first.unsqueeze(-1) + torch.arange(geometry.order + 1)).clamp(0, geometry.coeff - 1)
    dense = x.new_zeros(*x.shape, geometry.coeff)
    return dense.scatter_add_(2, index, slopes if derivative else values)  # non-existent bases add 0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str) -> None:
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} > {tolerance:g} * {scale:.3g}"


CASES = [
    # in_features, grid_size, order, uniform
    (1, 1, 1, True),
    (7, 5, 3, True),
    (19, 12, 2, True),
    (33, 50, 3, True),
    (9, 3, 0, True),
    (8, 4, 5, True),
    (11, 6, 7, True),
    (13, 7, 3, False),
    (5, 20, 1, False),
]


@pytest.fixture(params=CASES, ids=lambda c: f"in{c[0]}-grid{c[1]}-order{c[2]}-{'uniform' if c[3] else 'uneven'}")
def case(request):
    return request.param


def geometry_for(case, dtype):
    in_features, grid_size, order, uniform = case
    grid = uniform_grid(in_features, grid_size, order, dtype) if uniform else uneven_grid(
        in_features, grid_size, order, dtype, seed=in_features
    )
    geometry = knot_geometry(grid, order)
    assert geometry.uniform == uniform
    return grid, geometry


WHERE = ["spread", "inside"]  # inputs over and beyond the grid, or all where every basis exists


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("where", WHERE)
def test_local_bases_equal_pytorch(case, dtype, where):
    grid, g = geometry_for(case, dtype)
    x = inputs(grid, 301, seed=1, inside=g.order if where == "inside" else None)
    first, values, slopes = local_b_splines(x, g, derivative=True)
    n_first, n_values, n_slopes = native.local_bases(x, g, derivative=True)
    assert torch.equal(n_first, first), "knot spans differ"
    assert_close(n_values, values, TOLERANCE[dtype], "values")
    assert_close(n_slopes, slopes, TOLERANCE[dtype], "slopes")
    assert native.local_bases(x, g)[2] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_features", [1, 5, 8, 16, 27, 64, 70, 100])
@pytest.mark.parametrize("where", WHERE)
def test_gather_kernels_equal_dense_products(case, dtype, out_features, where):
    grid, g = geometry_for(case, dtype)
    generator = torch.Generator().manual_seed(out_features)
    x = inputs(grid, 129, seed=out_features, inside=g.order if where == "inside" else None)
    batch, in_features = x.shape
    table = torch.randn(in_features, g.coeff, out_features, generator=generator, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(batch, out_features, generator=generator, dtype=torch.float64).to(dtype)
    bases = dense_oracle(x, g).reshape(batch, -1)  # (batch, in * coeff)
    flat = table.reshape(-1, out_features)
    tol = TOLERANCE[dtype]
    assert_close(native.gather_forward(x, table, g), bases @ flat, tol, "gather forward")
    assert_close(native.gather_table_grad(x, grad_out, g).reshape(-1, out_features), bases.t() @ grad_out, tol,
                 "table gradient")
    weight = torch.randn(out_features, in_features, g.coeff, generator=generator, dtype=torch.float64).to(dtype)
    scaler = torch.randn(out_features, in_features, generator=generator, dtype=torch.float64).to(dtype)
    grad_table = native.gather_table_grad(x, grad_out, g).permute(2, 0, 1)  # (out, in, coeff)
    scaled = bases.t() @ grad_out  # the scaled weights' gradient, (in * coeff, out), from the oracle
    scaled = scaled.view(in_features, g.coeff, out_features).permute(2, 0, 1)  # (out, in, coeff)
    grad_w, grad_s = native.spline_grads(grad_table, weight, scaler)
    assert_close(grad_w, scaled * scaler.unsqueeze(-1), tol, "spline_grads: weight gradient")
    assert_close(grad_s, (scaled * weight).sum(-1), tol, "spline_grads: scaler gradient")
    for s, need in ((scaler, True), (scaler, False), (None, True)):
        expected = native.spline_grads(grad_table, weight, s, need)
        fused = native.gather_weight_grads(x, grad_out, g, weight, s, need)
        assert torch.equal(fused[0], expected[0]), "weight gradient: spline_grads of the table gradient, exactly"
        assert (fused[1] is None) == (expected[1] is None)
        if fused[1] is not None:  # the same sums, perhaps contracted into multiply-adds differently
            assert_close(fused[1], expected[1], tol, "scaler gradient")
    slopes = dense_oracle(x, g, derivative=True)  # (batch, in, coeff)
    expected = ((grad_out @ flat.t()).view(batch, in_features, -1) * slopes).sum(-1)
    assert_close(native.gather_input_grad(x, table, grad_out, g), expected, tol, "input gradient")
    if native.can_save(g):  # the table gradient from the spans the forward saved: the same sums exactly
        out, spans = native.gather_forward(x, table, g, save=True)
        assert torch.equal(out, native.gather_forward(x, table, g))
        assert spans.u.shape == spans.span.shape == (in_features, batch)
        first = local_b_splines(x, g)[0]
        assert torch.equal(spans.span.t().long(), first + g.order), "saved knot spans"
        assert torch.equal(native.gather_table_grad(None, grad_out, g, saved=spans),
                           native.gather_table_grad(x, grad_out, g))
        for s, need in ((scaler, True), (None, True)):
            from_x = native.gather_weight_grads(x, grad_out, g, weight, s, need)
            from_saved = native.gather_weight_grads(None, grad_out, g, weight, s, need, saved=spans)
            assert torch.equal(from_saved[0], from_x[0])
            assert (from_saved[1] is None) == (from_x[1] is None)
            assert from_saved[1] is None or torch.equal(from_saved[1], from_x[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_kernels_equal_dense_basis(case, dtype):
    grid, g = geometry_for(case, dtype)
    generator = torch.Generator().manual_seed(3)
    x = inputs(grid, 97, seed=3)
    batch, in_features = x.shape
    base = torch.randn(batch, in_features, generator=generator, dtype=torch.float64).to(dtype)
    written = native.dense_bases(x, base, g).view(batch, g.coeff + 1, in_features)
    assert torch.equal(written[:, g.coeff], base), "the base row is copied as is"
    assert_close(written[:, : g.coeff], dense_oracle(x, g).transpose(1, 2), TOLERANCE[dtype], "dense bases")
    into = torch.full((batch, (g.coeff + 1) * in_features), float("nan"), dtype=dtype)
    assert native.dense_bases(x, base, g, out=into) is into
    assert torch.equal(into, written.reshape(batch, -1)), "writing into a given buffer overwrites all of it"


SILU_EDGES = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.2784645, 20.0, -20.0, 80.0, -80.0, 87.5, -87.5, 88.8, -88.8, 89.0,
              -89.0, 100.0, -100.0, 700.0, -700.0, 708.5, -708.5, 710.0, -710.0, 1e6, -1e6, float("inf"),
              float("-inf"), float("nan")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 7, 4096 + 9])  # a partial vector alone, and after whole chunks
def test_silu_kernels_equal_torch(dtype, size):
    generator = torch.Generator().manual_seed(size)
    x = torch.cat([torch.randn(size, generator=generator, dtype=torch.float64) * 12,
                   torch.tensor(SILU_EDGES, dtype=torch.float64)]).to(dtype)
    grad = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
    leaf = x.double().clone().requires_grad_()
    exact = torch.nn.functional.silu(leaf)  # float64 truth
    exact.backward(grad.double())
    same = x.clone().requires_grad_()
    torch.nn.functional.silu(same).backward(grad)  # torch in the same dtype: e^-x overflows where it does
    # each value within a few units in the last place of float32 (1e-6) or float64 (1e-14)
    # of the float64 truth or of torch's own result in this dtype; values under the
    # smallest normal number are all alike
    rtol, tiny = (1e-6, 1e-37) if dtype == torch.float32 else (1e-14, 1e-307)
    for name, actual, expected, torchs in (
        ("silu", native.silu(x), exact.detach(), torch.nn.functional.silu(x)),
        ("silu'", native.silu_grad(x, grad), leaf.grad, same.grad),
    ):
        assert actual.dtype == dtype and actual.shape == x.shape
        nan = expected.isnan()
        assert torch.equal(actual.isnan(), nan), f"{name}: NaN where torch has NaN, nowhere else"
        close = torch.zeros_like(nan)
        for truth in (expected, torchs.double()):
            close |= (actual.double() - truth).abs() <= rtol * truth.abs() + tiny
            close |= actual.isinf() & (actual.double() == truth)
        assert (close | nan).all(), f"{name}: {x[~(close | nan)][:5].tolist()}"
    into = torch.ones_like(x)
    assert native.silu_grad(x, grad, out=into) is into
    finite = leaf.grad.isfinite()
    assert_close(into[finite], 1 + native.silu_grad(x, grad)[finite], TOLERANCE[dtype], "silu' added into out")


def test_silu_grad_rejects_mismatched_tensors():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="grad must be"):
        native.silu_grad(x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="out must be"):
        native.silu_grad(x, x, out=torch.zeros(4, 3).t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_grids_that_differ_by_feature(dtype):
    # every feature evenly spaced, but each on its own range: the kernels cannot share one
    # feature's knots (contrast the other uniform cases, whose features all have the same)
    base = uniform_grid(9, 5, 3, dtype)  # (9, 12): on (-1, 1)
    scale = torch.linspace(0.5, 2.0, 9, dtype=dtype).unsqueeze(1)
    grid = base * scale + torch.linspace(-0.3, 0.4, 9, dtype=dtype).unsqueeze(1)
    g = knot_geometry(grid, 3)
    assert g.uniform
    x = inputs(grid, 77, seed=9)
    table = torch.randn(9, g.coeff, 11, dtype=dtype)
    bases = dense_oracle(x, g).reshape(77, -1)
    assert_close(native.gather_forward(x, table, g), bases @ table.reshape(-1, 11), TOLERANCE[dtype], "gather forward")
    first = local_b_splines(x, g)[0]
    assert torch.equal(native.local_bases(x, g)[0], first)


def test_nan_input_has_no_basis_and_spares_its_neighbours():
    grid, g = geometry_for((7, 5, 3, True), torch.float32)
    x = inputs(grid, 16, seed=4)
    x[3, 2] = float("nan")
    first, values, _ = native.local_bases(x, g)
    assert int(first[3, 2]) == -1 - 3 and torch.equal(values[3, 2], torch.zeros(4))
    table = torch.randn(7, g.coeff, 5)
    out = native.gather_forward(x, table, g)
    assert out.isfinite().all()
    clean = x.clone()
    clean[3, 2] = -50.0  # far below the grid: no basis either
    assert torch.equal(out, native.gather_forward(clean, table, g))


@pytest.mark.parametrize("where", WHERE)
def test_results_do_not_depend_on_the_thread_count(where):
    grid, g = geometry_for((33, 50, 3, True), torch.float32)
    x = inputs(grid, 257, seed=5, inside=g.order if where == "inside" else None)
    table = torch.randn(33, g.coeff, 64)
    grad_out = torch.randn(257, 64)
    previous = torch.get_num_threads()

    def run():
        out, spans = native.gather_forward(x, table, g, save=True)
        return (out, spans.u, spans.span, native.gather_table_grad(x, grad_out, g),
                native.gather_table_grad(None, grad_out, g, saved=spans),
                native.gather_input_grad(x, table, grad_out, g), native.dense_bases(x, torch.ones_like(x), g))

    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(max(2, previous))
        several = run()
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(single, several):
        assert torch.equal(a, b)


def test_supports_only_cpu_float_tensors_and_built_orders():
    x = torch.zeros(2, 3)
    assert native.supports(x, 3)
    assert native.supports(x.double(), 0)
    assert not native.supports(x.half(), 3)
    assert not native.supports(x.to(torch.int64), 3)
    assert not native.supports(torch.zeros(2, 3, device="meta"), 3)
    assert not native.supports(x, -1)
    assert not native.supports(x, 8)


def test_wrong_table_or_buffer_shape_is_a_value_error():
    grid, g = geometry_for((7, 5, 3, True), torch.float32)
    x = inputs(grid, 4, seed=6)
    with pytest.raises(ValueError, match=r"gather_forward: table must be \(7, 8, 5\), got \(7, 9, 5\)"):
        native.gather_forward(x, torch.zeros(7, g.coeff + 1, 5), g)
    with pytest.raises(ValueError, match=r"w must be \(5, 7, 8\)"):
        native.gather_weight_grads(x, torch.zeros(4, 5), g, torch.zeros(5, 7, g.coeff + 1), None)
    with pytest.raises(ValueError, match=r"scaler must be \(5, 7\)"):
        native.gather_weight_grads(x, torch.zeros(4, 5), g, torch.zeros(5, 7, g.coeff), torch.zeros(7, 5))
    with pytest.raises(ValueError, match="table must be a CPU torch.float32 tensor"):
        native.gather_input_grad(x, torch.zeros(7, g.coeff, 5, dtype=torch.float64), torch.zeros(4, 5), g)
    with pytest.raises(ValueError, match="result must be"):
        native.dense_bases(x, x, g, out=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="result must be contiguous"):
        native.dense_bases(x, x, g, out=torch.zeros(9 * 7, 4).t())
    with pytest.raises(ValueError, match="knots_ext must be a CPU torch.float64 tensor"):
        native.gather_forward(x.double(), torch.zeros(7, g.coeff, 5, dtype=torch.float64), g)
    with pytest.raises(ValueError, match="grad must be"):
        native.silu_grad(x, x[:, :3])
    table = torch.zeros(7, g.coeff, 5)
    _, spans = native.gather_forward(x, table, g, save=True)
    with pytest.raises(ValueError, match=r"saved_u must be \(7, 5\)"):
        native.gather_table_grad(None, torch.zeros(5, 5), g, saved=spans)  # another batch
    with pytest.raises(ValueError, match="needs x or the spans"):
        native.gather_table_grad(None, torch.zeros(4, 5), g)
    with pytest.raises(ValueError, match=r"x must be \(4, 7\)"):
        native.gather_table_grad(x[:, :6], torch.zeros(4, 5), g)
    uneven, h = geometry_for((7, 5, 3, False), torch.float32)
    assert not native.can_save(h)
    with pytest.raises(ValueError, match="uniform grid"):
        native.gather_forward(inputs(uneven, 4, seed=6), table, h, save=True)
    with pytest.raises(ValueError, match="uniform grid"):
        native.gather_table_grad(None, torch.zeros(4, 5), h, saved=spans)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=600)


FALLBACK_CHECK = """
    import warnings
    import torch
    import kan.native as native
    from kan.fast import FastBSplineKAN
    from kan.reference import KAN
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = KAN([4, 3], grid_size=5)
        fast = FastBSplineKAN([4, 3], grid_size=5)
        fast.load_state_dict(reference.state_dict())
        x = torch.randn(10, 4)
        assert torch.allclose(fast(x), reference(x), atol=1e-5), "the PyTorch path gives the reference's outputs"
        fast(x)
    print("available", native.available())
    print("error", native.error())
    print("warnings", sum("C++ kernels unavailable" in str(w.message) for w in caught))
"""


def test_a_failing_compiler_falls_back_to_pytorch_with_one_warning(tmp_path):
    result = run_python(FALLBACK_CHECK, CXX="false", KAN_NATIVE_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout
    assert "error RuntimeError" in result.stdout and "failed" in result.stdout
    assert "warnings 1" in result.stdout
    assert not list(tmp_path.glob("*.so"))


def test_kan_native_0_turns_the_kernels_off_without_building(tmp_path):
    result = run_python(FALLBACK_CHECK, KAN_NATIVE="0", KAN_NATIVE_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout and "warnings 0" in result.stdout
    assert not list(tmp_path.iterdir())


def test_the_build_is_cached_and_reused(tmp_path):
    code = """
        import kan.native as native
        assert native.available(), native.error()
        print(sorted(p.name for p in native.cache_dir().glob("*.so")))
    """
    first = run_python(code, KAN_NATIVE_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr
    built = list(tmp_path.glob("kan_native_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    second = run_python(code, KAN_NATIVE_CACHE=str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert built[0].stat().st_mtime_ns == stamp, "the second process loads the first one's library"
