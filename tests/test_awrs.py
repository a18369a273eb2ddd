"""AWRS step is properly weighted: E[w 1{x=t}] = p(t) c(t) for every token (ALGORITHMS.md 7.2),
by exact enumeration on 250 random cases; the three known wrong variants fail the same test;
the sampled step (Gumbel visiting) matches the enumeration by simulation."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from harness.samplers.awrs import PAPER, Estimator, exact_weights, paper_step, recursive_step

# Each known wrong variant with the numbers ALGORITHMS.md 7.2 gives for it on these 250 cases:
# failing cases and the worst per-token error.
WRONG = {
    "no second pass (weight 1 - R)": (Estimator("one-pass", second_pass=False), 218, 0.454),
    "x removed before pass 2": (Estimator("remove-x", remove_x_before_pass2=True), 218, 0.279),
    "only pass-2 rejections counted": (Estimator("n2-only", count_pass1_rejections=False), 218, 0.173),
}


def cases(n=250, seed=1):
    """ALGORITHMS.md 7.1: vocabulary 2-6, integer weights 1-5, allowed with probability 1/2."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        v = rng.randint(2, 6)
        weights = [rng.randint(1, 5) for _ in range(v)]
        allowed = [rng.random() < 0.5 for _ in range(v)]
        if any(allowed):
            total = sum(weights)
            out.append(([Fraction(w, total) for w in weights], allowed))
    return out


def worst_error(estimator):
    errors = []
    for p, c in cases():
        ew, _ = exact_weights(p, c, estimator)
        errors.append(max(abs(ew[t] - float(p[t]) * c[t]) for t in range(len(p))))
    return errors


def test_paper_estimator_is_properly_weighted_per_token():
    errors = worst_error(PAPER)
    assert len(errors) == 250 and max(errors) < 1e-12


@pytest.mark.parametrize("variant", sorted(WRONG))
def test_wrong_variants_fail(variant):
    estimator, expected_failing, expected_worst = WRONG[variant]
    errors = worst_error(estimator)
    assert sum(e > 1e-9 for e in errors) == expected_failing
    assert round(max(errors), 3) == expected_worst


def test_sampled_token_follows_lcd_and_two_token_hand_check():
    for p, c in cases(40):
        _, px = exact_weights(p, c)
        z = sum(float(p[t]) for t in range(len(p)) if c[t])
        for t in range(len(p)):
            assert abs(px[t] - (float(p[t]) / z if c[t] else 0.0)) < 1e-12
    a = Fraction(3, 10)  # two tokens, only the first allowed, with probability a: E[w] = a
    ew, _ = exact_weights([a, 1 - a], [True, False])
    assert abs(ew[0] - 0.3) < 1e-12


def recursive_exact(p, c):
    """Enumerate RAWRS: one pass in without-replacement order, plus the one extra check."""
    n = len(p)
    ew = [0.0] * n

    def walk(visited, prob, log_w):
        left = [t for t in range(n) if t not in visited]
        total = sum(p[t] for t in left)
        for t in left:
            q = p[t] / total
            pr = prob * q
            if c[t]:
                rest = [u for u in left if u != t]
                rest_total = sum(p[u] for u in rest)
                if not rest:
                    ew[t] += float(pr) * math.exp(log_w) * float(q)
                for u in rest:  # the next token in the same order
                    pu = pr * p[u] / rest_total
                    ew[t] += float(pu) * math.exp(log_w) * (1.0 if c[u] else float(q))
            else:
                walk(visited | {t}, pr, log_w + math.log1p(-float(q)) if q < 1 else -math.inf)

    walk(frozenset(), Fraction(1), 0.0)
    return ew


def test_recursive_variant_is_properly_weighted():
    for p, c in cases():
        ew = recursive_exact(p, c)
        assert max(abs(ew[t] - float(p[t]) * c[t]) for t in range(len(p))) < 1e-12


