"""The phases a case can time, in one place that imports nothing heavy, so that the report and the
terminal summaries (which never import torch) read the same list as the cases that run them."""

PHASES = ("forward", "backward", "forward+backward", "train")
# The phases the suites time, in the order every table shows them: forward+backward is a study's
# phase (the crossover), not a suite's.
SUITE_PHASES = tuple(p for p in PHASES if p != "forward+backward")
# The speed gate's (benchmarks.gate): one pass and a whole training step, the least that shows a
# slower forward or a slower backward and optimizer in CI's few minutes; a subset of PHASES, in its order.
GATE_PHASES = tuple(p for p in PHASES if p in ("forward", "train"))
