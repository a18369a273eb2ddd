"""Adaptive weighted rejection sampling (AWRS), one step: ALGORITHMS.md section 3.

Tokens are visited in decreasing Gumbel-key order (sampling without replacement from the LM)
and checked one at a time with the engine's single-token check; the first allowed token is
the sample, an exact draw from the locally constrained distribution. With proper weights on,
a second pass (fresh noise, pass-1 rejections still removed, x kept) gives the paper's
estimator  w = Zp * (1 - R) / (n + 1),  unbiased for the allowed mass Z(u):
E[w 1{x = t}] = p(t) c(t). The recursive variant (RAWRS) needs one pass and at most one
extra check. The weight logic is separate from the random visiting, so tests can enumerate
every visiting sequence exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Estimator:
    """Which weight a two-pass AWRS step returns. PAPER is the correct one; the flags exist
    so tests can show that the known wrong variants fail the same exactness test."""

    name: str
    second_pass: bool = True
    remove_x_before_pass2: bool = False
    count_pass1_rejections: bool = True
    proper: bool = True  # False: pass 1 only and weight 1, i.e. exact LCD sampling (ALGORITHMS.md 3.3, 8)

    def log_weight(self, pass1_rejected_mass: float, n1: int, n2: int) -> float:
        """log((1 - R) / (n + 1)) for normalised proposal probabilities (Zp applied by the caller)."""
        if not self.proper:
            return 0.0
        one_minus_r = 1.0 - pass1_rejected_mass
        if one_minus_r <= 0.0:
            return -math.inf
        if not self.second_pass:
            return math.log(one_minus_r)
        n = (n1 if self.count_pass1_rejections else 0) + n2
        return math.log(one_minus_r) - math.log(n + 1)


PAPER = Estimator("paper")
IMPROPER = Estimator("improper", second_pass=False, proper=False)


def gumbel_order(logp: np.ndarray, rng: np.random.Generator, removed: set[int] | frozenset[int] = frozenset(),
                 chunk: int = 64) -> Iterator[int]:
    """Tokens in decreasing order of logp + Gumbel noise (= sampling without replacement);
    stops at keys of -inf. Sorts lazily in chunks: a 262k vocabulary is never fully sorted."""
    keys = logp + rng.gumbel(size=logp.shape[0])
    if removed:
        keys[list(removed)] = -np.inf
    remaining = keys.shape[0]
    while remaining > 0:
        k = min(chunk, remaining)
        top = np.argpartition(-keys, k - 1)[:k] if k < keys.shape[0] else np.arange(keys.shape[0])
        top = top[np.argsort(-keys[top], kind="stable")]
        for t in top:
            if not np.isfinite(keys[t]):
                return
            yield int(t)
        keys[top] = -np.inf
        remaining -= k
        chunk *= 4


BLOCK = 1024


def step_tables(logp: np.ndarray, p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """p and the running sum of its blocks of BLOCK tokens, computed once per step and shared by
    both passes. A draw finds its block in the block sums, then its token in that block's own
    running sum: exact, and ~0.15 ms a step instead of a full cumulative sum over 262k tokens
    (~0.9 ms). Sums are float64: a float32 running sum over 262k tokens drifts by ~1e-3."""
    p = np.exp(logp) if p is None else p
    pad = (-len(p)) % BLOCK
    blocks = (np.concatenate([p, np.zeros(pad, dtype=p.dtype)]) if pad else p).reshape(-1, BLOCK)
    return p, np.cumsum(blocks.sum(axis=1, dtype=np.float64))


def _draw(p: np.ndarray, block_cdf: np.ndarray, r: float) -> int:
    """The token whose interval of the cumulative distribution holds r (0 <= r < total)."""
    b = int(np.searchsorted(block_cdf, r, side="right"))
    if b >= len(block_cdf):
        return len(p)
    start = b * BLOCK
    local = np.cumsum(p[start:start + BLOCK], dtype=np.float64)
    i = int(np.searchsorted(local, r - (block_cdf[b - 1] if b else 0.0), side="right"))
    return start + min(i, len(local) - 1)


def without_replacement(logp: np.ndarray, rng: np.random.Generator, removed: set[int] | frozenset[int] = frozenset(),
                        max_redraws: int = 64, tables: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[int]:
    """The same order distribution as `gumbel_order`, cheaper on a large vocabulary: draw from p
    by inverse CDF and redraw tokens already seen (drawing with replacement and dropping repeats
    is sampling without replacement). When repeats pile up (most of the mass already seen), the
    rest of the order comes from Gumbel keys over the unseen tokens, which is the same
    conditional distribution. `tables` = step_tables(logp), when the caller has them already."""
    p, block_cdf = tables if tables is not None else step_tables(logp)
    total = float(block_cdf[-1])
    seen = set(removed)
    seen_mass = float(p[list(seen)].sum()) if seen else 0.0
    redraws = 0
    while total - seen_mass > 1e-9 * total:
        t = _draw(p, block_cdf, rng.random() * total)
        if t >= len(p) or t in seen or p[t] == 0.0:
            redraws += 1
            if redraws > max_redraws:
                break
            continue
        redraws = 0
        seen.add(t)
        seen_mass += float(p[t])
        yield t
    yield from gumbel_order(logp, rng, seen)


@dataclass
class StepResult:
    token: int          # the sample (a rejected token with log_weight -inf when nothing is allowed)
    log_weight: float
    evaluations: int    # constraint checks made (both passes; repeats of x counted)


def paper_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
               estimator: Estimator = PAPER, log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """Two-pass AWRS over normalised log-probabilities `logp` (log_zp = log of the kept LM mass;
    p = exp(logp) when the caller has it)."""
    tables = step_tables(logp, p)
    p = tables[0]
    evals = 0
    rejected: list[int] = []
    r_mass = 0.0
    x = -1
    for t in without_replacement(logp, rng, tables=tables):
        evals += 1
        if check(t):
            x = t
            break
        rejected.append(t)
        r_mass += float(p[t])
    if x < 0:
        return StepResult(rejected[-1] if rejected else 0, -math.inf, evals)
    n2 = 0
    if estimator.second_pass:
        removed = set(rejected)
        if estimator.remove_x_before_pass2:
            removed.add(x)
        for t in without_replacement(logp, rng, removed, tables=tables):
            evals += 1
            if check(t):
                break
            removed.add(t)
            n2 += 1
    return StepResult(x, estimator.log_weight(r_mass, len(rejected), n2) + log_zp, evals)


def recursive_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
                   log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """RAWRS: one pass; each rejection multiplies w by (1 - q), q the rejected token's probability
    renormalised over what is left; at the first acceptance (renormalised q) one more token in
    the same order is checked: factor 1 if allowed, q if not (or if none is left)."""
    tables = step_tables(logp, p)
    p = tables[0]
    left = float(tables[1][-1])
    log_w = 0.0
    evals = 0
    order = without_replacement(logp, rng, tables=tables)
    last = 0
    for t in order:
        evals += 1
        q = float(p[t]) / left if left > 0 else 1.0
        if check(t):
            nxt = next(order, None)
            if nxt is not None:
                evals += 1
                if not check(nxt):
                    log_w += math.log(q)
            else:
                log_w += math.log(q)
            return StepResult(t, log_w + log_zp, evals)
        log_w += math.log1p(-q) if q < 1.0 else -math.inf
        left -= float(p[t])
        last = t
    return StepResult(last, -math.inf, evals)


def exact_weights(p: Sequence, allowed: Sequence[bool], estimator: Estimator = PAPER):
    """E[w 1{x=t}] for every t by enumerating every visiting sequence of both passes, with the
    probabilities of sampling without replacement taken exactly from `p` (Fractions welcome).
    Returns (expected weight per token, probability of sampling each token)."""
    n = len(p)
    ew = [0.0] * n
    px = [0.0] * n

    def pass2(removed: frozenset[int], prob, x: int, r_mass, n1: int, n2: int) -> None:
        left = [t for t in range(n) if t not in removed]
        total = sum(p[t] for t in left)
        if not left or total == 0:  # nothing left to accept: the pass ends with no success
            w = math.exp(estimator.log_weight(float(r_mass), n1, n2))
            ew[x] += float(prob) * w
            return
        for t in left:
            q = prob * p[t] / total
            if allowed[t]:
                ew[x] += float(q) * math.exp(estimator.log_weight(float(r_mass), n1, n2))
            else:
                pass2(removed | {t}, q, x, r_mass, n1, n2 + 1)

    def pass1(rejected: tuple[int, ...], prob, r_mass) -> None:
        left = [t for t in range(n) if t not in rejected]
        total = sum(p[t] for t in left)
        for t in left:
            q = prob * p[t] / total
            if allowed[t]:
                px[t] += float(q)
                if estimator.second_pass:
                    removed = frozenset(rejected) | ({t} if estimator.remove_x_before_pass2 else frozenset())
                    pass2(removed, q, t, r_mass, len(rejected), 0)
                else:
                    ew[t] += float(q) * math.exp(estimator.log_weight(float(r_mass), len(rejected), 0))
            else:
                pass1(rejected + (t,), q, r_mass + p[t])

    pass1((), 1, 0)
    return ew, px
