"""Statistics for comparing timings: the one place that decides "slower", "faster" or "the same".

Everything that compares two sets of raw timing samples (the speed gate, the report's
run-to-run comparison) goes through :func:`compare`, so that one rule judges them all:

    >>> from benchmarks.core import stats
    >>> c = stats.compare(head_samples, base_samples, threshold=1.15, alpha=0.01)
    >>> c.ratio, c.ci_low, c.ci_high, c.p_slower, c.verdict
    (1.31, 1.24, 1.38, 1.2e-08, 'regression')

The rule, in the manner of asv and TorchBench: a change is a *regression* only when the
ratio of medians head/base exceeds ``threshold`` AND a one-sided Mann-Whitney U test on
the raw samples says head is slower with p < ``alpha``; an *improvement* is the mirror
image (ratio below ``1 / threshold`` and head significantly faster). Fewer than
``min_samples`` samples on either side can never be significant: "insufficient samples".
The ratio also carries a percentile-bootstrap confidence interval, for the reader.

Samples taken in pairs (``paired=True``: head's i-th sample taken right beside base's
i-th, as the speed gate takes them) are compared pair by pair instead, which cancels
the slow drifts of a shared machine that both samples of a pair share: the ratio is the
median of the per-pair ratios, its interval a bootstrap over pairs, and the test a
one-sided Wilcoxon signed-rank test on the log ratios. The rule is the same.

Without raw samples of the base (a committed baseline file holds only ratios), the
figure that travels between machines is compared instead: :func:`compare_to_reference`
judges a ratio measured in this run (a KAN's time over the MLP's) against a recorded one,
with a bootstrap test in place of the rank test; :func:`compare_ratios` judges two such
ratios, each measured with its interval in its own run (the report's ``--against``).

What may be said of one ratio (:func:`words`) goes by direction and size: "N x slower" or
"N x faster" where its 95% interval excludes 1, "no clear difference" where it holds 1;
"imprecise" and "disturbed" are said beside that, never instead of it.

Samples are times in seconds (any positive unit works: only ratios and ranks are used).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INSUFFICIENT = "insufficient samples"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, INSUFFICIENT)

DEFAULT_THRESHOLD = 1.15
DEFAULT_ALPHA = 0.01
MIN_SAMPLES = 5


def _samples(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` as a 1-d float64 array of finite positive numbers; ``ValueError`` otherwise."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{what} has no samples")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{what} samples must be finite positive times, got {a.tolist()!r}")
    return a


def median_ratio(head: Sequence[float], base: Sequence[float]) -> float:
    """median(head) / median(base)."""
    return float(np.median(_samples(head, "head")) / np.median(_samples(base, "base")))


def bootstrap_ratio_ci(
    head: Sequence[float],
    base: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(head) / median(base).

    Each side is resampled with replacement on its own (the two sides are independent
    samples); ``seed`` makes the interval reproducible.
    """
    h, b = _samples(head, "head"), _samples(base, "base")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    ratios = _bootstrap_ratios(h, b, resamples, seed)  # (resamples,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def _bootstrap_ratios(
    numerator: np.ndarray, denominator: np.ndarray, resamples: int, seed: int
) -> np.ndarray:
    """median(numerator*) / median(denominator*) over ``resamples`` bootstrap resamples -> (resamples,)."""
    rng = np.random.default_rng(seed)
    n, d = numerator, denominator
    n_medians = np.median(n[rng.integers(0, n.size, size=(resamples, n.size))], axis=1)
    d_medians = np.median(d[rng.integers(0, d.size, size=(resamples, d.size))], axis=1)
    return n_medians / d_medians


