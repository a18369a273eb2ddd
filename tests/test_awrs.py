"""AWRS step is properly weighted: E[w 1{x=t}] = p(t) c(t) for every token (ALGORITHMS.md 7.2),
by exact enumeration on 250 random cases; the three known wrong variants fail the same test;
the sampled step (Gumbel visiting) matches the enumeration by simulation."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from harness.lm.base import softmax_pair
from harness.samplers.awrs import (PAPER, Estimator, exact_weights, paper_step, paper_walk, recursive_step,
                                    recursive_walk, step_tables)

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


class _Branch(Exception):
    """A scripted visiting order ran out of script: args[0] are the tokens it could draw next."""


def enumerate_walk(walk, p):
    """Every outcome of one harness step `walk(visit)` with its exact probability (a Fraction).

    The step is run again and again on scripted visiting orders: a depth-first search over its
    draws, each token drawn with its probability renormalised over the tokens neither removed
    nor drawn yet (sampling without replacement, ALGORITHMS.md 3.2). Only draws the step actually
    makes are branched on, so the harness's own code decides when to stop, what to count and
    which weight to return."""
    n = len(p)
    outcomes, scripts = [], [()]
    while scripts:
        script = scripts.pop()
        state = {"pos": 0, "prob": Fraction(1)}

        def visit(removed, script=script, state=state):
            seen = set(removed)
            while len(seen) < n:
                left = [t for t in range(n) if t not in seen]
                if state["pos"] == len(script):
                    raise _Branch(left)
                t = script[state["pos"]]
                state["pos"] += 1
                state["prob"] *= p[t] / sum(p[u] for u in left)
                seen.add(t)
                yield t

        try:
            result = walk(visit)
        except _Branch as branch:
            scripts.extend(script + (t,) for t in branch.args[0])
            continue
        outcomes.append((state["prob"], result))
    return outcomes


def harness_errors(walk, n_cases=250):
    """Worst per-token |E[w 1{x=t}] - p(t) c(t)| of the harness step `walk(tables, check, visit)`
    in each case of ALGORITHMS.md 7.1, by exact enumeration (rational probabilities, float64 weights)."""
    errors = []
    for p, c in cases(n_cases):
        pf = np.array([float(x) for x in p])
        tables = step_tables(np.log(pf), pf)
        outcomes = enumerate_walk(lambda visit: walk(tables, lambda t: c[t], visit), p)
        assert sum(prob for prob, _ in outcomes) == 1
        ew = [0.0] * len(p)
        for prob, res in outcomes:
            if res.log_weight > -math.inf:
                ew[res.token] += float(prob) * math.exp(res.log_weight)
        errors.append(max(abs(ew[t] - float(p[t]) * c[t]) for t in range(len(p))))
    return errors


def test_harness_recursive_step_is_properly_weighted():
    """The harness's own RAWRS step (recursive_walk, which recursive_step runs on Gumbel orders),
    enumerated exactly over every visiting order: exact in 250/250 cases (ALGORITHMS.md 7.2)."""
    errors = harness_errors(recursive_walk)
    assert len(errors) == 250 and max(errors) < 1e-12


def test_harness_paper_step_is_properly_weighted():
    """The same for the harness's paper step (paper_walk): its 1 - R comes from KeptMass."""
    errors = harness_errors(paper_walk, 120)
    assert max(errors) < 1e-12


# Wrong RAWRS variants, injected into the harness's step: (what to patch, replacement, failing
# cases of 250, worst per-token error), numbers from this enumeration.
WRONG_RECURSIVE = {
    "no extra check (factor q always)": ("log_accept_factor", lambda q, nxt: math.log(q), 185, 0.25),
    "extra check ignored (factor 1 always)": ("log_accept_factor", lambda q, nxt: 0.0, 218, 0.454),
    "extra-check factors swapped": ("log_accept_factor", lambda q, nxt: math.log(q) if nxt else 0.0, 250, 0.454),
    "rejections not renormalised": ("KeptMass.remove_all", lambda self, ts: self.removed.extend(ts), 153, 0.26),
}


