"""The one time formatter: readable units, a fixed unit for a column, and missing figures."""

import math

import pytest

from benchmarks.core.units import format_seconds, time_unit


@pytest.mark.parametrize("seconds, shown", [
    (2.5, "2.5 s"), (0.0123, "12.3 ms"), (4.56e-5, "45.6 µs"), (7e-9, "7 ns"), (0.0, "0 ns"), (1.0, "1 s"),
])
def test_seconds_read_in_their_own_unit(seconds, shown):
    assert format_seconds(seconds) == shown


def test_a_column_can_share_one_unit_and_drop_it():
    assert format_seconds(0.5, unit="ms", spec=".3f") == "500.000 ms"
    assert format_seconds(2e-5, unit="ms", spec=".2f", suffix=False) == "0.02"


@pytest.mark.parametrize("value", [None, math.nan, math.inf, "fast"])
def test_a_missing_figure_is_the_missing_mark(value):
    assert format_seconds(value) == "–" and format_seconds(value, missing="-") == "-"


def test_the_unit_is_the_largest_that_keeps_the_figure_at_least_one():
    assert time_unit(0.001) == (1e3, "ms") and time_unit(0.000999) == (1e6, "µs")
