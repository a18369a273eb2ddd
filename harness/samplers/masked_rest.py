"""An AWRS step that has asked many questions finishes from the engine's full mask, exactly.

A step whose allowed tokens hold little of the LM's mass visits (and checks) thousands of tokens:
on the 262k vocabulary one such step made 28,650 engine checks, ~100 ms, against ~0.5 ms for
the engine's full mask. `StepOracle` answers a step's "is t allowed?" with the engine's
single-token check for its first `after` questions; when a pass needs more, it fetches the full
mask once (timed and counted by the seams as a mask, |V| evaluations) and finishes the pass
without visiting token by token. Nothing about the step's law changes:

the visiting order is an exponential race (visiting.py). Given the tokens visited so far, every
token not yet visited arrives at (last arrival) + Exp(p(t)), independently (memoryless). With
the allowed set A known from the mask, the pass ends at the first allowed arrival, which comes
after H ~ Exp(P_A) (P_A = allowed mass left), is token x drawn from p restricted to A, and is
independent of H. The pass rejects exactly the disallowed tokens that arrive before H: each
token t independently, with probability 1 - exp(-p(t) H). That set is drawn as the distinct
tokens of a Poisson(P_B H) number of draws from p restricted to the disallowed tokens left
(P_B their mass: splitting a Poisson process of rate P_B gives each token an independent one of
rate p(t), and a token is hit iff its process fires before H), or, when that number would be a
sizeable share of the vocabulary, by one Bernoulli sweep. The rejected set, their count and mass
are what the estimators use, so (x, weight) has the same law as the token-by-token walk.
If the allowed tokens left hold no mass (their p underflowed to 0), the pass rejects every
disallowed token of positive mass and then follows the walk's Gumbel order on logp. RAWRS's
extra token after the acceptance is allowed with probability (P_A - p(x)) / (kept mass - p(x)).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .visiting import BLOCK, StepTables, ascending_unique
from ..engines.bitmask import allowed_at, is_allowed, new_bitmask, to_bool


NO_TOKENS = np.zeros(0, dtype=np.int64)


class StepOracle:
    """Callable as a step's `check`: the engine's check for the first `after` questions, then the
    mask. `due()` says a pass should now finish from the mask (finish_pass): every pass of the
    step after the one that fetched it does so at once."""

    def __init__(self, matcher, tables: StepTables, rng: np.random.Generator, after: int) -> None:
        self._matcher, self._tables, self._rng, self._after = matcher, tables, rng, after
        self.asked = 0
        self.mask: np.ndarray | None = None
        self.finished = False  # the last pass was finished from the mask (its visiting order is stale)
        self._before: np.ndarray | None = None  # the tokens that pass had visited, ascending

    def __call__(self, token: int) -> bool:
        if self.mask is not None:
            return is_allowed(self.mask, token)
        self.asked += 1
        return self._matcher.check(token)

    def due(self) -> bool:
        """Finish the pass from the mask: the checks are spent, or the mask is already here."""
        return self.mask is not None or self.asked >= self._after

    def _fetch(self) -> None:
        from .mask_kernels import masked_block_sums
        p = self._tables.p
        self.mask = new_bitmask(len(p))
        self._matcher.fill_mask(self.mask)
        nb = -(-len(p) // BLOCK)
        self._allowed, self._other = np.empty(nb), np.empty(nb)
        masked_block_sums(p, self.mask, self._allowed, self._other)
        self._any = bool(np.any(self.mask))

    def finish_pass(self, excluded: Sequence[int], rejected: list[int]) -> tuple[int, list[int]]:
        """The rest of a pass whose visited tokens so far are `excluded` (removed before it) and
        `rejected` (by it): (the accepted token, or -1 when no token is allowed at all; the tokens
        it rejects from here on)."""
        if self.mask is None:
            self._fetch()
        self.finished = False
        if not rejected and self._before is not None and len(excluded) == len(self._before):
            ex = self._before  # pass 2 after pass 1 finished here: its removed tokens, already sorted
        else:
            ex = ascending_unique(np.array([*excluded, *rejected] if rejected else excluded, dtype=np.int64))
        allowed, other = self._masses_without(ex)
        p_a = float(allowed.sum())
        if p_a <= 0.0:
            if not self._any:
                return -1, []
            x, hits = self._zero_mass_pass(ex)
        else:
            from .step_kernels import draw_marked
            horizon = self._rng.standard_exponential() / p_a
            x = int(draw_marked(self._tables.p, self.mask, allowed, np.array([self._rng.random() * p_a]), 1, ex)[0])
            hits = self._hits(other, horizon, ex)
        self.finished = x >= 0
        self._before = np.sort(np.concatenate([ex, hits]), kind="stable")  # two ascending runs
        return x, hits.tolist()

    def _zero_mass_pass(self, ex: np.ndarray) -> tuple[int, np.ndarray]:
        """The allowed tokens left all have p = 0 (their logits are 87 or more below the top): the
        pass rejects every disallowed token of positive mass, then visits the zero-mass tokens in
        Gumbel order on logp (visiting.without_replacement), up to the first allowed one."""
        p = self._tables.p
        allowed = to_bool(self.mask, len(p))
        live = np.ones(len(p), dtype=bool)
        live[ex] = False
        hits = np.flatnonzero(live & (p > 0.0) & ~allowed)
        zero = np.flatnonzero(live & (p == 0.0))
        keys = self._tables.logp_at(zero) + self._rng.gumbel(size=zero.size)
        on = allowed[zero] & np.isfinite(keys)
        if not on.any():
            return -1, np.concatenate([hits, zero[np.isfinite(keys)]])
        first = int(np.argmax(np.where(on, keys, -np.inf)))
        return int(zero[first]), np.concatenate([hits, zero[~on & (keys > keys[first])]])

    def _masses_without(self, ex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-block allowed and disallowed mass of the tokens not in `ex`."""
        allowed, other = self._allowed.copy(), self._other.copy()
        if ex.size:
            p = self._tables.p[ex].astype(np.float64)
            on = allowed_at(self.mask, ex)
            nb = len(allowed)
            allowed -= np.bincount(ex[on] // BLOCK, weights=p[on], minlength=nb)
            other -= np.bincount(ex[~on] // BLOCK, weights=p[~on], minlength=nb)
            np.maximum(allowed, 0.0, out=allowed)
            np.maximum(other, 0.0, out=other)
        return allowed, other

    def _hits(self, other: np.ndarray, horizon: float, ex: np.ndarray) -> np.ndarray:
        """The disallowed tokens not in `ex` whose arrivals come before `horizon` (module doc),
        ascending."""
        from .mask_kernels import bernoulli_marked
        from .step_kernels import draw_marked
        p = self._tables.p
        p_b = float(other.sum())
        lam = p_b * horizon
        if lam > len(p) / 4:
            return bernoulli_marked(p, self.mask, horizon, self._rng.random(len(p)), ex)
        n = int(self._rng.poisson(lam))
        if n == 0:
            return NO_TOKENS
        targets = np.sort(self._rng.random(n)) * p_b
        return ascending_unique(draw_marked(p, self.mask, other, targets, 0, ex))

    def next_allowed(self, x: int, kept_left: float) -> bool | None:
        """RAWRS's one more token after the pass accepted x from the mask: is it allowed? None when
        x holds all the positive mass left (the next token comes from the zero-mass tail)."""
        px = float(self._tables.p[x])
        rest = kept_left - px
        if rest <= 0.0:
            return None
        allowed_left = float(self._allowed.sum()) - px
        return bool(self._rng.random() * rest < allowed_left)
