"""An AWRS step finished from the engine's mask (masked_rest.StepOracle) has the law of the walk:
the joint law of (sample, pass-1 rejections, pass-2 rejections) against exact Plackett-Luce
enumeration on small vocabularies (both the Poisson and the Bernoulli way of drawing the
rejections are reached), closed-form expectations on a vocabulary of several blocks, and the
toy world's Zhat through the real llguidance engine with the sampler's mask_after."""
from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from harness.engines.bitmask import from_bool
from harness.samplers.awrs import paper_walk, recursive_walk, visitor
from harness.samplers.masked_rest import StepOracle
from harness.samplers.smc import AWRSSampler, mask_budget
from harness.samplers.visiting import step_tables


class ListMatcher:
    """A matcher over a fixed allowed set, counting what it is asked."""

    def __init__(self, allowed) -> None:
        self.allowed = np.asarray(allowed, dtype=bool)
        self.checks = self.masks = 0

    def check(self, t: int) -> bool:
        self.checks += 1
        return bool(self.allowed[t])

    def fill_mask(self, bitmask) -> None:
        self.masks += 1
        bitmask[:] = from_bool(self.allowed)


def exact_law(p, allowed) -> dict[tuple[int, int, int], float]:
    """P(x, n1, n2) of the paper step: both passes enumerated, probabilities of sampling without
    replacement from p taken exactly (Fractions)."""
    p = [Fraction(v) for v in p]
    law: Counter = Counter()

    def walk(removed, prob, x, n1, n2):
        left = [t for t in range(len(p)) if t not in removed]
        total = sum(p[t] for t in left)
        for t in left:
            q = prob * p[t] / total
            if not allowed[t]:
                walk(removed | {t}, q, x, n1 + (x < 0), n2 + (x >= 0))
            elif x < 0:
                walk(removed, q, t, n1, n2)  # pass 2: pass-1 rejections stay removed, x does not
            else:
                law[(x, n1, n2)] += q
    walk(frozenset(), Fraction(1), -1, 0, 0)
    return {k: float(v) for k, v in law.items()}


@pytest.mark.parametrize("p, allowed", [
    ([0.40, 0.25, 0.15, 0.10, 0.06, 0.04], [False, False, True, False, True, False]),
    ([0.30, 0.30, 0.20, 0.15, 0.04, 0.01], [False, False, False, False, False, True]),
    ([0.5, 0.3, 0.1, 0.05, 0.05], [False, True, False, False, True]),
])
@pytest.mark.parametrize("after", [0, 1, 3])
def test_paper_step_law_matches_enumeration(p, allowed, after):
    exact = exact_law(p, allowed)
    counts = joint_counts(p, allowed, after, 12000, seed=after * 7 + len(p))
    keys = sorted(exact, key=exact.get, reverse=True)
    big = [k for k in keys if exact[k] * 12000 >= 5]
    observed = [counts.get(k, 0) for k in big]
    expected = [exact[k] * 12000 for k in big]
    rest_o, rest_e = 12000 - sum(observed), 12000 - sum(expected)
    assert set(counts) <= set(exact), set(counts) - set(exact)
    if rest_e > 0:
        observed.append(rest_o)
        expected.append(rest_e)
    assert stats.chisquare(observed, expected).pvalue > 1e-3, (observed, [round(e) for e in expected])


def joint_counts(p, allowed, after, n, seed):
    """Counts of (x, n1, n2) over n steps finished from the mask after `after` checks: n1 and n2
    read off the oracle-run walk by recording what one_pass returned."""
    import harness.samplers.awrs as awrs

    logp = np.log(np.asarray(p, dtype=np.float64) / sum(p))
    rng = np.random.default_rng(seed)
    matcher = ListMatcher(allowed)
    passes: list[tuple[int, int]] = []
    real = awrs.one_pass

    def spy(order, check, excluded):
        out = real(order, check, excluded)
        passes.append((out[0], len(out[1])))
        return out
    counts: Counter = Counter()
    awrs.one_pass = spy
    try:
        for _ in range(n):
            tables = step_tables(logp)
            passes.clear()
            step = paper_walk(tables, StepOracle(matcher, tables, rng, after), visitor(tables, rng))
            (x, n1), (_, n2) = passes
            assert step.token == x and step.evaluations == n1 + n2 + 2
            counts[(x, n1, n2)] += 1
    finally:
        awrs.one_pass = real
    assert matcher.checks <= after * 2 * n
    return counts


