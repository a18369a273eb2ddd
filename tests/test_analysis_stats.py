"""Tests for harness.analysis.stats, each against a reference computed independently here."""
from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
import scipy.stats

from harness.analysis.stats import (
    bh_adjust,
    low_power,
    mann_whitney,
    mcnemar_exact,
    mean_win_rate,
    min_achievable_p,
    paired_bootstrap_diff,
    percentile_ratio,
    tie_groups,
    verdict_mark,
    wilcoxon_log_ratio,
    wilson_interval,
)

NAN = float("nan")


# --- wilson_interval -------------------------------------------------------------------------

def wilson_closed_form(k: int, n: int, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(8, 10), (0, 20), (20, 20), (1, 1000), (37, 91)])
@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_wilson_matches_closed_form(k, n, confidence):
    low, high = wilson_interval(k, n, confidence)
    ref_low, ref_high = wilson_closed_form(k, n, confidence)
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert type(low) is float and type(high) is float


def test_wilson_empty_is_nan():
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)


# --- mcnemar_exact ---------------------------------------------------------------------------

def mcnemar_by_sum(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 5), (5, 0), (3, 12), (7, 2), (10, 10), (1, 0), (40, 25)])
def test_mcnemar_matches_binomial_sum(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(mcnemar_by_sum(b, c), rel=1e-12)


def test_mcnemar_known_values_and_no_discordant():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(0, 0) == 1.0


# --- paired_bootstrap_diff -------------------------------------------------------------------

def test_bootstrap_diff_exact_shift():
    base = np.random.default_rng(1).normal(5.0, 2.0, 40)
    new = base + 0.1
    d, low, high = paired_bootstrap_diff(base.tolist(), new.tolist(), seed=0)
    assert (d, low, high) == pytest.approx((0.1, 0.1, 0.1), abs=1e-12)


def test_bootstrap_diff_noisy_shift_covered_and_excludes_zero():
    rng = np.random.default_rng(7)
    base = rng.normal(10.0, 1.0, 200)
    new = base + 0.5 + rng.normal(0.0, 0.5, 200)
    d, low, high = paired_bootstrap_diff(base, new, seed=3)
    assert d == pytest.approx(float(np.mean(new - base)))
    assert low < 0.5 < high
    assert low > 0
    assert low < d < high


def test_bootstrap_diff_reproducible_per_seed():
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, 30)
    new = base + rng.normal(0.2, 1, 30)
    first = paired_bootstrap_diff(base, new, seed=42)
    assert paired_bootstrap_diff(base, new, seed=42) == first
    other = paired_bootstrap_diff(base, new, seed=43)
    assert other[0] == first[0]
    assert other[1:] != first[1:]


def test_bootstrap_diff_small_and_mismatched():
    d, low, high = paired_bootstrap_diff([1.0], [1.5], seed=0)
    assert d == 0.5 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in paired_bootstrap_diff([], [], seed=0))
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1.0, 2.0], [1.0], seed=0)


# --- percentile_ratio ------------------------------------------------------------------------

def test_percentile_ratio_exact_double_paired():
    rng = np.random.default_rng(5)
    base = [rng.exponential(1.0, size).tolist() for size in rng.integers(1, 30, 40)]
    new = [[2 * v for v in case] for case in base]
    assert percentile_ratio(base, new, q=50, seed=0, paired=True) == pytest.approx((2.0, 2.0, 2.0))
    assert percentile_ratio(base, new, q=99, seed=0, paired=True) == pytest.approx((2.0, 2.0, 2.0))


