"""The MLP baselines: layer placement, FLOPs by hand, and parameter matching against KAN counts by formula."""

from __future__ import annotations

import pytest
import torch

from kan import zoo
from kan.mlp import MLP, ParamMatchedMLP, forward_flops, param_matched_forward_flops, param_matched_widths


def mlp_params(widths: list[int]) -> int:
    """Weights plus biases of Linear layers of these widths."""
    return sum(i * o + o for i, o in zip(widths, widths[1:]))


def bspline_kan_params(widths: list[int], grid_size: int, spline_order: int = 3) -> int:
    """The reference KAN, per layer: out*in*(grid_size + spline_order) spline weights, out*in base, out*in scaler."""
    return sum(o * i * (grid_size + spline_order) + o * i + o * i for i, o in zip(widths, widths[1:]))


# ---------------------------------------------------------------- width-matched MLP


def test_mlp_is_linear_layers_with_the_activation_between_them_only():
    torch.manual_seed(0)
    model = MLP([3, 4, 5, 2]).double()
    assert [(layer.in_features, layer.out_features) for layer in model.layers] == [(3, 4), (4, 5), (5, 2)]
    x = torch.randn(6, 3, dtype=torch.float64)

    def silu(v):
        return v / (1 + torch.exp(-v))

    (w1, b1), (w2, b2), (w3, b3) = [(layer.weight, layer.bias) for layer in model.layers]
    expected = silu(silu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3  # no activation after the last layer
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_mlp_options_and_leading_dimensions():
    model = MLP([3, 4, 2], activation=torch.nn.ReLU, bias=False)
    assert isinstance(model.activation, torch.nn.ReLU)
    assert all(layer.bias is None for layer in model.layers)
    assert model(torch.randn(2, 5, 3)).shape == (2, 5, 2)
    assert zoo.parameter_count(model) == 3 * 4 + 4 * 2


def test_mlp_wrong_width_names_expected_and_received():
    with pytest.raises(ValueError) as error:
        MLP([7, 4, 2])(torch.randn(3, 11))
    assert "7" in str(error.value) and "11" in str(error.value)


def test_mlp_flops_by_hand():
    # [2, 5, 1], batch 3: first product 2*3*2*5 = 60, bias 3*5 = 15; SiLU on (3, 5) 4*15 = 60;
    # last product 2*3*5*1 = 30, bias 3. Total 168.
    assert forward_flops([2, 5, 1], 3) == 168
    assert zoo.flops("mlp", [2, 5, 1], batch=3) == 168
    # without biases and with ReLU (1 per element): 60 + 15 + 30 = 105
    assert zoo.flops("mlp", [2, 5, 1], batch=3, activation=torch.nn.ReLU, bias=False) == 105


def test_flops_of_an_activation_without_a_count_is_a_clear_error():
    with pytest.raises(ValueError, match="no FLOP count for activation"):
        forward_flops([2, 5, 1], 3, activation=torch.nn.Softplus)


# ---------------------------------------------------------------- parameter matching


@pytest.mark.parametrize("widths", [[2, 5, 1], [784, 64, 10], [256, 256, 256, 256]])
@pytest.mark.parametrize("grid_size", [5, 20, 50])
def test_matched_widths_reach_the_kan_count_within_five_percent(widths, grid_size):
    target = bspline_kan_params(widths, grid_size)
    matched = param_matched_widths(widths, target)
    assert matched[0] == widths[0] and matched[-1] == widths[-1]
    assert len(matched) == len(widths)
    assert abs(mlp_params(matched) - target) <= 0.05 * target
    # one common factor: the hidden widths keep their proportions (to within rounding)
    factors = [m / w for m, w in zip(matched[1:-1], widths[1:-1])]
    assert max(factors) - min(factors) <= 2 / min(widths[1:-1])


def test_matched_widths_by_hand():
    # [2, h, 1] has 2h + h + h + 1 = 4h + 1 parameters; 4h + 1 = 150 gives h = 37.25 -> 37 (149)
    assert param_matched_widths([2, 5, 1], 150) == [2, 37, 1]


def test_matched_widths_refuse_what_cannot_be_matched():
    with pytest.raises(ValueError, match="no hidden layer"):
        param_matched_widths([784, 10], 10_000)
    # 4h + 1 = 10: h = 2 gives 9 (10% low), h = 3 gives 13 (30% high)
    with pytest.raises(ValueError, match="within 5%"):
        param_matched_widths([2, 5, 1], 10)
    # below the smallest MLP of that shape, [2, 1, 1] with 5 parameters
    with pytest.raises(ValueError, match="within 5%"):
        param_matched_widths([2, 5, 1], 3)


# Small shapes only: building the reference KAN to count its parameters runs its
# least-squares initialisation, which takes seconds at [784, 64, 10] on a busy machine.
@pytest.mark.parametrize("widths, grid_size", [([2, 5, 1], 5), ([2, 5, 1], 20), ([2, 5, 1], 50), ([12, 9, 3], 20)])
def test_param_matched_mlp_from_the_zoo_matches_the_reference_kan(widths, grid_size):
    model = zoo.build("mlp-param", widths, grid_size=grid_size)
    assert isinstance(model, ParamMatchedMLP)
    target = bspline_kan_params(widths, grid_size)
    assert model.target_params == target
    assert model.widths[0] == widths[0] and model.widths[-1] == widths[-1]
    assert [layer.out_features for layer in model.layers] == model.widths[1:]
    assert abs(zoo.parameter_count(model) - target) <= 0.05 * target
    assert model(torch.randn(3, widths[0])).shape == (3, widths[-1])


@pytest.mark.parametrize(
    "match, kan_params",
    [
        ("fourier-kan", lambda i, o, k: 2 * o * i * k + o),
        ("chebyshev-kan", lambda i, o, k: i * o * (k + 1)),
        ("rbf-kan", lambda i, o, k: o * i * k + o * i + o + 2 * i),
    ],
)
def test_param_matched_mlp_matches_other_kans(match, kan_params):
    widths, grid_size = [6, 16, 3], 20
    target = sum(kan_params(i, o, grid_size) for i, o in zip(widths, widths[1:]))
    model = ParamMatchedMLP(widths, match=match, grid_size=grid_size)
    assert model.target_params == target
    assert abs(zoo.parameter_count(model) - target) <= 0.05 * target


def test_param_matched_mlp_refuses_a_match_that_is_not_a_kan():
    with pytest.raises(ValueError, match="must name a KAN"):
        ParamMatchedMLP([2, 5, 1], match="mlp")
    with pytest.raises(ValueError, match="unknown model"):
        ParamMatchedMLP([2, 5, 1], match="no-such-kan")


def test_param_matched_mlp_leaves_the_random_state_alone():
    # counting the KAN's parameters must not draw from the global generator
    torch.manual_seed(0)
    matched = ParamMatchedMLP([3, 8, 2], grid_size=7)
    torch.manual_seed(0)
    plain = MLP(matched.widths)
    for a, b in zip(matched.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_param_matched_flops_by_hand():
    # [2, 5, 1] grid 5: KAN 150 parameters -> MLP [2, 37, 1]; batch 3:
    # 2*3*2*37 = 444, bias 111, SiLU 4*111 = 444, 2*3*37 = 222, bias 3 -> 1224
    assert param_matched_forward_flops([2, 5, 1], 3, grid_size=5) == 1224
    assert zoo.flops("mlp-param", [2, 5, 1], batch=3, grid_size=5) == 1224
