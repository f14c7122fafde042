"""Other KAN packages from PyPI timed beside ours (``python -m benchmarks.peers``, ``nox -s peers``):
``catalog`` (the pinned peers and their adapters), ``child`` (a peer's process, in its own
environment), ``cli`` (the command)."""
