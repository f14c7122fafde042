"""kan-fast's Triton kernels (kan.triton_spline, ``backend="triton"``) against the reference.

Where CUDA is present the kernels are compiled and run on the GPU; elsewhere Triton's
interpreter runs them on CPU tensors (``TRITON_INTERPRET=1``, set by conftest.py before
any test module is collected, and below for a run without it; numpy underneath, so the cases are small).
Skipped where Triton does not import.

The truth is the reference (kan.reference, efficient-kan semantics) in float64 on the
same parameters and knots: outputs, and the gradients of the input and of every
parameter, within test_fast.py's tolerances (float32: 1e-5 for outputs, 1e-4 for
gradients, relative to max(1, max |reference|); float64 kernels: 1e-10).
Non-finite inputs and upstream gradients must give the reference's NaN and inf in
the same places (test_nonfinite.py's check).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when kan.triton_spline's kernels are defined

triton = pytest.importorskip("triton")

import kan.fast  # noqa: E402
from kan import zoo  # noqa: E402
from kan.fast import FastBSplineKAN, FastBSplineKANLinear  # noqa: E402
from kan.reference import KAN, KANLinear  # noqa: E402
from nonfinite_patterns import VALUES, assert_same_pattern, outputs_and_gradients  # noqa: E402
from random_configurations import CASES, check  # noqa: E402

ts = kan.fast.triton_kernels()
DEVICE = torch.device("cuda" if CUDA else "cpu")
if ts is None or (not CUDA and not ts.interpreted()):
    pytest.skip("Triton kernels cannot run here (kan.triton_spline was imported before TRITON_INTERPRET=1 was set, "
                "or does not import)", allow_module_level=True)

FLOAT32_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4
FLOAT64_TOLERANCE = 1e-10
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy under the interpreter, on inf and NaN


@pytest.fixture(autouse=True)
def ieee_dot():
    """TF32 off, as torch's default for matrix products (the kernels follow torch's flag)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


# The layers' PyTorch paths (the fallbacks) with torch.compile off: they run eagerly, as in
# test_fast.py, and compile nothing.
EAGER = {"compile": "off"}


# --------------------------------------------------------------------------- helpers


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter from N(0, 1): the spline part weighs as much as the base part."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def build(widths, grid_size, order, dtype=torch.float32, seed=0, scaler=True, adapted=False, contraction="auto"):
    """A randomised reference (KANLinear for two widths, else KAN), built in ``dtype`` (its knots
    uniform in that dtype), and kan-fast with backend="triton" (and ``contraction``; "stored" is
    "dense", see ``stored_bases``) loaded from its state dict, on DEVICE."""
    options = dict(grid_size=grid_size, spline_order=order, enable_standalone_scale_spline=scaler)
    fast_options = dict(backend="triton", contraction="dense" if contraction == "stored" else contraction, **EAGER)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        if len(widths) == 2:
            reference = KANLinear(*widths, **options)
            fast = FastBSplineKANLinear(*widths, **options, **fast_options)
        else:
            reference, fast = KAN(widths, **options), FastBSplineKAN(widths, **options, **fast_options)
    finally:
        torch.set_default_dtype(previous)
    randomise(reference, seed)
    if adapted:
        first = reference if len(widths) == 2 else reference.layers[0]
        first.update_grid(torch.randn(64, widths[0], generator=torch.Generator().manual_seed(seed + 1), dtype=dtype) ** 3)
    fast.load_state_dict(reference.state_dict(), strict=True)
    return reference, fast.to(DEVICE)


def probe(layer: KANLinear, batch: int, seed: int) -> torch.Tensor:
    """(batch, in): random points across the knots and one unit beyond, far outside (+-3, +-100),
    and every knot exactly, column i on feature i's own knots, rows shuffled per column."""
    generator = torch.Generator().manual_seed(seed)
    grid = layer.grid
    lo, hi = grid[:, 0], grid[:, -1]
    across = lo - 1 + torch.rand(batch, grid.size(0), generator=generator, dtype=grid.dtype) * (hi - lo + 2)
    special = torch.cat([torch.tensor([-100.0, -3.0, 3.0, 100.0], dtype=grid.dtype).unsqueeze(1).expand(-1, grid.size(0)),
                         grid.T])  # (4 + knots, in)
    pick = torch.randint(0, special.size(0), (batch, grid.size(0)), generator=generator)
    use = torch.rand(batch, grid.size(0), generator=generator) < 0.3
    return torch.where(use, special.gather(0, pick), across).contiguous()