def mann_whitney_p(head: Sequence[float], base: Sequence[float], alternative: str = "greater") -> float:
    """One-sided Mann-Whitney U p-value that head's times are larger ("greater") or smaller ("less").

    Exact for small samples without ties, normal approximation with tie correction
    otherwise (scipy's choice). Samples that are all tied give p = 1: no evidence.
    """
    from scipy.stats import mannwhitneyu  # imported here: reading this module needs only numpy

    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    h, b = _samples(head, "head"), _samples(base, "base")
    p = float(mannwhitneyu(h, b, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


@dataclass(frozen=True)
class Comparison:
    """Head against base for one benchmark: the ratio, its interval, the tests and the verdict."""

    ratio: float  # median(head) / median(base); > 1 means head is slower
    ci_low: float  # bootstrap interval of the ratio at ``confidence``
    ci_high: float
    confidence: float
    p_slower: float  # one-sided Mann-Whitney p that head is slower
    p_faster: float  # one-sided Mann-Whitney p that head is faster
    n_head: int
    n_base: int
    median_head: float
    median_base: float
    threshold: float
    alpha: float
    verdict: str  # one of VERDICTS
    test: str = "mann-whitney"  # or "wilcoxon" (paired samples), "bootstrap" (against a reference)

    def to_dict(self) -> dict:
        return asdict(self)


def wilcoxon_p(head: Sequence[float], base: Sequence[float], alternative: str = "greater") -> float:
    """One-sided Wilcoxon signed-rank p-value on the log ratios of paired samples.

    "greater": head's samples are larger than their partners. Exact for small samples
    without ties (scipy's choice); pairs with equal values carry no evidence, so all
    pairs equal give p = 1.
    """
    from scipy.stats import wilcoxon

    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    h, b = _samples(head, "head"), _samples(base, "base")
    if h.size != b.size:
        raise ValueError(f"paired samples need as many head as base samples, got {h.size} and {b.size}")
    log_ratios = np.log(h / b)
    if not np.any(log_ratios):
        return 1.0
    p = float(wilcoxon(log_ratios, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


def paired_ratio(head: Sequence[float], base: Sequence[float]) -> float:
    """The median of head_i / base_i (taken on logs, so that swapping the sides inverts it)."""
    h, b = _samples(head, "head"), _samples(base, "base")
    if h.size != b.size:
        raise ValueError(f"paired samples need as many head as base samples, got {h.size} and {b.size}")
    return float(np.exp(np.median(np.log(h / b))))


def bootstrap_paired_ci(
    head: Sequence[float], base: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of :func:`paired_ratio`, resampling whole pairs."""
    h, b = _samples(head, "head"), _samples(base, "base")
    if h.size != b.size:
        raise ValueError(f"paired samples need as many head as base samples, got {h.size} and {b.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    log_ratios = np.log(h / b)  # (pairs,)
    rng = np.random.default_rng(seed)
    medians = np.median(log_ratios[rng.integers(0, h.size, size=(resamples, h.size))], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.exp(np.quantile(medians, [tail, 1 - tail]))
    return float(low), float(high)


def decide(
    ratio: float, p_slower: float, p_faster: float, n: int,
    threshold: float, alpha: float, min_samples: int = MIN_SAMPLES,
) -> str:
    """The verdict for a ratio (head/base), its one-sided p-values and the smaller sample size n."""
    if n < min_samples:
        return INSUFFICIENT
    if ratio > threshold and p_slower < alpha:
        return REGRESSION
    if ratio < 1 / threshold and p_faster < alpha:
        return IMPROVEMENT
    return UNCHANGED


def _check_rule(threshold: float, alpha: float) -> None:
    if not threshold >= 1:
        raise ValueError(f"threshold must be a ratio >= 1 (for example 1.15), got {threshold!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")


def compare(
    head: Sequence[float],
    base: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = MIN_SAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> Comparison:
    """Judge head's samples against base's (see the module docstring for the rule).

    ``paired``: head[i] and base[i] were taken side by side; compare pair by pair.
    """
    _check_rule(threshold, alpha)
    h, b = _samples(head, "head"), _samples(base, "base")
    if paired:
        ratio = paired_ratio(h, b)
        low, high = bootstrap_paired_ci(h, b, confidence=confidence, seed=seed)
        p_slower, p_faster = wilcoxon_p(h, b, "greater"), wilcoxon_p(h, b, "less")
    else:
        ratio = median_ratio(h, b)
        low, high = bootstrap_ratio_ci(h, b, confidence=confidence, seed=seed)
        p_slower, p_faster = mann_whitney_p(h, b, "greater"), mann_whitney_p(h, b, "less")
    verdict = decide(ratio, p_slower, p_faster, min(h.size, b.size), threshold, alpha, min_samples)
    return Comparison(
        ratio=ratio, ci_low=low, ci_high=high, confidence=confidence,
        p_slower=p_slower, p_faster=p_faster, n_head=int(h.size), n_base=int(b.size),
        median_head=float(np.median(h)), median_base=float(np.median(b)),
        threshold=float(threshold), alpha=float(alpha), verdict=verdict,
        test="wilcoxon" if paired else "mann-whitney",
    )


def compare_to_reference(
    numerator: Sequence[float],
    denominator: Sequence[float],
    reference: float,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = MIN_SAMPLES,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    paired: bool = False,
) -> Comparison:
    """Judge a ratio measured now, median(numerator) / median(denominator), against ``reference``.

    ``paired``: numerator[i] and denominator[i] were taken together (in the same round);
    the measured ratio is then the median of the per-pair ratios, resampled pair by pair.

    For a committed baseline: numerator = a KAN's samples, denominator = the MLP's samples
    from the same run, reference = the KAN/MLP ratio recorded in the baseline file. The
    returned ``ratio`` is measured / reference (> 1: slower relative to the MLP than when
    the baseline was recorded); ``median_head`` is the measured ratio, ``median_base``
    the reference; ``n_head`` and ``n_base`` count numerator and denominator samples.
    The p-values are one-sided bootstrap p-values (the share of resampled ratios on the
    wrong side of 1), the same rule then applies as in :func:`compare`.
    """
    _check_rule(threshold, alpha)
    if not (isinstance(reference, (int, float)) and math.isfinite(reference) and reference > 0):
        raise ValueError(f"reference ratio must be a finite positive number, got {reference!r}")
    n, d = _samples(numerator, "numerator"), _samples(denominator, "denominator")
    if paired:
        measured = paired_ratio(n, d)
        log_ratios = np.log(n / d)  # (pairs,)
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, n.size, size=(resamples, n.size))
        relative = np.exp(np.median(log_ratios[picks], axis=1)) / reference  # (resamples,)
    else:
        measured = float(np.median(n) / np.median(d))
        relative = _bootstrap_ratios(n, d, resamples, seed) / reference  # (resamples,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(relative, [tail, 1 - tail])
    p_slower = float((np.count_nonzero(relative <= 1) + 1) / (resamples + 1))
    p_faster = float((np.count_nonzero(relative >= 1) + 1) / (resamples + 1))
    ratio = measured / reference
    verdict = decide(ratio, p_slower, p_faster, min(n.size, d.size), threshold, alpha, min_samples)
    return Comparison(
        ratio=ratio, ci_low=float(low), ci_high=float(high), confidence=confidence,
        p_slower=p_slower, p_faster=p_faster, n_head=int(n.size), n_base=int(d.size),
        median_head=measured, median_base=float(reference),
        threshold=float(threshold), alpha=float(alpha), verdict=verdict, test="bootstrap",
    )


# --- ratios measured side by side in one run, and the words that may be said of them ------

CLEAR_WITHIN = 0.05  # an interval within +/-5% of its ratio gives a clear answer
# The fewest pairs a 95% interval of a median ratio can be had from: the widest interval that
# assumes nothing of the samples, [smallest, largest], holds the median with probability
# 1 - 2^(1 - n), 0.97 at 6 pairs and 0.94 at 5. From fewer, the bootstrap's percentiles (which
# never reach past those two) would claim a confidence that the samples cannot give.
MIN_INTERVAL_PAIRS = 6


@dataclass(frozen=True)
class PairedRatio:
    """The median of per-round ratios numerator_i / denominator_i, with its 95% bootstrap interval."""

    ratio: float
    ci_low: float
    ci_high: float
    pairs: int

    @property
    def spread(self) -> float:
        """How far the interval reaches from the ratio, relative to it (0.05: within +/-5%)."""
        return max(self.ci_high / self.ratio, self.ratio / self.ci_low) - 1

    def clear(self, within: float = CLEAR_WITHIN) -> bool:
        return self.spread <= within


def paired_ratio_interval(numerator: Sequence[float], denominator: Sequence[float],
                          resamples: int = 2000, seed: int = 0) -> PairedRatio:
    """:func:`paired_ratio` and :func:`bootstrap_paired_ci` (95%) of samples taken in pairs; no
    interval (NaN bounds) from fewer than :data:`MIN_INTERVAL_PAIRS` pairs."""
    ratio = paired_ratio(numerator, denominator)
    if len(numerator) < MIN_INTERVAL_PAIRS:
        return PairedRatio(ratio, math.nan, math.nan, len(numerator))
    low, high = bootstrap_paired_ci(numerator, denominator, resamples=resamples, seed=seed)
    return PairedRatio(ratio, low, high, len(numerator))


def plain(x: float) -> str:
    """A ratio as people write it: 2,620, 27.7, 2.77, 0.277 (never 2.62e+03)."""
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def direction(ratio: float, ci_low: float, ci_high: float) -> str:
    """"slower" or "faster" where the interval excludes 1, "same" where it holds 1, "" where
    the ratio or its interval was not measured."""
    if not (math.isfinite(ratio) and math.isfinite(ci_low) and math.isfinite(ci_high)):
        return ""
    if ci_low <= 1 <= ci_high:
        return "same"
    return "slower" if ratio > 1 else "faster"


def interval_words(ratio: float, ci_low: float, ci_high: float) -> str:
    """The 95% interval in the direction the words go: "95% interval 31.4-33.6" for 32.5x slower,
    and inverted for a faster ratio (0.5 [0.45, 0.55] is 2x faster, 1.82-2.22)."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)) or ci_low <= 0:
        return ""
    low, high = (ci_low, ci_high) if ratio >= 1 else (1 / ci_high, 1 / ci_low)
    return f"95% interval {plain(low)}\u2013{plain(high)}"


def words(ratio: float, ci_low: float, ci_high: float, imprecise: str | None = None,
          than: str = "", disturbed: str | None = None, interval: bool = False, rounds: float = math.nan) -> str:
    """What may be said of a time ratio (this / other), by direction and size:

    "2.77x slower than X" or "2.00x faster than X" where the 95% interval excludes 1, "no clear
    difference from X" where it holds 1. ``imprecise`` (why the interval is wider than the
    precision asked for) and ``disturbed`` (the OS evidence of interference) are said after it,
    as separate words: they never hide the direction and size. ``interval``: the interval too,
    and where there is none the ratio itself (a sentence standing alone; a table shows the ratio
    in a column of its own). ``rounds``: how many the ratio was paired over, where known, to say
    why it has no interval when they were too few (:data:`MIN_INTERVAL_PAIRS`).
    """
    if not math.isfinite(ratio):
        return "not measured"
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        said = (f"no interval from {rounds:.0f} rounds (it takes {MIN_INTERVAL_PAIRS})"
                if rounds < MIN_INTERVAL_PAIRS else "no interval measured")
        if interval:  # no verdict without an interval, but the ratio measured is still said
            said = f"{plain(ratio)}x" + (f" {than}'s time" if than else "") + f", {said}"
    elif ci_low <= 1 <= ci_high:
        said = "no clear difference" + (f" from {than}" if than else "")
    else:
        tail = f" than {than}" if than else ""
        said = f"{plain(ratio)}x slower{tail}" if ratio > 1 else f"{plain(1 / ratio)}x faster{tail}"
    if interval and (span := interval_words(ratio, ci_low, ci_high)):
        said += f" ({span})"
    notes = [f"{word} ({why})" for word, why in (("imprecise", imprecise), ("disturbed", disturbed)) if why]
    return "; ".join([said, *notes])


def imprecision_of(flags: str | None, baseline: str) -> str | None:
    """The parts of an ``imprecise`` flag ("interval to mlp ±6.1%; interval to mlp-param ±8%") that
    concern the ratio to ``baseline`` (or no ratio: "interval of the median ..."), or None."""
    if not isinstance(flags, str):
        return None
    parts = [p.strip() for p in flags.split(";") if p.strip()]
    mine = [p for p in parts if f" to {baseline} " in f"{p} " or " to " not in p]
    return "; ".join(mine) or None


def log_normal_sigma(ci_low: float, ci_high: float, z: float = 1.959964) -> float:
    """The standard error of log(ratio) that a 95% interval implies, read as a normal one on logs."""
    return (math.log(ci_high) - math.log(ci_low)) / (2 * z)


def compare_ratios(new: float, new_low: float, new_high: float, old: float, old_low: float, old_high: float,
                   threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA, n: int = MIN_SAMPLES,
                   min_samples: int = MIN_SAMPLES) -> Comparison:
    """Judge a ratio measured in one run (a model's time over the MLP's, with its 95% interval)
    against the same ratio measured in another run: new / old, by the rule of :func:`compare`.

    Each side's interval is read as a normal one on the log scale (the two runs are
    independent), so the change's standard error is the two sides' combined; the p-values
    are the one-sided normal tail probabilities that new / old lies beyond 1. Since each side
    is a ratio to a baseline timed beside it, a machine that is uniformly slower in one run
    cancels. ``n``: the fewer rounds behind either side (fewer than ``min_samples``: never judged).
    """
    _check_rule(threshold, alpha)
    values = (new, new_low, new_high, old, old_low, old_high)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"ratios and their intervals must be finite positive numbers, got {values!r}")
    from scipy.stats import norm

    ratio = new / old
    sigma = math.hypot(log_normal_sigma(new_low, new_high), log_normal_sigma(old_low, old_high))
    if sigma > 0:
        z = math.log(ratio) / sigma
        p_slower, p_faster = float(norm.sf(z)), float(norm.cdf(z))
        half = norm.ppf(0.975) * sigma
        low, high = ratio * math.exp(-half), ratio * math.exp(half)
    else:  # two exact ratios (a baseline against itself): any difference is certain
        p_slower, p_faster = float(ratio <= 1), float(ratio >= 1)
        low = high = ratio
    verdict = decide(ratio, p_slower, p_faster, n, threshold, alpha, min_samples)
    return Comparison(
        ratio=ratio, ci_low=low, ci_high=high, confidence=0.95, p_slower=p_slower, p_faster=p_faster,
        n_head=int(n), n_base=int(n), median_head=float(new), median_base=float(old),
        threshold=float(threshold), alpha=float(alpha), verdict=verdict, test="ratio intervals",
    )


def min_pairs(alpha: float) -> int:
    """The fewest pairs with which a one-sided signed-rank test can reach p < ``alpha``.

    With n pairs all on one side the exact p-value is 2^-n, the smallest there is; fewer
    than MIN_SAMPLES pairs are never judged at all.
    """
    _check_rule(1.0, alpha)
    n = 1
    while 0.5 ** n >= alpha:
        n += 1
    return max(n, MIN_SAMPLES)
