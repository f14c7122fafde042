"""``python -m benchmarks.gate``: the speed gate (see ``benchmarks.gate.cli``)."""

import sys

from benchmarks.gate.cli import main

sys.exit(main())