def test_percentile_ratio_resamples_cases_not_values():
    rng = np.random.default_rng(0)
    base = [rng.uniform(1, 2, 10) for _ in range(100)]
    new = [rng.uniform(1000, 2000, 1000)] + [rng.uniform(1, 2, 10) for _ in range(99)]
    ratio, low, high = percentile_ratio(base, new, q=99, seed=1, paired=True)

    pool_b, pool_n = np.concatenate(base), np.concatenate(new)
    assert ratio == pytest.approx(np.percentile(pool_n, 99) / np.percentile(pool_b, 99))

    # The value-level alternative: resample the pooled values themselves.
    trng = np.random.default_rng(1)
    token_ratios = [
        np.percentile(trng.choice(pool_n, pool_n.size), 99)
        / np.percentile(trng.choice(pool_b, pool_b.size), 99)
        for _ in range(1000)
    ]
    t_low, t_high = np.percentile(token_ratios, [2.5, 97.5])

    # Resampling cases: about a third of resamples miss the one huge case, so the interval runs
    # from ~1 (no slowdown) to ~1000; resampling values always keeps ~half huge values.
    assert low < 2.0 < 500.0 < high
    assert t_low > 500.0
    assert (high - low) > 10 * (t_high - t_low)


def test_percentile_ratio_unpaired_different_sizes():
    rng = np.random.default_rng(9)
    base = [rng.exponential(1.0, 20) for _ in range(30)]
    new = [1.5 * rng.exponential(1.0, 20) for _ in range(50)] + [[3.0]]
    ratio, low, high = percentile_ratio(base, new, q=90, seed=4, paired=False, n_resamples=500)
    expected = np.percentile(np.concatenate(new), 90) / np.percentile(np.concatenate(base), 90)
    assert ratio == pytest.approx(expected)
    assert low < ratio < high
    assert percentile_ratio(base, new, q=90, seed=4, paired=False, n_resamples=500) == (ratio, low, high)
    with pytest.raises(ValueError):
        percentile_ratio(base, new, q=90, seed=4, paired=True)


def test_percentile_ratio_scalar_cases_and_empty():
    base = [1.0, 2.0, 3.0, 4.0]  # one value per case, e.g. compile times
    new = [2.0, 4.0, 6.0, 8.0]
    assert percentile_ratio(base, new, q=50, seed=0, paired=True) == pytest.approx((2.0, 2.0, 2.0))
    assert all(math.isnan(x) for x in percentile_ratio([], new, q=50, seed=0, paired=False))
    assert all(math.isnan(x) for x in percentile_ratio([[], []], new, q=50, seed=0, paired=False))


# --- wilcoxon_log_ratio ----------------------------------------------------------------------

def signed_rank_p_by_enumeration(r: np.ndarray) -> float:
    """Exact two-sided p by flipping every sign (no ties, no zeros)."""
    ranks = scipy.stats.rankdata(np.abs(r))
    n = len(r)
    mean = n * (n + 1) / 4
    observed = abs(ranks[r > 0].sum() - mean)
    extreme = 0
    for signs in itertools.product((0, 1), repeat=n):
        w = sum(rank for rank, s in zip(ranks, signs) if s)
        extreme += abs(w - mean) >= observed - 1e-9
    return extreme / 2**n


@pytest.mark.parametrize("logs", [
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],           # all slower -> 2/64
    [0.1, -0.2, 0.3, 0.4, 0.5, 0.6],          # W+ = 19 -> 6/64
    [-0.05, 0.12, -0.33, 0.41, 0.27, -0.18, 0.66],
])
def test_wilcoxon_matches_sign_flip_enumeration(logs):
    base = np.full(len(logs), 3.0)
    new = base * np.exp(logs)
    assert wilcoxon_log_ratio(base, new) == pytest.approx(signed_rank_p_by_enumeration(np.array(logs)))


def test_wilcoxon_all_positive_six_pairs():
    assert wilcoxon_log_ratio([1.0] * 6, [1.1, 1.2, 1.3, 1.4, 1.5, 1.6]) == pytest.approx(2 / 64)


def test_wilcoxon_consistent_slowdown():
    rng = np.random.default_rng(2)
    base = rng.lognormal(0.0, 0.8, 30)
    new = base * 1.2 * np.exp(rng.normal(0.0, 0.05, 30))
    p = wilcoxon_log_ratio(base, new)
    assert p < 0.001
    assert p == pytest.approx(scipy.stats.wilcoxon(np.log(new / base)).pvalue)


