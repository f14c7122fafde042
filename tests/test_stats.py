"""The comparison statistics on synthetic samples whose truth is known by construction.

Truths used: exact Mann-Whitney p-values counted by hand (for fully separated samples of
sizes m and n, p = 1 / C(m + n, m)), samples drawn from distributions whose median ratio
is set, and bootstrap coverage measured against that set ratio.
"""

import math

import numpy as np
import pytest

from benchmarks.core import stats


def lognormal(rng, n, median, sigma):
    """n times with the given median and log-spread."""
    return median * np.exp(sigma * rng.standard_normal(n))


def test_exact_mann_whitney_on_separated_tiny_samples():
    # Head's three values all exceed base's: U = 9, the largest of C(6, 3) = 20 equally likely ranks.
    assert stats.mann_whitney_p([4, 5, 6], [1, 2, 3], "greater") == pytest.approx(1 / 20)
    assert stats.mann_whitney_p([4, 5, 6], [1, 2, 3], "less") == pytest.approx(1.0)
    # Five against five, separated: 1 / C(10, 5) = 1 / 252.
    assert stats.mann_whitney_p([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]) == pytest.approx(1 / 252)


def test_all_tied_samples_give_no_evidence():
    c = stats.compare([1.0] * 10, [1.0] * 10)
    assert c.p_slower == 1.0 and c.p_faster == 1.0
    assert c.ratio == 1.0 and (c.ci_low, c.ci_high) == (1.0, 1.0)
    assert c.verdict == stats.UNCHANGED


def test_equal_distributions_raise_no_alarm():
    rng = np.random.default_rng(1)
    verdicts = [
        stats.compare(lognormal(rng, 20, 1e-3, 0.1), lognormal(rng, 20, 1e-3, 0.1)).verdict
        for _ in range(100)
    ]
    assert verdicts.count(stats.REGRESSION) == 0
    assert verdicts.count(stats.IMPROVEMENT) == 0


def test_a_30_percent_shift_is_a_regression_and_its_mirror_an_improvement():
    rng = np.random.default_rng(2)
    base = lognormal(rng, 20, 1e-3, 0.05)
    head = lognormal(rng, 20, 1.3e-3, 0.05)
    c = stats.compare(head, base)
    assert c.verdict == stats.REGRESSION
    assert c.ci_low < 1.3 < c.ci_high
    assert c.ratio == pytest.approx(np.median(head) / np.median(base))
    assert c.p_slower < 1e-6
    back = stats.compare(base, head)
    assert back.verdict == stats.IMPROVEMENT
    assert back.ratio == pytest.approx(1 / c.ratio)


def test_a_significant_change_below_the_threshold_is_not_a_regression():
    rng = np.random.default_rng(3)
    base = lognormal(rng, 30, 1e-3, 0.02)
    head = lognormal(rng, 30, 1.10e-3, 0.02)
    c = stats.compare(head, base, threshold=1.15)
    assert c.p_slower < 1e-6  # clearly slower ...
    assert c.verdict == stats.UNCHANGED  # ... but by less than the threshold
    assert stats.compare(head, base, threshold=1.05).verdict == stats.REGRESSION


def test_noise_without_power_is_not_a_regression():
    # A 30% shift hidden in noise three times its size: neither alarm nor false comfort in the CI.
    rng = np.random.default_rng(4)
    base = lognormal(rng, 6, 1e-3, 0.9)
    head = base * 1.3 * np.exp(0.9 * rng.standard_normal(6))
    c = stats.compare(head, base)
    assert c.p_slower > 0.01
    assert c.verdict != stats.REGRESSION
    assert c.ci_low < 1 < c.ci_high


def test_outliers_in_a_few_samples_do_not_move_the_verdict():
    rng = np.random.default_rng(5)
    base = lognormal(rng, 20, 1e-3, 0.05)
    head = lognormal(rng, 20, 1e-3, 0.05)
    head[:3] *= 10  # three samples hit by a noisy neighbour
    assert stats.compare(head, base).verdict == stats.UNCHANGED


def test_tiny_samples_are_never_significant():
    c = stats.compare([2.0, 2.1, 2.2, 2.3], [1.0, 1.1, 1.2, 1.3])
    assert c.verdict == stats.INSUFFICIENT
    assert c.ratio == pytest.approx(2.15 / 1.15)
    # Five a side, fully separated and twice as slow: enough.
    assert stats.compare([2.0, 2.1, 2.2, 2.3, 2.4], [1.0, 1.1, 1.2, 1.3, 1.4]).verdict == stats.REGRESSION


def test_bootstrap_interval_covers_the_true_ratio_about_as_often_as_it_claims():
    rng = np.random.default_rng(6)
    hits = 0
    for seed in range(100):
        head = lognormal(rng, 25, 1.2, 0.1)
        base = lognormal(rng, 25, 1.0, 0.1)
        low, high = stats.bootstrap_ratio_ci(head, base, confidence=0.95, resamples=500, seed=seed)
        hits += low <= 1.2 <= high
    assert 0.85 <= hits / 100 <= 1.0


