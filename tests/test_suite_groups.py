"""The suites' groups (the models timed together) and the shards a CI matrix runs."""

from __future__ import annotations

import pytest

from benchmarks.suite import suites

MODELS = ("kan", "kan-fast", "fourier-kan", "mlp", "mlp-param")


def test_a_group_holds_a_workloads_models_and_the_width_matched_mlp():
    full = suites.SUITES["full"]
    groups = full.groups(MODELS, ["cpu"], ["float32"])
    first = groups[0]
    assert {c.model for c in first.cases} == set(MODELS)
    assert {(c.phase, c.widths, c.batch) for c in first.cases} == {(first.cases[0].phase, (2, 5, 1), 1)}
    assert {c.grid_size for c in first.cases} == {5, None}
    second = groups[1]  # the same workload at grid 20: the MLP comes along to be paired with, not reported
    assert {c.grid_size for c in second.cases} == {20} and [c.model for c in second.companions] == ["mlp"]
    reported = full.cases(MODELS, ["cpu"], ["float32"])
    assert len(reported) == len(set(reported))
    assert sum(c.model == "mlp" for c in reported) == 3 * 8  # once per phase and shape x batch


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_cover_every_case_once_and_never_split_a_unit(count):
    groups = suites.SUITES["full"].groups(MODELS, ["cpu", "cuda"], None)
    parts = [suites.shard(groups, i, count) for i in range(1, count + 1)]
    cases = [c for part in parts for g in part for c in g.cases]
    every = [c for g in groups for c in g.cases]
    assert sorted(c.id for c in cases) == sorted(c.id for c in every)  # each exactly once
    owner = {}
    for i, part in enumerate(parts):
        for g in part:
            assert owner.setdefault(g.unit, i) == i  # a unit's grids and models stay in one shard
    sizes = [sum(len(g.cases) for g in part) for part in parts]
    assert max(sizes) - min(sizes) <= max(len(g.cases) for g in groups) * 3  # dealt evenly, unit by unit
    assert parts == [suites.shard(groups, i, count) for i in range(1, count + 1)]  # deterministic


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "2", "1/0"])
def test_a_bad_shard_is_one_line(text):
    with pytest.raises(ValueError, match="--shard takes I/N"):
        suites.parse_shard(text)
