"""kan.native's C++ kernels against PyTorch oracles built from kan.fast.local_b_splines.

local_b_splines is itself checked against the reference KAN in test_fast.py. Here each
kernel is compared with the dense formulation it replaces: the (batch, in, coeff) basis
scattered from the local bases, contracted by a matrix product. Shapes are chosen to
hit the kernels' edges: feature counts that are not whole vectors, output widths below,
at and past one vector of registers, a batch of one, inputs on the knots, outside the
grid, and NaN. The build and its fallback are checked in subprocesses.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import kan.native as native
from kan.bspline import knot_geometry, local_b_splines
from kan.fast import FastBSplineKAN
from kan.native import build
from kan.native import library as library_module
from processes import wait_until_gone
from kan.native import selftest
from kan.reference import KAN

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


@pytest.mark.sweep
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


@pytest.mark.sweep
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


@pytest.mark.sweep
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


@pytest.mark.parametrize("grid_size", [50, 64], ids=["grid50-de-boor", "grid64-cardinal"])
@pytest.mark.parametrize("where", WHERE)
def test_results_do_not_depend_on_the_thread_count(where, grid_size):
    # float32 steps of 2/50 differ by rounding (de Boor's triangle); of 2/64, not at all
    grid, g = geometry_for((33, grid_size, 3, True), torch.float32)
    assert g.cardinal == (grid_size == 64)
    x = inputs(grid, 257, seed=5, inside=g.order if where == "inside" else None)
    table = torch.randn(33, g.coeff, 64)
    grad_out = torch.randn(257, 64)
    previous = torch.get_num_threads()

    def run():
        if not g.cardinal:  # no spans to save
            return (native.gather_forward(x, table, g), native.gather_table_grad(x, grad_out, g),
                    native.gather_input_grad(x, table, grad_out, g), native.dense_bases(x, torch.ones_like(x), g))
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
    with pytest.raises(ValueError, match="cardinal grid"):
        native.gather_forward(inputs(uneven, 4, seed=6), table, h, save=True)
    with pytest.raises(ValueError, match="cardinal grid"):
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
        fast = FastBSplineKAN([4, 3], grid_size=5, compile="off")  # torch.compile would call the compiler too
        fast.load_state_dict(reference.state_dict())
        x = torch.randn(10, 4)
        assert torch.allclose(fast(x), reference(x), atol=1e-5), "the PyTorch path gives the reference's outputs"
        fast(x)
    print("available", native.available())
    print("error", native.error())
    print("warnings", sum("C++ kernels unavailable" in str(w.message) for w in caught))
"""


def warnings_about(result: subprocess.CompletedProcess, text: str) -> int:
    return sum(text in line for line in result.stderr.splitlines() if "Warning" in line)


