"""Seeded random configurations of kan-fast and the reference KAN, and the check of one.

Each case draws all of the reference's options together from its seed, so that their
combinations are checked, not one thing at a time: a layer or a model, widths, spline order
0 to 6, grid size 1 to 50, a ``grid_range`` shifted and scaled away from [-1, 1],
``scale_base`` 0, the standalone scaler on or off, the base activation, leading batch
dimensions, inputs inside, across and far beyond the knots, NaN and inf among them, a grid
updated from a sample (``grid_eps`` from adaptive to uniform), float32 and float64, and the
contraction. A seed always draws the same case. tests/test_fast_random.py checks them on the
CPU backends, tests/test_triton.py with the Triton kernels.

The truth (``check``) is the reference itself on the same state dict: in float64, kan-fast's
outputs and the gradients of the input and of every parameter within 1e-10 of the reference's
(relative to max(1, max |reference|)); in float32, within 4 times the float32 reference's own
error against the float64 reference, or 1e-5 (outputs) and 1e-4 (gradients) where that is
larger. The NaN and inf of outputs and gradients are the reference's in the same dtype.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import torch

from kan.fast import FastBSplineKAN, FastBSplineKANLinear
from kan.reference import KAN, KANLinear
from nonfinite_patterns import outputs_and_gradients

CASES = 64
ACTIVATIONS = (torch.nn.SiLU, torch.nn.SiLU, torch.nn.SiLU, torch.nn.GELU, torch.nn.Tanh, torch.nn.Identity)


@dataclass
class Case:
    seed: int
    model: bool
    widths: list[int]
    leading: tuple[int, ...]  # batch dimensions: (batch,) or more
    options: dict  # the reference's spline options
    span: float  # the inputs are drawn over span times grid_range's width ...
    shift: float  # ... from its low end less shift times the width
    specials: int  # inputs made NaN, inf or -inf
    update: bool  # the grid updated from another sample first
    dtype: torch.dtype
    contraction: str

    def __str__(self) -> str:
        o = self.options
        return (f"seed {self.seed}: {'model' if self.model else 'layer'} {self.widths} batch {self.leading} "
                f"order {o['spline_order']} grid {o['grid_size']} range {o['grid_range']} "
                f"{o['base_activation'].__name__} scaler {o['enable_standalone_scale_spline']} "
                f"scale_base {o['scale_base']} grid_eps {o['grid_eps']} update {self.update} "
                f"specials {self.specials} {self.dtype} {self.contraction}")


def draw(seed: int) -> Case:
    rng = random.Random(seed)
    model = rng.random() < 0.4
    widths = ([rng.randint(1, 9) for _ in range(rng.randint(2, 4))] if model
              else [rng.randint(1, 40), rng.randint(1, 70)])
    low = rng.choice([-1.0, -2.5, 0.0, -0.3, 3.0])
    options = dict(
        grid_size=rng.choice([1, 2, 3, 5, 8, 12, 20, 50]), spline_order=rng.choice([0, 1, 2, 3, 3, 4, 5, 6]),
        grid_range=[low, low + rng.choice([2.0, 1.0, 5.0, 0.7])],
        enable_standalone_scale_spline=rng.random() < 0.75, base_activation=rng.choice(ACTIVATIONS),
        scale_base=rng.choice([1.0, 0.0, 2.5]), scale_spline=rng.choice([1.0, 0.5]),
        grid_eps=rng.choice([0.02, 1.0, 0.0, 0.5]),
    )
    return Case(seed=seed, model=model, widths=widths,
                leading=rng.choice([(1,), (2,), (7,), (33,), (130,), (3, 5), (2, 1, 4)]), options=options,
                span=rng.choice([1.0, 1.6, 3.0]), shift=rng.choice([0.0, 0.3, 1.0]),
                specials=rng.choice([0, 0, 0, 1, 3]), update=rng.random() < 0.3,
                dtype=rng.choice([torch.float64, torch.float32]), contraction=rng.choice(["auto", "dense", "gather"]))


def inputs(case: Case, generator: torch.Generator, rows: tuple[int, ...]) -> torch.Tensor:
    """float64 inputs (*rows, in) over the case's span of grid_range, with its NaN and inf."""
    low, high = case.options["grid_range"]
    width = high - low
    x = torch.rand(*rows, case.widths[0], generator=generator, dtype=torch.float64) * width * case.span
    x += low - case.shift * width
    flat = x.view(-1)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)
    for k in range(case.specials):
        at = int(torch.randint(flat.numel(), (1,), generator=generator))
        flat[at] = specials[k % 3]
    return x


