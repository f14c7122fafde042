"""The fixed tasks every model is trained on: data made here or shipped with scikit-learn.

Nothing is downloaded. Each task's data is a pure function of its seed: the same seed gives
the same inputs, targets and train/test split on every machine. Inputs lie in [-1, 1], the
B-spline KANs' default grid range, so no model starts with its inputs off its grid.

Regression tasks follow the KAN paper's (Liu et al., 2024) toy functions: inputs uniform in
[-1, 1], targets the function's exact values, the metric the test RMSE. The classification
task is scikit-learn's bundled digits (1797 images of 8x8 pixels, values 0..16, scaled to
[-1, 1]), the metric the test accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

REGRESSION, CLASSIFICATION = "regression", "classification"
RMSE, ACCURACY = "test rmse", "test accuracy"
TRAIN_POINTS, TEST_POINTS = 1000, 1000  # per regression task
DIGITS_TEST = 450  # digits held out for testing (a quarter of the 1797)


@dataclass(frozen=True)
class Data:
    """One task's data: train inputs (n_train, in) and targets, test inputs (n_test, in) and targets.

    Regression targets are (n, 1) floats; classification targets (n,) int64 class indices.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device, dtype) -> "Data":
        def move(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        return Data(move(self.train_x), move(self.train_y), move(self.test_x), move(self.test_y))


@dataclass(frozen=True)
class Task:
    """A fixed problem: its name, formula, network widths, grid size, data and metric.

    ``target``: the accuracy every model is timed to reach (a test RMSE at most, or an
    accuracy at least, this), so that "fastest to a given accuracy" has one fixed meaning.
    """

    name: str
    formula: str
    kind: str  # REGRESSION or CLASSIFICATION
    widths: tuple[int, ...]
    grid_size: int
    target: float
    make: Callable[[int], Data]

    @property
    def metric(self) -> str:
        return RMSE if self.kind == REGRESSION else ACCURACY

    @property
    def higher_is_better(self) -> bool:
        return self.kind == CLASSIFICATION

    def data(self, seed: int) -> Data:
        return self.make(seed)

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: the core's (mean squared error) for regression, cross-entropy for classes."""
        if self.kind == CLASSIFICATION:
            return torch.nn.functional.cross_entropy(output, targets)  # output (batch, classes) logits
        from benchmarks.core.case import loss

        return loss(output, targets)

    def score(self, output: torch.Tensor, targets: torch.Tensor) -> float:
        """The test metric of ``output`` (n, out): RMSE, or the share of argmax equal to the class."""
        if self.kind == CLASSIFICATION:
            return float((output.argmax(dim=1) == targets).double().mean())
        return float(torch.sqrt(torch.mean((output.double() - targets.double()) ** 2)))

    def reached(self, value: float) -> bool:
        """Whether a metric value meets the task's target."""
        return value >= self.target if self.higher_is_better else value <= self.target


def _regression(function: Callable[[np.ndarray], np.ndarray], inputs: int) -> Callable[[int], Data]:
    """Data maker: inputs uniform in [-1, 1] from a generator seeded by the seed, targets in float64."""

    def make(seed: int) -> Data:
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1.0, 1.0, size=(TRAIN_POINTS + TEST_POINTS, inputs))  # (n, in)
        y = function(x).reshape(-1, 1)  # (n, 1)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return Data(x[:TRAIN_POINTS], y[:TRAIN_POINTS], x[TRAIN_POINTS:], y[TRAIN_POINTS:])

    return make


def exp_sin(x: np.ndarray) -> np.ndarray:
    return np.exp(np.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)


def product(x: np.ndarray) -> np.ndarray:
    return x[:, 0] * x[:, 1]


def nested(x: np.ndarray) -> np.ndarray:
    return np.exp((np.sin(math.pi * (x[:, 0] ** 2 + x[:, 1] ** 2)) + np.sin(math.pi * (x[:, 2] ** 2 + x[:, 3] ** 2))) / 2)


def bessel(x: np.ndarray) -> np.ndarray:
    """A drum's mode: J0 of the distance from the centre, about four half-waves over the square."""
    import scipy.special

    return scipy.special.j0(10 * np.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2))


def digits(seed: int) -> Data:
    """scikit-learn's bundled 8x8 digits, pixels 0..16 scaled to [-1, 1]; the split a permutation by seed."""
    from sklearn.datasets import load_digits  # shipped inside scikit-learn: no download

    bunch = load_digits()
    x = torch.from_numpy(bunch.data / 8.0 - 1.0)  # (1797, 64) in [-1, 1]
    y = torch.from_numpy(bunch.target.astype(np.int64))  # (1797,)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
    return Data(x[train], y[train], x[test], y[test])


TASKS = {t.name: t for t in [
    Task("exp-sin", "exp(sin(pi x) + y^2)", REGRESSION, (2, 5, 1), 5, 0.05, _regression(exp_sin, 2)),
    Task("product", "x y", REGRESSION, (2, 5, 1), 5, 0.02, _regression(product, 2)),
    Task("nested", "exp((sin(pi (x1^2 + x2^2)) + sin(pi (x3^2 + x4^2))) / 2)", REGRESSION, (4, 4, 2, 1), 5, 0.1,
         _regression(nested, 4)),
    Task("bessel", "J0(10 sqrt(x^2 + y^2)) (scipy.special.j0)", REGRESSION, (2, 5, 1), 10, 0.1,
         _regression(bessel, 2)),
    Task("digits", "scikit-learn's 8x8 digits, 10 classes", CLASSIFICATION, (64, 16, 10), 5, 0.95, digits),
]}