def assert_close(actual, expected, tolerance, what):
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    error = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert error <= tolerance * scale, f"{what}: max |triton - reference| = {error:.3g} > {tolerance:g} * {scale:.3g}"


def compare(reference, fast, x, upstream, dtype, what):
    """kan-fast(triton) in ``dtype`` on DEVICE against the reference in float64 on the CPU."""
    truth = outputs_and_gradients(reference.double(), x.double(), upstream.double())
    found = outputs_and_gradients(fast, x.to(DEVICE, dtype), upstream.to(DEVICE, dtype))
    assert set(found) == set(truth)
    exact = dtype == torch.float64
    for name in truth:
        tolerance = FLOAT64_TOLERANCE if exact else (FLOAT32_TOLERANCE if name == "output" else GRADIENT_TOLERANCE)
        assert_close(found[name], truth[name], tolerance, f"{what}, {name}")


class Counting:
    """A Triton kernel whose launches are counted (``kernel[grid](...)`` as the launch code calls it)."""

    def __init__(self, kernel):
        self.kernel, self.calls, self.constants = kernel, 0, []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def counted(*args, **kwargs):
            self.calls += 1
            self.constants.append(kwargs)
            return launch(*args, **kwargs)

        return counted


KERNELS = ("_forward_kernel", "_weight_grad_kernel", "_input_grad_kernel", "_local_bases_kernel",
           "_gather_forward_kernel", "_gather_weight_grad_kernel", "_gather_input_grad_kernel")


@pytest.fixture
def launched(monkeypatch):
    """{kernel name: Counting}: every kernel of kan.triton_spline, its launches counted."""
    counters = {name: Counting(getattr(ts, name)) for name in KERNELS}
    for name, counter in counters.items():
        monkeypatch.setattr(ts, name, counter)
    return counters


def ran(launched) -> set:
    return {name for name, counter in launched.items() if counter.calls}


DENSE_KERNELS = {"_forward_kernel", "_weight_grad_kernel", "_input_grad_kernel"}
GATHER_KERNELS = {"_local_bases_kernel", "_gather_forward_kernel", "_gather_weight_grad_kernel",
                  "_gather_input_grad_kernel"}
# both contractions, forced, and the dense one reading stored bases ("stored"): each kernel is
# checked at every grid, whichever "auto" would take
CONTRACTION = pytest.mark.parametrize("contraction", ["dense", "stored", "gather"])
KERNELS_OF = {"dense": DENSE_KERNELS, "stored": DENSE_KERNELS | {"_local_bases_kernel"}, "gather": GATHER_KERNELS}


def store_bases(monkeypatch, contraction: str) -> None:
    """The dense kernels read stored bases at every shape for contraction "stored"; else none does
    (the tests' shapes are below ``STORED_BASES_MIN``, and a test keeps them so)."""
    monkeypatch.setattr(ts, "STORED_BASES_MIN", 0 if contraction == "stored" else 2 ** 62)


