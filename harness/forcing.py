"""Force a known token sequence through a matcher: the basis of replay and of engine tests.

At every step the full mask is computed (timed), the next token is looked up in it, and
the matcher is advanced (timed separately). A valid instance must pass every step and end
with EOS allowed; an invalid one must be refused somewhere or end non-accepting.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .engines.base import Matcher
from .engines.bitmask import is_allowed, new_bitmask


@dataclass
class ForceResult:
    accepted: bool                 # every token allowed and EOS allowed at the end
    reject_index: int | None       # token index refused by the mask (len(ids) = EOS refused)
    mask_times: list[float] = field(default_factory=list)
    advance_times: list[float] = field(default_factory=list)
    error: str = ""


def force(matcher: Matcher, ids: Sequence[int], eos_id: int, vocab_size: int,
          bitmask: np.ndarray | None = None) -> ForceResult:
    bitmask = bitmask if bitmask is not None else new_bitmask(vocab_size)
    result = ForceResult(False, None)
    steps = list(ids) + [eos_id]
    for i, token in enumerate(steps):
        t0 = time.perf_counter()
        matcher.fill_mask(bitmask)
        result.mask_times.append(time.perf_counter() - t0)
        if not is_allowed(bitmask, token):
            result.reject_index = i
            return result
        if token == eos_id:
            break
        t1 = time.perf_counter()
        ok = matcher.advance(token)
        result.advance_times.append(time.perf_counter() - t1)
        if not ok:
            result.reject_index = i
            result.error = "mask allowed the token but advance refused it"
            return result
    result.accepted = True
    return result
