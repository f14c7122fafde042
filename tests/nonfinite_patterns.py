"""What the tests of kan-fast against the reference share: the special values, the check that two
tensors hold NaN, +inf and -inf in the same places and agree elsewhere, and a model's output and
gradients (tests/test_nonfinite.py, tests/test_triton.py, tests/random_configurations.py)."""

from __future__ import annotations

import torch

VALUES = [float("nan"), float("inf"), float("-inf"), 3e38, -3e38, 1e30]
TOLERANCE = 1e-4  # float32, relative to max(1, max |finite reference value|)


def assert_same_pattern(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """NaN, +inf and -inf in the same places; the finite values close."""
    assert actual is not None and actual.shape == expected.shape, what
    for name, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        where = test(actual) != test(expected)
        assert not where.any(), f"{what}: {name} differs at {where.nonzero()[:4].tolist()}"
    finite = expected.isfinite()
    if finite.any():
        scale = max(1.0, expected[finite].abs().max().item())
        error = (actual[finite] - expected[finite]).abs().max().item()
        assert error <= TOLERANCE * scale, f"{what}: max |fast - reference| = {error:.3g} > {TOLERANCE} * {scale:.3g}"


def outputs_and_gradients(model: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict:
    """The output, and the gradients of sum(upstream * output) by the input and every parameter, by
    name: copies on the CPU (converting the model to another dtype later converts its gradients in
    place), None for a parameter without a gradient."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(upstream)
    found = {"output": out.detach(), "input": x.grad}
    found.update({name: parameter.grad for name, parameter in model.named_parameters()})
    return {name: None if value is None else value.detach().cpu().clone() for name, value in found.items()}
