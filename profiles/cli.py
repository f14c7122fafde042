"""``python -m profiles``: profile models x devices x phases with cProfile, py-spy and torch.profiler.

    python -m profiles [--model kan ...] [--device cpu ...] [--phase forward backward train loop]
                       [--profiler cprofile py-spy torch] [--widths 784,64,10] [--batch 1024]
                       [--steps 5] [--warmup 1] [--threads N] [--rate 100] [--no-native]
                       [--no-repeat] [--top 30] [--run RUN]

Writes into a new run folder (or ``--run``, an existing one, whose rows for the same
scenarios are replaced):

    attribution.csv                        share of wall time per part (record.ATTRIBUTION_COLUMNS)
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
import re
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from profiles import attribution
from profiles.scenario import PHASES, Scenario, count_arg, expand, positive_int, widths_arg

@dataclass(frozen=True)
class Profiler:
    """One profiler: how it runs, and (through the record's PROFILE_FILES) the files it writes."""

    name: str
    how: str  # what the help and README say about how it runs
    profile: str | None  # "module:function" run in-process per scenario; None: py-spy's child (below)

    @property
    def files(self) -> list[str]:
        from benchmarks.core.record import profile_files

        return profile_files(self.name)

    def function(self):
        module, function = self.profile.split(":")
        return getattr(importlib.import_module(module), function)


# The profilers, in the order they run. Adding one is a row here, its files in
# benchmarks.core.record.PROFILE_FILES, and a module whose profile(scenario, *paths, top)
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
    from benchmarks.core.cli import Parser

    table = "\n".join(f"  {p.name:9} {', '.join(p.files)}: {p.how}" for p in PROFILER_TABLE)
    p = Parser(prog="python -m profiles", epilog=f"profilers (files per scenario under profiles/):\n{table}\n\n"
               + EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
               error_prefix="python -m profiles: error: ",
               description="Profile models x devices x phases with cProfile, py-spy and torch.profiler, "
                           "and attribute their time to the parts of a step (" + ", ".join(attribution.PARTS)
                           + "; the backward by the forward part whose gradient it computes).")
    p.add_argument("--model", nargs="+", default=["kan"], metavar="NAME",
                   help="registered model names (kan.zoo); default: kan")
    p.add_argument("--device", nargs="+", default=["cpu"], help="cpu, cuda, cuda:1, mps; default: cpu")
    p.add_argument("--phase", nargs="+", choices=PHASES, default=PHASES, help="default: all")
    p.add_argument("--profiler", nargs="+", choices=PROFILERS, default=PROFILERS, help="default: all")
    p.add_argument("--widths", type=widths_arg, default=(784, 64, 10), help="layer widths, input first")
    p.add_argument("--batch", type=positive_int, default=1024)
    p.add_argument("--steps", type=positive_int, default=5, help="measured steps per scenario")
    p.add_argument("--warmup", type=count_arg, default=1, help="unmeasured steps before them")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch's intra-op threads (default: torch's own choice); on a machine shared "
                        "with other work, 1 keeps the shares from moving with the load")
    p.add_argument("--rate", type=positive_int, default=100, help="py-spy samples per second")
    p.add_argument("--no-native", action="store_true",
                   help="py-spy without --native: starts much faster, but sees no C++ frames, so "
                        "matmul and the like are not told apart from the Python line calling them")
    p.add_argument("--no-repeat", action="store_true",
                   help="profile the loop as it is once only; by default it runs a second time so that "
                        "profile.json can say how far two profiled runs of one computation differ (the "
                        "noise the two loops' difference is judged against)")
    p.add_argument("--top", type=positive_int, default=30, help="rows of the top-N tables")
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


def check_threads(threads: int | None) -> str | None:
    """None if ``--threads`` is unset or a count this machine may run (the cores this process
    may use), else one line saying so: torch accepts any count and crashes on absurd ones."""
    from benchmarks.core.timer import check_threads as check

    try:
        check(threads) if threads is not None else None
    except ValueError as e:
        return f"--{e}"  # "--threads must be ..."
    return None