@pytest.fixture(autouse=True)
def stored_bases(request, monkeypatch):
    """``store_bases`` for a test's ``contraction`` parameter, if it has one."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "contraction" in callspec.params:
        store_bases(monkeypatch, callspec.params["contraction"])


# --------------------------------------------------------------------------- values and gradients

SHAPES = [(3, 4, 1), (5, 17, 33), (2, 3, 70)]  # (in, out, batch): batch 1, widths off the tile sizes


def test_tiles_shrink_where_a_launch_would_leave_sms_idle():
    # the forward: 4096 rows in 64-row tiles and one output tile are 64 programs, under 132 SMs;
    # 32-row tiles 128, still under; so 16-row tiles (256 programs)
    assert ts.forward_tiles(4096, 64, sms=132)[0] == 16
    assert ts.forward_tiles(4096, 64, sms=128)[0] == 32
    assert ts.forward_tiles(4096, 64, sms=64)[0] == 64
    assert ts.forward_tiles(8192, 1024, sms=132)[0] == 64  # 128 x 16 programs
    assert ts.forward_tiles(7, 3, sms=132)[0] == 16  # the smallest a product takes
    # the weight gradient: 784 features x 9 columns in 64-column tiles are 111 programs; 32: 221
    assert ts.weight_grad_tiles(4096, 64, in_features=784, coeff=8, sms=132)[2] == 32
    assert ts.weight_grad_tiles(4096, 64, in_features=784, coeff=8, sms=111)[2] == 64
    assert ts.weight_grad_tiles(4096, 10, in_features=64, coeff=8, sms=132)[2] == 16  # 576 columns
    constants, programs, _ = ts.plan("weight_grad", 4096, 784, 64, 8, 3, sms=132)
    assert constants["BK"] == 32 and programs == (221, 1)


@CONTRACTION
@pytest.mark.parametrize("sms", [1, 10 ** 6])
@pytest.mark.parametrize("order", [1, 3, 5])
def test_layer_equals_reference_with_the_largest_and_smallest_tiles(order, sms, contraction, monkeypatch,
                                                                    launched):
    """sms 1: every launch takes its largest tiles (64 rows, 64 columns; the gather weight gradient
    all of a feature's coefficients per program); a million: its smallest (16; one coefficient)."""
    monkeypatch.setattr(ts, "sms_of", lambda x: sms)
    reference, fast = build([5, 17], 5, order, seed=order, contraction=contraction)
    x = probe(reference, 70, seed=order)
    upstream = torch.randn(70, 17, generator=torch.Generator().manual_seed(order))
    compare(reference, fast, x, upstream, torch.float32, f"order {order}, sms {sms}, {contraction}")
    assert ran(launched) == KERNELS_OF[contraction]
    if contraction == "gather":
        block = {c["CB"] for c in launched["_gather_weight_grad_kernel"].constants}
        assert block == ({5 + order} if sms == 1 else {1})
        return
    assert {c["STORED"] for c in launched["_forward_kernel"].constants + launched["_weight_grad_kernel"].constants} \
        == {contraction == "stored"}
    side = 64 if sms == 1 else 16
    assert {c["BM"] for c in launched["_forward_kernel"].constants} == {side}
    assert {c["BK"] for c in launched["_weight_grad_kernel"].constants} == {side}


@CONTRACTION
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("grid_size", [3, 5, 50])
def test_layer_outputs_and_gradients_equal_reference(order, grid_size, contraction, launched):
    for index, (i, o, b) in enumerate(SHAPES):
        reference, fast = build([i, o], grid_size, order, seed=order + index, contraction=contraction)
        x = probe(reference, b, seed=index)
        upstream = torch.randn(b, o, generator=torch.Generator().manual_seed(index))
        compare(reference, fast, x, upstream, torch.float32,
                f"order {order}, grid {grid_size}, [{i}, {o}] b{b}, {contraction}")
    assert ran(launched) == KERNELS_OF[contraction]


@CONTRACTION
@pytest.mark.parametrize("scaler", [True, False])
def test_model_outputs_and_gradients_equal_reference(scaler, contraction):
    reference, fast = build([6, 19, 3], 7, 3, seed=3, scaler=scaler, contraction=contraction)
    x = probe(reference.layers[0], 45, seed=2)
    compare(reference, fast, x, torch.randn(45, 3, generator=torch.Generator().manual_seed(1)), torch.float32,
            f"[6, 19, 3], scaler {scaler}")


@CONTRACTION
@pytest.mark.parametrize("order", [1, 3, 5])
def test_float64_kernels_equal_reference_to_rounding(order, contraction):
    # grid 8 on [-1, 1]: a step of 0.25, so float64 knots evenly spaced exactly (a cardinal grid,
    # which the kernels take; at grid 6 the float64 steps differ by a few ulps and it falls back)
    reference, fast = build([4, 5], 8, order, dtype=torch.float64, seed=order, contraction=contraction)
    assert fast.uses_triton(torch.zeros(1, 4, dtype=torch.float64, device=DEVICE))
    x = probe(reference, 30, seed=order)
    compare(reference, fast, x, torch.randn(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)),
            torch.float64, f"float64, order {order}")


