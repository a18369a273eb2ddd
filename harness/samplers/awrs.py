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
from bisect import insort
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

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


class StepTables:
    """What every pass of a step shares, computed once per step: p, the float64 sum of each block
    of BLOCK tokens (the last block may be shorter), the blocks holding mass in decreasing order
    of it, and (lazily, only for blocks drawn from) each block's float64 running sum. Unpacks as
    (p, sums)."""

    def __init__(self, p: np.ndarray, sums: np.ndarray) -> None:
        self.p = p
        self.sums = sums
        self.sum_list: list[float] = sums.tolist()
        self.total = float(sums.sum())
        order = np.argsort(-sums, kind="stable")
        self.order: list[int] = order[: int(np.count_nonzero(sums > 0.0))].tolist()
        self._cums: dict[int, np.ndarray] = {}
        self._kept: dict[tuple[int, tuple[int, ...]], float] = {}

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.p, self.sums))

    def cum(self, b: int) -> np.ndarray:
        """Block b's running sum in float64 (all its tokens): computed once per step."""
        c = self._cums.get(b)
        if c is None:
            c = self._cums[b] = np.cumsum(self.p[b * BLOCK:(b + 1) * BLOCK], dtype=np.float64)
        return c

    def kept_sum(self, b: int, gone: list[int]) -> float:
        """Block b's mass without the tokens at offsets `gone`, summed afresh in float64; cached,
        since every pass of a step (and KeptMass) removes the same rejections."""
        key = (b, tuple(gone))
        s = self._kept.get(key)
        if s is None:
            local = self.p[b * BLOCK:(b + 1) * BLOCK].astype(np.float64)
            local[gone] = 0.0
            s = self._kept[key] = float(local.sum())
        return s


def step_tables(logp: np.ndarray, p: np.ndarray | None = None) -> StepTables:
    """p (exp(logp) unless given) and its block sums: the step's only pass over the vocabulary
    (~0.1 ms on 262k tokens). Sums are float64, so a block sum and that block's own float64
    running sum agree to rounding and every draw is exact."""
    p = np.exp(logp) if p is None else p
    full = len(p) // BLOCK * BLOCK
    sums = p[:full].reshape(-1, BLOCK).sum(axis=1, dtype=np.float64)
    if full < len(p):
        sums = np.append(sums, p[full:].sum(dtype=np.float64))
    return StepTables(p, sums)


