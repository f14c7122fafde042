"""The registry: names, options, errors and FLOP counts."""

import pytest
import torch

from kan import zoo


def test_available_lists_every_family_with_descriptions():
    names = zoo.available()
    for expected in ["kan", "kan-fast", "fourier-kan", "rbf-kan", "chebyshev-kan", "mlp", "mlp-param"]:
        assert expected in names
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


@pytest.mark.parametrize("name", list(zoo.available()))
def test_every_entry_builds_runs_and_counts_flops(name):
    torch.manual_seed(0)
    options = {"grid_size": 5} if "grid_size" in zoo.options(name) else {}
    model = zoo.build(name, [6, 5, 3], **options)
    x = torch.randn(7, 6)
    y = model(x)
    assert y.shape == (7, 3) and torch.isfinite(y).all()
    assert zoo.flops(name, [6, 5, 3], batch=7, **options) > 0
    assert zoo.entry(name).family in {"kan", "mlp"}


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*valid models: kan, kan-fast"):
        zoo.build("nope", [2, 1])


def test_unknown_option_lists_the_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) colour for model 'kan'; valid options: grid_size"):
        zoo.build("kan", [2, 1], colour="red")
    with pytest.raises(ValueError, match="unknown option"):
        zoo.flops("kan", [2, 1], batch=4, colour="red")


@pytest.mark.parametrize("widths", [[], [3], [3, 0], [2, -1, 1], ["a", 2], [2.5, 1]])
def test_bad_widths_are_rejected(widths):
    with pytest.raises(ValueError, match="widths"):
        zoo.build("kan", widths)


@pytest.mark.parametrize("batch", [0, -3, 2.5])
def test_bad_batch_is_rejected(batch):
    with pytest.raises(ValueError, match="batch"):
        zoo.flops("kan", [2, 1], batch=batch)


def test_reference_flops_by_hand():
    # One layer, in = out = batch = 1, grid 1, order 1: coeff = 2, intervals = 3.
    #   base:   SiLU 4 + product 2*1*1*1 = 6
    #   basis:  order 0, 3 ops x 3 intervals = 9; level 1, 2 functions:
    #           knot differences 2 x 2 = 4, elementwise 7 x 2 = 14  -> 27
    #   spline: scaler 1*1*2 = 2, product 2*1*2*1 = 4               -> 6
    #   output add                                                   -> 1
    assert zoo.flops("kan", [1, 1], batch=1, grid_size=1, spline_order=1) == 40
    # Linear in the batch for the per-sample parts, and layers add up.
    one = zoo.flops("kan", [784, 64], batch=1024)
    two = zoo.flops("kan", [64, 10], batch=1024)
    assert zoo.flops("kan", [784, 64, 10], batch=1024) == one + two


def test_parameter_count():
    model = zoo.build("kan", [3, 2])
    # base (2x3) + spline (2x3x8) + scaler (2x3)
    assert zoo.parameter_count(model) == 6 + 48 + 6