@pytest.mark.parametrize("variant", sorted(WRONG_RECURSIVE))
def test_wrong_recursive_variants_fail_the_enumeration(variant, monkeypatch):
    import harness.samplers.awrs as awrs

    target, wrong, expected_failing, expected_worst = WRONG_RECURSIVE[variant]
    if target.startswith("KeptMass."):
        monkeypatch.setattr(awrs.KeptMass, target.split(".")[1], wrong)
    else:
        monkeypatch.setattr(awrs, target, wrong)
    errors = harness_errors(recursive_walk)
    assert sum(e > 1e-9 for e in errors) == expected_failing
    assert round(max(errors), 3) == expected_worst


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


# Every path of the visiting order: (OPEN_AFTER, BULK_AFTER, HEAD_SHARE). A block's first fires
# are inverse-CDF draws, then it opens (its tokens' arrivals sorted); after BULK_AFTER visits the
# rest of the order is one race in which the tokens holding HEAD_SHARE of the mass left race as a
# vector and the others as a block race of their own (which switches again after BULK_AFTER).
# Each setting sends the first three visits down other paths.
# (OPEN_AFTER, BULK_AFTER, HEAD_SHARE, SEQUENTIAL): SEQUENTIAL 0 puts the race's paths under test
PATHS = [(2, 128, 1e-6, 0), (1, 128, 1e-6, 0), (3, 128, 1e-6, 0), (1, 1, 1e-6, 0), (2, 2, 1e-6, 0), (1, 1, 0.15, 0),
         (2, 1, 0.3, 0), (2, 128, 1e-6, 1), (2, 128, 1e-6, 2), (1, 1, 0.15, 1), (2, 128, 1e-6, 4)]


@pytest.fixture
def order_path(request, monkeypatch):
    import harness.samplers.visiting as visiting

    open_after, bulk_after, head_share, sequential = request.param
    monkeypatch.setattr(visiting, "SEQUENTIAL", sequential)
    monkeypatch.setattr(visiting, "OPEN_AFTER", open_after)
    monkeypatch.setattr(visiting, "BULK_AFTER", bulk_after)
    monkeypatch.setattr(visiting, "HEAD_SHARE", head_share)
    return request.param


def plackett_luce(q, seq):
    """Probability that sampling without replacement from q starts with seq."""
    prob, left = 1.0, 1.0
    for t in seq:
        prob *= q[t] / left
        left -= q[t]
    return prob


@pytest.mark.parametrize("order_path", PATHS, indirect=True)
def test_visiting_order_is_sampling_without_replacement(order_path):
    """The first three visited tokens, a removed token skipped, against the exact Plackett-Luce
    probabilities by a chi-square test (fixed seed), on every path of the order."""
    from itertools import islice, permutations

    from scipy.stats import chisquare

    from harness.samplers.visiting import without_replacement

    p = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    removed = {3}
    rng = np.random.default_rng(7)
    n = 30000
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        seq = tuple(islice(without_replacement(np.log(p), rng, removed), 3))
        counts[seq] = counts.get(seq, 0) + 1
    q = np.where(np.arange(len(p)) == 3, 0.0, p) / (1 - p[3])
    cats = [seq for seq in permutations([0, 1, 2, 4, 5], 3)]
    assert set(counts) <= set(cats)
    result = chisquare([counts.get(c, 0) for c in cats], [n * plackett_luce(q, c) for c in cats])
    assert result.pvalue > 1e-3, result


def test_gumbel_fallback_order_is_sampling_without_replacement():
    """The fallback order (Gumbel keys on logp, used once no positive mass is left) gives the same
    Plackett-Luce pairs, a removed token skipped."""
    from itertools import islice

    from harness.samplers.visiting import gumbel_order

    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    rng = np.random.default_rng(11)
    n = 20000
    counts: dict[tuple[int, int], int] = {}
    for _ in range(n):
        pair = tuple(islice(gumbel_order(np.log(p), rng, {3}), 2))
        counts[pair] = counts.get(pair, 0) + 1
    q = np.where(np.arange(5) == 3, 0.0, p) / (1 - p[3])
    for (a, b), k in counts.items():
        assert 3 not in (a, b) and a != b
        assert abs(k / n - q[a] * q[b] / (1 - q[a])) < 0.012, ((a, b), k / n)


def test_order_goes_on_past_the_positive_mass_by_logp():
    """Tokens whose probability underflows to 0 but whose logp is finite come after every token of
    positive mass (by the Gumbel fallback); a token of logp -inf never comes."""
    from harness.samplers.visiting import without_replacement

    logp = np.array([-800.0, 0.0, -np.inf, -1.0, -801.0])
    for seed in range(20):
        order = list(without_replacement(logp, np.random.default_rng(seed)))
        assert sorted(order[:2]) == [1, 3] and sorted(order[2:]) == [0, 4], order