def many_blocks(seed=3, vocab=3000, n_allowed=12):
    rng = np.random.default_rng(seed)
    p = rng.lognormal(0.0, 2.0, vocab)
    p /= p.sum()
    allowed = np.zeros(vocab, dtype=bool)
    allowed[rng.choice(vocab, n_allowed, replace=False)] = True
    return p, allowed


@pytest.mark.parametrize("walk", ["paper", "recursive"])
@pytest.mark.parametrize("after", [0, 5])
def test_many_blocks_expectations(walk, after):
    """Three blocks: x ~ p restricted to A, E[w] = P(A) (unbiased), and for the paper step
    E[n1] = sum over disallowed t of p(t) / (p(t) + P(A)) (t arrives before the first allowed)."""
    p, allowed = many_blocks()
    logp = np.log(p)
    p_a = float(p[allowed].sum())
    rng = np.random.default_rng(11 + after)
    matcher = ListMatcher(allowed)
    n = 3000
    xs, ws = Counter(), []
    for _ in range(n):
        tables = step_tables(logp)
        oracle = StepOracle(matcher, tables, rng, after)
        fn = paper_walk if walk == "paper" else recursive_walk
        step = fn(tables, oracle, visitor(tables, rng))
        xs[step.token] += 1
        ws.append(math.exp(step.log_weight))
    ids = np.flatnonzero(allowed)
    expected = p[ids] / p_a * n
    big = expected >= 5
    obs = np.array([xs[i] for i in ids])
    assert stats.chisquare(np.append(obs[big], obs[~big].sum()),
                           np.append(expected[big], expected[~big].sum())).pvalue > 1e-3
    ws = np.array(ws)
    assert abs(ws.mean() - p_a) < 4 * ws.std() / math.sqrt(n), (ws.mean(), p_a)
    assert matcher.masks == n if after == 0 else 0 < matcher.masks <= n  # at most one mask a step


def test_many_blocks_rejection_count():
    p, allowed = many_blocks()
    p_a = float(p[allowed].sum())
    b = p[~allowed]
    mean_n1 = float(np.sum(b / (b + p_a)))
    counts = []
    import harness.samplers.awrs as awrs
    real = awrs.one_pass
    passes: list[int] = []

    def spy(order, check, excluded):
        out = real(order, check, excluded)
        passes.append(len(out[1]))
        return out
    awrs.one_pass = spy
    try:
        rng = np.random.default_rng(5)
        matcher = ListMatcher(allowed)
        for _ in range(3000):
            tables = step_tables(np.log(p))
            passes.clear()
            paper_walk(tables, StepOracle(matcher, tables, rng, 2), visitor(tables, rng))
            counts.append(passes[0])
    finally:
        awrs.one_pass = real
    counts = np.array(counts)
    assert abs(counts.mean() - mean_n1) < 4 * counts.std() / math.sqrt(len(counts)), (counts.mean(), mean_n1)


def test_no_allowed_token_fails_without_walking_the_vocabulary():
    p, _ = many_blocks()
    tables = step_tables(np.log(p))
    matcher = ListMatcher(np.zeros(len(p), dtype=bool))
    rng = np.random.default_rng(0)
    step = paper_walk(tables, StepOracle(matcher, tables, rng, 4), visitor(tables, rng))
    assert step.log_weight == -math.inf and matcher.checks == 4 and matcher.masks == 1
    assert not matcher.allowed[step.token]


