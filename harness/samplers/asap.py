"""Grammar-aligned decoding: ASAp and its GCD baseline (ALGORITHMS.md section 4).

A trie of token prefixes persists across the samples of one task (one prompt, one grammar):
one sampler instance per task and engine, which the runner guarantees for samplers marked
`stateful`. Each expanded node keeps the LM log-probabilities of its *allowed* tokens,
normalised over the full vocabulary (never over the allowed mass), and the bound
log theta of each child (0 = theta 1 until the child is explored). A sample walks down
drawing t with probability proportional to p(t|u) * theta(u.t); afterwards theta is
recomputed leaf to root: theta(u) = sum_t p(t|u) theta(u.t). Stop tokens are terminal
children whose theta stays 1. With a length bound T, a node at depth T allows only the
stop tokens, so the target is P(w | w in L, |w| <= T) and no sample is cut short.

GCD (`gcd`) is the same sampler with a fresh trie for every sample, i.e. token masking.
`flaw` selects the known wrong variants, only so that tests can show they miss the target.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..engines.base import Matcher
from ..engines.bitmask import allowed_ids, new_bitmask
from ..lm.base import LanguageModel, log_softmax, logsumexp
from .base import Generation, Seams, advance_or_fail, run_generation

FLAWS = (None, "last-only", "allowed-normalised", "disallowed-children")


class TrieNode:
    """One prefix. `tokens` are its allowed next tokens; children exist once sampled."""

    __slots__ = ("tokens", "logp", "child_log_theta", "is_stop", "children", "log_theta", "other_log_mass")

    def __init__(self) -> None:
        self.tokens: np.ndarray | None = None  # None = not expanded yet
        self.logp = np.empty(0)
        self.child_log_theta = np.empty(0)
        self.is_stop = np.empty(0, dtype=bool)
        self.children: dict[int, tuple[int, TrieNode]] = {}  # token -> (index in tokens, node)
        self.log_theta = 0.0
        self.other_log_mass = -math.inf  # flaw "disallowed-children": disallowed mass kept at theta 1

    @property
    def expanded(self) -> bool:
        return self.tokens is not None

    def child(self, token: int) -> "TrieNode | None":
        hit = self.children.get(token)
        return hit[1] if hit else None


class Trie:
    """The persistent state of ASAp for one task: the root and counters."""

    def __init__(self) -> None:
        self.root = TrieNode()
        self.nodes = 1
        self.expanded = 0
        self.samples = 0
        self.bytes = 0  # arrays held by expanded nodes

    def node(self, prefix: Sequence[int]) -> TrieNode | None:
        """The node of a token prefix (the continuation, without the prompt), if it exists."""
        node: TrieNode | None = self.root
        for t in prefix:
            node = node.child(t) if node is not None else None
            if node is None:
                return None
        return node

    def log_theta(self, prefix: Sequence[int]) -> float:
        """log theta of a prefix: its node's bound, or 0 (theta 1) if never created."""
        node = self.node(prefix)
        return node.log_theta if node is not None else 0.0


