"""``python -m kan.native build|status`` (see ``kan.native.cli``)."""

import sys

from kan.native.cli import main

sys.exit(main())
