"""kan.regions: the models' named regions, labelled for torch.profiler only inside ``annotating()``."""

from __future__ import annotations

import pytest
import torch

from kan import regions, zoo


def labels_of_a_forward(model: torch.nn.Module) -> set[str]:
    """The kan.* labels torch.profiler records during one forward of ``model``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
        with torch.no_grad():
            model(torch.rand(8, 3))
    return {event.name for event in trace.events() if event.name.startswith("kan.")}


def test_annotating_restores_the_state_before_it_even_after_an_error():
    assert not regions.annotation_enabled(), "off by default"
    with regions.annotating():
        assert regions.annotation_enabled()
        with regions.annotating(False):
            assert not regions.annotation_enabled()
        assert regions.annotation_enabled(), "the inner block gave back the outer one's state"
        with pytest.raises(RuntimeError), regions.annotating(False):
            raise RuntimeError("a step that fails")
        assert regions.annotation_enabled()
    assert not regions.annotation_enabled()


def test_regions_are_labelled_only_while_annotating():
    torch.manual_seed(0)
    model = zoo.build("kan", [3, 4, 2])
    assert regions.region(regions.BASIS) is regions.region(regions.SPLINE_PRODUCT), "off: one shared no-op"
    assert labels_of_a_forward(model) == set()
    with regions.annotating():
        assert labels_of_a_forward(model) == {regions.BASIS, regions.SPLINE_PRODUCT, regions.BASE_BRANCH}
    assert labels_of_a_forward(model) == set()
