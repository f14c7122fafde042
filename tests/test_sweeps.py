"""The quick run's sample of a parametrised sweep (tests/conftest.py): every value of every
parameter at least once, the same cases on every run, the rest left to the whole suite."""

from __future__ import annotations

import itertools

from conftest import covering_sample


def product(**sizes):
    names = list(sizes)
    return [dict(zip(names, values)) for values in itertools.product(*(range(n) for n in sizes.values()))]


def test_every_value_of_every_parameter_is_in_the_sample():
    cases = product(path=4, order=6, adapted=2)
    chosen = covering_sample(cases)
    for name, size in (("path", 4), ("order", 6), ("adapted", 2)):
        assert {cases[i][name] for i in chosen} == set(range(size))
    # the largest parameter bounds the sample from below; greedy reaches that bound on a full product
    assert len(chosen) == 6
    assert chosen == sorted(set(chosen)) and covering_sample(cases) == chosen  # the same on every run


def test_a_sweep_with_one_parameter_is_run_whole():
    assert covering_sample(product(n=5)) == [0, 1, 2, 3, 4]


def test_no_cases_no_sample():
    assert covering_sample([]) == []


def test_an_uneven_sweep_is_still_covered():
    cases = [{"a": 0, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 1}, {"a": 0, "b": 2}]
    chosen = covering_sample(cases)
    assert {cases[i]["a"] for i in chosen} == {0, 1} and {cases[i]["b"] for i in chosen} == {0, 1, 2}