class Remaining:
    """The tokens not removed yet, for exact draws from p renormalised over them.

    Removing a token subtracts its probability from its block's sum while the sum stays above
    half its last exact value (so the rounding stays within a few ulps); otherwise the block is
    re-summed over the tokens left in it (BLOCK entries). The mass left is the sum of the block
    sums, kept the same way. So it stays exact to float64 rounding however small it gets next to
    what was removed (ALGORITHMS.md 3.3 detail 6), with no redraws. It is all Python floats and
    short lists (a removed token is a skip in its block's running sum), so a check costs a few
    microseconds, not numpy calls. draws=False: the mass only (no skips kept)."""

    def __init__(self, tables: StepTables, removed: Iterable[int] = (), draws: bool = True) -> None:
        self.tables = tables
        self.p = tables.p
        self.sums = list(tables.sum_list)
        self.removed: set[int] = set()
        self._draws = draws
        self._gone: dict[int, list[int]] = {}  # block -> offsets of its removed tokens, ascending
        self._skips: dict[int, list[tuple[float, float]]] = {}  # block -> (start, width) of those in its running sum
        self._exact_block: dict[int, float] = {}  # block -> its last exactly summed value
        self._left = self._exact = tables.total
        self._remove_all(removed)

    def _remove_all(self, removed: Iterable[int]) -> None:
        """Remove many tokens at once: each block's sum updated once (re-summed if it fell below
        half), then the mass left summed afresh."""
        for t in removed:
            if t not in self.removed:
                self.removed.add(t)
                self._gone.setdefault(t // BLOCK, []).append(t % BLOCK)
        for b, gone in self._gone.items():
            gone.sort()
            if self._draws:
                self._skips[b] = [self._skip(b, i) for i in gone]
            exact = self.sums[b]
            after = exact - sum(float(self.p[b * BLOCK + i]) for i in gone)
            if after < 0.5 * exact:
                after = exact = self.tables.kept_sum(b, gone)
            self.sums[b] = after
            self._exact_block[b] = exact
        if self._gone:
            self._left = self._exact = math.fsum(self.sums)

    def _skip(self, b: int, i: int) -> tuple[float, float]:
        """Token i of block b as an interval of the block's running sum: (start, width)."""
        cum = self.tables.cum(b)
        start = float(cum[i - 1]) if i else 0.0
        return start, float(cum[i]) - start

    def remove(self, t: int) -> None:
        if t in self.removed:
            return
        self.removed.add(t)
        b, i = divmod(t, BLOCK)
        insort(self._gone.setdefault(b, []), i)
        if self._draws:
            insort(self._skips.setdefault(b, []), self._skip(b, i))
        before = self.sums[b]
        after = before - float(self.p[t])
        if after < 0.5 * self._exact_block.setdefault(b, before):
            after = self._exact_block[b] = self.tables.kept_sum(b, self._gone[b])
        self.sums[b] = after
        self._left += after - before
        if self._left < 0.5 * self._exact:
            self._left = self._exact = math.fsum(self.sums)

    def mass(self) -> float:
        return max(self._left, 0.0)

    def draw(self, u: float) -> int:
        """The token at fraction u (0 <= u < 1) of the mass left, by inverse CDF over the blocks
        (in the fixed order of decreasing initial mass, so the first draws stop early) and then
        inside the chosen block: -1 if rounding put u past the last interval or on a removed
        token (the caller draws again, which keeps the draw exact)."""
        r = u * self._left
        sums = self.sums
        for b in self.tables.order:
            s = sums[b]
            if r < s:
                return self._draw_in(b, r)
            r -= s
        return -1

    def _draw_in(self, b: int, r: float) -> int:
        """The kept token of block b at mass r into the block's kept mass: r is moved past the
        interval of each removed token it reaches (ascending), then located in the block's
        running sum of all its tokens, which is inverse CDF over the kept tokens."""
        cum = self.tables.cum(b)
        for start, width in self._skips.get(b, ()):
            if r < start:
                break
            r += width
        i = int(cum.searchsorted(r, "right"))
        t = b * BLOCK + i
        return t if i < len(cum) and t not in self.removed else -1


def uniforms(rng: np.random.Generator, n: int = 4) -> Iterator[float]:
    """Independent uniforms on [0, 1), drawn n at a time (n growing): rng.random() alone costs
    ~0.7 us a call."""
    while True:
        yield from rng.random(n).tolist()
        n = min(4 * n, 1024)


def without_replacement(logp: np.ndarray, rng: np.random.Generator, removed: set[int] | frozenset[int] = frozenset(),
                        max_redraws: int = 64, tables: StepTables | None = None) -> Iterator[int]:
    """The same order distribution as `gumbel_order`, without a pass over the vocabulary per
    token: each token is an inverse-CDF draw from p renormalised over the tokens neither removed
    nor visited yet (Remaining), which is sampling without replacement by definition. Once no
    positive mass is left (or rounding spoils more than max_redraws draws in a row), the rest of
    the order comes from Gumbel keys on logp over the unseen tokens, the same conditional
    distribution. `tables` = step_tables(logp), when the caller has them already."""
    rest = Remaining(tables if tables is not None else step_tables(logp), removed)
    draw, uniform, p = rest.draw, uniforms(rng).__next__, rest.p
    misses = 0
    while rest.mass() > 0.0:
        t = draw(uniform())
        if t < 0 or p[t] == 0.0:
            misses += 1
            if misses > max_redraws:
                break
            continue
        misses = 0
        rest.remove(t)
        yield t
    yield from gumbel_order(logp, rng, rest.removed)


@dataclass
class StepResult:
    token: int          # the sample (a rejected token with log_weight -inf when nothing is allowed)
    log_weight: float
    evaluations: int    # constraint checks made (both passes; repeats of x counted)


class KeptMass:
    """The proposal mass of the tokens not yet removed, accurate however small it gets.

    A running `total - removed` loses the kept mass to rounding once it falls below the rounding
    of what was removed: in float32 a token holding all but 1e-9 of the mass is exactly 1.0, and
    `1 - R` came out 0, a spurious -inf weight (ALGORITHMS.md 3.3 detail 6). Here the kept mass
    is the sum of the block sums left (Remaining), each re-summed over its kept tokens: no
    cancellation, and a few microseconds per rejection instead of a pass over the vocabulary."""

    def __init__(self, tables: StepTables) -> None:
        self.p = tables.p
        self._rest = Remaining(tables, draws=False)
        self.total = self.left = self._rest.mass()
        self.removed: list[int] = []

    def remove(self, t: int) -> None:
        self.removed.append(t)
        self._rest.remove(t)
        self.left = self._rest.mass()

    def share(self, t: int) -> float:
        """t's probability renormalised over the kept tokens (t among them)."""
        return min(1.0, float(self.p[t]) / self.left) if self.left > 0.0 else 1.0

    def log_fraction(self) -> float:
        """log of the kept share of the step's total: log(1 - R) for normalised probabilities."""
        return math.log(self.left / self.total) if self.left > 0.0 else -math.inf


Visit = Callable[[frozenset[int]], Iterator[int]]  # removed tokens -> tokens in without-replacement order


def visitor(logp: np.ndarray, rng: np.random.Generator, tables: StepTables) -> Visit:
    return lambda removed: without_replacement(logp, rng, removed, tables=tables)


def paper_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
               estimator: Estimator = PAPER, log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """Two-pass AWRS over normalised log-probabilities `logp` (log_zp = log of the kept LM mass;
    p = exp(logp) when the caller has it)."""
    tables = step_tables(logp, p)
    return paper_walk(tables, check, visitor(logp, rng, tables), estimator, log_zp)


def paper_walk(tables: StepTables, check: Callable[[int], bool], visit: Visit,
               estimator: Estimator = PAPER, log_zp: float = 0.0) -> StepResult:
    """The paper's two passes over the orders `visit` gives: all of the step but the randomness,
    so tests can run it on every visiting order and enumerate its expectation exactly."""
    kept = KeptMass(tables)
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


def recursive_walk(tables: StepTables, check: Callable[[int], bool], visit: Visit,
                   log_zp: float = 0.0) -> StepResult:
    """RAWRS over the order `visit` gives (see paper_walk). A rejection's factor 1 - q is the ratio
    of the kept mass after and before it, so it stays exact when q is within rounding of 1."""
    kept = KeptMass(tables)
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
