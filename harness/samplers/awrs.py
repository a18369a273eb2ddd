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

    def log_weight(self, log_kept: float, n1: int, n2: int) -> float:
        """log((1 - R) / (n + 1)), given log_kept = log(1 - R), the log of the proposal mass left
        after pass 1's rejections (Zp applied by the caller). The caller computes 1 - R from the
        kept tokens themselves (KeptMass), never as 1 minus a sum of rounded probabilities."""
        if not self.proper:
            return 0.0
        if log_kept == -math.inf:
            return -math.inf
        if not self.second_pass:
            return log_kept
        n = (n1 if self.count_pass1_rejections else 0) + n2
        return log_kept - math.log(n + 1)


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


class KeptMass:
    """The proposal mass of the tokens not yet removed, accurate however small it gets.

    A running `total - removed` loses the kept mass to rounding once it falls below the rounding
    of what was removed: in float32 a token holding all but 1e-9 of the mass is exactly 1.0, and
    `1 - R` came out 0, a spurious -inf weight (ALGORITHMS.md 3.3 detail 6). Here the running
    value is float64, and whenever it has fallen below REFRESH of its last exact value it is
    re-summed over the kept tokens themselves (one vectorised pass). Each re-sum divides the
    kept mass by at least 1/REFRESH, so a step makes only a handful, and only near R = 1."""

    REFRESH = 1e-6

    def __init__(self, p: np.ndarray, total: float) -> None:
        self.p = p
        self.total = float(total)
        self.left = self.exact = self.total
        self.removed: list[int] = []

    def remove(self, t: int) -> None:
        self.removed.append(t)
        pt = float(self.p[t])
        if pt == 0.0:
            return
        self.left -= pt
        if self.left < self.REFRESH * self.exact:
            keep = np.ones(len(self.p), dtype=bool)
            keep[self.removed] = False
            self.left = self.exact = float(np.sum(self.p, where=keep, dtype=np.float64))

    def share(self, t: int) -> float:
        """t's probability renormalised over the kept tokens (t among them)."""
        return min(1.0, float(self.p[t]) / self.left) if self.left > 0.0 else 1.0

    def log_fraction(self) -> float:
        """log of the kept share of the step's total: log(1 - R) for normalised probabilities."""
        return math.log(self.left / self.total) if self.left > 0.0 else -math.inf


Visit = Callable[[frozenset[int]], Iterator[int]]  # removed tokens -> tokens in without-replacement order


def visitor(logp: np.ndarray, rng: np.random.Generator, tables: tuple[np.ndarray, np.ndarray]) -> Visit:
    return lambda removed: without_replacement(logp, rng, removed, tables=tables)


def paper_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
               estimator: Estimator = PAPER, log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """Two-pass AWRS over normalised log-probabilities `logp` (log_zp = log of the kept LM mass;
    p = exp(logp) when the caller has it)."""
    tables = step_tables(logp, p)
    return paper_walk(tables, check, visitor(logp, rng, tables), estimator, log_zp)


def paper_walk(tables: tuple[np.ndarray, np.ndarray], check: Callable[[int], bool], visit: Visit,
               estimator: Estimator = PAPER, log_zp: float = 0.0) -> StepResult:
    """The paper's two passes over the orders `visit` gives: all of the step but the randomness,
    so tests can run it on every visiting order and enumerate its expectation exactly."""
    kept = KeptMass(tables[0], float(tables[1][-1]))
    evals = 0
    x = -1
    for t in visit(frozenset()):
        evals += 1
        if check(t):
            x = t
            break
        kept.remove(t)
    if x < 0:
        return StepResult(kept.removed[-1] if kept.removed else 0, -math.inf, evals)
    n2 = 0
    if estimator.second_pass:
        removed = frozenset(kept.removed) | ({x} if estimator.remove_x_before_pass2 else frozenset())
        for t in visit(removed):
            evals += 1
            if check(t):
                break
            n2 += 1
    return StepResult(x, estimator.log_weight(kept.log_fraction(), len(kept.removed), n2) + log_zp, evals)


def log_accept_factor(q: float, next_allowed: bool) -> float:
    """RAWRS's factor at the acceptance: 1 if the one extra token checked is allowed, else q
    (q = the accepted token's renormalised probability; also q when no token is left)."""
    return 0.0 if next_allowed else math.log(q)


def recursive_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
                   log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """RAWRS: one pass; each rejection multiplies w by (1 - q), q the rejected token's probability
    renormalised over what is left; at the first acceptance (renormalised q) one more token in
    the same order is checked: factor 1 if allowed, q if not (or if none is left)."""
    tables = step_tables(logp, p)
    return recursive_walk(tables, check, visitor(logp, rng, tables), log_zp)


def recursive_walk(tables: tuple[np.ndarray, np.ndarray], check: Callable[[int], bool], visit: Visit,
                   log_zp: float = 0.0) -> StepResult:
    """RAWRS over the order `visit` gives (see paper_walk). A rejection's factor 1 - q is the ratio
    of the kept mass after and before it, so it stays exact when q is within rounding of 1."""
    kept = KeptMass(tables[0], float(tables[1][-1]))
    log_w = 0.0
    evals = 0
    order = visit(frozenset())
    for t in order:
        evals += 1
        if check(t):
            q = kept.share(t)
            nxt = next(order, None)
            evals += nxt is not None
            allowed_next = nxt is not None and check(nxt)
            return StepResult(t, log_w + log_accept_factor(q, allowed_next) + log_zp, evals)
        before = kept.left
        kept.remove(t)
        log_w += math.log(kept.left / before) if kept.left > 0.0 and before > 0.0 else -math.inf
    return StepResult(kept.removed[-1] if kept.removed else 0, -math.inf, evals)


def exact_weights(p: Sequence, allowed: Sequence[bool], estimator: Estimator = PAPER):
    """E[w 1{x=t}] for every t by enumerating every visiting sequence of both passes, with the
    probabilities of sampling without replacement taken exactly from `p` (Fractions welcome).
    Returns (expected weight per token, probability of sampling each token)."""
    n = len(p)
    ew = [0.0] * n
    px = [0.0] * n
    mass = sum(p)

    def log_kept(r_mass) -> float:
        kept = (mass - r_mass) / mass
        return math.log(kept) if kept > 0 else -math.inf

    def pass2(removed: frozenset[int], prob, x: int, r_mass, n1: int, n2: int) -> None:
        left = [t for t in range(n) if t not in removed]
        total = sum(p[t] for t in left)
        if not left or total == 0:  # nothing left to accept: the pass ends with no success
            w = math.exp(estimator.log_weight(log_kept(r_mass), n1, n2))
            ew[x] += float(prob) * w
            return
        for t in left:
            q = prob * p[t] / total
            if allowed[t]:
                ew[x] += float(q) * math.exp(estimator.log_weight(log_kept(r_mass), n1, n2))
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
                    ew[t] += float(q) * math.exp(estimator.log_weight(log_kept(r_mass), len(rejected), 0))
            else:
                pass1(rejected + (t,), q, r_mass + p[t])

    pass1((), 1, 0)
    return ew, px
