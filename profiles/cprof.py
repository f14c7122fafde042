"""cProfile: a .pstats file, a top-N table, and the time of each part.

cProfile is switched on only around the measured steps. It sees Python functions and
the C functions Python calls by name (``F.linear``, ``Tensor.to``), but not the
operators the interpreter applies itself (``a + b`` on tensors): their time is the
calling function's own time.

Attribution. cProfile keeps each function's own time (tottime) split by caller, not
whole stacks. A function's own time goes to the part of the outermost matching frame
above it, found by walking up the callers; where a function has several callers its
time is split between them in proportion to the time each caller spent in it (the
assumption gprof makes). Inside the backward, time goes to the gradient that the
innermost Python frame names (a custom autograd Function's ``backward`` in kan.fast,
a basis function it calls); cProfile sees no autograd node of plain PyTorch
operators, so the reference KAN's whole backward (one C call, ``run_backward``)
stays ``autograd``. Time no part claims is "python" when it is a Python
function's own time and "other" when it is a C function's (a built-in or method).
"""

from __future__ import annotations

import cProfile
import contextlib
import io
import pstats
from collections import defaultdict
from pathlib import Path

from profiles import scenario as scenarios
from profiles.attribution import classify, classify_gradient, resolve

Func = tuple  # pstats' key: (file, line, name); file "~" for C functions


def profile(s: scenarios.Scenario, pstats_path: Path, table_path: Path, top: int = 30,
            measured: list | None = None) -> dict[str, float]:
    """Run ``s`` under cProfile; write the .pstats and the top-``top`` table; seconds per part.
    ``measured``: the wall time of the measured steps, profiler included, is appended to it."""
    profiler = cProfile.Profile()

    @contextlib.contextmanager
    def section():
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()

    w = scenarios.run(s, section)
    if measured is not None:
        measured.append(w.measured_s)
    stats = pstats.Stats(profiler)
    stats.dump_stats(str(pstats_path))
    table_path.write_text(top_table(stats, top))
    return attribute(stats)


def top_table(stats: pstats.Stats, top: int = 30) -> str:
    """pstats' own table of the ``top`` functions by own time, then by cumulative time."""
    out = io.StringIO()
    stats.stream = out
    for order in ("tottime", "cumulative"):
        out.write(f"# top {top} by {order}\n")
        stats.sort_stats(order).print_stats(top)
    return out.getvalue()


def _is_profiler(func: Func) -> bool:
    return "_lsprof" in func[2]


def attribute(stats: pstats.Stats | str | Path) -> dict[str, float]:
    """Seconds per part in a cProfile profile (a Stats object or a .pstats file)."""
    if not isinstance(stats, pstats.Stats):
        stats = pstats.Stats(str(stats))
    table = {f: v for f, v in stats.stats.items() if not _is_profiler(f)}
    own = {f: classify(f[2], "" if f[0] == "~" else f[0]) for f in table}
    gradient = {f: classify_gradient(f[2], "" if f[0] == "~" else f[0]) for f in table}
    context: dict[Func, dict] = {}

    def chain(f: Func, visiting: frozenset) -> dict:
        """How the time inside ``f`` splits over (the outermost part at or above f, the
        innermost gradient at or above f), by the callers' shares of f's time."""
        if f in context:
            return context[f]
        callers = {c: v for c, v in table[f][4].items() if c in table}
        if not callers or f in visiting:  # a root, or a cycle (recursion) cut here
            return {(own[f], gradient[f]): 1.0}
        total = sum(v[3] for v in callers.values())
        split: dict = defaultdict(float)
        for c, v in callers.items():
            weight = v[3] / total if total > 0 else 1 / len(callers)
            for (part, grad), w in chain(c, visiting | {f}).items():
                split[(part if part is not None else own[f],
                       gradient[f] if gradient[f] is not None else grad)] += weight * w
        context[f] = dict(split)
        return context[f]

    seconds: dict[str, float] = defaultdict(float)
    for f, (_, _, tottime, _, callers) in table.items():
        if tottime <= 0:
            continue
        leftover = "other" if f[0] == "~" else "python"
        callers = {c: v for c, v in callers.items() if c in table}
        by_caller_total = sum(v[2] for v in callers.values())
        if not callers or by_caller_total <= 0:
            seconds[resolve(own[f], gradient[f]) or leftover] += tottime
            continue
        for c, v in callers.items():
            for (part, grad), w in chain(c, frozenset({f})).items():
                part = resolve(part if part is not None else own[f], gradient[f] if gradient[f] is not None else grad)
                seconds[part or leftover] += tottime * w * v[2] / by_caller_total
    return dict(seconds)