@pytest.mark.parametrize("order_path", PATHS, indirect=True)
def test_visiting_order_passes_a_chi_square_test_against_plackett_luce(order_path):
    """The first two visited tokens over a vocabulary of three blocks (hot tokens at block edges,
    a removed token inside a hot block, mass spread thinly over the rest) against the exact
    without-replacement probabilities, by a chi-square test with a fixed seed. Drawing with
    replacement, visiting a removed token or a block located one off fails it."""
    from itertools import islice

    from scipy.stats import chisquare

    from harness.samplers.visiting import BLOCK, step_tables, without_replacement

    vocab = 2 * BLOCK + 37
    hot = [3, BLOCK - 1, BLOCK, BLOCK + 2, vocab - 1]
    removed = 5
    p = np.full(vocab, 0.1 / (vocab - len(hot) - 1))  # the others: 0.1 of the mass, equal shares
    p[hot] = [0.3, 0.25, 0.15, 0.12, 0.08]
    p[removed] = 0.2  # removed: the kept mass is 1, so q = p on the kept tokens
    m, rest = p[0 if 0 not in hot else 1], 0.1  # one other token's mass, all others' mass
    cats = hot + ["other"]
    expected = {}
    for a in cats:
        pa, left_a = (p[a], 1 - p[a]) if a != "other" else (rest, 1 - m)
        for b in cats:
            if a == b and a != "other":
                continue
            pb = p[b] if b != "other" else (rest if a != "other" else rest - m)
            expected[(a, b)] = pa * pb / left_a
    assert abs(sum(expected.values()) - 1) < 1e-9
    rng = np.random.default_rng(2024)
    logp = np.log(p)
    tables = step_tables(logp, p)
    n = 20000
    seen = {key: 0 for key in expected}
    for _ in range(n):
        a, b = islice(without_replacement(logp, rng, {removed}, tables=tables), 2)
        assert a != b and removed not in (a, b)
        seen[(a if a in hot else "other", b if b in hot else "other")] += 1
    keys = sorted(expected, key=str)
    result = chisquare([seen[k] for k in keys], [n * expected[k] for k in keys])
    assert result.pvalue > 1e-3, (result, {k: (seen[k], n * expected[k]) for k in keys})


def test_step_tables_are_exact_on_a_large_vocabulary():
    """One exp per step, float64 block sums: together they are the total mass to 1e-6 (float32 p)."""
    from harness.lm.base import log_softmax, softmax_pair
    from harness.samplers.visiting import step_tables

    x = np.random.default_rng(0).normal(size=262144).astype(np.float32) * 4
    logp, p = softmax_pair(x)
    assert np.allclose(logp, log_softmax(x), atol=1e-6) and np.allclose(p, np.exp(log_softmax(x)), rtol=1e-5)
    _, sums = step_tables(logp, p)
    assert sums.dtype == np.float64 and abs(sums.sum() - 1.0) < 1e-6
    assert abs(sums.sum() - np.sum(p, dtype=np.float64)) < 1e-12


def test_block_draws_follow_p_across_blocks():
    """Tokens spread over several blocks (and a partial last block) are drawn with their probabilities,
    boundary tokens of a block included."""
    from itertools import islice

    from harness.samplers.visiting import BLOCK, without_replacement

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


@pytest.mark.parametrize("mass", [1e-9, 1e-18])
@pytest.mark.parametrize("kind", ["paper", "recursive"])
def test_tiny_allowed_mass_keeps_a_finite_weight(kind, mass):
    """Issue 11 / ALGORITHMS.md 3.3 detail 6: on a full-size vocabulary one token holds all but
    `mass` (in float32 it is exactly 1.0) and the only allowed token holds `mass`. 1 - R taken as
    one minus the rejected float32 mass was 0: weight -inf. Typical weight here: mass (recursive),
    mass / 2 (paper: one rejection)."""
    vocab, big, ok = 262144, 7, 200000
    x = np.full(vocab, -np.inf, dtype=np.float32)
    x[big], x[ok] = 0.0, math.log(mass)
    logp, p = softmax_pair(x)
    assert p[big] == 1.0  # the rounding that hides the allowed mass
    step = paper_step if kind == "paper" else recursive_step
    for seed in range(5):
        res = step(logp, lambda t: t == ok, np.random.default_rng(seed), p=p)
        assert res.token == ok and math.isfinite(res.log_weight), (seed, res)
        assert abs(res.log_weight - math.log(mass)) < 1.0, (seed, res)