def check_devices(devices: Sequence[str]) -> str | None:
    import torch

    for device in devices:
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            return f"unknown device {device!r}; valid devices: cpu, cuda, cuda:N, mps"
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if kind not in available:
            return f"unknown device {device!r}; valid devices: cpu, cuda, cuda:N, mps"
        if not available[kind]:
            here = ", ".join(k for k, v in available.items() if v)
            return f"device {device!r} is not available here (torch {torch.__version__}); available: {here}"
        if kind == "cuda" and torch.device(device).index is not None \
                and torch.device(device).index >= torch.cuda.device_count():
            return f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    problem = check_models(args.model) or check_devices(args.device) or check_threads(args.threads)
    if problem:
        p.error(problem)

    from benchmarks.core import record
    from benchmarks.core.cli import announce

    try:
        run = record.open_run(args.run) if args.run else record.new_run("profile")
    except (FileNotFoundError, record.RunFolderError) as e:
        p.error(str(e))
    out = run.profiles_dir
    settings = dict(widths=tuple(args.widths), batch=args.batch, steps=args.steps, warmup=args.warmup,
                    threads=args.threads)
    repeat = "loop" in args.phase and not args.no_repeat
    todo = expand(args.model, args.device, args.phase, repeat=repeat, **settings)
    print(f"profiling {len(todo)} scenario(s) with {', '.join(args.profiler)} into {run.path}")
    load_before = record.load_average()
    if load_before and load_before[0] > (os.cpu_count() or 1):
        print(f"note: this machine is busy (load average {load_before[0]:.1f} on {os.cpu_count()} CPUs); "
              f"the profilers run one after another, so shares move with the load between them "
              f"(--threads 1 makes them steadier)")

    table: list[dict] = []
    repeats: dict[tuple, dict] = {}  # (profiler, model, device) -> the repeated loop's shares and seconds
    coverage: dict[str, dict] = {}  # py-spy's sampled time of each scenario against its measured time
    files: dict[str, dict[str, list[str]]] = defaultdict(dict)
    failures: list[str] = []
    unavailable: dict[str, str] = {}
    notes: list[str] = []

    def note(s: Scenario, profiler: str, seconds: dict[str, float], made: list[Path], took: float) -> None:
        files[s.stem][profiler] = [str(f.relative_to(run.path)) for f in made]
        try:
            if s.repeat:  # a measure of noise, not a row of the table (its key is the first loop's)
                repeats[(profiler, s.model, s.device)] = {"shares": attribution.shares(seconds),
                                                          "seconds": sum(seconds.values())}
            else:
                table.extend(attribution.rows(profiler, s.key, seconds))
        except ValueError as e:
            failures.append(f"{s.stem} ({profiler}): {e}")
            return
        largest = max(seconds, key=seconds.get)
        print(f"  {profiler:8} {s.stem:40} {took:6.1f} s   {largest} {seconds[largest] / sum(seconds.values()):6.1%}")

    in_process = [p for p in PROFILER_TABLE if p.name in args.profiler and p.profile is not None]
    for s in todo:
        for profiler in in_process:
            started = time.perf_counter()
            made = [out / f"{s.stem}{suffix}" for suffix in profiler.files]
            try:
                seconds = profiler.function()(s, *made, top=args.top)
            except Exception as e:  # one line per failed scenario; the others still run
                failures.append(f"{s.stem} ({profiler.name}): {type(e).__name__}: {e}")
                print(f"  {profiler.name:8} {s.stem:40} failed: {type(e).__name__}: {e}")
                continue
            note(s, profiler.name, seconds, made, time.perf_counter() - started)

    if "py-spy" in args.profiler:
        profile_with_pyspy(todo, args, out, note, failures, unavailable, notes, coverage)

    _write_table(run, table)
    noise = loop_noise(table, repeats)
    run.write_json("profile.json", {
        "settings": {**settings, "models": args.model, "devices": args.device, "phases": args.phase,
                     "profilers": args.profiler, "py_spy_rate": args.rate,
                     "threads_used": args.threads or _torch_threads(),
                     "py_spy_native": "py-spy" in args.profiler and not args.no_native and pyspy_native()},
        "load_average": {"before": load_before, "after": record.load_average()},
        "profilers": {name: unavailable.get(name, "ok") for name in args.profiler},
        "failures": failures,
        "notes": notes,
        "backward": backward_notes(args.profiler, args.phase),
        "loop_noise": noise,
        "py_spy_coverage": coverage,
        "files": files,
    })
    print_summary(table)
    print_noise(noise)
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    for line in unavailable.values():
        print(line, file=sys.stderr)
    announce(run)
    if failures:
        return SCENARIO_FAILED
    return PROFILER_UNAVAILABLE if unavailable else OK


