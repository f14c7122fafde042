"""``python -m benchmarks.peers``: see ``benchmarks.peers.cli``."""

import sys

from benchmarks.peers.cli import main

sys.exit(main())
