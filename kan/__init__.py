"""KAN models for benchmarking: the reference B-spline KAN, faster KANs, variants and MLP baselines.

Every model is reachable by name through :mod:`kan.zoo`.
"""

from kan.reference import KAN, KANLinear

__all__ = ["KAN", "KANLinear"]