class ASApSampler:
    """One call of generate() = one ASAp sample; the trie lives as long as the instance."""

    name = "asap"
    stateful = True  # the runner makes one instance per task and engine

    def __init__(self, fresh_trie: bool = False, flaw: str | None = None, trie_budget_mb: float = 4096.0) -> None:
        """trie_budget_mb: a node inside a free JSON string allows ~200k of Gemma's tokens (~3 MB
        here), so long outputs over many seeds grow the trie fast (pitfall 5); past the budget a
        sample ends as an error row instead of taking the machine's memory."""
        if flaw not in FLAWS:
            raise ValueError(f"flaw must be one of {FLAWS}")
        self.fresh_trie = fresh_trie
        self.flaw = flaw
        self.trie_budget_mb = trie_budget_mb
        self.trie = Trie()

    def settings(self) -> dict[str, Any]:
        return {"sampler": self.name, "fresh_trie": self.fresh_trie, "flaw": self.flaw, "temperature": 1.0,
                "trie_budget_mb": self.trie_budget_mb,
                "evaluations_count": "|V| per newly expanded node, 0 on revisits"}

    def _expand(self, node: TrieNode, s: Seams, prefix: list[int], depth: int, max_tokens: int,
                bitmask: np.ndarray) -> None:
        view = s.lm.tokenizer
        if self.trie.bytes > self.trie_budget_mb * 2**20:
            raise MemoryError(f"ASAp trie exceeds its {self.trie_budget_mb:.0f} MB budget after {self.trie.samples} "
                              f"samples ({self.trie.expanded} expanded nodes); lower max_tokens or the number of seeds")
        logits = s.lm.logits(prefix)
        s.matcher.fill_mask(bitmask)
        logp = log_softmax(logits)
        ids = allowed_ids(bitmask, view.vocab_size)
        stops = np.isin(ids, sorted(view.stops))
        if depth >= max_tokens:  # the length bound lives in the constraint (ALGORITHMS.md 4.4, pitfall 4)
            ids, stops = ids[stops], stops[stops]
        node.tokens = ids.astype(np.int32)
        node.logp = logp[ids].astype(np.float64)
        node.child_log_theta = np.zeros(len(ids))
        node.is_stop = stops
        if self.flaw == "disallowed-children":
            rest = np.ones(len(logp), dtype=bool)
            rest[ids] = False
            node.other_log_mass = logsumexp(logp[rest])
        self.trie.expanded += 1
        self.trie.bytes += node.tokens.nbytes + node.logp.nbytes + node.child_log_theta.nbytes + node.is_stop.nbytes

    def _update(self, node: TrieNode) -> None:
        """theta(u) = sum over allowed t of p(t|u) theta(u.t) (with the flawed variants' twists)."""
        value = logsumexp(node.logp + node.child_log_theta)  # -inf at a node with nothing allowed
        if self.flaw == "allowed-normalised" and len(node.logp):
            value -= logsumexp(node.logp)
        elif self.flaw == "disallowed-children":
            value = float(np.logaddexp(value, node.other_log_mass))
        node.log_theta = min(value, 0.0)

    def generate(self, lm: LanguageModel, matcher: Matcher, prompt: Sequence[int], max_tokens: int, seed: int,
                 deadline: float | None = None) -> Generation:
        if self.fresh_trie:
            self.trie = Trie()
        trie = self.trie
        counts = {"new_nodes": 0}
        gen = run_generation(lambda seams: self._sample(seams, list(prompt), max_tokens, counts), lm, matcher, seed,
                             deadline)
        trie.samples += 1
        gen.extra = {"trie_nodes": trie.nodes, "trie_expanded": trie.expanded, "new_nodes": counts["new_nodes"],
                     "trie_mb": round(trie.bytes / 2**20, 3),
                     "trie_samples": trie.samples, "log_theta_root": trie.root.log_theta}
        return gen

    def _sample(self, s: Seams, prefix: list[int], max_tokens: int, counts: dict[str, int]) -> None:
        """One walk down the trie (expanding nodes it has not seen), then theta updated back up."""
        gen, trie = s.gen, self.trie
        bitmask = new_bitmask(s.lm.tokenizer.vocab_size)
        node = trie.root
        path: list[tuple[TrieNode, int]] = []
        while True:
            if s.expired():
                gen.finish_reason = "timeout"
                break
            if not node.expanded:
                self._expand(node, s, prefix, len(gen.tokens), max_tokens, bitmask)
                counts["new_nodes"] += 1
            s.step.end()  # |V| evaluations for a new node, 0 for a revisit (its mask is in the trie)
            if not len(node.tokens):  # a dead end: nothing below completes (pitfall 7: theta 0)
                gen.finish_reason = "max_tokens" if len(gen.tokens) >= max_tokens else "dead_end"
                break
            keys = node.logp + node.child_log_theta + s.rng.gumbel(size=len(node.tokens))
            idx = int(np.argmax(keys))
            if not math.isfinite(keys[idx]):
                gen.finish_reason = "dead_end"
                break
            token = int(node.tokens[idx])
            path.append((node, idx))
            s.first_token()
            if node.is_stop[idx]:
                gen.finish_reason = "eos"
                break
            if not advance_or_fail(gen, s.matcher, token):
                break
            child = node.child(token)
            if child is None:
                child = TrieNode()
                node.children[token] = (idx, child)
                trie.nodes += 1
            node = child
            gen.tokens.append(token)
            prefix.append(token)
        if gen.finish_reason in ("eos", "dead_end", "max_tokens"):
            self._backward(path, node if gen.finish_reason != "eos" else None)

    def _backward(self, path: list[tuple[TrieNode, int]], dead: TrieNode | None) -> None:
        """Recompute theta leaf to root along the sampled path (only the last node if flawed so)."""
        child_value: float | None = None
        if dead is not None:
            dead.log_theta = -math.inf
            child_value = -math.inf
        for k, (node, idx) in enumerate(reversed(path)):
            if child_value is not None:
                node.child_log_theta[idx] = child_value
            if self.flaw == "last-only" and k > 0:
                break
            self._update(node)
            child_value = node.log_theta


class GCDSampler(ASApSampler):
    """Grammar-constrained decoding: ASAp with a fresh trie for every sample (= token masking)."""

    name = "gcd"
    stateful = False

    def __init__(self) -> None:
        super().__init__(fresh_trie=True)
