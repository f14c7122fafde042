"""The suites (which cases run, and for how long), and the checking of a selection.

``smoke`` checks that the harness works (seconds); ``quick`` is the default, a few minutes
on a two-core laptop; ``full`` covers every shape, batch size, grid size and dtype, and on
CUDA and MPS a ladder of growing workloads (:mod:`benchmarks.suite.ladder`) that the runner
climbs until the device is busy.
A :class:`Selection` narrows a suite to some models, devices and dtypes; :func:`select`
builds one from user input and raises ``ValueError`` with one line naming a bad value and
the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.core.case import DTYPES, Case, device_unavailable, has_grid, zoo
from benchmarks.core.cli import choices
from benchmarks.core.measure import Group
from benchmarks.core.phases import SUITE_PHASES
from benchmarks.core.timer import DEVICE_TYPES, device_type
from benchmarks.suite.ladder import Ladder, Rung


@dataclass(frozen=True)
class Shape:
    name: str
    widths: tuple[int, ...]
    batches: tuple[int, ...]


TINY = (2, 5, 1)  # the KAN paper's toy net
MNIST = (784, 64, 10)
DEEP = (256, 256, 256, 256)
BUSY = (1024, 1024, 1024)  # wide enough that a GPU's kernels, not its launches, take the time

# The full suite's ladder on a GPU (docs/gpu.md has the reasons at length). Two square layers, as
# BUSY, so that every model's work grows as batch x width^2. Batch grows first, at width 256: it
# adds work without adding parameters; then width, at batch 8192. Each rung has 4 times the work
# of the one below (the first step 8), so the climb passes the first busy size by one step at
# most and the rungs below the stop cost about a third of it. The top is where the reference KAN
# at grid 50 needs tens of GB to train (its parameters with Adam's moments, its B-spline bases of
# (batch, in, grid + order) saved per layer): a smaller device stops there by running out of memory.
FULL_LADDER = Ladder((
    Rung((256, 256, 256), 1024),
    Rung((256, 256, 256), 8192),
    Rung((512, 512, 512), 8192),
    Rung(BUSY, 8192),
    Rung((2048, 2048, 2048), 8192),
    Rung((4096, 4096, 4096), 8192),
))


@dataclass(frozen=True)
class Suite:
    """Which shapes, grid sizes and dtypes run, and how long each workload is timed.

    The models of a workload take turns (:func:`benchmarks.core.protocol.turns_until_clear`):
    ``warmup_rounds`` untimed rounds, then at least ``min_rounds`` timed rounds, and more,
    up to ``max_rounds``, while a ratio to the MLPs is not yet clear and the workload has
    had under ``max_time`` seconds per model.
    """

    name: str
    description: str
    shapes: tuple[Shape, ...]
    grid_sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    max_time: float
    min_rounds: int
    max_rounds: int
    warmup_rounds: int
    phases: tuple[str, ...] = SUITE_PHASES
    # Shapes added on an accelerator (CUDA, MPS): the small shapes measure a GPU's launches, so
    # these keep it busy. The CPU runs ``shapes`` only.
    accelerator_shapes: tuple[Shape, ...] = ()
    # Rungs added last on an accelerator, climbed until the device is busy (benchmarks.suite.ladder):
    # each is a shape of one batch size; the runner leaves out the rungs above the one that stopped.
    ladder: Ladder | None = None

    def __post_init__(self):
        fixed = {(s.widths, b) for s in self.shapes + self.accelerator_shapes for b in s.batches}
        if self.ladder and fixed & {(r.widths, r.batch) for r in self.ladder.rungs}:
            raise ValueError(f"suite {self.name}: a ladder rung repeats one of the suite's shapes")

    def shapes_for(self, device: str) -> tuple[Shape, ...]:
        if device_type(device) == "cpu":
            return self.shapes
        rungs = tuple(Shape(f"rung {i}", r.widths, (r.batch,))
                      for i, r in enumerate(self.ladder.rungs if self.ladder else (), 1))
        return self.shapes + self.accelerator_shapes + rungs

    def groups(self, models, devices, dtypes=None, graphs: bool = False) -> list[Group]:
        """Every group of this suite for ``models`` on ``devices`` in ``dtypes`` (the suite's by default).

        Within a group the models keep the order given; a model without a grid is reported in
        the first grid size's group and joins the others as a companion. ``graphs``: on CUDA,
        each group again with its steps captured in CUDA graphs (``Case.graph``), timed apart.
        """
        gridded = [m for m in models if has_grid(m)]
        plain = [m for m in models if m not in gridded]
        out = []
        for device in devices:
            modes = (False, True) if graphs and device_type(device) == "cuda" else (False,)
            for dtype in dtypes or self.dtypes:
                for shape in self.shapes_for(device):
                    for batch in shape.batches:
                        for phase, graph in ((p, g) for p in self.phases for g in modes):
                            def case(model, grid):
                                return Case(model, phase, device, dtype, shape.widths, batch, grid, graph=graph)

                            grids = self.grid_sizes if gridded else (None,)
                            for i, grid in enumerate(grids):
                                own = [case(m, grid) for m in gridded] if grid is not None else []
                                loose = [case(m, None) for m in plain]
                                if i == 0:
                                    out.append(Group(tuple([*own, *loose])))
                                else:
                                    out.append(Group(tuple(own), tuple(loose)))
        return out

    def cases(self, models, devices, dtypes=None, graphs: bool = False) -> list[Case]:
        """Every reported case, group by group."""
        return [c for g in self.groups(models, devices, dtypes, graphs) for c in g.cases]


def shard(groups: list[Group], index: int, count: int) -> list[Group]:
    """The ``index``-th (1-based) of ``count`` parts of ``groups``: whole units (a shape, batch and
    phase on a device, every grid size and model of it), dealt out in turn, so that the parts
    are deterministic, of similar size, and together hold every group exactly once."""
    units = list(dict.fromkeys(g.unit for g in groups))
    mine = set(units[index - 1::count])
    return [g for g in groups if g.unit in mine]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` as (2, 4); ``ValueError`` naming the form otherwise."""
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise ValueError(f"--shard takes I/N with 1 <= I <= N (for example 2/4), got {text!r}")
    return index, count


SUITES = {
    "smoke": Suite(
        "smoke", "checks the harness works: [2, 5, 1], batch 64, grid 5, float32, 2 rounds (seconds)",
        shapes=(Shape("tiny", TINY, (64,)),), grid_sizes=(5,), dtypes=("float32",),
        max_time=0.0, min_rounds=2, max_rounds=2, warmup_rounds=1,
    ),
    "quick": Suite(
        "quick", "the default: [2, 5, 1] batch 1024 and [784, 64, 10] batch 256, grid 5, float32 (minutes); "
        "on a GPU also [1024, 1024, 1024] batch 8192",
        shapes=(Shape("tiny", TINY, (1024,)), Shape("mnist", MNIST, (256,))), grid_sizes=(5,),
        dtypes=("float32",), max_time=3.0, min_rounds=10, max_rounds=600, warmup_rounds=2,
        accelerator_shapes=(Shape("busy", BUSY, (8192,)),),
    ),
    "full": Suite(
        "full", "every shape ([2, 5, 1], [784, 64, 10], [256, 256, 256, 256]) at several batch sizes, "
        "grids 5, 20 and 50, float32 and bfloat16 (an hour or more on a laptop CPU); on a GPU also a ladder "
        "from [256, 256, 256] batch 1024 to [4096, 4096, 4096] batch 8192, climbed until the device is busy",
        shapes=(Shape("tiny", TINY, (1, 64, 1024)), Shape("mnist", MNIST, (64, 256, 1024)),
                Shape("deep", DEEP, (64, 1024))),
        grid_sizes=(5, 20, 50), dtypes=("float32", "bfloat16"),
        max_time=1.0, min_rounds=10, max_rounds=1000, warmup_rounds=3,
        ladder=FULL_LADDER,
    ),
}


@dataclass(frozen=True)
class Selection:
    """A suite narrowed to models, devices and dtypes (None: the suite's dtypes), and to a shard."""

    suite: Suite
    models: tuple[str, ...]
    devices: tuple[str, ...]
    dtypes: tuple[str, ...] | None = None
    explicit_devices: bool = False  # asked for by name: absent ones are an error, not a skip
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N parts
    graphs: bool = False  # on CUDA, every step also captured in CUDA graphs

    def groups(self) -> list[Group]:
        groups = self.suite.groups(self.models, self.devices, self.dtypes, self.graphs)
        return shard(groups, *self.shard) if self.shard else groups

    def cases(self) -> list[Case]:
        return [c for g in self.groups() for c in g.cases]

    def group_of(self, case: Case) -> Group:
        for g in self.groups():
            if case in g.cases:
                return g
        raise KeyError(f"{case.id} is not in this selection")

    def present_devices(self) -> list[str]:
        return [d for d in self.devices if device_unavailable(d) is None]


def select(suite: str = "quick", models=None, devices=None, dtypes=None, shard: str | None = None,
           graphs: bool = False) -> Selection:
    """Check user input and build a :class:`Selection`; ``ValueError`` (one line) on a bad value.

    ``models``, ``devices`` and ``dtypes`` are lists of names (comma-separated lists
    allowed); empty means every model, every device present here, the suite's dtypes.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    all_models = list(zoo().available())
    model_list = choices(models, all_models, "model")
    for d in (n.strip() for g in devices or () for n in str(g).split(",")):
        kind, _, index = d.partition(":")
        if index and kind in DEVICE_TYPES:  # the bench runs on the current device of each type
            pick = f"; CUDA_VISIBLE_DEVICES={index} makes that GPU the current one" if kind == "cuda" else ""
            raise ValueError(f"the bench takes a device type, not an index: {d!r}; valid devices: "
                             f"{', '.join(DEVICE_TYPES)} (it times the current device of each type{pick})")
    device_list = choices(devices, DEVICE_TYPES, "device")
    dtype_list = choices(dtypes, DTYPES, "dtype")
    for d in device_list:
        reason = device_unavailable(d)
        if reason:
            present = [x for x in DEVICE_TYPES if device_unavailable(x) is None]
            raise ValueError(f"device {d!r} was asked for but {reason}; devices here: {', '.join(present)}")
    return Selection(
        SUITES[suite],
        tuple(model_list or all_models),
        tuple(device_list or DEVICE_TYPES),
        tuple(dtype_list) or None,
        explicit_devices=bool(device_list),
        shard=parse_shard(shard),
        graphs=graphs,
    )
