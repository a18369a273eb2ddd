"""Statistics behind `cdbench compare`, `gate` and `leaderboard`.

Every test and interval is scipy's (binomtest, wilcoxon, mannwhitneyu, bootstrap,
false_discovery_control, rankdata); this module only chooses the inputs and the edge cases.
Random procedures take an explicit integer `seed` and give the same result for the same seed.
All results are plain Python floats.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

NAN = float("nan")
EN_DASH = "\u2013"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion `successes / n` (scipy's binomtest).

    n == 0 -> (nan, nan). scipy raises ValueError for successes outside 0..n.
    """
    if n == 0:
        return NAN, NAN
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(base_only: int, new_only: int) -> float:
    """Exact two-sided McNemar p: binomial test of `base_only` of the discordant pairs at 1/2.

    `base_only` = cases only the base run got right, `new_only` = only the new run.
    No discordant pairs -> 1.0.
    """
    n = base_only + new_only
    if n == 0:
        return 1.0
    return float(stats.binomtest(base_only, n, 0.5).pvalue)


def _as_paired(base: Sequence[float], new: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(base, dtype=float)
    m = np.asarray(new, dtype=float)
    if b.shape != m.shape or b.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and the same length, got {b.shape} and {m.shape}")
    return b, m


def _mean_diff(b: np.ndarray, m: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(m - b, axis=axis)


def paired_bootstrap_diff(base: Sequence[float], new: Sequence[float], seed: int, n_resamples: int = 2000,
                          confidence: float = 0.95) -> tuple[float, float, float]:
    """mean(new - base) over paired cases, with a paired bootstrap interval.

    Returns (diff, low, high). The interval is scipy's BCa; when BCa is degenerate (nan
    bounds or a DegenerateDataWarning) it is the percentile interval from the same seed.
    n == 0 -> (nan, nan, nan); n == 1 -> (d, nan, nan); differences constant up to float
    rounding (relative 1e-12 of the data's magnitude) -> (d, d, d).
    """
    b, m = _as_paired(base, new)
    if b.size == 0:
        return NAN, NAN, NAN
    d = m - b
    diff = float(np.mean(d))
    if b.size < 2:
        return diff, NAN, NAN
    scale = max(1.0, float(np.max(np.abs(np.concatenate([b, m])))))
    if float(np.ptp(d)) <= 1e-12 * scale:
        return diff, diff, diff
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", stats.DegenerateDataWarning)
            try:
                res = stats.bootstrap((b, m), _mean_diff, n_resamples=n_resamples, batch=250,
                                      vectorized=True, paired=True, confidence_level=confidence,
                                      method=method, rng=np.random.default_rng(seed))
            except stats.DegenerateDataWarning:
                continue
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return diff, low, high
    return diff, NAN, NAN


def _cases(cases: Sequence[Sequence[float]]) -> list[np.ndarray]:
    return [np.atleast_1d(np.asarray(c, dtype=float)).ravel() for c in cases]


def _pooled_percentile(cases: list[np.ndarray], idx: np.ndarray, q: float) -> float:
    chosen = [cases[i] for i in idx.astype(int)]
    pool = np.concatenate(chosen) if chosen else np.empty(0)
    return float(np.percentile(pool, q)) if pool.size else NAN


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 and math.isfinite(num) and math.isfinite(den) else NAN


def percentile_ratio(base_cases: Sequence[Sequence[float]], new_cases: Sequence[Sequence[float]], q: float,
                     seed: int, paired: bool, n_resamples: int = 1000,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Ratio NEW/BASE of the q-th percentile (0..100, numpy's linear) of each side's pooled values.

    Each case is a list of values (e.g. per-token mask times) or one value. The percentile
    interval comes from scipy.stats.bootstrap over CASE indices: whole cases are resampled,
    never single values. paired=True draws the same indices for both sides (cases aligned by
    index, same count required); paired=False resamples each side on its own.
    Returns (ratio, low, high). A side with no values -> (nan, nan, nan); a zero base
    percentile -> nan ratio; fewer than 2 cases on a side -> (ratio, nan, nan).
    """
    base, new = _cases(base_cases), _cases(new_cases)
    if paired and len(base) != len(new):
        raise ValueError(f"paired cases must align: {len(base)} base vs {len(new)} new")
    if not any(c.size for c in base) or not any(c.size for c in new):
        return NAN, NAN, NAN
    nb, nn = np.arange(len(base)), np.arange(len(new))
    ratio = _ratio(_pooled_percentile(new, nn, q), _pooled_percentile(base, nb, q))
    if min(len(base), len(new)) < 2:
        return ratio, NAN, NAN

    def statistic(i_base: np.ndarray, i_new: np.ndarray | None = None) -> float:
        i_new = i_base if i_new is None else i_new
        return _ratio(_pooled_percentile(new, i_new, q), _pooled_percentile(base, i_base, q))

    data = (nb,) if paired else (nb, nn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # nan bounds are returned as is
        res = stats.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=False, paired=False,
                              confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(seed))
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


def percentile_interval(cases: Sequence[Sequence[float]], q: float, seed: int, n_resamples: int = 1000,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """The q-th percentile of one run's pooled values, with a bootstrap interval over CASES
    (scipy.stats.bootstrap on case indices: whole cases are resampled, never single values).
    Returns (value, low, high); no values -> (nan, nan, nan); fewer than 2 cases -> (value, nan, nan)."""
    data = _cases(cases)
    if not any(c.size for c in data):
        return NAN, NAN, NAN
    idx = np.arange(len(data))
    value = _pooled_percentile(data, idx, q)
    if len(data) < 2:
        return value, NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((idx,), lambda i: _pooled_percentile(data, i, q), n_resamples=n_resamples,
                              vectorized=False, confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(seed))
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_log_ratio(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p on log(new/base) per paired case (scipy's default method).

    Pairs where either value is non-positive or not finite are dropped. Fewer than 2 pairs
    left, or all log ratios zero -> 1.0. Zero differences are dropped (zero_method="wilcox").
    """
    b, m = _as_paired(base, new)
    keep = (b > 0) & (m > 0) & np.isfinite(b) & np.isfinite(m)
    r = np.log(m[keep] / b[keep])
    if r.size < 2 or not np.any(r != 0):
        return 1.0
    return float(stats.wilcoxon(r).pvalue)


def mann_whitney(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p (scipy's default method) for two independent samples.

    Either side empty -> 1.0; a nan p (degenerate input) -> 1.0.
    """
    b = np.asarray(base, dtype=float)
    m = np.asarray(new, dtype=float)
    if b.size == 0 or m.size == 0:
        return 1.0
    p = float(stats.mannwhitneyu(m, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def bh_adjust(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy.stats.false_discovery_control, method="bh").

    nan entries stay nan in place and are left out of the family; empty -> [].
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return [float(x) for x in out]


def min_achievable_p(test: str, n: int, n2: int = 0) -> float:
    """Smallest two-sided p `test` can give with this many cases (for a low-power note).

    "mcnemar": n discordant pairs -> 2 * 0.5**n; "wilcoxon": n pairs -> 2 / 2**n;
    "mannwhitney": sample sizes n and n2 -> 2 / comb(n + n2, n); all capped at 1.
    n == 0 (or n2 == 0 for mannwhitney) -> 1.0. Unknown test -> ValueError.
    """
    if test == "mcnemar":
        p = 2 * 0.5**n if n > 0 else 1.0
    elif test == "wilcoxon":
        p = 2 / 2**n if n > 0 else 1.0
    elif test == "mannwhitney":
        p = 2 / math.comb(n + n2, n) if n > 0 and n2 > 0 else 1.0
    else:
        raise ValueError(f"unknown test {test!r}; expected 'mcnemar', 'wilcoxon' or 'mannwhitney'")
    return float(min(1.0, p))


def low_power(test: str, n: int, alpha: float, n2: int = 0) -> bool:
    """True when `test` cannot reach p < alpha with these sample sizes at all."""
    return min_achievable_p(test, n, n2) >= alpha


def verdict_mark(change: float, threshold: float, adjusted_p: float, alpha: float, higher_is_better: bool,
                 relative: bool) -> str:
    """asv's mark for one metric: "+" worse, "-" better, "~" past threshold but not significant, " " within.

    relative=True: `change` is NEW/BASE and `threshold` a factor > 1 (past when
    change >= threshold or change <= 1/threshold). relative=False: `change` is NEW-BASE and
    `threshold` a delta > 0 (past when |change| >= threshold). Significant means
    adjusted_p < alpha; a nan p is not significant. A nan change is " ".
    Raises ValueError for a relative threshold <= 1 or an absolute threshold <= 0.
    """
    if relative and not threshold > 1:
        raise ValueError(f"a relative threshold must be a factor > 1, got {threshold}")
    if not relative and not threshold > 0:
        raise ValueError(f"an absolute threshold must be > 0, got {threshold}")
    if relative:
        past = change >= threshold or change <= 1 / threshold
        went_up = change > 1
    else:
        past = abs(change) >= threshold
        went_up = change > 0
    if not past:
        return " "
    if not adjusted_p < alpha:
        return "~"
    return "-" if went_up == higher_is_better else "+"


def _has_value(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def mean_win_rate(table: Mapping[str, Mapping[str, float | None]],
                  higher_is_better: Mapping[str, bool]) -> dict[str, float | None]:
    """HELM's mean win rate per entry (row) over metrics (columns).

    In a column, an entry's win rate is the fraction of the OTHER entries with a value there
    that it beats, ties counting 1/2 (scipy.stats.rankdata, average ranks). An entry's mean win
    rate is the mean over the columns where it has a value (None/nan = none) and at least one
    other entry has one too; no such column -> None. Columns absent from `higher_is_better`
    have no ordering and are ignored, as in HELM. Keys keep the table's order.
    """
    rates: dict[str, list[float]] = {entry: [] for entry in table}
    columns = dict.fromkeys(col for row in table.values() for col in row)
    for col in columns:
        if col not in higher_is_better:
            continue
        entries = [e for e, row in table.items() if _has_value(row.get(col))]
        if len(entries) < 2:
            continue
        values = np.array([float(table[e][col]) for e in entries])  # type: ignore[arg-type]
        ranks = stats.rankdata(values if higher_is_better[col] else -values, method="average")
        for e, rank in zip(entries, ranks):
            rates[e].append((float(rank) - 1) / (len(entries) - 1))
    return {e: (float(np.mean(r)) if r else None) for e, r in rates.items()}


def tie_groups(scores: Sequence[float], p_vs_leader: Sequence[float], alpha: float,
               higher_is_better: bool) -> list[str]:
    """Rank labels in input order, with the leader's statistical tie group sharing "1–k".

    The leader is the best score (ties by input order; nan scores rank last). Entries whose p
    against the leader is >= alpha, or nan (untested, so not shown different), join the
    leader's group of size k, labelled "1–k" ("1" when k == 1); the leader's own p is
    ignored. Every other entry gets k+1, k+2, ... in score order. Empty -> [].
    """
    if len(scores) != len(p_vs_leader):
        raise ValueError(f"{len(scores)} scores but {len(p_vs_leader)} p-values")
    if not scores:
        return []
    sign = -1.0 if higher_is_better else 1.0

    def key(i: int) -> tuple[bool, float, int]:
        s = float(scores[i])
        return (math.isnan(s), sign * s if not math.isnan(s) else 0.0, i)

    order = sorted(range(len(scores)), key=key)
    leader = order[0]
    group = [i for i in order if i == leader or not p_vs_leader[i] < alpha]
    k = len(group)
    labels = [""] * len(scores)
    for i in group:
        labels[i] = "1" if k == 1 else f"1{EN_DASH}{k}"
    in_group = set(group)
    rest = [i for i in order if i not in in_group]
    for pos, i in enumerate(rest, start=k + 1):
        labels[i] = str(pos)
    return labels
