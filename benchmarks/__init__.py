"""Measuring the registered models: a core that every command shares, and the commands on it.

    benchmarks/core/      what is measured and how: case (one step builder per phase), timer
                          (the device-aware clock), protocol (rounds; turns across candidates;
                          paired turns), measure (a workload's models in turns until clear),
                          memory, record (every file of a run folder), stats (one rule for
                          slower and faster), process (JSON-lines children), cli (one-line
                          errors, the run announced)
    benchmarks/suite/     the pytest-benchmark suites and ``python -m benchmarks``
    benchmarks/gate/      the speed gate, ``python -m benchmarks.gate`` (and its evidence study)
    benchmarks/peers/     other KAN packages beside ours, ``python -m benchmarks.peers``
    benchmarks/studies/   studies: ``python -m benchmarks.studies.targets`` (kan-fast's acceptance
                          targets), ``.crossover`` (its contraction crossover), ``.busy`` (the bench
                          on a busy machine)

``profiles/``, ``reports/`` and every command import the core, never each other's entry
points. Nothing here imports ``kan`` at import time: models are asked of ``kan.zoo`` by
name when a case is built, so that another package called ``kan`` cannot break the harness.
"""