@pytest.mark.parametrize("kind", ["paper", "recursive"])
def test_sampled_steps_match_the_exact_expectation(kind):
    """The production step, with real Gumbel visiting, against the enumeration (simulation)."""
    rng = np.random.default_rng(0)
    for p, c in cases(6, seed=3):
        logp = np.log(np.array([float(x) for x in p]))
        n = 20000
        acc = np.zeros(len(p))
        for _ in range(n):
            step = (paper_step if kind == "paper" else recursive_step)(logp, lambda t: c[t], rng)
            if np.isfinite(step.log_weight):
                acc[step.token] += math.exp(step.log_weight)
        target = np.array([float(p[t]) * c[t] for t in range(len(p))])
        assert np.all(np.abs(acc / n - target) < 0.02), (acc / n, target)


def test_no_allowed_token_gives_zero_weight_and_scaling_scales_the_weight():
    rng = np.random.default_rng(0)
    logp = np.log(np.array([0.5, 0.3, 0.2]))
    dead = paper_step(logp, lambda t: False, rng)
    assert dead.log_weight == -math.inf and dead.token in (0, 1, 2)
    a = paper_step(logp, lambda t: t == 1, np.random.default_rng(5), log_zp=math.log(2.0))
    b = paper_step(logp, lambda t: t == 1, np.random.default_rng(5))
    assert abs(a.log_weight - b.log_weight - math.log(2.0)) < 1e-12


def test_evaluations_near_two_over_z():
    """With allowed mass Z, a step costs at most about 2/Z checks on average (ALGORITHMS.md 3.6)."""
    rng = np.random.default_rng(1)
    v = 1000
    logits = rng.normal(size=v)
    logp = logits - np.log(np.exp(logits).sum())
    allowed = rng.random(v) < 0.3
    z = float(np.exp(logp)[allowed].sum())
    evals = [paper_step(logp, lambda t: bool(allowed[t]), rng).evaluations for _ in range(2000)]
    assert np.mean(evals) <= 2.2 / z


@pytest.mark.parametrize("max_redraws", [64, 0])
def test_cheap_visiting_order_is_sampling_without_replacement(max_redraws):
    """Inverse-CDF draws with repeats dropped (and the Gumbel fallback, forced by max_redraws=0)
    give the Plackett-Luce distribution of the first two tokens, with a removed token skipped."""
    from itertools import islice

    from harness.samplers.awrs import without_replacement

    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    removed = {3}
    rng = np.random.default_rng(7)
    n = 40000
    counts: dict[tuple[int, int], int] = {}
    for _ in range(n):
        pair = tuple(islice(without_replacement(np.log(p), rng, removed, max_redraws), 2))
        counts[pair] = counts.get(pair, 0) + 1
    q = p.copy()
    q[3] = 0.0
    q /= q.sum()
    for (a, b), k in counts.items():
        assert 3 not in (a, b)
        exact = q[a] * q[b] / (1 - q[a])
        assert abs(k / n - exact) < 0.01, ((a, b), k / n, exact)


def test_step_tables_are_exact_on_a_large_vocabulary():
    """One exp per step, a float64 running sum: the cdf's last entry is the total mass to 1e-9."""
    from harness.lm.base import log_softmax, softmax_pair
    from harness.samplers.awrs import step_tables

    x = np.random.default_rng(0).normal(size=262144).astype(np.float32) * 4
    logp, p = softmax_pair(x)
    assert np.allclose(logp, log_softmax(x), atol=1e-6) and np.allclose(p, np.exp(log_softmax(x)), rtol=1e-5)
    _, cdf = step_tables(logp, p)
    assert cdf.dtype == np.float64 and abs(cdf[-1] - 1.0) < 1e-6


def test_block_draws_follow_p_across_blocks():
    """Tokens spread over several blocks (and a partial last block) are drawn with their probabilities,
    boundary tokens of a block included."""
    from itertools import islice

    from harness.samplers.awrs import BLOCK, without_replacement

    vocab = 3 * BLOCK + 100
    hot = [0, BLOCK - 1, BLOCK, 2 * BLOCK + 5, vocab - 1]
    p = np.full(vocab, 1e-9)
    p[hot] = [0.3, 0.25, 0.2, 0.15, 0.1]
    p /= p.sum()
    rng = np.random.default_rng(3)
    n = 30000
    first = [next(islice(without_replacement(np.log(p), rng), 1)) for _ in range(n)]
    values, counts = np.unique(first, return_counts=True)
    assert set(values.tolist()) <= set(hot) | set(range(vocab))
    for t in hot:
        assert abs(counts[values.tolist().index(t)] / n - p[t]) < 0.01, t
