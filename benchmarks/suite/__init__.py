"""The bench suites: pytest-benchmark tests over the core's cases (``python -m benchmarks``)."""