@pytest.mark.slow
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("grid_size", [4, 10, 20, 37, 50])
def test_larger_shapes_sweep(order, grid_size, monkeypatch):
    # The contractions take turns, so that each checks every grid and every order across the sweep
    # (each at every point would treble the interpreter's time); widths and batches off every tile.
    contraction = ("dense", "stored", "gather")[(order + grid_size) % 3]
    store_bases(monkeypatch, contraction)
    for index, (i, o, b) in enumerate([(40, 70, 33), (65, 33, 40), (1, 1, 1)]):
        reference, fast = build([i, o], grid_size, order, seed=order + index, contraction=contraction)
        x = probe(reference, b, seed=index)
        upstream = torch.randn(b, o, generator=torch.Generator().manual_seed(index))
        compare(reference, fast, x, upstream, torch.float32, f"order {order}, grid {grid_size}, [{i}, {o}] b{b}")


# --------------------------------------------------------------------------- non-finite values


def each_value_in_each_position(reference, fast, x, upstream, which: str, values, what: str) -> None:
    """Each position of ``x`` or of ``upstream`` (``which``) takes each of ``values`` alone; kan-fast's
    output and gradients have the reference's NaN and inf pattern and agree elsewhere."""
    clean = x if which == "x" else upstream
    for position in range(clean.numel()):
        for value in values:
            changed = clean.clone()
            changed.view(-1)[position] = value
            x_now, upstream_now = (changed, upstream) if which == "x" else (x, changed)
            expected = outputs_and_gradients(reference, x_now, upstream_now)
            actual = outputs_and_gradients(fast, x_now.to(DEVICE), upstream_now.to(DEVICE))
            for name in expected:
                assert_same_pattern(actual[name], expected[name], f"{what}, {which}[{position}] = {value}, {name}")


@pytest.mark.sweep
@CONTRACTION
@pytest.mark.parametrize("scaler", [True, False])
@pytest.mark.parametrize("order", [1, 3, 5])
def test_every_value_in_every_position_of_a_layer(order, scaler, contraction):
    """Layer [3, 2], batch 4: each position takes each special value, alone (no host check on this path:
    the kernels make the reference's NaN and inf themselves)."""
    reference, fast = build([3, 2], 4, order, seed=order, scaler=scaler, contraction=contraction)
    clean = torch.rand(4, 3, generator=torch.Generator().manual_seed(order)) * 3 - 1.5
    upstream = torch.randn(4, 2, generator=torch.Generator().manual_seed(7))
    each_value_in_each_position(reference, fast, clean, upstream, "x", VALUES, f"order {order}, scaler {scaler}")


@CONTRACTION
def test_every_value_in_every_position_of_a_model(contraction):
    """Model [3, 4, 2]: the hidden layer's backward receives a non-finite upstream gradient."""
    reference, fast = build([3, 4, 2], 5, 3, seed=11, contraction=contraction)
    clean = torch.rand(3, 3, generator=torch.Generator().manual_seed(3)) * 3 - 1.5
    upstream = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    each_value_in_each_position(reference, fast, clean, upstream, "x", VALUES, "[3, 4, 2]")


@CONTRACTION
@pytest.mark.parametrize("order", [1, 3])
def test_non_finite_upstream_gradient(order, contraction):
    reference, fast = build([3, 2], 6, order, seed=20 + order, scaler=order == 1, contraction=contraction)
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(5)) * 3 - 1.5
    clean = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    each_value_in_each_position(reference, fast, x, clean, "upstream", VALUES[:3], f"order {order}")


# --------------------------------------------------------------------------- fallback and options