def test_bad_samples_and_rules_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="no samples"):
        stats.compare([], [1.0])
    with pytest.raises(ValueError, match="finite positive"):
        stats.compare([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="finite positive"):
        stats.compare([1.0], [-1.0])
    with pytest.raises(ValueError, match="threshold"):
        stats.compare([1.0], [1.0], threshold=0.9)
    with pytest.raises(ValueError, match="alpha"):
        stats.compare([1.0], [1.0], alpha=0)


def test_ratio_against_a_recorded_reference():
    rng = np.random.default_rng(7)
    mlp = lognormal(rng, 20, 1e-4, 0.05)
    kan = lognormal(rng, 20, 5e-4, 0.05)  # five times the MLP
    same = stats.compare_to_reference(kan, mlp, reference=5.0)
    assert same.verdict == stats.UNCHANGED
    assert same.median_head == pytest.approx(np.median(kan) / np.median(mlp))
    assert same.ci_low < 1 < same.ci_high
    slower = stats.compare_to_reference(kan * 1.3, mlp, reference=5.0)
    assert slower.verdict == stats.REGRESSION and slower.ratio == pytest.approx(1.3 * same.ratio)
    faster = stats.compare_to_reference(kan / 1.3, mlp, reference=5.0)
    assert faster.verdict == stats.IMPROVEMENT
    assert stats.compare_to_reference(kan[:4] * 2, mlp, reference=5.0).verdict == stats.INSUFFICIENT
    with pytest.raises(ValueError, match="reference ratio"):
        stats.compare_to_reference(kan, mlp, reference=0)


def test_exact_wilcoxon_on_tiny_paired_samples():
    # Every pair slower: the largest signed-rank sum, 1 of 2**n equally likely sign patterns.
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    head = base * np.array([1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7])
    assert stats.wilcoxon_p(head[:5], base[:5]) == pytest.approx(1 / 2**5)
    assert stats.wilcoxon_p(head, base) == pytest.approx(1 / 2**7)
    assert stats.wilcoxon_p(head, base, "less") == pytest.approx(1.0)
    assert stats.wilcoxon_p(base, base) == 1.0  # all pairs equal: no evidence
    c = stats.compare(head, base, paired=True)
    assert c.test == "wilcoxon"
    assert c.ratio == pytest.approx(1.4)  # the median of the per-pair ratios
    assert c.verdict == stats.REGRESSION
    # Five pairs cannot reach p < 0.01 (1/32 at best): never a regression at the default alpha.
    assert stats.compare(head[:5], base[:5], paired=True).verdict == stats.UNCHANGED


def test_pairing_cancels_a_drift_shared_by_both_sides():
    # The machine slows down and speeds up by 3x over the run; each pair shares its moment.
    rng = np.random.default_rng(8)
    drift = np.exp(np.linspace(0, 1.1, 24) + 0.4 * np.sin(np.arange(24)))
    base = 1e-3 * drift * np.exp(0.03 * rng.standard_normal(24))
    same = 1e-3 * drift * np.exp(0.03 * rng.standard_normal(24))
    slower = 1.3 * same
    pooled = stats.compare(slower, base)
    assert pooled.verdict == stats.UNCHANGED  # the drift drowns 30% when the pairs are pooled
    paired = stats.compare(slower, base, paired=True)
    assert paired.verdict == stats.REGRESSION and paired.ci_low < 1.3 < paired.ci_high
    assert stats.compare(same, base, paired=True).verdict == stats.UNCHANGED
    assert stats.compare(base, slower, paired=True).verdict == stats.IMPROVEMENT


def test_paired_samples_must_pair_up():
    with pytest.raises(ValueError, match="paired samples"):
        stats.compare([1.0, 2.0], [1.0], paired=True)


def test_ratio_against_a_reference_pair_by_pair():
    # Both models drift together over the run; pairing them by round cancels it.
    rng = np.random.default_rng(9)
    drift = np.exp(np.linspace(0, 0.8, 24))
    mlp = 1e-4 * drift * np.exp(0.02 * rng.standard_normal(24))
    kan = 5e-4 * drift * np.exp(0.02 * rng.standard_normal(24))
    same = stats.compare_to_reference(kan, mlp, reference=5.0, paired=True)
    assert same.verdict == stats.UNCHANGED and same.ratio == pytest.approx(1.0, abs=0.02)
    assert same.ci_high - same.ci_low < 0.05
    slower = stats.compare_to_reference(kan * 1.2, mlp, reference=5.0, paired=True)
    assert slower.verdict == stats.REGRESSION and slower.ci_low > 1.15
    with pytest.raises(ValueError, match="paired samples"):
        stats.compare_to_reference(kan[:3], mlp, reference=5.0, paired=True)