def test_block_draw_is_the_inverse_cdf_over_the_kept_tokens():
    """One draw inside a block (step_kernels.draw_offset) on a grid of u: each kept token's share
    of the grid is its probability renormalised over the kept tokens, a zeroed token never comes,
    and the mass left is the kept mass without the token drawn, however small."""
    from harness.samplers.step_kernels import draw_offset

    rng = np.random.default_rng(5)
    local = rng.random(1024) ** 4
    local[[0, 7, 1023]] = [2.0, 30.0, 4.0]
    local[[11, 12, 500]] = 0.0
    q = local / local.sum()
    n = 50000
    counts = np.zeros(1024)
    for k in range(n):
        work = local.copy()
        i, left = draw_offset(work, (k + 0.5) / n)
        counts[i] += 1
        assert work[i] == 0.0 and abs(left - (local.sum() - local[i])) <= 1e-12 * local.sum()
    assert not counts[[11, 12, 500]].any()
    assert np.all(np.abs(counts / n - q) <= 1.0 / n + 1e-12)
    tiny = np.zeros(1024)
    tiny[3], tiny[9] = 1.0, 1e-30  # the kept mass left after drawing the big one: re-summed, not 1 - 1
    i, left = draw_offset(tiny, 0.0)
    assert i == 3 and left == 1e-30


def test_logit_tables_are_exp_of_the_logits_within_an_ulp():
    """The compiled exp of the shifted float32 logits against float64 exp (1 ulp; numpy's float32
    exp is 2.3 ulp off), float64
    block sums exact for the float32 p, logp on demand = log_softmax, and the mass below -87
    (subnormal in float32) zero, a partial last block included."""
    from harness.lm.base import log_softmax
    from harness.samplers.visiting import BLOCK, block_sums, logit_tables

    rng = np.random.default_rng(0)
    x = (rng.normal(size=262144 + 300) * 6).astype(np.float32)
    x[[5, 77]] = x.max() - np.float32(90.0)  # below -87 after the shift
    tables = logit_tables(x)
    truth = np.exp((x - x.max()).astype(np.float64))  # of the float32 shifted logits, as numpy's would be
    live = truth > np.exp(-87.0)
    ulps = np.abs(tables.p[live] - truth[live]) / np.spacing(truth[live].astype(np.float32))
    assert tables.p.dtype == np.float32 and ulps.max() <= 1.1
    assert tables.p[5] == 0.0 and tables.p[77] == 0.0
    assert np.array_equal(tables.sums, block_sums(tables.p)) or np.allclose(tables.sums, block_sums(tables.p), rtol=1e-15)
    assert len(tables.sums) == -(-len(x) // BLOCK)
    assert np.allclose(tables.logp(), log_softmax(x.astype(np.float64)), atol=1e-6)
    assert np.allclose(tables.logp_at([3, 9]), log_softmax(x.astype(np.float64))[[3, 9]], atol=1e-6)
    half = x * np.float32(0.5)
    again = logit_tables(half, tables.buffers)  # the buffers are reused
    assert again.p is tables.p
    assert np.allclose(again.p, np.exp((half - half.max()).astype(np.float64)), rtol=2.5e-7, atol=1e-38)


def test_kept_mass_is_exact_with_many_tokens_removed():
    """The kept mass with a handful or thousands of tokens removed (the numpy grouping by block)
    equals the float64 sum of the kept tokens, even when they hold 1e-12 of the total."""
    from harness.samplers.visiting import step_tables

    rng = np.random.default_rng(3)
    p = rng.random(20000)
    keep = rng.choice(20000, size=50, replace=False)
    p[keep] *= 1e-12
    p /= p.sum()
    tables = step_tables(np.log(p), p)
    for removed in (rng.choice(20000, size=10, replace=False).tolist(), list(set(range(20000)) - set(keep.tolist()))):
        truth = float(np.delete(p, removed).sum(dtype=np.float64))
        assert abs(tables.kept_mass(removed) - truth) <= 1e-12 * truth