@pytest.mark.slow
def test_a_failing_compiler_falls_back_to_pytorch_with_one_warning(tmp_path):
    result = run_python(FALLBACK_CHECK, CXX="false", KAN_NATIVE_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout
    assert "error" in result.stdout and "false failed" in result.stdout
    assert "warnings 1" in result.stdout
    assert not list(tmp_path.glob("*.so"))


@pytest.mark.slow
def test_kan_native_0_turns_the_kernels_off_without_building(tmp_path):
    result = run_python(FALLBACK_CHECK, KAN_NATIVE="0", KAN_NATIVE_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout and "warnings 0" in result.stdout
    assert not list(tmp_path.iterdir())


def the_library() -> Path:
    """This session's library (built by tests/conftest.py)."""
    return native.library_path().library


@pytest.mark.slow
def test_the_build_is_cached_and_reused(tmp_path):
    code = """
        import torch
        import kan.native as native
        from kan.fast import FastBSplineKAN
        FastBSplineKAN([3, 2], backend="native")(torch.zeros(4, 3))
        print(sorted(p.name for p in native.cache_dir().iterdir()))
    """
    first = run_python(code, KAN_NATIVE_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr
    notices = [line for line in first.stderr.splitlines() if "building kan-fast's C++ kernels" in line]
    assert len(notices) == 1, first.stderr
    built = list(tmp_path.glob("kan_native_*.so"))
    assert len(built) == 1
    assert built[0].stat().st_mode & 0o022 == 0, "the library is writable by its owner only"
    checksum = built[0].with_name(built[0].name + ".sha256").read_text().split()[0]
    assert checksum == hashlib.sha256(built[0].read_bytes()).hexdigest()
    stamp = built[0].stat().st_mtime_ns
    second = run_python(code, KAN_NATIVE_CACHE=str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert "building" not in second.stderr
    assert built[0].stat().st_mtime_ns == stamp, "the second process loads the first one's library"


def planted(folder: Path, name: str, source: str, checksum: bool = True) -> Path:
    """A shared library built from C ``source`` at folder/name, with a matching checksum file."""
    library = folder / name
    c_file = folder.parent / f"{folder.name}-planted.c"
    c_file.write_text(textwrap.dedent(source))
    subprocess.run(["gcc", "-shared", "-fPIC", str(c_file), "-o", str(library)], check=True)
    if checksum:
        digest = hashlib.sha256(library.read_bytes()).hexdigest()
        library.with_name(name + ".sha256").write_text(f"{digest}  {name}\n")
    return library


def fake_compiler(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-cxx"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def copying_compiler(tmp_path: Path) -> tuple[Path, str]:
    """A compiler that "builds" by copying this session's library (made by the real compiler
    from the same source) to its ``-o`` target, for the tests of what happens around a build
    without paying for a build each (the real build and its cache: test_the_build_is_cached_and_reused);
    and the library's name in the cache, as the loader derives it for that compiler."""
    cxx = fake_compiler(tmp_path, f"""[ "$1" = --version ] && {{ echo copying-compiler 1; exit 0; }}
while [ $# -gt 1 ]; do [ "$1" = -o ] && exec cp "{the_library()}" "$2"; shift; done
exit 1""")
    prefix = "kan_native_asan" if build.sanitized() else "kan_native"
    return cxx, f"{prefix}_{build._key(str(cxx), build.build_timeout())}.so"


AVAILABLE = """
    import warnings
    import kan.native as native
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("available", native.available())
    for w in caught:
        print("warning", w.message)
"""


@pytest.mark.slow
def test_a_truncated_library_is_rebuilt_without_a_crash(tmp_path):
    cxx, name = copying_compiler(tmp_path)
    library = tmp_path / name
    shutil.copyfile(the_library(), library)
    shutil.copyfile(the_library().with_name(the_library().name + ".sha256"), library.with_name(name + ".sha256"))
    with open(library, "r+b") as file:
        file.truncate(library.stat().st_size // 2)
    # a child: a crash cannot take pytest down
    result = run_python(AVAILABLE, KAN_NATIVE_CACHE=str(tmp_path), CXX=str(cxx))
    assert result.returncode == 0, result.stderr
    assert "available True" in result.stdout and "warning" not in result.stdout
    assert library.stat().st_size == the_library().stat().st_size, "rebuilt whole"


@pytest.mark.slow
def test_a_library_without_the_kernels_is_removed_and_rebuilt(tmp_path):
    cxx, name = copying_compiler(tmp_path)
    library = planted(tmp_path, name, "int kan_something_else(void) { return 1; }")
    result = run_python(AVAILABLE, KAN_NATIVE_CACHE=str(tmp_path), CXX=str(cxx))
    assert result.returncode == 0, result.stderr
    assert "available True" in result.stdout and "warning" not in result.stdout
    assert hasattr(ctypes.CDLL(str(library)), "kan_gather_forward_f32"), "the planted library was replaced"


CONSTRUCTOR = """
    #include <stdio.h>
    __attribute__((constructor)) static void planted(void) {
        FILE* marker = fopen("MARKER", "w");
        if (marker) { fputs("ran", marker); fclose(marker); }
    }
"""


@pytest.mark.slow
def test_a_cache_folder_others_can_write_is_refused_and_its_library_never_runs(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    marker = tmp_path / "marker"
    cxx, name = copying_compiler(tmp_path)
    library = planted(folder, name, CONSTRUCTOR.replace("MARKER", str(marker)))
    ctypes.CDLL(str(shutil.copy(library, tmp_path / "probe.so")))  # the plant works: its constructor runs
    assert marker.exists()
    marker.unlink()
    result = run_python(AVAILABLE, KAN_NATIVE_CACHE=str(folder), CXX=str(cxx))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "available True" in lines, result.stdout
    refused = [line for line in lines if line.startswith("warning")]
    assert len(refused) == 1 and "refusing the cache folder" in refused[0] and "writable by group or others" in refused[0]
    assert not marker.exists(), "the planted library's constructor ran"




@pytest.mark.slow
def test_a_hanging_compiler_times_out_with_one_warning_and_pytorch_runs(tmp_path):
    cxx = fake_compiler(tmp_path, "exec sleep 60")
    result = run_python(FALLBACK_CHECK, CXX=str(cxx), KAN_NATIVE_CACHE=str(tmp_path / "cache"),
                        KAN_NATIVE_BUILD_TIMEOUT="1")
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout and "did not finish within 1 s" in result.stdout
    assert "warnings 1" in result.stdout


def test_a_library_still_bad_after_its_rebuild_leaves_one_warning_naming_the_cause(tmp_path):
    bad = planted(tmp_path, "bad.so", "int kan_something_else(void) { return 1; }", checksum=False)
    # a "compiler" that answers --version and otherwise writes the bad library where -o says
    cxx = fake_compiler(tmp_path, f'[ "$1" = --version ] && {{ echo fake 1.0; exit 0; }}\n'
                                  f'while [ "$1" != -o ]; do shift; done\ncp {bad} "$2"')
    result = run_python(FALLBACK_CHECK, CXX=str(cxx), KAN_NATIVE_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout and "warnings 1" in result.stdout
    assert "unusable after a rebuild: the library lacks kan_gather_forward_f32" in result.stdout


@pytest.mark.slow
def test_status_and_build_commands(tmp_path):
    status = subprocess.run([sys.executable, "-m", "kan.native", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"library: {the_library()}" in status.stdout and "self-test: passed" in status.stdout
    build = subprocess.run([sys.executable, "-m", "kan.native", "build"], capture_output=True, text=True)
    assert build.returncode == 0 and str(the_library()) in build.stdout, build.stdout + build.stderr
    environment = {**os.environ, "CXX": "false", "KAN_NATIVE_CACHE": str(tmp_path)}
    failed = subprocess.run([sys.executable, "-m", "kan.native", "build"], capture_output=True, text=True,
                            env=environment)
    assert failed.returncode == 1 and failed.stderr.strip().count("\n") == 0, failed.stderr
    assert "build failed" in failed.stderr and "false failed" in failed.stderr
    missing = subprocess.run([sys.executable, "-m", "kan.native", "status"], capture_output=True, text=True,
                             env=environment)
    assert missing.returncode == 1 and "current: no" in missing.stdout


# --------------------------------------------------------------------------- the operators


def c_signatures() -> dict[str, list[tuple[str, str]]]:
    """Each exported kernel's (type, name) parameters, as _native.cpp declares them."""
    text = native.SOURCE.read_text().replace("\\\n", " ")
    geometry = re.search(r"#define KAN_GEOMETRY_ARGS\(T\)(.*)", text).group(1)
    text = text.replace("KAN_GEOMETRY_ARGS(T)", geometry)
    found = {}
    for name, params in re.findall(r'extern "C" void kan_(\w+)_##suffix\(([^)]*)\)', text):
        pairs = []
        for param in params.split(","):
            param = " ".join(param.replace("*", " * ").split())
            kind, _, identifier = param.rpartition(" ")
            pairs.append((kind.replace(" *", "*"), identifier))
        found[name] = pairs
    return found


def test_the_signature_table_matches_the_c_source():
    declared = {name: [(p.c, p.name) for p in params] for name, params in native.KERNELS.items()}
    assert c_signatures() == declared


def test_every_kernel_is_an_operator_with_the_schema_the_table_gives():
    for name in native.KERNELS:
        op = getattr(torch.ops.kan_native, name).default
        assert str(op._schema) == f"kan_native::{native.schema(name)}"
        written = [p.name for p in native.KERNELS[name] if p.written]
        assert [a.name for a in op._schema.arguments if a.alias_info and a.alias_info.is_write] == written


def operator_calls(dtype: torch.dtype, uniform: bool):
    """(kernel, keyword arguments) covering every operator and its optional tensors."""
    grid, g = geometry_for((5, 4, 3, uniform), dtype)
    generator = torch.Generator().manual_seed(11)
    x = inputs(grid, 9, seed=11)
    batch, in_features, out = 9, 5, 6

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    geometry = dict(order=g.order, knots_ext=g.knots_ext, knots_padded=g.knots_padded, origin=g.origin,
                    inv_step=g.inv_step, cardinal=int(g.cardinal))
    table, grad_out = randn(in_features, g.coeff, out), randn(batch, out)
    w, scaler = randn(out, in_features, g.coeff), randn(out, in_features)
    spans = dict(saved_u=x.new_empty(in_features, batch), saved_span=torch.empty(in_features, batch, dtype=torch.int16))
    none = dict(saved_u=None, saved_span=None)
    calls = [
        ("gather_forward", dict(**geometry, x=x, table=table, result=x.new_empty(batch, out), **none)),
        ("gather_table_grad", dict(**geometry, x=x, **none, grad_out=grad_out,
                                   grad_table=x.new_empty(in_features, g.coeff, out), w=None, scaler=None,
                                   grad_w=None, grad_scaler=None)),
        ("gather_table_grad", dict(**geometry, x=x, **none, grad_out=grad_out, grad_table=None, w=w, scaler=scaler,
                                   grad_w=torch.empty_like(w), grad_scaler=torch.empty_like(scaler))),
        ("gather_input_grad", dict(**geometry, x=x, table=table, grad_out=grad_out, grad_x=torch.empty_like(x))),
        ("dense_bases", dict(**geometry, x=x, base=randn(batch, in_features),
                             result=x.new_empty(batch, (g.coeff + 1) * in_features))),
        ("local_bases", dict(**geometry, x=x, first=torch.empty(batch, in_features, dtype=torch.int64),
                             value=x.new_empty(batch, in_features, 4), slope=x.new_empty(batch, in_features, 4))),
        ("scale_spline", dict(w=w, scaler=scaler, dst=torch.empty(in_features, g.coeff, out, dtype=dtype).permute(2, 0, 1))),
        ("spline_grads", dict(G=randn(in_features, g.coeff, out).permute(2, 0, 1), w=w, scaler=scaler,
                              grad_w=torch.empty_like(w), grad_scaler=torch.empty_like(scaler))),
        ("silu", dict(x=grad_out, y=torch.empty_like(grad_out))),
        ("silu_grad", dict(x=grad_out, grad=randn(batch, out), out=randn(batch, out), accumulate=1)),
    ]
    if uniform:
        calls.append(("gather_forward", dict(**geometry, x=x, table=table, result=x.new_empty(batch, out), **spans)))
        calls.append(("gather_table_grad", dict(**geometry, x=None, **spans, grad_out=grad_out, grad_table=None,
                                                w=w, scaler=None, grad_w=torch.empty_like(w), grad_scaler=None)))
    return calls


@pytest.mark.sweep
@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "uneven"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_every_operator(dtype, uniform):
    """Schema (what is written), fake tensors, autograd registration and compiled dispatch."""
    checked = set()
    for name, arguments in operator_calls(dtype, uniform):
        if name == "gather_table_grad" and arguments["saved_u"] is not None:  # needs the forward's spans
            forward = [a for n, a in operator_calls(dtype, uniform) if n == "gather_forward" and a["saved_u"] is not None]
            torch.ops.kan_native.gather_forward(**forward[0])
            arguments.update(saved_u=forward[0]["saved_u"], saved_span=forward[0]["saved_span"])
        op = getattr(torch.ops.kan_native, name).default
        ordered = tuple(arguments[p.name] for p in native.KERNELS[name] if p.given)
        torch.library.opcheck(op, ordered)
        checked.add(name)
    assert checked == set(native.KERNELS)


def test_an_operator_rejects_what_would_corrupt_memory():
    grid, g = geometry_for((5, 4, 3, True), torch.float32)
    x = inputs(grid, 9, seed=12)
    arguments = dict(order=g.order, knots_ext=g.knots_ext, knots_padded=g.knots_padded, origin=g.origin,
                     inv_step=g.inv_step, cardinal=int(g.cardinal), x=x, table=torch.zeros(5, g.coeff, 6), saved_u=None, saved_span=None)
    op = torch.ops.kan_native.gather_forward
    with pytest.raises(ValueError, match=r"result must be \(9, 6\), got \(8, 6\)"):
        op(**arguments, result=torch.empty(8, 6))
    with pytest.raises(ValueError, match="order must be in"):
        op(**{**arguments, "order": 9}, result=torch.empty(9, 6))
    with pytest.raises(ValueError, match="origin and inv_step come together"):
        op(**{**arguments, "origin": None}, result=torch.empty(9, 6))
    with pytest.raises(ValueError, match="cardinal must be 0, or 1 on a uniform grid"):
        op(**{**arguments, "origin": None, "inv_step": None}, result=torch.empty(9, 6))
    with pytest.raises(ValueError, match="x must be float32 or float64, got torch.int32"):
        op(**{**arguments, "x": x.to(torch.int32)}, result=torch.empty(9, 6))
    with pytest.raises(ValueError, match="table must be contiguous"):
        op(**{**arguments, "table": torch.zeros(6, g.coeff, 5).transpose(0, 2)}, result=torch.empty(9, 6))
    with pytest.raises(ValueError, match="saved_u and saved_span come together"):
        op(**{**arguments, "saved_u": x.new_empty(5, 9)}, result=torch.empty(9, 6))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # the fake kernel checks the same
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in arguments.items()}
        with pytest.raises(ValueError, match="result must be"):
            op(**fake, result=torch.empty(8, 6))


def test_under_torch_compile_the_layer_equals_the_reference():
    torch.manual_seed(14)
    reference = KAN([4, 6, 3], grid_size=5)
    for contraction in ("dense", "gather"):
        fast = FastBSplineKAN([4, 6, 3], grid_size=5, backend="native", contraction=contraction)
        fast.load_state_dict(reference.state_dict())
        x = torch.randn(17, 4, dtype=torch.float32)
        with torch.no_grad():
            compiled = torch.compile(fast, backend="aot_eager", fullgraph=False)
            assert_close(compiled(x), reference(x), TOLERANCE[torch.float32] * 10, f"compiled {contraction}")


@pytest.mark.parametrize("threads", [0, -7, 2**31 - 1])
def test_any_thread_count_is_clamped_in_cpp(threads):
    """The C entry points clamp what they are given: no absurd OpenMP team, the same results."""
    grid, g = geometry_for((33, 50, 3, True), torch.float32)
    x = inputs(grid, 257, seed=5)
    table = torch.randn(33, g.coeff, 64)
    expected = native.gather_forward(x, table, g)
    result = torch.empty_like(expected)
    function = library_module._load()["gather_forward", torch.float32]
    function(33, 3, g.knots, g.knots_ext.data_ptr(), g.knots_padded.data_ptr(), g.origin.data_ptr(),
             g.inv_step.data_ptr(), int(g.cardinal), x.data_ptr(), 257, table.data_ptr(), 64, result.data_ptr(), None, None, threads)
    assert torch.equal(result, expected)
    y = torch.empty(100_000)
    silu = library_module._load()["silu", torch.float32]
    silu(x.data_ptr(), 100_000 if x.numel() >= 100_000 else x.numel(), y.data_ptr(), threads)


def test_the_python_functions_take_fake_tensors_through_the_operators():
    grid, g = geometry_for((5, 4, 3, True), torch.float32)
    x = inputs(grid, 9, seed=13)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = dataclasses.replace(g, **{f.name: mode.from_tensor(getattr(g, f.name))
                                         for f in dataclasses.fields(g) if isinstance(getattr(g, f.name), torch.Tensor)})
        x_fake, table = mode.from_tensor(x), torch.empty(5, g.coeff, 6)
        out, spans = native.gather_forward(x_fake, table, fake, save=True)
        assert out.shape == (9, 6) and spans.span.dtype == torch.int16
        grad_w, grad_s = native.gather_weight_grads(None, torch.empty(9, 6), fake, torch.empty(6, 5, g.coeff),
                                                    torch.empty(6, 5), saved=spans)
        assert grad_w.shape == (6, 5, g.coeff) and grad_s.shape == (6, 5)
        with pytest.raises(ValueError, match="table must be"):
            native.gather_forward(x_fake, torch.empty(5, g.coeff + 1, 6), fake)


# --------------------------------------------------------------------------- the cache: checked, locked, limited


def copy_of_the_library(folder: Path, name: str | None = None) -> Path:
    """This session's library and its checksum file, copied into ``folder`` (made private)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    library = folder / (name or the_library().name)
    shutil.copyfile(the_library(), library)
    library.chmod(0o755)
    digest = hashlib.sha256(library.read_bytes()).hexdigest()
    library.with_name(library.name + ".sha256").write_text(f"{digest}  {library.name}\n")
    return library


SWAP = """
    import os, sys
    import kan.native as native
    cache, planted = sys.argv[1], sys.argv[2]

    def swap(library):  # between the check and the load: the checked folder out, the planted one in
        os.rename(cache, cache + ".checked")
        os.rename(planted, cache)
        print("swapped", str(library.parent) == os.path.realpath(cache))

    native.library._between_check_and_load = swap  # where the loading looks it up
    print("available", native.available(), native.error())
    print("kernels", native.library._state["functions"] is not None)
"""


def test_the_library_loaded_is_the_file_that_was_checked_even_if_its_folder_is_swapped(tmp_path):
    cache = tmp_path / "cache"
    copy_of_the_library(cache)
    planted_folder = tmp_path / "planted"
    planted_folder.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    planted(planted_folder, the_library().name, CONSTRUCTOR.replace("MARKER", str(marker)))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SWAP), str(cache), str(planted_folder)],
                            capture_output=True, text=True, env={**os.environ, "KAN_NATIVE_CACHE": str(cache)},
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "swapped True" in result.stdout, "the hook ran, between the check and the load"
    assert (cache / f"{the_library().name}").read_bytes() != the_library().read_bytes(), "the plant is in place"
    assert "available True None" in result.stdout and "kernels True" in result.stdout, result.stdout
    assert not marker.exists(), "the swapped-in library's constructor ran"


def test_a_folder_above_the_cache_that_others_can_write_makes_it_unsafe(tmp_path):
    open_parent = tmp_path / "open"
    cache = open_parent / "cache"
    cache.mkdir(parents=True, mode=0o700)
    open_parent.chmod(0o777)
    problem = native.build._folder_problem(cache)
    assert problem is not None and f"{open_parent}, a folder above the cache folder" in problem
    assert "writable by group or others" in problem
    open_parent.chmod(0o1777)  # sticky, as /tmp: others cannot rename or remove our folder
    assert native.build._folder_problem(cache) is None
    cache.chmod(0o770)
    assert native.build._folder_problem(cache) == f"{cache} is writable by group or others"
    cache.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(cache, target_is_directory=True)
    assert "without following links" in native.build._folder_problem(link)  # a resolved path has no links


@pytest.mark.slow
def test_status_warns_about_an_unsafe_folder_above_the_cache(tmp_path):
    open_parent = tmp_path / "open"
    copy_of_the_library(open_parent / "cache")
    open_parent.chmod(0o777)
    status = subprocess.run([sys.executable, "-m", "kan.native", "status"], capture_output=True, text=True,
                            env={**os.environ, "KAN_NATIVE_CACHE": str(open_parent / "cache")}, timeout=600)
    warning = [line for line in status.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "a folder above the cache folder" in warning[0], status.stdout
    assert status.returncode == 1, "the library in that folder is not the one this process would load"


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "0", "x", "1e9"])
def test_the_build_timeout_must_be_a_finite_positive_number_of_seconds(value, monkeypatch):
    monkeypatch.setenv("KAN_NATIVE_BUILD_TIMEOUT", value)
    with pytest.raises(native.NativeError, match=f"KAN_NATIVE_BUILD_TIMEOUT must be .*, got '{value}'"):
        native.build_timeout()
    monkeypatch.setenv("KAN_NATIVE_BUILD_TIMEOUT", "2.5")
    assert native.build_timeout() == 2.5


@pytest.mark.slow
def test_an_infinite_build_timeout_is_refused_in_one_line():
    environment = {**os.environ, "KAN_NATIVE_BUILD_TIMEOUT": "inf"}
    build = subprocess.run([sys.executable, "-m", "kan.native", "build"], capture_output=True, text=True,
                           env=environment, timeout=600)
    assert build.returncode == 1 and build.stderr.strip().count("\n") == 0, build.stderr
    assert "KAN_NATIVE_BUILD_TIMEOUT must be" in build.stderr
    status = subprocess.run([sys.executable, "-m", "kan.native", "status"], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
    assert "unusable: KAN_NATIVE_BUILD_TIMEOUT must be" in status.stdout


def in_a_thread(function, seconds: float):
    """function()'s result or exception, or "still running" after ``seconds``."""
    outcome = {}

    def run():
        try:
            outcome["result"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return "still running" if thread.is_alive() else outcome


@pytest.mark.skipif(not Path("/proc").is_dir() or shutil.which("setsid") is None, reason="needs /proc and setsid")
def test_a_compiler_past_its_limit_is_killed_with_its_group_and_a_detached_child_blocks_nothing(tmp_path):
    member, detached = tmp_path / "member.pid", tmp_path / "detached.pid"
    # a child in the compiler's group, and one in a session of its own that keeps the output open
    cxx = fake_compiler(tmp_path, f"sleep 300 & echo $! > {member}\n"
                                  f"setsid sh -c 'echo $$ > {detached}; exec sleep 300' &\n"
                                  "exec sleep 300")
    try:
        outcome = in_a_thread(lambda: native.build._run_compiler([str(cxx)], timeout=1.0), 120)
        assert outcome != "still running", "the build outlasted its limit by far"
        assert isinstance(outcome.get("error"), native.NativeError), outcome
        assert "did not finish within 1 s" in str(outcome["error"])
        assert wait_until_gone(int(member.read_text())), "a process of the compiler's group survived"
    finally:
        if detached.exists():
            os.kill(int(detached.read_text()), 9)  # ours: started by this test's fake compiler


def test_what_a_finished_compiler_left_running_in_its_group_is_killed(tmp_path):
    member = tmp_path / "member.pid"
    cxx = fake_compiler(tmp_path, f"sleep 300 & echo $! > {member}\necho built")
    result = native.build._run_compiler([str(cxx)], timeout=60.0)
    assert result.returncode == 0 and result.stdout.strip() == "built"
    assert wait_until_gone(int(member.read_text()))


CONCURRENT = """
    import os, sys, time
    import kan.native as native
    ready, go = sys.argv[1], sys.argv[2]
    open(ready, "w").close()
    while not os.path.exists(go):  # all start together
        time.sleep(0.01)
    print("available", native.available(), native.error())
"""


@pytest.mark.slow
def test_a_cache_folder_another_process_makes_between_the_look_and_the_make_is_used(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("KAN_NATIVE_CACHE", str(cache))
    seen = Path.exists
    # the look finds no folder; by the make, the other process has made it
    monkeypatch.setattr(Path, "exists", lambda self: False if self == cache else seen(self))
    place = build.library_path()
    assert place.refused is None and place.library.parent == Path(os.path.realpath(cache))


def test_processes_that_start_at_once_with_an_empty_cache_build_once(tmp_path):
    builds = tmp_path / "builds"
    # a "compiler" that answers --version, notes each build, and writes the real library where -o says
    cxx = fake_compiler(tmp_path, '[ "$1" = --version ] && { echo fake 2.0; exit 0; }\n'
                                  f'echo build >> {builds}\nsleep 1\n'
                                  f'while [ "$1" != -o ]; do shift; done\ncp {the_library()} "$2"')
    environment = {**os.environ, "CXX": str(cxx), "KAN_NATIVE_CACHE": str(tmp_path / "cache")}
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONCURRENT), str(tmp_path / f"ready{i}"),
                                  str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=environment) for i in range(4)]
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
            assert all(c.poll() is None for c in children), [c.communicate() for c in children]
            time.sleep(0.05)
        go.touch()
        outputs = [c.communicate(timeout=600) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
    for out, err in outputs:
        assert "available True None" in out, err
    assert builds.read_text().splitlines() == ["build"], "one build for all four"
    assert sum("building kan-fast's C++ kernels" in err for _, err in outputs) == 1


AMBIENT = """
    import os, shutil, sys, warnings
    import torch
    import kan.native as native
    from kan.fast import FastBSplineKAN
    from kan.reference import KAN

    library = native.library_path().library  # the name this (fake) compiler gives it
    shutil.copyfile(sys.argv[1], library)
    os.chmod(library, 0o755)
    shutil.copyfile(sys.argv[1] + ".sha256", str(library) + ".sha256")
    inode = os.stat(library).st_ino
    torch.manual_seed(0)
    reference = KAN([3, 4, 2])
    model = FastBSplineKAN([3, 4, 2], backend="native", compile="off")
    model.load_state_dict(reference.state_dict())
    x = torch.rand(5, 3) * 2 - 1

    def autocast():
        with torch.autocast("cpu"):
            model(x)

    def default_device_meta():
        torch.set_default_device("meta")
        try:
            y = model(x)
        finally:
            torch.set_default_device(None)
        assert y.device.type == "cpu" and torch.allclose(y, reference(x), atol=1e-5)

    class FirstUse(torch.nn.Module):
        def forward(self, v):
            native.available()  # the first use while export traces: loads and self-tests the library
            return model(v)  # an exported kan-fast layer takes the reference's operations

    def export():
        try:
            torch.export.export(FirstUse(), (x,), strict=False)
        except Exception as error:  # whether this exports is not the question here
            print("export:", type(error).__name__)

    def torch_func():
        def summed(v):
            native.available()  # the first use inside the transform: loads and self-tests the library
            return model(v).sum()
        expected = torch.autograd.functional.jacobian(lambda v: reference(v).sum(), x)
        assert torch.allclose(torch.func.grad(summed)(x), expected, atol=1e-5)
        torch.func.vmap(summed)(x)

    for scenario in (autocast, default_device_meta, export, torch_func):
        native.library._state.update(functions=None, error=None, path=None)  # a first use again
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scenario()
        said = [str(w.message) for w in caught if "kan.native" in str(w.message)]
        alive = os.path.exists(library) and os.stat(library).st_ino == inode
        print(scenario.__name__, native.library._state["functions"] is not None, alive, said)
"""


@pytest.mark.slow
def test_a_first_use_under_the_callers_state_keeps_the_library_and_the_kernels(tmp_path):
    # a "compiler" that answers --version and fails to build: a library removed is never back
    cxx = fake_compiler(tmp_path, '[ "$1" = --version ] && { echo fake 3.0; exit 0; }\nexit 1')
    (tmp_path / "cache").mkdir(mode=0o700)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(AMBIENT), str(the_library())],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CXX": str(cxx), "KAN_NATIVE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    for scenario in ("autocast", "default_device_meta", "export", "torch_func"):
        assert f"{scenario} True True []" in result.stdout.splitlines(), result.stdout + result.stderr[-3000:]


def test_the_self_test_runs_in_a_clean_state():
    seen = {}

    def probe():
        seen.update(autocast=torch.is_autocast_enabled("cpu"), device=torch.empty(0).device.type,
                    dtype=torch.get_default_dtype(), grad=torch.is_grad_enabled(),
                    inference=torch.is_inference_mode_enabled(),
                    modes=torch._C._len_torch_dispatch_stack())
        return None

    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        with torch.autocast("cpu"), torch.device("meta"), torch.inference_mode(), \
                torch._subclasses.fake_tensor.FakeTensorMode():
            original, selftest._self_test = selftest._self_test, probe
            try:
                assert library_module._self_test_clean() is None
            finally:
                selftest._self_test = original
            assert torch.is_autocast_enabled("cpu") and torch.empty(0).device.type == "meta"
        assert torch.get_default_dtype() == torch.float64, "the caller's dtype is back"
    finally:
        torch.set_default_dtype(previous)
    assert seen == dict(autocast=False, device="cpu", dtype=torch.float32, grad=True, inference=False, modes=0)


@pytest.mark.parametrize("transform", ["grad", "vmap"])
def test_the_self_test_passes_inside_a_torch_func_transform(transform):
    # inside grad, the results of operations are functorch's wrappers, which have no storage
    # for the kernels' pointers; inside vmap, random numbers are refused
    found = {}

    def function(v):
        found["problem"] = library_module._self_test_clean()
        return v.sum()

    getattr(torch.func, transform)(function)(torch.rand(2, 3))
    assert found == {"problem": None}


@pytest.fixture
def own_state(monkeypatch):
    """kan.native's process state as it was, after a test that loads libraries of its own."""
    for key in ("functions", "error", "path", "max_order"):
        monkeypatch.setitem(library_module._state, key, library_module._state[key])


def test_a_self_test_that_fails_only_in_this_process_keeps_the_library(tmp_path, monkeypatch, own_state):
    library = copy_of_the_library(tmp_path / "cache")
    monkeypatch.setattr(selftest, "_self_test", lambda: "gather_forward differs from PyTorch (torch.float32)")

    def no_build(*args):
        raise native.NativeError("this test builds nothing")

    monkeypatch.setattr(library_module, "_compile", no_build)  # where the loading looks it up
    with pytest.raises(native.NativeError, match="failed in this process .* but passed in a fresh one"):
        library_module._open(native.Place(library, None))
    assert library.read_bytes() == the_library().read_bytes(), "kept as it was"


def test_a_self_test_that_fails_in_a_fresh_process_too_removes_and_rebuilds_once(tmp_path, monkeypatch, own_state):
    library = copy_of_the_library(tmp_path / "cache")
    builds = []
    monkeypatch.setattr(selftest, "_self_test", lambda: "gather_forward differs from PyTorch (torch.float32)")
    monkeypatch.setattr(library_module, "_self_test_in_a_fresh_process", lambda path: "it differs there too")

    def rebuild(cxx, target, timeout):
        assert not target.exists(), "removed before the rebuild"
        builds.append(target)
        copy_of_the_library(target.parent, target.name)

    monkeypatch.setattr(library_module, "_compile", rebuild)
    with pytest.raises(native.NativeError, match="unusable after a rebuild: gather_forward differs"):
        library_module._open(native.Place(library, None))
    assert builds == [library]
