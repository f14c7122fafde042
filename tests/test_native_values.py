"""kan.native's entry points refuse what their C++ would index with out of range, before any pointer reaches it.

Shapes, dtypes and contiguity are checked elsewhere (tests/test_native.py); here, the
values: knot spans handed back to the table gradient (``SavedSpans``) outside the grid's
spans, and tensors that pass every shape check but own no memory here (meta tensors,
whose data pointer is null). Each wrong call must be a one-line ValueError. The calls run
in a child process, so that one that would corrupt memory fails its test instead of
killing pytest; the child reports each call's outcome as it goes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from kan import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"C++ kernels unavailable: {native.error()}")

# The child: a layer's geometry (grid 4, order 3: 11 knots, spans -1 .. 10, a cardinal grid whose
# spans gather_forward saves), then every case in turn, one JSON line each.
CHILD = textwrap.dedent('''
    import json, sys
    import torch
    from kan import native
    from kan.fast import knot_geometry
    from kan.reference import KANLinear

    torch.manual_seed(0)
    g = knot_geometry(KANLinear(5, 6, grid_size=4).grid, 3)
    batch, in_features, out = 9, 5, 6
    x = torch.rand(batch, in_features) * 2.4 - 1.2
    table = torch.randn(in_features, g.coeff, out)
    grad_out = torch.randn(batch, out)
    w, scaler = torch.randn(out, in_features, g.coeff), torch.randn(out, in_features)
    _, spans = native.gather_forward(x, table, g, save=True)
    meta = lambda t: torch.empty_like(t, device="meta")

    def with_span(value):
        span = spans.span.clone()
        span[2, 3] = value
        return native.SavedSpans(spans.u, span)

    geometry = native.operators._geometry(g)
    cases = {
        **{f"saved span {v}": (lambda v=v: native.gather_weight_grads(None, grad_out, g, w, scaler, saved=with_span(v)))
           for v in (100, 30000, -5, -2, g.knots)},
        "saved span 30000, table gradient": lambda: native.gather_table_grad(None, grad_out, g, saved=with_span(30000)),
        "saved span as int32": lambda: native.gather_weight_grads(
            None, grad_out, g, w, scaler, saved=native.SavedSpans(spans.u, spans.span.int())),
        "saved span of another batch": lambda: native.gather_weight_grads(
            None, grad_out[:4], g, w, scaler, saved=spans),
        "silu_grad out=meta": lambda: native.silu_grad(x, x, out=meta(x)),
        "silu on meta": lambda: native.silu(meta(x)),
        "gather_forward x meta": lambda: native.gather_forward(meta(x), table, g),
        "gather_forward table meta": lambda: native.gather_forward(x, meta(table), g),
        "gather_input_grad grad_out meta": lambda: native.gather_input_grad(x, table, meta(grad_out), g),
        "dense_bases out=meta": lambda: native.dense_bases(
            x, x, g, out=torch.empty(batch, (g.coeff + 1) * in_features, device="meta")),
        "local_bases x meta": lambda: native.local_bases(meta(x), g),
        "scale_spline out=meta": lambda: native.scale_spline(w, scaler, meta(w)),
        "spline_grads G meta": lambda: native.spline_grads(meta(w), w, scaler),
        "operator result=meta": lambda: torch.ops.kan_native.gather_forward(
            **geometry, x=x, table=table, result=torch.empty(batch, out, device="meta"), saved_u=None,
            saved_span=None),
        "operator without knots": lambda: native.operators._call(
            "gather_forward", **{**geometry, "knots_ext": None}, x=x, table=table, result=torch.empty(batch, out),
            saved_u=None, saved_span=None),
        "sparse x": lambda: native.silu_grad(x.to_sparse(), x),
    }
    for name, call in cases.items():
        print(json.dumps({"case": name, "started": True}), flush=True)
        try:
            call()
            outcome = {"case": name, "raised": None}
        except Exception as error:
            outcome = {"case": name, "raised": type(error).__name__, "message": str(error)}
        print(json.dumps(outcome), flush=True)
''')


def test_wrong_values_and_devices_are_one_line_value_errors():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    started = [line["case"] for line in lines if line.get("started")]
    assert result.returncode == 0, (f"the child died (exit {result.returncode}) in case {started[-1] if started else None!r}:"
                                    f" {result.stderr[-2000:]}")
    outcomes = [line for line in lines if not line.get("started")]
    assert len(outcomes) == len(started) >= 20
    for outcome in outcomes:
        assert outcome["raised"] == "ValueError", outcome
        assert "\n" not in outcome["message"] and outcome["message"].startswith(("kan_native::", "kan.native:")), outcome


def test_knot_tables_with_finite_ends_keep_the_spans_in_range():
    """A knot table whose outer entries are finite (where -inf and +inf belong) is not what
    kan.fast passes, but a caller may: inputs beyond it get span -1 (no basis), not an index
    below the kernels' buckets. The same results as with the proper table."""
    code = textwrap.dedent('''
        import dataclasses, torch
        from kan import native
        from kan.fast import knot_geometry
        from kan.reference import KANLinear
        g = knot_geometry(KANLinear(5, 6, grid_size=4).grid, 3)
        ext = g.knots_ext.clone()
        ext[:, 0], ext[:, -1] = 5.0, -5.0  # above every input, and below
        bad = dataclasses.replace(g, knots_ext=ext)
        x = torch.cat([torch.full((4, 5), -3.0), torch.full((4, 5), 3.0), torch.rand(8, 5) * 2 - 1])
        table, grad_out = torch.randn(5, g.coeff, 6), torch.randn(16, 6)
        out, spans = native.gather_forward(x, table, bad, save=True)
        assert int(spans.span.min()) >= -1 and int(spans.span.max()) <= g.knots - 1
        native.gather_table_grad(None, grad_out, bad, saved=spans)
        native.gather_table_grad(x, grad_out, bad)
        print("done")
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]
