"""Exact references by depth-first search over viable token prefixes (ALGORITHMS.md section 5).

At every viable prefix u: one LM call for p(.|u) over the full vocabulary and one full mask
(|V| + 1 evaluations). Allowed non-stop tokens are recursed into (below the length bound T);
if u is a member, the stop event is recorded with probability P(u) * sum_s p(s|u) over the
model's stop tokens. From the same walk come the exact target Q (normalised records), P(L)
(their sum), the exact token-masking (LCD) probability of every string and the exact expected
future grammaticality EFG(u) of every prefix. Everything is in log space. A budget on prefixes
and on seconds stops the walk with a clear message when the language is too large.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..engines.base import Matcher
from ..engines.bitmask import allowed_ids, new_bitmask
from ..lm.base import LanguageModel, log_softmax, logsumexp


class BudgetExceeded(Exception):
    """The language is too large for an exact walk within the budget."""


@dataclass
class PrefixInfo:
    tokens: np.ndarray          # allowed non-stop next tokens (empty at the length bound)
    logp: np.ndarray            # their log p(t|u), normalised over the full vocabulary
    log_stop: float             # log sum_s p(s|u) over stop tokens if u is in L, else -inf
    log_allowed: float          # log Z(u): the allowed mass, stops included
    log_efg: float = -math.inf  # log EFG(u), filled on the way back up

    def logp_of(self, token: int) -> float:
        hit = np.flatnonzero(self.tokens == token)
        return float(self.logp[hit[0]]) if hit.size else -math.inf


@dataclass
class ExactTarget:
    """Every string of L (|w| <= T) as a token sequence, with exact log-probabilities."""

    sequences: list[tuple[int, ...]]
    log_p: np.ndarray            # log P(w . stop | prompt)
    log_lcd: np.ndarray          # log of token masking's probability of w (exact LCD)
    log_pl: float                # log P(L)
    max_tokens: int
    prefixes: int                # viable prefixes visited (= LM calls = masks)
    seconds: float
    table: dict[tuple[int, ...], PrefixInfo] = field(repr=False, default_factory=dict)

    @property
    def q(self) -> np.ndarray:
        """The target Q(w) = P(w | w in L, |w| <= T)."""
        return np.exp(self.log_p - self.log_pl)

    @property
    def lcd(self) -> np.ndarray:
        """Token masking's exact distribution over L; it sums to less than 1 when masking can
        walk into prefixes with no completion (the rest is its dead-end mass)."""
        return np.exp(self.log_lcd)

    def efg(self, prefix: Sequence[int]) -> float:
        info = self.table.get(tuple(prefix))
        return math.exp(info.log_efg) if info is not None else 0.0

    def index(self) -> dict[tuple[int, ...], int]:
        return {s: i for i, s in enumerate(self.sequences)}


def exact_walk(lm: LanguageModel, matcher: Matcher, prompt: Sequence[int], max_tokens: int,
               max_prefixes: int = 20000, max_seconds: float = 900.0,
               progress: Callable[[int, float], None] | None = None) -> ExactTarget:
    """DFS from the empty continuation. `matcher` must be fresh; it is advanced and rolled back."""
    view = lm.tokenizer
    stop_list = np.array(sorted(view.stops))
    bitmask = new_bitmask(view.vocab_size)
    sequences: list[tuple[int, ...]] = []
    log_p: list[float] = []
    log_lcd: list[float] = []
    table: dict[tuple[int, ...], PrefixInfo] = {}
    start = time.perf_counter()
    prompt = list(prompt)

    def visit(u: list[int], log_pu: float, log_lcd_u: float) -> float:
        n = len(table) + 1
        elapsed = time.perf_counter() - start
        if n > max_prefixes or elapsed > max_seconds:
            raise BudgetExceeded(
                f"exact walk stopped after {n - 1} viable prefixes and {elapsed:.1f} s (budget {max_prefixes} "
                f"prefixes, {max_seconds:.0f} s): the language is too large; lower the length bound or use a "
                f"smaller grammar")
        if progress and n % 200 == 0:
            progress(n, elapsed)
        logp_full = log_softmax(lm.logits(prompt + u))
        matcher.fill_mask(bitmask)
        ids = allowed_ids(bitmask, view.vocab_size)
        is_stop = np.isin(ids, stop_list)
        stops = ids[is_stop]
        others = ids[~is_stop] if len(u) < max_tokens else ids[:0]
        lp_others = logp_full[others].astype(np.float64)
        log_stop = logsumexp(logp_full[stops].astype(np.float64)) if stops.size else -math.inf
        log_z = logsumexp(np.append(lp_others, log_stop))
        info = PrefixInfo(others, lp_others, log_stop, log_z)
        table[tuple(u)] = info
        terms = []
        if math.isfinite(log_stop):
            sequences.append(tuple(u))
            log_p.append(log_pu + log_stop)
            log_lcd.append(log_lcd_u + log_stop - log_z)
            terms.append(log_stop)
        for t, lp in zip(others.tolist(), lp_others.tolist()):
            if not matcher.advance(t):
                raise RuntimeError(f"engine refused token {t} that its own mask allowed at prefix {u}")
            u.append(t)
            terms.append(lp + visit(u, log_pu + lp, log_lcd_u + lp - log_z))
            u.pop()
            matcher.rollback(1)
        info.log_efg = logsumexp(terms)
        return info.log_efg

    log_pl = visit([], 0.0, 0.0)
    return ExactTarget(sequences, np.array(log_p), np.array(log_lcd), log_pl, max_tokens, len(table),
                       time.perf_counter() - start, table)


def trie_log_q(trie, target: ExactTarget) -> np.ndarray:
    """log of ASAp's next-sample probability of every string of L, given its trie now.

    At a trie node the draw is p(t|u) theta(u.t) over the allowed tokens, normalised, with the
    node's own cached child bounds; below the trie every bound is 1 (a fresh expansion), so the
    draw is token masking's. Stop tokens are terminal children with theta 1."""
    out = np.empty(len(target.sequences))
    for i, seq in enumerate(target.sequences):
        node = trie.root
        lq = 0.0
        for depth in range(len(seq) + 1):
            u = seq[:depth]
            info = target.table[u]
            t = seq[depth] if depth < len(seq) else None
            if node is not None and node.expanded and len(node.tokens):
                weights = node.logp + node.child_log_theta
                denom = logsumexp(weights)
                if t is None:
                    num = logsumexp(weights[node.is_stop])
                else:
                    hit = np.flatnonzero(node.tokens == t)
                    num = float(weights[hit[0]]) if hit.size else -math.inf
            else:
                denom = info.log_allowed
                num = info.log_stop if t is None else info.logp_of(t)
            lq += num - denom
            if t is not None:
                node = node.child(t) if node is not None else None
        out[i] = lq
    return out
