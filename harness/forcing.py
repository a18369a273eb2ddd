"""Force a known token sequence through a matcher: the one forcing loop of replay and of the tests.

At every step the full mask is computed (timed), the next token is looked up in it, and
the matcher is advanced (timed apart). A valid instance must pass every step and end with
EOS allowed; an invalid one must be refused somewhere. Replay's numbers come from this loop,
so the loop the tests check is the loop that produces them. Options: a digest of every mask
(for cross-engine diffs), a copy of the mask at chosen steps (what the differential oracle's
digests stand for), and the refused token with the text before it.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import numpy as np

from .engines.base import Matcher
from .engines.bitmask import new_bitmask


@dataclass
class ForceResult:
    accepted: bool = False            # every token allowed and EOS allowed at the end
    reject_index: int | None = None   # index of the refused step (len(ids) = EOS refused)
    reject_token: str | None = None   # the refused token's text ("<EOS>" for the stop)
    context: str = ""                 # up to 8 tokens before the refusal
    advance_refused: bool = False     # the mask allowed the token but advance() refused it
    mask_times: list[float] = field(default_factory=list)
    advance_times: list[float] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    masks: dict[int, bytes] = field(default_factory=dict)  # step -> the packed mask there (keep_masks_at)


def mask_digest(mask: bytes) -> str:
    """The digest kept of a mask (digests=True): equal masks, equal digests, across engines."""
    return hashlib.blake2b(mask, digest_size=8).hexdigest()


def force(matcher: Matcher, ids: Sequence[int], view: Any, bitmask: np.ndarray | None = None, *,
          digests: bool = False, mask_times: list[float] | None = None,
          advance_times: list[float] | None = None, keep_masks_at: Collection[int] | None = None) -> ForceResult:
    """Force ids then EOS. Times go to the given lists (replay pools them) or the result's own.

    keep_masks_at: steps whose mask (the packed bitmask's bytes, as filled before that step's
    token is checked) goes to `res.masks`; step len(ids) is the EOS step. A step after a
    refusal is never reached, so it has no mask.
    """
    eos = view.eos_id
    bitmask = bitmask if bitmask is not None else new_bitmask(view.vocab_size)
    words = memoryview(bitmask)  # reading one word: a Python int, without a numpy scalar
    res = ForceResult()
    masks = res.mask_times if mask_times is None else mask_times
    advances = res.advance_times if advance_times is None else advance_times
    append_mask, append_advance, clock = masks.append, advances.append, time.perf_counter
    fill, advance = matcher.fill_mask, matcher.advance
    steps = list(ids) + [eos]
    keep = frozenset(keep_masks_at or ())
    record = digests or bool(keep)
    for i, token in enumerate(steps):  # the hot loop: keep it to the timed calls
        a = clock()
        fill(bitmask)
        append_mask(clock() - a)
        if record:
            if digests:
                res.digests.append(mask_digest(bitmask.tobytes()))
            if i in keep:
                res.masks[i] = bitmask.tobytes()
        if not (words[token >> 5] >> (token & 31)) & 1:
            return _refused(res, view, steps, i, advance_refused=False)
        if token == eos:
            res.accepted = True
            return res
        c = clock()
        ok = advance(token)
        append_advance(clock() - c)
        if not ok:
            return _refused(res, view, steps, i, advance_refused=True)
    return res


def _refused(res: ForceResult, view: Any, steps: list[int], i: int, advance_refused: bool) -> ForceResult:
    token = steps[i]
    res.reject_index = i
    res.advance_refused = advance_refused
    res.reject_token = "<EOS>" if token == view.eos_id else view.token_bytes[token].decode("utf-8", "replace")
    res.context = view.decode(steps[max(0, i - 8):i]).decode("utf-8", "replace")
    return res
