"""Adaptive weighted rejection sampling (AWRS), one step: ALGORITHMS.md section 3.

Tokens are visited in the order of sampling without replacement from the LM (an exponential
race, visiting.py) and checked one at a time with the engine's single-token check; the first allowed token is
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
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .visiting import StepTables, step_tables, without_replacement


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
    is summed afresh from the kept tokens (StepTables.kept_mass: untouched blocks' sums, touched
    blocks re-summed) when it is read, once or twice a step; a removal only records the token."""

    def __init__(self, tables: StepTables) -> None:
        self.tables = tables
        self.p = tables.p
        self.total = tables.total
        self.removed: list[int] = []
        self._gone: list[int] = []  # what the mass is computed without
        self._left: tuple[int, float] = (0, self.total)  # (len(_gone) it was computed for, mass)

    def remove_all(self, tokens: list[int]) -> None:
        self.removed.extend(tokens)
        self._gone.extend(tokens)

    @property
    def left(self) -> float:
        n, mass = self._left
        if n != len(self._gone):
            mass = self.tables.kept_mass(self._gone)
            self._left = (len(self._gone), mass)
        return mass

    def share(self, t: int) -> float:
        """t's probability renormalised over the kept tokens (t among them)."""
        left = self.left
        return min(1.0, float(self.p[t]) / left) if left > 0.0 else 1.0

    def log_fraction(self) -> float:
        """log of the kept share of the step's total: log(1 - R) for normalised probabilities."""
        left = self.left
        return math.log(left / self.total) if left > 0.0 else -math.inf


Visit = Callable[[Sequence[int]], Iterator[int]]  # removed tokens -> tokens in without-replacement order


def visitor(tables: StepTables, rng: np.random.Generator) -> Visit:
    return lambda removed: without_replacement(None, rng, removed, tables=tables)


def paper_step(logp: np.ndarray, check: Callable[[int], bool], rng: np.random.Generator,
               estimator: Estimator = PAPER, log_zp: float = 0.0, p: np.ndarray | None = None) -> StepResult:
    """Two-pass AWRS over normalised log-probabilities `logp` (log_zp = log of the kept LM mass;
    p = exp(logp) when the caller has it)."""
    tables = step_tables(logp, p)
    return paper_walk(tables, check, visitor(tables, rng), estimator, log_zp)


def paper_walk(tables: StepTables, check: Callable[[int], bool], visit: Visit,
               estimator: Estimator = PAPER, log_zp: float = 0.0) -> StepResult:
    """The paper's two passes over the orders `visit` gives: all of the step but the randomness,
    so tests can run it on every visiting order and enumerate its expectation exactly. `check`
    may be a StepOracle (masked_rest.py), which finishes a long pass from the engine's mask."""
    kept = KeptMass(tables)
    x, rejected, evals = one_pass(visit(()), check, ())
    kept.remove_all(rejected)
    if x < 0:
        return StepResult(kept.removed[-1] if kept.removed else 0, -math.inf, evals)
    n2 = 0
    if estimator.second_pass and kept.left > 0.0:  # with no mass kept the weight is 0 whatever pass 2 finds
        removed = kept.removed + [x] if estimator.remove_x_before_pass2 else list(kept.removed)
        _, rejected2, evals2 = one_pass(visit(removed), check, removed)
        n2, evals = len(rejected2), evals + evals2
    return StepResult(x, estimator.log_weight(kept.log_fraction(), len(kept.removed), n2) + log_zp, evals)


def one_pass(order: Iterator[int], check: Callable[[int], bool], excluded: Iterable[int]
             ) -> tuple[int, list[int], int]:
    """Visit `order` up to the first allowed token: (that token or -1, the tokens rejected, tokens
    visited). A StepOracle that is due finishes the pass from the mask instead (the tokens it
    rejects there count as visited: the step's law and its counts are the walk's)."""
    rejected: list[int] = []
    due = getattr(check, "due", None)
    while True:
        if due is not None and due():
            x, hits = check.finish_pass(excluded, rejected)
            rejected.extend(hits)
            return x, rejected, len(rejected) + (x >= 0)
        t = next(order, None)
        if t is None:
            return -1, rejected, len(rejected)
        if check(t):
            return t, rejected, len(rejected) + 1
        rejected.append(t)


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
    return recursive_walk(tables, check, visitor(tables, rng), log_zp)


def recursive_walk(tables: StepTables, check: Callable[[int], bool], visit: Visit,
                   log_zp: float = 0.0) -> StepResult:
    """RAWRS over the order `visit` gives (see paper_walk). A rejection's factor 1 - q is the ratio
    of the kept mass after and before it, so the rejections' factors multiply to the kept share at
    the acceptance, summed afresh from the kept tokens: exact when a q is within rounding of 1."""
    kept = KeptMass(tables)
    order = visit(())
    x, rejected, evals = one_pass(order, check, ())
    kept.remove_all(rejected)
    if x < 0 or kept.left == 0.0:  # no mass kept: the weight is 0 whatever the next token is
        return StepResult(x if x >= 0 else kept.removed[-1] if kept.removed else 0, -math.inf, evals)
    q = kept.share(x)
    allowed_next, looked = next_verdict(order, check, kept, x, visit)
    return StepResult(x, kept.log_fraction() + log_accept_factor(q, allowed_next) + log_zp, evals + looked)


def next_verdict(order: Iterator[int], check: Callable[[int], bool], kept: KeptMass, x: int,
                 visit: Visit) -> tuple[bool, int]:
    """RAWRS's one extra token after accepting x: (is it allowed, tokens checked: 0 or 1). After a
    pass finished from the mask, `order` is stale: the oracle answers from the masses, or (x held
    all the positive mass left) a fresh order over the tokens left gives the next one."""
    if getattr(check, "finished", False):
        verdict = check.next_allowed(x, kept.left)
        if verdict is not None:
            return verdict, 1
        order = visit(kept.removed + [x])
    nxt = next(order, None)
    return nxt is not None and check(nxt), int(nxt is not None)


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