def build(case: Case, generator: torch.Generator):
    """(reference in float64, its state dict): parameters N(0, 1); the grid updated from a
    sample of its own (not the inputs checked, which would then lie on the knots) where asked."""
    torch.manual_seed(case.seed)
    widths, options = case.widths, case.options
    reference = KAN(widths, **options) if case.model else KANLinear(*widths, **options)
    reference = reference.double()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        if case.update:
            sample = inputs(case, generator, (64,))
            sample = sample[sample.isfinite().all(dim=1)]
            if case.model:
                reference(sample, update_grid=True)
            else:
                reference.update_grid(sample)
    return reference, reference.state_dict()


def error(actual: torch.Tensor, truth: torch.Tensor) -> float:
    """max |actual - truth| over the finite entries of truth, relative to max(1, max |truth|)."""
    finite = truth.isfinite()
    if not finite.any():
        return 0.0
    scale = max(1.0, truth[finite].abs().max().item())
    return (actual.double()[finite] - truth[finite]).abs().max().item() / scale


def check(seed: int, backend: str, device: torch.device | str = "cpu") -> Case:
    """kan-fast with ``backend`` on ``device`` on the case of ``seed`` against the reference on
    the CPU (see the module docstring); AssertionError naming the case and what differs."""
    case = draw(seed)
    generator = torch.Generator().manual_seed(seed)
    reference, state = build(case, generator)
    x = inputs(case, generator, case.leading)
    upstream = torch.randn(*case.leading, case.widths[-1], generator=generator, dtype=torch.float64)
    options = dict(case.options, backend=backend, contraction=case.contraction, compile="off")
    fast = FastBSplineKAN(case.widths, **options) if case.model else FastBSplineKANLinear(*case.widths, **options)
    fast = fast.double()
    fast.load_state_dict(state, strict=True)  # in float64: the same weights and knots to the bit
    reference, fast = reference.to(case.dtype), fast.to(device, case.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a layer told once that it takes the PyTorch path
        found = outputs_and_gradients(fast, x.to(device, case.dtype), upstream.to(device, case.dtype))
    same_dtype = outputs_and_gradients(reference, x.to(case.dtype), upstream.to(case.dtype))
    truth = outputs_and_gradients(reference.double(), x, upstream)
    assert set(found) == set(truth), case
    for name, value in truth.items():
        if value is None:
            assert found[name] is None, f"{case}: {name} has a gradient the reference does not"
            continue
        got, own = found[name], same_dtype[name]
        assert got is not None and got.dtype == case.dtype and got.shape == value.shape, f"{case}: {name}"
        assert torch.equal(got.isnan(), own.isnan()), f"{case}: NaN of {name} differ from the reference's"
        infinite = own.isinf()
        assert torch.equal(got.isinf(), infinite) and torch.equal(got[infinite], own[infinite]), \
            f"{case}: inf of {name} differ from the reference's"
        if case.dtype == torch.float64:
            bound = 1e-10
        else:
            bound = max(1e-5 if name == "output" else 1e-4, 4 * error(own, value))
        assert error(got, value) <= bound, f"{case}: {name} off by {error(got, value):.3g} > {bound:.3g}"
    return case
