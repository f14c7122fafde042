"""``python -m profiles``: profile models x devices x phases with cProfile, py-spy and torch.profiler.

    python -m profiles [--model kan ...] [--device cpu ...] [--phase forward backward train loop]
                       [--profiler cprofile py-spy torch] [--widths 784,64,10] [--batch 1024]
                       [--steps 5] [--warmup 1] [--threads N] [--rate 100] [--no-native]
                       [--no-repeat] [--top 30] [--run RUN] [--compile]

Where every device profiled is a GPU, the default shape is [1024, 1024, 1024] batch 8192, which
keeps the device busy (at the CPU's default a GPU step is Python and launches), and kan-fast's
torch.compile'd kernels are off unless ``--compile`` (each process would compile them again);
profile.json's notes say both.

Writes into a new run folder (or ``--run``, an existing one, whose rows for the same
scenarios are replaced):

    attribution.csv                        share of wall time per part (schema.ATTRIBUTION_COLUMNS)
    profile.json                           settings, each profiler's outcome, the files per scenario,
                                           what each profiler can split of the backward ("backward"),
                                           the loop's noise between two profiled runs ("loop_noise"),
                                           py-spy's sampled against measured time ("py_spy_coverage")
    profiles/<stem>.pstats, .cprofile.txt  cProfile: the profile and its top-N table
    profiles/<stem>.speedscope.json, .flamegraph.svg   py-spy's samples of the scenario
    profiles/<stem>.trace.json, .torch.txt torch.profiler: chrome trace and key_averages table

where ``<stem>`` is ``<model>-<device>-<phase>`` (``...-loop-synchronized`` for the loop
run with a device synchronisation after each phase, ``...-loop-repeat`` for the loop as
it is profiled a second time, whose shares go to profile.json only).

Exit status: 0 every requested profile ran; 1 a scenario failed (an error in the model,
or NaN/inf in its output); 2 bad arguments; 3 a requested profiler could not run here
(py-spy missing or not permitted), the others ran. 1 wins over 3.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from profiles import attribution
from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError, one_line
from benchmarks.core.command import Command, run_command
from profiles.scenario import PHASES, Scenario, expand

@dataclass(frozen=True)
class Profiler:
    """One profiler: how it runs, and (through the record's PROFILE_FILES) the files it writes."""

    name: str
    how: str  # what the help and README say about how it runs
    profile: str | None  # "module:function" run in-process per scenario; None: py-spy's child (below)

    @property
    def files(self) -> list[str]:
        from benchmarks.core.schema import profile_files

        return profile_files(self.name)

    def function(self):
        module, function = self.profile.split(":")
        return getattr(importlib.import_module(module), function)


# The profilers, in the order they run. Adding one is a row here, its files in
# benchmarks.core.schema.PROFILE_FILES, and a module whose profile(scenario, *paths, top)
# returns seconds per part.
PROFILER_TABLE = [
    Profiler("cprofile", "in-process, switched on around the measured steps only", "profiles.cprof:profile"),
    Profiler("torch", "in-process, the models' record_function regions on", "profiles.torch_trace:profile"),
    Profiler("py-spy", "py-spy record --idle [--native] -- python -m profiles.scenario ..., one child per "
             "model and device", None),
]
PROFILERS = [p.name for p in PROFILER_TABLE]
OK, SCENARIO_FAILED, USAGE, PROFILER_UNAVAILABLE = 0, 1, 2, 3
EXIT_STATUS = ("exit status: 0 every requested profile ran; 1 a scenario failed; 2 bad arguments; "
               "3 a requested profiler could not run here (py-spy missing or not permitted), the others ran")


def parser() -> argparse.ArgumentParser:
    table = "\n".join(f"  {p.name:9} {', '.join(p.files)}: {p.how}" for p in PROFILER_TABLE)
    p = Parser(prog="python -m profiles", epilog=f"profilers (files per scenario under profiles/):\n{table}\n\n"
               + EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
               error_prefix="python -m profiles: error: ",
               description="Profile models x devices x phases with cProfile, py-spy and torch.profiler, "
                           "and attribute their time to the parts of a step (" + ", ".join(attribution.PARTS)
                           + "; the backward by the forward part whose gradient it computes).")
    cli.add_models(p, default=["kan"], nargs="+", help="registered model names (kan.zoo); default: kan")
    cli.add_devices(p, default=["cpu"], nargs="+", help="cpu, cuda, cuda:1, mps; default: cpu")
    cli.add_phases(p, PHASES, default=list(PHASES), nargs="+",
                   help=f"one or more of {', '.join(PHASES)} (default: all)")
    p.add_argument("--profiler", nargs="+", choices=PROFILERS, default=PROFILERS, help="default: all")
    p.add_argument("--widths", type=cli.widths, default=None,
                   help="layer widths, input first (default 784,64,10; 1024,1024,1024 where every device is a GPU)")
    p.add_argument("--batch", type=cli.count(1), default=None,
                   help="default 1024; 8192 where every device is a GPU")
    p.add_argument("--steps", type=cli.count(1), default=5,
                   help="measured steps per scenario (default 5); py-spy's child runs more where they are "
                        f"short, until they have taken {PYSPY_HEADROOM * MIN_PYSPY_SAMPLES:.0f} sample periods (about "
                        f"{MIN_PYSPY_SAMPLES} samples behind each share)")
    p.add_argument("--warmup", type=cli.count(0), default=1, help="unmeasured steps before them (default 1)")
    cli.add_threads(p, help="torch's intra-op threads (default: torch's own choice); on a machine shared "
                    "with other work, 1 keeps the shares from moving with the load")
    p.add_argument("--rate", type=cli.count(1), default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--no-native", action="store_true",
                   help="py-spy without --native: starts much faster, but sees no C++ frames, so "
                        "matmul and the like are not told apart from the Python line calling them")
    p.add_argument("--no-repeat", action="store_true",
                   help="profile the loop as it is once only; by default it runs a second time so that "
                        "profile.json can say how far two profiled runs of one computation differ (the "
                        "noise the two loops' difference is judged against)")
    p.add_argument("--no-overhead", action="store_true",
                   help="do not time each scenario's steps without a profiler; by default they are, so that "
                        "profile.json can say how much each profiler slowed the same steps ('overhead')")
    p.add_argument("--top", type=cli.count(1), default=30, help="rows of the top-N tables (default 30)")
    p.add_argument("--pyspy-timeout", type=cli.count(1), default=None, metavar="SECONDS",
                   help="stop a py-spy child (one per model and device) that runs longer, and say so; "
                        "default: no limit")
    p.add_argument("--compile", action="store_true",
                   help="on CUDA, keep kan-fast's torch.compile kernels on (by default a profile that includes "
                        "CUDA runs them eagerly: each process compiles them again, seconds to minutes of "
                        "warm-up for a few measured steps)")
    p.add_argument("--run", help="an existing run folder (path or run id) to add to; default: a new run")
    return p


def check_models(names: Sequence[str]) -> str | None:
    """None if every model can be built here, else one line saying what is wrong."""
    from kan import zoo

    for name in names:
        try:
            zoo.entry(name).model_class()
        except ValueError as e:
            return str(e)
        except ImportError as e:
            return f"model {name!r} is registered but cannot be imported here ({e})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("profile", parser(), argv, _profile)


def _profile(args, cmd: Command) -> int:
    from benchmarks.core import machine

    problem = check_models(args.model)
    if problem:
        raise UsageError(problem)
    notes: list[str] = adjust_for_devices(args)
    settings = dict(widths=tuple(args.widths), batch=args.batch, steps=args.steps, warmup=args.warmup,
                    threads=args.threads, eager=eager_on_cuda(args.device, args.compile) is not None)
    everything = {**settings, "models": args.model, "devices": args.device, "phases": args.phase,
                  "profilers": args.profiler, "py_spy_rate": args.rate, "threads_used": args.threads or _torch_threads(),
                  "py_spy_native": "py-spy" in args.profiler and not args.no_native and pyspy_native()}
    run = cmd.open(label="profile", existing=args.run, settings=everything)
    out = run.profiles_dir
    todo = expand(args.model, args.device, args.phase, repeat="loop" in args.phase and not args.no_repeat,
                  **settings)
    print(f"profiling {len(todo)} scenario(s) with {', '.join(args.profiler)} into {run.path}")
    for line in notes:
        print(f"note: {line}")
    load_before = machine.load_average()
    found, under, bare = Found(), defaultdict(dict), {}
    with cmd.interruptible():  # Ctrl-C: the tables and profile.json hold the scenarios that finished
        under.update(profile_in_process(todo, args, out, found.note_for(run), found.failures))
        if "py-spy" in args.profiler:
            profile_with_pyspy(todo, args, out, found.note_for(run), found.failures, found.unavailable, notes,
                               found.coverage, found.samples)
        for stem, said in found.coverage.items():  # py-spy's child ran more steps where they were short
            under[stem]["py-spy"] = said["measured_s"] * args.steps / said["steps"]
        bare = {} if args.no_overhead else time_bare([s for s in todo if not s.repeat], found.failures)
    _write_table(run, found.table)
    noise = loop_noise(found.table, found.repeats, found.samples)
    run.write_json("profile.json", {
        "settings": everything, "load_average": {"before": load_before, "after": machine.load_average()},
        "profilers": {name: found.unavailable.get(name, "ok") for name in args.profiler},
        "failures": found.failures, "notes": notes, "backward": backward_notes(args.profiler, args.phase),
        "loop_noise": noise, "overhead": overhead(bare, under, args.steps),
        "py_spy_coverage": found.coverage, "files": found.files,
    })
    print_summary(found.table)
    print_noise(noise)
    for line in found.failures:
        print(f"failed: {line}", file=sys.stderr)
    for line in found.unavailable.values():
        print(line, file=sys.stderr)
    return SCENARIO_FAILED if found.failures else PROFILER_UNAVAILABLE if found.unavailable else OK


@dataclass
class Found:
    """What the profilers found, gathered as each scenario ends."""

    table: list[dict] = field(default_factory=list)  # the attribution rows
    repeats: dict[tuple, dict] = field(default_factory=dict)  # (profiler, model, device) -> the repeated loop
    coverage: dict[str, dict] = field(default_factory=dict)  # py-spy's sampled time against the measured time
    samples: dict[tuple, int] = field(default_factory=dict)  # (model, device, synchronized, repeat) -> py-spy's
    files: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    failures: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # profiler -> why it could not run

    def note_for(self, run):
        """The callback each profiler calls with a scenario's seconds per part and its files."""
        def note(s: Scenario, profiler: str, seconds: dict[str, float], made: list[Path], took: float) -> None:
            self.files[s.stem][profiler] = [str(f.relative_to(run.path)) for f in made]
            try:
                if s.repeat:  # a measure of noise, not a row of the table (its key is the first loop's)
                    self.repeats[(profiler, s.model, s.device)] = {"shares": attribution.shares(seconds),
                                                                   "seconds": sum(seconds.values())}
                else:
                    self.table.extend(attribution.rows(profiler, s.key, seconds))
            except ValueError as e:
                self.failures.append(f"{s.stem} ({profiler}): {e}")
                return
            largest = max(seconds, key=seconds.get)
            # the whole scenario (model, warm-up, profiler, files), not its measured steps: profile.json has those
            print(f"  {profiler:8} {s.stem:40} {took:6.1f} s in all   largest part {largest} "
                  f"{seconds[largest] / sum(seconds.values()):.1%}")

        return note


def adjust_for_devices(args) -> list[str]:
    """Fit the settings to the devices asked for (the shape, py-spy's native unwinding, torch.compile
    on CUDA); one note per change made, for the terminal and profile.json."""
    sized = size_for_devices(args)
    if "py-spy" in args.profiler and not args.no_native and all(not str(d).startswith("cpu") for d in args.device):
        # unwinding native stacks pauses the child for each sample, and the CUDA libraries make that
        # slow enough to take the profile past minutes; the device's work is not on the host's stacks
        args.no_native = True
        sized = (sized + "; " if sized else "") + "py-spy ran without --native (on a GPU its native unwinding is slow)"
    eager = eager_on_cuda(args.device, args.compile)
    return [line for line in (sized, eager) if line]


def profile_in_process(todo: Sequence[Scenario], args, out: Path, note, failures: list[str]) -> dict:
    """Each scenario under each profiler that runs in this process (cProfile, torch.profiler);
    returns each scenario's measured seconds under each (stem -> profiler -> seconds)."""
    in_process = [p for p in PROFILER_TABLE if p.name in args.profiler and p.profile is not None]
    under: dict[str, dict[str, float]] = defaultdict(dict)
    for s in todo:
        for profiler in in_process:
            started = time.perf_counter()
            made = [out / f"{s.stem}{suffix}" for suffix in profiler.files]
            took: list[float] = []
            try:
                seconds = profiler.function()(s, *made, top=args.top, measured=took)
                under[s.stem][profiler.name] = took[0] if took else None
            except Exception as e:  # one line per failed scenario; the others still run
                failures.append(f"{s.stem} ({profiler.name}): {one_line(e)}")
                print(f"  {profiler.name:8} {s.stem:40} failed: {one_line(e)}")
                continue
            note(s, profiler.name, seconds, made, time.perf_counter() - started)
    return under


CPU_SHAPE = ((784, 64, 10), 1024)
# On a GPU the CPU's shape is launch-bound: the queue of kernels is short, so no call has much
# queued work to absorb and the synchronisation lesson does not show. This one keeps it busy.
GPU_SHAPE = ((1024, 1024, 1024), 8192)


def size_for_devices(args) -> str | None:
    """Fill ``--widths`` and ``--batch`` where not given: the GPU shape where every device
    profiled is an accelerator, else the CPU's; the note saying which, where the GPU's."""
    accelerators = all(not str(d).startswith("cpu") for d in args.device)
    widths, batch = GPU_SHAPE if accelerators else CPU_SHAPE
    chose = accelerators and (args.widths is None or args.batch is None)
    args.widths = tuple(args.widths) if args.widths is not None else widths
    args.batch = args.batch if args.batch is not None else batch
    if not chose:
        return None
    return (f"profiled at widths {list(args.widths)}, batch {args.batch}: on a GPU a smaller step is Python and "
            f"kernel launches, and little device work is queued for a synchronising call to absorb")


# Samples a py-spy scenario is sized for: its child runs measured steps until they have taken
# MIN_PYSPY_SAMPLES sample periods and a fifth more (py-spy takes a little under its rate even
# when it keeps up). A part's share then has a standard error of at most 5 points (a share of
# one half, from 100 independent samples); a scenario left with fewer (py-spy fell behind) has
# a note saying so.
MIN_PYSPY_SAMPLES = 100
PYSPY_HEADROOM = 1.2
EAGER_NOTE = ("kan-fast ran its eager kernels in this profile (torch.compile off, --compile keeps it on): on "
              "CUDA each process would compile them again, a warm-up far longer than the few steps profiled. "
              "The bench times the compiled kernels.")


def eager_on_cuda(devices: Sequence[str], keep_compile: bool) -> str | None:
    """The note saying that kan-fast's compiled kernels are off for this profile (its scenarios
    are ``eager``, in this process and the py-spy children) where a CUDA device is profiled and
    ``--compile`` was not given; None where they stay on."""
    if keep_compile or not any(str(d).startswith("cuda") for d in devices):
        return None
    return EAGER_NOTE


def _pyspy_child_args(args, model: str, device: str, group: Sequence[Scenario]) -> list[str]:
    """The scenario command line of one py-spy child: every phase of ``model`` on ``device``."""
    phases = list(dict.fromkeys(s.phase for s in group))
    return ["--model", model, "--device", device, "--phase", *phases,
            "--widths", ",".join(map(str, args.widths)), "--batch", str(args.batch),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--min-seconds", str(PYSPY_HEADROOM * MIN_PYSPY_SAMPLES / args.rate),
            *(["--threads", str(args.threads)] if args.threads else []),
            *(["--repeat"] if any(s.repeat for s in group) else []),
            *(["--eager"] if any(s.eager for s in group) else [])]


def _read_pyspy_output(done, where: str, failures: list[str], notes: list[str]) -> None:
    """The failures and notes a py-spy child's output tells: scenarios that failed in the child,
    sampling that fell behind, samples py-spy could not read."""
    for line in (done.stderr or "").splitlines():
        if line.startswith("profiles.scenario:"):  # a scenario that failed in the child
            failures.append(line.split(":", 1)[1].strip() + " (py-spy)")
    if "behind in sampling" in (done.stderr or ""):
        notes.append(f"py-spy fell behind its sampling rate for {where} (the process "
                     f"was paused while it unwound stacks); a lower --rate is steadier")
        print(f"  py-spy   note: {notes[-1]}")
    said = re.search(r"Samples: (\d+) Errors: (\d+)", (done.stdout or "") + (done.stderr or ""))
    # samples py-spy could not read (a stack it failed to unwind); a stray one is no news
    if said and int(said.group(2)) > 0.01 * int(said.group(1)):
        notes.append(f"py-spy reported {said.group(2)} errors reading samples for {where} "
                     f"({said.group(1)} samples taken): a sample it could not read is in no scenario's time")
        print(f"  py-spy   note: {notes[-1]}")


def _measured(stdout: str) -> dict[str, tuple[float, int]]:
    """Each scenario's measured wall time and steps, as the child reports them (stem -> (seconds, steps))."""
    from profiles.scenario import MEASURED_LINE

    measured = {}
    for line in stdout.splitlines():
        if line.startswith(MEASURED_LINE):
            try:
                said = json.loads(line[len(MEASURED_LINE):])
                measured[said["stem"]] = (float(said["seconds"]), int(said["steps"]))
            except (ValueError, KeyError, TypeError):
                pass
    return measured


def profile_with_pyspy(todo, args, out: Path, note, failures: list[str], unavailable: dict[str, str],
                       notes: list[str], coverage: dict[str, dict], taken_by: dict[tuple, int]) -> None:
    """One py-spy child per model and device, running all its phases; split per scenario.

    py-spy weighs every sample 1/rate seconds, but it takes fewer than ``rate`` a second
    when it falls behind (unwinding native stacks pauses the child, and on a busy
    machine py-spy waits for a core too). The child reports each scenario's measured
    wall time, so ``coverage`` records the sampled seconds against it: a scenario whose
    coverage is low has fewer samples behind its shares, not less time.
    """
    import tempfile

    from benchmarks.core.schema import profile_files
    from profiles import flamegraph, pyspy

    groups: dict[tuple[str, str], list[Scenario]] = defaultdict(list)
    for s in todo:
        groups[(s.model, s.device)].append(s)
    for (model, device), group in groups.items():
        child = _pyspy_child_args(args, model, device, group)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "py-spy.speedscope.json"
            try:
                done = pyspy.record(child, raw, rate=args.rate, native=False if args.no_native else None,
                                    timeout=args.pyspy_timeout)
                samples = pyspy.read(raw)
            except pyspy.Unavailable as e:
                unavailable["py-spy"] = f"py-spy did not run: {e}; the other profilers ran"
                print(f"  py-spy   {unavailable['py-spy']}")
                return
            except (RuntimeError, ValueError) as e:
                failures.append(f"{model}-{device} (py-spy): {e}")
                print(f"  py-spy   {model}-{device} failed: {e}")
                continue
        _read_pyspy_output(done, f"{model} on {device}", failures, notes)
        took = time.perf_counter() - started
        reported = _measured(done.stdout or "")
        measured = {stem: seconds for stem, (seconds, _) in reported.items()}
        for s in group:
            mine = pyspy.select(samples, s.step_function.__name__)
            taken = round(mine.seconds * args.rate)  # each sample weighs one period
            taken_by[(s.model, s.device, s.synchronized, s.repeat)] = taken
            if s.stem in measured:
                coverage[s.stem] = {"sampled_s": round(mine.seconds, 4), "measured_s": round(measured[s.stem], 4),
                                    "coverage": round(mine.seconds / measured[s.stem], 3)
                                    if measured[s.stem] > 0 else None, "samples": taken,
                                    "steps": reported[s.stem][1]}
                if measured[s.stem] > 0 and mine.seconds < 0.8 * measured[s.stem]:
                    notes.append(f"py-spy sampled {mine.seconds:.2f} s of {s.stem}'s {measured[s.stem]:.2f} s "
                                 f"measured ({mine.seconds / measured[s.stem]:.0%}): it fell behind its rate, so "
                                 f"fewer samples stand behind these shares (a lower --rate, or --threads 1, "
                                 f"is steadier)")
                    print(f"  py-spy   note: {notes[-1]}")
            if 0 < taken < MIN_PYSPY_SAMPLES:
                notes.append(f"py-spy took {taken} samples of {s.stem}: a share of one half from that many has "
                             f"a standard error of {100 * math.sqrt(0.25 / taken):.0f} points; a lower --rate, "
                             f"or --threads 1, keeps it from falling behind")
                print(f"  py-spy   note: {notes[-1]}")
            if not mine.stacks:  # the child ran the scenario for many sample periods: something failed
                failures.append(f"{s.stem} (py-spy): no samples in the measured steps")
                continue
            made = [out / f"{s.stem}{suffix}" for suffix in profile_files("py-spy")]  # speedscope, flamegraph
            pyspy.write_speedscope(mine, made[0], f"{s.stem} (py-spy)")
            flamegraph.write(mine, made[1], f"{s.stem} (py-spy)")
            note(s, "py-spy", pyspy.attribute(mine), made, took / len(group))


OVERHEAD_NOTE = ("Each scenario's measured steps timed without a profiler ('bare_s') and under each profiler "
                 "('seconds'; 'factor' = seconds / bare_s), one run after another: on a busy machine a factor "
                 "moves with the load between the runs, so read it as a rough size (a factor below 1 is the load's, "
                 "not the profiler's: no profiler speeds the steps up). py-spy with --native pauses "
                 "the process it samples to unwind native stacks, which slows that process most. The profilers' "
                 "shares of one computation compare with each other; their times do not.")


def time_bare(todo: Sequence[Scenario], failures: list[str]) -> dict[str, float]:
    """The wall time of each scenario's measured steps with no profiler attached, by stem."""
    from profiles import scenario as scenarios

    bare = {}
    for s in todo:
        try:
            bare[s.stem] = scenarios.run(s).measured_s
        except Exception as e:  # one line per failed scenario; the others still run
            failures.append(f"{s.stem} (no profiler): {one_line(e)}")
    return bare


def overhead(bare: dict[str, float], under: dict[str, dict[str, float]], steps: int) -> dict:
    """Per scenario: its steps' time bare and under each profiler, and the factor between them."""
    def kept(t: float) -> float:  # four significant digits: a step of a millisecond keeps its precision
        return float(f"{t:.4g}")

    out = {}
    for stem, seconds in bare.items():
        profilers = {name: {"seconds": kept(t), "factor": round(t / seconds, 2) if seconds > 0 else None}
                     for name, t in under.get(stem, {}).items() if t is not None}
        out[stem] = {"steps": steps, "bare_s": kept(seconds), "profilers": profilers}
    return {"note": OVERHEAD_NOTE, "scenarios": out} if out else {}


def backward_notes(profilers: Sequence[str], phases: Sequence[str]) -> dict[str, str]:
    """What each profiler can split of the backward (attribution.BACKWARD_NOTES), for the page."""
    if not set(phases) & {"backward", "train", "loop"}:
        return {}
    return {p: attribution.BACKWARD_NOTES[p] for p in profilers if p in attribution.BACKWARD_NOTES}


NOISE_NOTE = ("The loop as it is was profiled twice by each profiler. 'noise_points' is how far the two runs' "
              "shares of each part differ (percentage points), 'synchronized_points' how far the synchronized "
              "loop's differ from the first run's. On the CPU the two loops are the same computation, so a "
              "difference no larger than the noise is noise between profiled runs; one repeat is a single "
              "draw of the noise, not a bound. For py-spy, 'sampling_points' is two standard errors of the "
              "difference of two shares of one half from the two loops' sample counts, what sampling alone "
              "moves a share by nineteen times in twenty; a difference within it is noise too. 'seconds' is "
              "the time each run attributed: where it differs much between runs of one computation, the "
              "machine's load moved between them.")


def sampling_points(*samples: int) -> float:
    """Two standard errors, in points, of the difference between two shares of one half sampled
    ``samples`` times each (independently): the most that sampling alone moves a share by,
    nineteen times in twenty."""
    return 200 * math.sqrt(sum(0.25 / n for n in samples))


def loop_noise(table: list[dict], repeats: dict[tuple, dict], samples: dict[tuple, int] | None = None) -> dict:
    """Per profiler, model and device: the repeated loop against the first, and the synchronized
    loop against the first, part by part in percentage points. A sampler's (py-spy's, whose
    sample counts ``samples`` gives by (model, device, synchronized, repeat)) difference is
    within the noise where it is within the repeat's or within its sampling error."""
    shares: dict[tuple, dict[str, float]] = defaultdict(dict)
    seconds: dict[tuple, float] = defaultdict(float)
    for r in table:
        if r["phase"] == "loop":
            key = (r["profiler"], r["model"], r["device"], bool(r["synchronized"]))
            shares[key][r["part"]] = r["share"]
            seconds[key] += r["seconds"]
    out = []
    for (profiler, model, device), repeat in repeats.items():
        again = repeat["shares"]
        first = shares.get((profiler, model, device, False))
        if not first:
            continue
        synced = shares.get((profiler, model, device, True), {})
        noise = {p: round(abs(again.get(p, 0.0) - first.get(p, 0.0)) * 100, 2) for p in attribution.PARTS}
        moved = {p: round(abs(synced.get(p, 0.0) - first.get(p, 0.0)) * 100, 2) for p in attribution.PARTS} \
            if synced else {}
        largest = max(noise.values())
        largest_moved = max(moved.values()) if moved else None
        counts = [(samples or {}).get((model, device, synced_, False)) for synced_ in (False, True)]
        sampling = round(sampling_points(*counts), 2) if profiler == "py-spy" and all(counts) else None
        out.append({
            "profiler": profiler, "model": model, "device": device,
            "noise_points": noise, "largest_noise_points": largest,
            "synchronized_points": moved, "largest_synchronized_points": largest_moved,
            "sampling_points": sampling,
            "within_noise": (largest_moved <= max(largest, sampling or 0)) if moved else None,
            "seconds": {"first": round(seconds[(profiler, model, device, False)], 4),
                        "synchronized": round(seconds[(profiler, model, device, True)], 4) if synced else None,
                        "repeat": round(repeat["seconds"], 4)},
        })
    return {"note": NOISE_NOTE, "profiles": out} if out else {}


def print_noise(noise: dict) -> None:
    if not noise:
        return
    print("\nthe loop profiled twice (noise) and synchronized, largest difference per profile (points):")
    for r in noise["profiles"]:
        moved = r["largest_synchronized_points"]
        verdict = "" if moved is None else ("  within the noise" if r["within_noise"] else "  beyond the noise")
        if moved is not None and not r["within_noise"] and str(r.get("device", "")).startswith("cpu"):
            # one computation twice: what the repeat did not show is more noise, not synchronisation's effect
            verdict = ("  beyond this one repeat's noise: on the CPU the two loops are one computation, so the "
                       "load moved between the runs")
        sampling = "" if r.get("sampling_points") is None else f", sampling {r['sampling_points']:.1f}"
        print(f"  {r['profiler']:8} {r['model']}-{r['device']}: noise {r['largest_noise_points']:.1f}{sampling}, "
              f"synchronized {'-' if moved is None else f'{moved:.1f}'}{verdict}")


def _torch_threads() -> int:
    """torch's own count, where the run was given none."""
    from benchmarks.core.timer import torch_threads

    return torch_threads()


def pyspy_native() -> bool:
    from profiles import pyspy

    return pyspy.native_supported()


def _write_table(run, rows: list[dict]) -> None:
    import pandas as pd

    from benchmarks.core.schema import ATTRIBUTION_COLUMNS

    new = pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS)
    if run.has("attribution.csv"):  # replace this run's earlier rows for the same profiles
        old = run.read_table("attribution")
        key = ["profiler", "scenario", "model", "device", "phase", "synchronized"]
        mine = set(map(tuple, new[key].astype(str).values.tolist()))
        keep = ~old[key].astype(str).apply(tuple, axis=1).isin(mine)
        new = pd.concat([old[keep], new], ignore_index=True)[ATTRIBUTION_COLUMNS]
    run.write_table("attribution", new)


def print_summary(rows: list[dict]) -> None:
    """Shares in percent: one line per profile, one column per part."""
    if not rows:
        return
    import pandas as pd

    frame = pd.DataFrame(rows)
    wide = frame.pivot_table(index=["model", "device", "phase", "synchronized", "profiler"],
                             columns="part", values="share", sort=False)[attribution.PARTS]
    print("\nshare of wall time per part (%):")
    print((wide * 100).round(1).to_string())
