"""``python -m profiles``: see profiles.cli."""

import sys

from profiles.cli import main

sys.exit(main())