def test_adapted_grid_falls_back_with_one_warning_and_equals_reference():
    reference, fast = build([4, 3], 5, 3, seed=1, adapted=True)
    x = probe(reference, 20, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not fast.uses_triton(x.to(DEVICE))
        compare(reference, fast, x, torch.randn(20, 3, generator=torch.Generator().manual_seed(2)), torch.float32,
                "adapted grid")
        fast(x.to(DEVICE))
    said = [str(w.message) for w in caught if "Triton" in str(w.message)]
    assert len(said) == 1 and "not uniform" in said[0], said


@CONTRACTION
@pytest.mark.parametrize("grid_size", [20, 1000])
def test_uneven_float32_knots_of_a_uniform_grid_take_de_boor_and_equal_reference(grid_size, contraction, launched):
    """At grids 20 and 1000 the float32 knots of a uniform grid on (-1, 1) drift from even spacing by
    more than the cardinal recursion allows (kan.fast.is_cardinal): the kernels evaluate de Boor's
    triangle over the stored knots, as the reference does, with no warning and no fallback."""
    reference, fast = build([4, 3], grid_size, 3, seed=4, contraction=contraction)
    assert kan.fast.knot_geometry(fast.grid, 3).uniform and not kan.fast.is_cardinal(fast.grid)
    x = probe(reference, 40, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert fast.uses_triton(x.to(DEVICE))
        compare(reference, fast, x, torch.randn(40, 3, generator=torch.Generator().manual_seed(4)), torch.float32,
                f"grid {grid_size}, {contraction}")
    assert ran(launched) == KERNELS_OF[contraction]


@pytest.mark.parametrize("order", [0, 6])
def test_other_orders_fall_back_and_equal_reference(order):
    reference, fast = build([3, 2], 4, order, seed=2)
    x = probe(reference, 10, seed=3)
    with pytest.warns(UserWarning, match="spline orders 1 to 5"):
        compare(reference, fast, x, torch.randn(10, 2, generator=torch.Generator().manual_seed(2)), torch.float32,
                f"order {order}")


def test_zoo_builds_the_triton_backend_and_counts_its_flops():
    torch.manual_seed(0)
    model = zoo.build("kan-fast", [4, 5, 3], backend="triton", **EAGER).to(DEVICE)
    assert all(layer.uses_triton(torch.zeros(2, layer.in_features, device=DEVICE)) for layer in model.layers)
    assert model(torch.rand(6, 4, device=DEVICE)).shape == (6, 3)
    dense = kan.fast.forward_flops([4, 5, 3], 6, backend="torch", contraction="dense")
    assert kan.fast.forward_flops([4, 5, 3], 6, backend="triton") == dense
    # grid 50: 53 coefficients per feature, past the Triton crossover: the gather count
    assert kan.fast.forward_flops([4, 5, 3], 6, grid_size=50, backend="triton") == kan.fast.forward_flops(
        [4, 5, 3], 6, grid_size=50, backend="torch", contraction="gather")
    assert kan.fast.forward_flops([4, 5, 3], 6, grid_size=50, backend="triton", contraction="dense") == (
        kan.fast.forward_flops([4, 5, 3], 6, grid_size=50, backend="torch", contraction="dense"))
    # a grid of one interval contracts densely even when gather is asked for
    assert kan.fast.forward_flops([4, 5, 3], 6, grid_size=1, backend="triton", contraction="gather") == (
        kan.fast.forward_flops([4, 5, 3], 6, grid_size=1, backend="torch", contraction="dense"))


def test_auto_contraction_follows_the_triton_crossover(launched):
    """contraction="auto": dense below TRITON_GATHER_MIN_COEFF coefficients per feature, gather from it on."""
    order = 3
    below = kan.fast.TRITON_GATHER_MIN_COEFF - order - 1  # grid sizes whose coeff is just below and at it
    for grid_size, expected in ((below, DENSE_KERNELS), (below + 1, GATHER_KERNELS)):
        for counter in launched.values():
            counter.calls = 0
        reference, fast = build([3, 4], grid_size, order, seed=grid_size)
        assert fast.uses_gather() == (expected == GATHER_KERNELS)
        compare(reference, fast, probe(reference, 9, seed=1), torch.randn(9, 4, generator=torch.Generator().manual_seed(3)),
                torch.float32, f"auto, grid {grid_size}")
        assert ran(launched) == expected, grid_size


@pytest.mark.parametrize("order", [1, 3])
def test_gather_on_a_grid_of_one_interval_contracts_densely(order, launched):
    """With one interval the band of local bases is every column: contraction="gather" runs the dense
    kernels there, and a non-finite upstream gradient gives the reference's pattern."""
    reference, fast = build([3, 2], 1, order, seed=order, contraction="gather")
    assert not fast.uses_gather()
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8  # inside the one interval
    clean = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    each_value_in_each_position(reference, fast, x, clean, "upstream", VALUES[:3], f"grid 1, order {order}")
    compare(reference, fast, x, clean, torch.float32, f"grid 1, order {order}")  # last: it makes reference float64
    assert ran(launched) == DENSE_KERNELS


def test_math_mode_follows_torch_tf32_flag():
    x = torch.zeros(1, device=DEVICE)
    assert ts.math_mode(x) == "fp32"
    assert ts.math_mode(x.double()) == "fp64"
    torch.backends.cuda.matmul.allow_tf32 = True
    assert ts.math_mode(x) == ("tf32" if CUDA else "fp32")
    assert ts.math_mode(x, gather=True) == "fp32"  # no tl.dot in the gather kernels


def test_triton_backend_on_cpu_without_the_interpreter_is_one_line_error():
    script = (
        "import torch\n"
        "from kan.fast import FastBSplineKANLinear\n"
        "layer = FastBSplineKANLinear(3, 2, backend='triton')\n"
        "try:\n"
        "    layer(torch.rand(4, 3))\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "ValueError: backend='triton' cannot run here" in result.stdout, result.stderr[-2000:]
    assert "TRITON_INTERPRET" in result.stdout and len(result.stdout.strip().splitlines()) == 1


# --------------------------------------------------------------------------- operators


def operator_args(dtype=torch.float32, scaler=True, batch=5):
    reference, _ = build([3, 4], 5, 3, dtype=dtype, seed=5, scaler=scaler)
    x = probe(reference, batch, seed=5).to(DEVICE, dtype)
    sw = reference.spline_weight.detach().to(DEVICE)
    sc = reference.spline_scaler.detach().to(DEVICE) if scaler else None
    bw = reference.base_weight.detach().to(DEVICE)
    return x, sw, sc, bw, reference.grid.to(DEVICE), 3


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("scaler", [True, False])
def test_opcheck_forward_and_backward_operators(scaler, gather):
    x, sw, sc, bw, grid, order = operator_args(scaler=scaler)
    leaves = [x.requires_grad_(), sw.requires_grad_(), sc.requires_grad_() if sc is not None else None,
              bw.requires_grad_()]
    torch.library.opcheck(ts.spline_forward, (*leaves, grid, order, gather))
    grad_out = torch.randn(x.size(0), bw.size(0), device=DEVICE)
    for needs_input, needs_weights in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(ts.spline_backward, (grad_out, x.detach(), sw.detach(),
                                                   None if sc is None else sc.detach(), bw.detach(), grid, order,
                                                   needs_input, needs_weights, gather))


def _operator_and_direct(scaler, gather, run):
    """Output and gradients of one layer call by ``run`` (the operator or the direct path)."""
    x, sw, sc, bw, grid, order = operator_args(scaler=scaler, batch=9)
    leaves = [t.clone().requires_grad_() for t in (x, sw, sc, bw) if t is not None]
    if sc is None:
        leaves.insert(2, None)
    out = run(*leaves, grid, order, gather, True)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    out.backward(upstream)
    return [out.detach()] + [t.grad for t in leaves if t is not None]


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("scaler", [True, False])
def test_direct_path_equals_the_operators_bit_for_bit(scaler, gather):
    """Eager layers skip the dispatcher (kan.triton_spline._Direct); the same launches on the same
    tensors, so the output and every gradient equal the registered operator's exactly."""
    through_operator = _operator_and_direct(scaler, gather, ts.spline_forward)
    direct = _operator_and_direct(scaler, gather, ts._Direct.apply)
    assert len(direct) == len(through_operator) == (5 if scaler else 4)
    for a, b in zip(direct, through_operator):
        assert torch.equal(a, b)


def test_layers_call_the_operator_where_a_dispatch_mode_watches():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    x, sw, sc, bw, grid, order = operator_args()
    with Seen() as seen:
        ts.layer(x, sw, sc, bw, grid, order)
    assert "kan.triton_spline_forward" in seen.ops
    assert not ts._traced()


def test_layers_beyond_the_kernels_indices_take_the_pytorch_path():
    fits = torch.empty(2 ** 20, 64, device="meta")  # 2^26 inputs, 2^28 local bases at order 3
    assert ts.why_not_layer(fits, 3, True, True, out_features=1024, coeff=8) is None
    # 2^21 rows x 256 features x 4 local bases = 2^31 elements of the local bases' buffer
    reason = ts.why_not_layer(torch.empty(2 ** 21, 256, device="meta"), 3, True, True, out_features=8, coeff=8)
    assert reason is not None and "32-bit" in reason and str(2 ** 31) in reason
    # the weights: 2^12 outputs x 2^12 inputs x 2^7 columns
    assert ts.why_not_layer(torch.empty(4, 2 ** 12, device="meta"), 3, True, True, out_features=2 ** 12,
                            coeff=127) is not None
    assert "65536 input features" in ts.why_not_layer(torch.empty(2, 2 ** 16, device="meta"), 3, True, True)


def test_launches_per_layer():
    assert ts.launches() == (1, 3)
    assert ts.launches(scaler=False) == (1, 2)
    assert ts.launches(needs_weights=False) == (1, 1)
    # the coefficient table: one more kernel in each direction; the local bases one more in the forward;
    # the gather weight gradient's sort, span bounds, finiteness counts, local bases and SiLU product
    operations = ts.GATHER_WEIGHT_GRAD_OPERATIONS
    assert ts.launches(gather=True) == (3, 2 + 2 + operations)
    assert ts.launches(needs_input=False, gather=True) == (3, 2 + operations)
    # stored bases: the local bases' kernel before the forward and before the weight gradient
    assert ts.launches(stored=True) == (2, 4)
    assert ts.launches(needs_weights=False, stored=True) == (2, 1)
    assert ts.launches(gather=True, stored=True) == ts.launches(gather=True)


def test_the_dense_kernels_store_bases_where_their_evaluations_reach_the_minimum():
    # a point's recursion per column of its feature (coeff + 1) and per 64 outputs
    evaluations = lambda batch, i, o, coeff: batch * i * (coeff + 1) * -(-o // 64)  # noqa: E731
    assert evaluations(4096, 784, 64, 8) == 4096 * 784 * 9 >= ts.STORED_BASES_MIN
    assert ts.stores_bases(4096, 784, 64, 8) and ts.stores_bases(8192, 1024, 1024, 8)
    assert evaluations(1024, 2, 5, 8) < ts.STORED_BASES_MIN and not ts.stores_bases(1024, 2, 5, 8)
    assert not ts.stores_bases(4096, 64, 10, 8)  # [784, 64, 10]'s second layer: 2.4 million
    assert ts.stores_bases(4096, 64, 65, 8) == (4096 * 64 * 9 * 2 >= ts.STORED_BASES_MIN)
    assert ts.plan("forward", 4096, 784, 64, 8, 3)[0]["STORED"]
    assert not ts.plan("weight_grad", 1024, 2, 5, 8, 3)[0]["STORED"]
    assert ts.launched(False, stored=True) == ("local_bases", "forward", "weight_grad", "input_grad")


# --------------------------------------------------------------------------- double backward


@pytest.mark.parametrize("order", [1, 3])
def test_gradgradcheck_float64(order):
    reference, _ = build([2, 3], 4, order, dtype=torch.float64, seed=order)
    generator = torch.Generator().manual_seed(order)
    x = (torch.rand(4, 2, generator=generator, dtype=torch.float64) * 2.4 - 1.2).to(DEVICE).requires_grad_()
    params = [reference.spline_weight.detach().to(DEVICE).requires_grad_(),
              reference.spline_scaler.detach().to(DEVICE).requires_grad_(),
              reference.base_weight.detach().to(DEVICE).requires_grad_()]
    grid = reference.grid.to(DEVICE)

    def function(x, sw, sc, bw):
        return ts.layer(x, sw, sc, bw, grid, order)

    assert torch.autograd.gradcheck(function, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(function, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_hessian_of_a_physics_loss_equals_reference():
    """d/dx of (d out / dx) (the second derivative a physics-informed loss needs) and its gradient by the weights."""
    reference, fast = build([2, 5, 1], 5, 3, seed=9)
    x = (torch.rand(16, 2, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8)

    def second_order(model, x, dtype, device):
        model = model.to(device, dtype)
        x = x.to(device, dtype).requires_grad_()
        out = model(x)
        (slope,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        loss = (slope ** 2).sum()
        grads = torch.autograd.grad(loss, [x, *model.parameters()])
        return [g.detach().cpu().double() for g in grads]

    expected = second_order(reference, x, torch.float64, torch.device("cpu"))
    actual = second_order(fast, x, torch.float32, DEVICE)
    for a, e, name in zip(actual, expected, ["input"] + [n for n, _ in fast.named_parameters()]):
        assert_close(a, e, GRADIENT_TOLERANCE, f"second order, {name}")


def test_torch_func_transforms_take_the_reference_and_leave_the_kernels_to_plain_calls(launched):
    """Inside torch.func's transforms the layer runs the reference's operations (the kernels'
    autograd Function does not compose with functorch): the input's gradient by torch.func.grad
    and the per-row Jacobian by vmap(jacrev) against the float64 reference's autograd."""
    reference, fast = build([2, 5, 1], 5, 3, seed=10)
    x = torch.rand(6, 2, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    truth = torch.autograd.functional.jacobian(reference.double(), x.double())  # (6, 1, 6, 2)
    rows = torch.arange(6)
    xd = x.to(DEVICE)
    grad = torch.func.grad(lambda v: fast(v).sum())(xd)
    per_row = torch.func.vmap(torch.func.jacrev(lambda v: fast(v[None])[0]))(xd)
    assert ran(launched) == set(), "no kernel inside a transform"
    assert_close(grad.cpu(), truth.sum(dim=(0, 1)), GRADIENT_TOLERANCE, "torch.func.grad")
    assert_close(per_row.cpu(), truth[rows, :, rows, :], GRADIENT_TOLERANCE, "vmap(jacrev)")
    fast(xd).sum().backward()
    assert ran(launched) == DENSE_KERNELS, "a plain call after the transforms takes the kernels"


@CONTRACTION
def test_under_autocast_the_output_is_in_the_parameters_dtype(contraction):
    """The kernels take no part in autocast (docs/kan-fast-numerics.md): float32 out, equal to
    the output outside autocast."""
    _, fast = build([3, 4, 2], 5, 3, seed=4, contraction=contraction)
    x = (torch.rand(9, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1).to(DEVICE)
    with torch.no_grad():
        plain = fast(x)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            cast = fast(x)
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)

def test_torch_compile_launches_the_kernels_and_export_holds_the_reference(launched):
    """Under torch.compile each layer runs as it does eagerly, its kernels launched; an exported
    program holds the reference's operations, which a traced program can (see test_fast.py)."""
    reference, fast = build([3, 4, 2], 5, 3, seed=12)
    x = (torch.rand(8, 3, generator=torch.Generator().manual_seed(12)) * 2 - 1).to(DEVICE)
    with torch.no_grad():
        eager = fast(x)
        torch._dynamo.reset()
        assert ran(launched) == {"_forward_kernel"}
        launched["_forward_kernel"].calls = 0
        assert torch.equal(torch.compile(fast, backend="eager")(x), eager)
        assert launched["_forward_kernel"].calls == 2, "one forward launch a layer, under compile"
        program = torch.export.export(fast, (x,))
        assert launched["_forward_kernel"].calls == 2, "no launch while exporting"
        assert_close(program.module()(x).cpu(), reference(x.cpu()), FLOAT32_TOLERANCE, "exported")

# compiled anew for most cases on a GPU (orders, grids and widths differ), and half a minute
# in all under the interpreter: slow, out of the quick run and of triton_check.sh's
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(CASES))
def test_random_configuration_equals_reference(seed):
    """The seeded random configurations of tests/random_configurations.py (every option of the
    reference drawn together) with the Triton kernels, against the reference."""
    check(seed, "triton", DEVICE)
