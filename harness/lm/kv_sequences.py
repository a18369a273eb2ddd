"""Which llama.cpp KV sequence serves a prefix: the bookkeeping of LlamaCppLM's sequences.

Each sequence (a "slot") holds the tokens evaluated in it, position i holding token i. A request
for a prefix takes the slot sharing the longest common prefix with it (ties: the most recently
used); when that slot holds more than the common part, the common part is copied into the least
recently used slot (or the slot is cut in place when it is itself the least recently used), so a
branch never destroys another branch that a later request may still extend.

With 2N slots and N particles asking once each per step, the least recently used slot at every
copy was used neither in this step nor the step before, so the slot of every particle of the
previous step survives until it is asked for: no suffix is ever evaluated twice.

A slot records how many of its leading tokens were evaluated by the fixed schedule (`exact`:
the prompt as one batch, then every token alone); tokens evaluated in a multi-sequence batch
(`--lm-batch`) are only reused by batched requests, so exact requests stay bit-identical with
straight decoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    exact: int = 0  # leading tokens evaluated by the fixed schedule
    logits: np.ndarray | None = None  # after all of `tokens`, when known
    used: int = -1  # clock of the last use; -1 = never

    def reset(self, tokens: Sequence[int] = (), exact: int = 0) -> None:
        self.tokens, self.exact, self.logits = list(tokens), exact, None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case (a particle extending its own slot), at C speed
        return n
    return int(np.argmax(np.asarray(a[:n]) != np.asarray(b[:n])))


class SlotTable:
    """K slots, their contents and a use clock; it decides, LlamaCppLM acts on the KV cache."""

    def __init__(self, n_slots: int) -> None:
        if n_slots < 1:
            raise ValueError("at least one KV sequence is needed")
        self.slots = [Slot(i) for i in range(n_slots)]
        self._clock = 0

    def clear(self) -> None:
        for slot in self.slots:
            slot.reset()
            slot.used = -1

    def touch(self, slot: Slot) -> None:
        self._clock += 1
        slot.used = self._clock

    def usable(self, slot: Slot, prefix: Sequence[int], exact: bool) -> int:
        """Tokens of `slot` that a request for `prefix` can keep (exact requests: exact ones only)."""
        n = common_prefix(slot.tokens, prefix)
        return min(n, slot.exact) if exact else n

    def best(self, prefix: Sequence[int], exact: bool, exclude: set[int] = frozenset()) -> tuple[Slot, int]:
        """The slot sharing the most of `prefix` (ties: most recently used) and how much it shares."""
        ranked = [(self.usable(s, prefix, exact), s.used, s) for s in self.slots if s.seq_id not in exclude]
        n, _, slot = max(ranked, key=lambda r: (r[0], r[1]))
        return slot, n

    def victim(self, exclude: set[int] = frozenset()) -> Slot | None:
        """The least recently used slot outside `exclude` (None when every slot is excluded)."""
        free = [s for s in self.slots if s.seq_id not in exclude]
        return min(free, key=lambda s: s.used) if free else None

    def holding(self, prefix: Sequence[int], exact: bool) -> Slot | None:
        """A slot whose tokens are exactly `prefix` with the logits after it known."""
        n = len(prefix)
        for slot in self.slots:
            if slot.logits is not None and len(slot.tokens) == n and (not exact or slot.exact == n) \
                    and slot.tokens == list(prefix):
                return slot
        return None


def sequences_for(samplers: Sequence[str], particles: int) -> int:
    """KV sequences a run needs: 2 per particle for awrs-smc (see the module doc), else one."""
    return 2 * max(1, particles) if "awrs-smc" in samplers else 1