def test_mask_after_setting():
    assert mask_budget(None) is None and mask_budget("never") is None and mask_budget(0) == 0
    for bad in (-1, 2.5, "often", True):
        with pytest.raises(ValueError):
            mask_budget(bad)
    assert AWRSSampler(mask_after=16).settings()["mask_after"] == 16
    assert AWRSSampler().settings()["mask_after"] == "never"


@pytest.mark.parametrize("after", [0, 1])
def test_recursive_step_is_properly_weighted(after):
    """RAWRS finished from the mask: E[w 1{x = t}] = p(t) c(t) for every token (z-tests), where
    the extra token after an acceptance decides the factor (x holds much of the mass left)."""
    p = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    allowed = np.array([False, True, False, True, False])
    logp = np.log(p)
    rng = np.random.default_rng(17 + after)
    matcher = ListMatcher(allowed)
    n = 20000
    contrib = np.zeros((n, len(p)))
    for i in range(n):
        tables = step_tables(logp)
        step = recursive_walk(tables, StepOracle(matcher, tables, rng, after), visitor(tables, rng))
        contrib[i, step.token] = math.exp(step.log_weight)
    mean, se = contrib.mean(axis=0), contrib.std(axis=0) / math.sqrt(n)
    target = p * allowed
    assert np.all(np.abs(mean - target) <= 4 * se + 1e-12), (mean, target, se)


def test_toy_zhat_unbiased_with_llguidance_masks():
    """The toy world of test_smc through the real llguidance engine, every step finished from its
    mask after one check: Zhat still averages to P(L) (ALGORITHMS.md 7.4), and masks were used."""
    from harness.engines import ENGINES
    from harness.lm.tabular import toy_binary_lm
    from tests.test_smc import P_L, TOY

    lm = toy_binary_lm()
    compiled = ENGINES.create("llguidance", lm.tokenizer).compile(TOY)
    sampler = AWRSSampler(mask_after=1)
    gens = [sampler.generate(lm, compiled.matcher(), [], 10, seed=s) for s in range(3000)]
    z = np.array([math.exp(g.extra["log_zhat"]) for g in gens])
    assert abs(z.mean() - P_L) < 3.5 * z.std() / math.sqrt(len(z)), (z.mean(), P_L)
    assert sum(len(g.mask_times) for g in gens) > 0


def test_allowed_tokens_without_mass_follow_the_gumbel_order():
    """Allowed logits 100+ below the top have p = 0 in float32: the walk rejects all positive mass,
    then takes the zero-mass tokens by logp. From the mask: one mask, the paper weight 0, and in
    LCD mode (improper) x ~ softmax(logp) over the allowed tokens (chi-square)."""
    from harness.samplers.awrs import IMPROPER
    from harness.samplers.visiting import logit_tables

    vocab = 2500
    logits = np.zeros(vocab, dtype=np.float32)
    logits[:40] = -2.0
    ids = np.array([7, 1500, 2400])
    logits[ids] = [-100.0, -101.0, -102.5]
    logits[1800:1900] = -120.0  # disallowed zero-mass tokens: some come before the allowed ones
    allowed = np.zeros(vocab, dtype=bool)
    allowed[ids] = True
    rng = np.random.default_rng(23)
    matcher = ListMatcher(allowed)
    tables = logit_tables(logits)
    step = paper_walk(tables, StepOracle(matcher, tables, rng, 3), visitor(tables, rng))
    assert step.log_weight == -math.inf and matcher.masks == 1 and matcher.checks == 3
    n = 3000
    xs = Counter()
    for _ in range(n):
        tables = logit_tables(logits)
        xs[paper_walk(tables, StepOracle(matcher, tables, rng, 3), visitor(tables, rng), IMPROPER).token] += 1
    w = np.exp(logits[ids].astype(np.float64) - logits[ids].max())
    assert set(xs) <= set(ids.tolist())
    assert stats.chisquare([xs[i] for i in ids], w / w.sum() * n).pvalue > 1e-3
