"""Does a faster variant compute the same function as its reference? Checked on the bench's own inputs.

For every group that holds both a variant and its reference (``kan-fast`` and ``kan``), timed
in the forward phase, the variant is given the reference's weights (kan-fast loads kan's state
dict as it is) and both run once, untimed, on the inputs the group is timed on. The largest
absolute difference of the outputs, and that over the largest absolute output, go in the
variant's row: ``max_rel_difference`` (the first over the second) and, in words, ``equivalence``. One forward each: cheap
next to the timing, and said per workload (shape, batch, grid size, dtype, device).
"""

from __future__ import annotations

import copy

import torch

from benchmarks.core.cli import one_line

VARIANTS = {"kan-fast": "kan"}  # variant -> the reference whose function it computes


def same_function(group, candidates: dict, rows: dict[str, dict]) -> None:
    """Fill ``max_rel_difference`` and ``equivalence`` of each variant's row in ``group`` (forward phase)."""
    by_model = {c.model: c for c in group.cases if c.id in candidates}
    for variant, reference in VARIANTS.items():
        if variant not in by_model or reference not in by_model or by_model[variant].phase != "forward":
            continue
        ref_step = candidates[by_model[reference].id].step
        var_step = candidates[by_model[variant].id].step
        try:
            difference, largest = compare(ref_step.model, var_step.model, ref_step.inputs)
        except Exception as e:  # a model that cannot take the other's weights: said, never fatal
            rows[by_model[variant].id]["equivalence"] = f"not compared with {reference}: {one_line(e)}"
            continue
        dtype = str(ref_step.inputs.dtype).removeprefix("torch.")
        rows[by_model[variant].id].update(
            max_rel_difference=difference / largest if largest > 0 else (0.0 if difference == 0 else float("inf")),
            equivalence=(f"max |{variant} - {reference}| = {difference:.2g} ({difference / largest:.2g} of max "
                         f"|{reference}|) given {reference}'s weights, on this workload's "
                         f"{ref_step.inputs.shape[0]} inputs, {dtype}") if largest > 0 else
            f"max |{variant} - {reference}| = {difference:.2g} given {reference}'s weights (outputs all 0)")


def compare(reference: torch.nn.Module, variant: torch.nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """(largest |variant(x) - reference(x)|, largest |reference(x)|), the variant given the reference's weights."""
    twin = copy.deepcopy(variant)  # the timed model keeps its own weights
    twin.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        expected = reference(inputs)  # (batch, out)
        got = twin(inputs)  # (batch, out)
    if not (torch.isfinite(expected).all() and torch.isfinite(got).all()):
        raise ValueError("NaN or inf in an output")
    return float((got - expected).abs().max()), float(expected.abs().max())