def test_wilcoxon_edge_cases():
    assert wilcoxon_log_ratio([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert wilcoxon_log_ratio([1.0], [2.0]) == 1.0
    assert wilcoxon_log_ratio([], []) == 1.0
    # non-positive pairs are dropped
    logs = [0.1, -0.2, 0.3, 0.4, 0.5, 0.6]
    base, new = [3.0] * 6, list(3.0 * np.exp(logs))
    assert wilcoxon_log_ratio(base + [0.0, 1.0], new + [5.0, -1.0]) == wilcoxon_log_ratio(base, new)


# --- mann_whitney ----------------------------------------------------------------------------

def test_mann_whitney_separated():
    # exact method for small untied samples: the most extreme arrangement of 5 vs 6
    assert mann_whitney([1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]) == pytest.approx(2 / math.comb(11, 5))
    rng = np.random.default_rng(3)
    assert mann_whitney(rng.normal(0, 1, 40), rng.normal(3, 1, 40)) < 1e-6


def test_mann_whitney_empty_and_equal():
    assert mann_whitney([], [1.0, 2.0]) == 1.0
    assert mann_whitney([1.0], []) == 1.0
    assert mann_whitney([2.0, 2.0], [2.0, 2.0, 2.0]) == 1.0


# --- bh_adjust -------------------------------------------------------------------------------

def bh_step_up(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # from the largest p down
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adjusted[i] = running
    return adjusted


def test_bh_against_step_up():
    p = [0.01, 0.04, 0.03, 0.20, 0.005]
    # hand: sorted .005,.01,.03,.04,.20 -> .025,.025,.05,.05,.20
    assert bh_step_up(p) == pytest.approx([0.025, 0.05, 0.05, 0.20, 0.025])
    assert bh_adjust(p) == pytest.approx(bh_step_up(p))


def test_bh_nan_kept_in_place_and_empty():
    out = bh_adjust([0.01, NAN, 0.04, 0.03, 0.20, NAN, 0.005])
    assert math.isnan(out[1]) and math.isnan(out[5])
    kept = [out[i] for i in (0, 2, 3, 4, 6)]
    assert kept == pytest.approx(bh_step_up([0.01, 0.04, 0.03, 0.20, 0.005]))
    assert bh_adjust([]) == []
    assert all(math.isnan(x) for x in bh_adjust([NAN]))


# --- min_achievable_p / low_power ------------------------------------------------------------

def test_min_achievable_p_examples():
    assert min_achievable_p("mcnemar", 5) == pytest.approx(0.0625)
    assert min_achievable_p("mcnemar", 6) == pytest.approx(0.03125)
    assert min_achievable_p("mcnemar", 1) == 1.0
    assert min_achievable_p("wilcoxon", 5) == pytest.approx(2 / 32)
    assert min_achievable_p("mannwhitney", 3, 3) == pytest.approx(2 / 20)
    assert min_achievable_p("mannwhitney", 1, 1) == 1.0
    for test in ("mcnemar", "wilcoxon", "mannwhitney"):
        assert min_achievable_p(test, 0, 5) == 1.0
    assert min_achievable_p("mannwhitney", 5, 0) == 1.0
    with pytest.raises(ValueError):
        min_achievable_p("ttest", 5)


def test_low_power():
    assert low_power("mcnemar", 5, 0.05) is True
    assert low_power("mcnemar", 6, 0.05) is False
    assert low_power("wilcoxon", 4, 0.05) is True
    assert low_power("mannwhitney", 3, 0.05, n2=3) is True
    assert low_power("mannwhitney", 4, 0.05, n2=4) is False  # 2/70


# --- verdict_mark ----------------------------------------------------------------------------

@pytest.mark.parametrize("change,threshold,p,higher,relative,mark", [
    # latency ratio (higher is worse), factor 1.10
    (1.25, 1.10, 0.001, False, True, "+"),
    (0.80, 1.10, 0.001, False, True, "-"),
    (1.25, 1.10, 0.20, False, True, "~"),
    (0.80, 1.10, NAN, False, True, "~"),
    (1.05, 1.10, 0.001, False, True, " "),
    (0.95, 1.10, 0.001, False, True, " "),
    (1.10, 1.10, 0.001, False, True, "+"),       # boundary counts as past
    (1 / 1.10, 1.10, 0.001, False, True, "-"),
    # throughput ratio (higher is better)
    (1.25, 1.10, 0.001, True, True, "-"),
    (0.80, 1.10, 0.001, True, True, "+"),
    # compliance difference (higher is better), delta 0.02
    (0.05, 0.02, 0.001, True, False, "-"),
    (-0.05, 0.02, 0.001, True, False, "+"),
    (-0.05, 0.02, 0.30, True, False, "~"),
    (0.01, 0.02, 0.001, True, False, " "),
    (-0.02, 0.02, 0.001, True, False, "+"),
    # error-rate difference (higher is worse)
    (0.05, 0.02, 0.001, False, False, "+"),
    (-0.05, 0.02, 0.001, False, False, "-"),
    (0.05, 0.02, 0.05, False, False, "~"),       # p == alpha is not significant
])
def test_verdict_mark(change, threshold, p, higher, relative, mark):
    assert verdict_mark(change, threshold, p, 0.05, higher, relative) == mark


def test_verdict_mark_bad_threshold():
    with pytest.raises(ValueError):
        verdict_mark(1.2, 1.0, 0.01, 0.05, True, True)
    with pytest.raises(ValueError):
        verdict_mark(0.1, 0.0, 0.01, 0.05, True, False)


# --- mean_win_rate ---------------------------------------------------------------------------

def test_mean_win_rate_by_hand():
    table = {
        "A": {"acc": 0.9, "lat": 10.0, "note": 1.0},
        "B": {"acc": 0.9, "lat": 20.0, "note": 2.0},
        "C": {"acc": 0.5, "lat": None},
        "D": {"acc": None, "lat": NAN},
    }
    # acc: A ties B and beats C -> 1.5/2; B the same; C beats nobody -> 0.
    # lat (lower better): only A and B have values; A beats B -> 1; B -> 0. C has no lat.
    # "note" has no direction and is ignored. D has no value anywhere -> None.
    out = mean_win_rate(table, {"acc": True, "lat": False})
    assert list(out) == ["A", "B", "C", "D"]
    assert out["A"] == pytest.approx((0.75 + 1.0) / 2)
    assert out["B"] == pytest.approx((0.75 + 0.0) / 2)
    assert out["C"] == pytest.approx(0.0)
    assert out["D"] is None


def test_mean_win_rate_lone_value_column_skipped():
    out = mean_win_rate({"A": {"x": 1.0, "y": 5.0}, "B": {"x": 2.0}}, {"x": True, "y": True})
    assert out == {"A": 0.0, "B": 1.0}


# --- tie_groups ------------------------------------------------------------------------------

def test_tie_groups_leader_and_two_not_different():
    scores = [0.70, 0.90, 0.85, 0.50, 0.88]
    p = [0.001, 0.0, 0.30, 0.0001, 0.08]  # the leader's own p (0.0) is ignored
    assert tie_groups(scores, p, 0.05, True) == ["4", "1–3", "1–3", "5", "1–3"]


def test_tie_groups_lower_is_better():
    latencies = [12.0, 10.0, 30.0, 11.0]
    p = [0.5, 1.0, 0.001, 0.01]
    assert tie_groups(latencies, p, 0.05, False) == ["1–2", "1–2", "4", "3"]


def test_tie_groups_non_adjacent_member_and_edges():
    assert tie_groups([1.0, 0.9, 0.8], [1.0, 0.01, 0.5], 0.05, True) == ["1–2", "3", "1–2"]
    assert tie_groups([0.9, 0.9], [1.0, 0.01], 0.05, True) == ["1", "2"]  # input order breaks ties
    assert tie_groups([3.0, 1.0, 2.0], [1.0, 0.01, 0.01], 0.05, True) == ["1", "3", "2"]
    assert tie_groups([0.4], [NAN], 0.05, True) == ["1"]
    assert tie_groups([], [], 0.05, True) == []
