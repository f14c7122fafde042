"""Accuracy next to speed: every registered model trained on fixed small tasks (``python -m benchmarks.quality``)."""