def profile_with_pyspy(todo, args, out: Path, note, failures: list[str], unavailable: dict[str, str],
                       notes: list[str], coverage: dict[str, dict]) -> None:
    """One py-spy child per model and device, running all its phases; split per scenario.

    py-spy weighs every sample 1/rate seconds, but it takes fewer than ``rate`` a second
    when it falls behind (unwinding native stacks pauses the child, and on a busy
    machine py-spy waits for a core too). The child reports each scenario's measured
    wall time, so ``coverage`` records the sampled seconds against it: a scenario whose
    coverage is low has fewer samples behind its shares, not less time.
    """
    from profiles.scenario import MEASURED_LINE
    import tempfile

    from benchmarks.core.record import profile_files
    from profiles import flamegraph, pyspy

    groups: dict[tuple[str, str], list[Scenario]] = defaultdict(list)
    for s in todo:
        groups[(s.model, s.device)].append(s)
    for (model, device), group in groups.items():
        phases = list(dict.fromkeys(s.phase for s in group))
        child = ["--model", model, "--device", device, "--phase", *phases,
                 "--widths", ",".join(map(str, args.widths)), "--batch", str(args.batch),
                 "--steps", str(args.steps), "--warmup", str(args.warmup),
                 *(["--threads", str(args.threads)] if args.threads else []),
                 *(["--repeat"] if any(s.repeat for s in group) else [])]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "py-spy.speedscope.json"
            try:
                done = pyspy.record(child, raw, rate=args.rate, native=False if args.no_native else None)
                samples = pyspy.read(raw)
            except pyspy.Unavailable as e:
                unavailable["py-spy"] = f"py-spy did not run: {e}; the other profilers ran"
                print(f"  py-spy   {unavailable['py-spy']}")
                return
            except (RuntimeError, ValueError) as e:
                failures.append(f"{model}-{device} (py-spy): {e}")
                print(f"  py-spy   {model}-{device} failed: {e}")
                continue
        for line in (done.stderr or "").splitlines():
            if line.startswith("profiles.scenario:"):  # a scenario that failed in the child
                failures.append(line.split(":", 1)[1].strip() + " (py-spy)")
        if "behind in sampling" in (done.stderr or ""):
            notes.append(f"py-spy fell behind its sampling rate for {model} on {device} (the process "
                         f"was paused while it unwound stacks); a lower --rate is steadier")
            print(f"  py-spy   note: {notes[-1]}")
        said = re.search(r"Samples: (\d+) Errors: (\d+)", (done.stdout or "") + (done.stderr or ""))
        # samples py-spy could not read (a stack it failed to unwind); a stray one is no news
        if said and int(said.group(2)) > 0.01 * int(said.group(1)):
            notes.append(f"py-spy reported {said.group(2)} errors reading samples for {model} on {device} "
                         f"({said.group(1)} samples taken): a sample it could not read is in no scenario's time")
            print(f"  py-spy   note: {notes[-1]}")
        took = time.perf_counter() - started
        measured = {}
        for line in (done.stdout or "").splitlines():
            if line.startswith(MEASURED_LINE):
                try:
                    said = json.loads(line[len(MEASURED_LINE):])
                    measured[said["stem"]] = float(said["seconds"])
                except (ValueError, KeyError, TypeError):
                    pass
        for s in group:
            mine = pyspy.select(samples, s.step_function.__name__)
            if s.stem in measured:
                coverage[s.stem] = {"sampled_s": round(mine.seconds, 4), "measured_s": round(measured[s.stem], 4),
                                    "coverage": round(mine.seconds / measured[s.stem], 3)
                                    if measured[s.stem] > 0 else None}
                if measured[s.stem] > 0 and mine.seconds < 0.8 * measured[s.stem]:
                    notes.append(f"py-spy sampled {mine.seconds:.2f} s of {s.stem}'s {measured[s.stem]:.2f} s "
                                 f"measured ({mine.seconds / measured[s.stem]:.0%}): it fell behind its rate, so "
                                 f"fewer samples stand behind these shares (a lower --rate, or --threads 1, "
                                 f"is steadier)")
                    print(f"  py-spy   note: {notes[-1]}")
            if not mine.stacks:
                failures.append(f"{s.stem} (py-spy): no samples in the measured steps "
                                f"(raise --steps or --rate)")
                continue
            made = [out / f"{s.stem}{suffix}" for suffix in profile_files("py-spy")]  # speedscope, flamegraph
            pyspy.write_speedscope(mine, made[0], f"{s.stem} (py-spy)")
            flamegraph.write(mine, made[1], f"{s.stem} (py-spy)")
            note(s, "py-spy", pyspy.attribute(mine), made, took / len(group))


def backward_notes(profilers: Sequence[str], phases: Sequence[str]) -> dict[str, str]:
    """What each profiler can split of the backward (attribution.BACKWARD_NOTES), for the page."""
    if not set(phases) & {"backward", "train", "loop"}:
        return {}
    return {p: attribution.BACKWARD_NOTES[p] for p in profilers if p in attribution.BACKWARD_NOTES}


NOISE_NOTE = ("The loop as it is was profiled twice by each profiler. 'noise_points' is how far the two runs' "
              "shares of each part differ (percentage points), 'synchronized_points' how far the synchronized "
              "loop's differ from the first run's. On the CPU the two loops are the same computation, so a "
              "difference no larger than the noise is noise between profiled runs; one repeat is a single "
              "draw of the noise, not a bound. 'seconds' is the time each run attributed: where it differs "
              "much between runs of one computation, the machine's load moved between them.")


def loop_noise(table: list[dict], repeats: dict[tuple, dict]) -> dict:
    """Per profiler, model and device: the repeated loop against the first, and the synchronized
    loop against the first, part by part in percentage points."""
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
        out.append({
            "profiler": profiler, "model": model, "device": device,
            "noise_points": noise, "largest_noise_points": largest,
            "synchronized_points": moved, "largest_synchronized_points": largest_moved,
            "within_noise": (largest_moved <= largest) if moved else None,
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
        print(f"  {r['profiler']:8} {r['model']}-{r['device']}: noise {r['largest_noise_points']:.1f}, "
              f"synchronized {'-' if moved is None else f'{moved:.1f}'}{verdict}")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def pyspy_native() -> bool:
    from profiles import pyspy

    return pyspy.native_supported()


def _write_table(run, rows: list[dict]) -> None:
    import pandas as pd

    from benchmarks.core.record import ATTRIBUTION_COLUMNS

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
