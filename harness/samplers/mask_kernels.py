"""The compiled loops behind finishing an AWRS pass from the engine's full mask (masked_rest.py):
the allowed and disallowed mass of every block, and a Bernoulli sweep for passes that would
reject most of the vocabulary (the inverse-CDF draws of tokens of one kind are
step_kernels.draw_marked). Masks are the packed int32 bitmasks of engines/bitmask.py (bit i set =
token i allowed); `excl` is an ascending int64 array of tokens that take no part (already visited).
Imported on first use, like step_kernels.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .step_kernels import BLOCK, draw_marked, is_allowed_bit


@njit(fastmath={"reassoc", "nnan", "ninf", "nsz"}, boundscheck=False, cache=True)
def masked_block_sums(p, bitmask, allowed, other):
    """float64 sums, per block of BLOCK tokens, of p over the allowed tokens and over the others;
    a word of 32 tokens that is all one kind is summed without looking at its bits."""
    n = p.shape[0]
    for b in range(allowed.shape[0]):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        a = 0.0
        o = 0.0
        for w in range(lo >> 5, (hi + 31) >> 5):
            word = np.int64(bitmask[w])
            s = w << 5
            e = min(hi, s + 32)
            if word == 0:
                for i in range(s, e):
                    o += np.float64(p[i])
            elif word == -1:
                for i in range(s, e):
                    a += np.float64(p[i])
            else:
                for i in range(s, e):
                    if (word >> (i - s)) & 1:
                        a += np.float64(p[i])
                    else:
                        o += np.float64(p[i])
        allowed[b] = a
        other[b] = o


@njit(boundscheck=False, cache=True)
def bernoulli_marked(p, bitmask, horizon, u, excl):
    """The disallowed tokens not in `excl` whose arrival Exp(p) comes before `horizon`: token i
    is taken when u[i] < 1 - exp(-p[i] * horizon). One sweep over the vocabulary."""
    n = p.shape[0]
    out = np.empty(n, dtype=np.int64)
    c = 0
    e = 0
    for i in range(n):
        if e < excl.shape[0] and excl[e] == i:
            e += 1
            continue
        if p[i] > 0.0 and is_allowed_bit(bitmask, i) == 0:
            if u[i] < -math.expm1(-np.float64(p[i]) * horizon):
                out[c] = i
                c += 1
    return out[:c]


def warm_up() -> None:
    """Load (or compile) the kernels on tiny inputs, outside any generation's time."""
    p = np.ones(BLOCK + 8, dtype=np.float32)
    mask = np.zeros((len(p) + 31) // 32, dtype=np.int32)
    mask[0] = -1
    nb = -(-len(p) // BLOCK)
    a, o = np.empty(nb), np.empty(nb)
    masked_block_sums(p, mask, a, o)
    none = np.empty(0, dtype=np.int64)
    draw_marked(p, mask, o, np.array([0.5, 3.0]), 0, none)
    bernoulli_marked(p, mask, 0.1, np.full(len(p), 0.5), none)
