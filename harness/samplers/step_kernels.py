"""The numeric loops of an AWRS step, compiled with numba: exp(x - shift) over a float32
vocabulary, float64 block sums, one inverse-CDF draw inside a block, the kept mass of the blocks
holding removed tokens, and the split of a vocabulary at a probability (visiting.race_order).

numpy's float32 exp takes ~0.45 ms over 262,144 logits on the 2-core test machine, more than
the rest of an AWRS step together; this loop vectorises (AVX2: 8 lanes) and takes ~0.2 ms hot,
~0.35 ms with the cache as a forward pass leaves it (max and block sums included).
It is also more accurate: about 1 ulp from the true value at most (numpy's: 2.3 ulp), by the usual
range reduction x = k ln2 + f (ln2 split in two parts), a degree-7 polynomial for e^f written
as 1 + f + f^2 P(f), and 2^k multiplied in exactly (exp_shifted). Arguments below -87 (where
float32 turns subnormal) give 0: such a token has no mass, and the visiting order reaches it
after all positive mass, by its logp (visiting.without_replacement).

numba compiles it on first use and caches it beside this file; visiting imports this module
only when first needed, so importing the harness stays fast.
"""
from __future__ import annotations

import numpy as np

from numba import njit  # noqa: E402  (imported on first use by visiting)

LOG2E, LN2_HI, LN2_LO = np.float32(1.4426950408889634), np.float32(0.693359375), np.float32(-2.12194440e-4)
LOWEST = np.float32(-87.0)
C7, C6, C5, C4, C3, C2 = (np.float32(1.0 / f) for f in (5040, 720, 120, 24, 6, 2))


POW2 = tuple(np.float32(2.0 ** -(1 << j)) for j in range(7))  # 2^-1, 2^-2, 2^-4, ..., 2^-64
P0, P1, P2, P3, P4, P5, P6 = POW2
ONE = np.float32(1.0)


@njit(fastmath={"nnan", "ninf", "nsz", "arcp", "contract"}, boundscheck=False, cache=True)
def exp_shifted(x, shift, out):
    """out = exp(x - shift) for float32 x (x - shift <= 0). One pass, no scratch: 2^k is the
    product of the powers 2^-(2^j) picked by the bits of -k (exact: every partial product stays
    a normal float32), so the loop vectorises without reinterpreting bits."""
    for i in range(x.shape[0]):
        y0 = x[i] - shift
        y = max(y0, LOWEST)
        k = np.floor(y * LOG2E + np.float32(0.5))
        f = (y - k * LN2_HI) - k * LN2_LO
        r = C7 * f + C6
        r = r * f + C5
        r = r * f + C4
        r = r * f + C3
        r = r * f + C2
        r = (r * f) * f + f + ONE
        n = np.int32(-k)
        s = ONE
        s *= P0 if n & 1 else ONE
        s *= P1 if n & 2 else ONE
        s *= P2 if n & 4 else ONE
        s *= P3 if n & 8 else ONE
        s *= P4 if n & 16 else ONE
        s *= P5 if n & 32 else ONE
        s *= P6 if n & 64 else ONE
        out[i] = r * s if y0 >= LOWEST else np.float32(0.0)


NO_OFFSETS = np.zeros(0, dtype=np.int64)
NO_MASK = np.zeros(1, dtype=np.int32)  # draw_marked's bitmask when any kind of token will do
BLOCK = 1024  # a compile-time constant, so the summing loop vectorises (visiting.BLOCK is this)


@njit(fastmath={"reassoc", "nnan", "ninf", "nsz"}, boundscheck=False, cache=True)
def sums_of_blocks(p, out):
    """out[b] = float64 sum of p[b * BLOCK:(b + 1) * BLOCK] (the last block may be shorter)."""
    full = p.shape[0] // BLOCK
    for b in range(full):
        s = 0.0
        for i in range(BLOCK):
            s += np.float64(p[b * BLOCK + i])
        out[b] = s
    if full < out.shape[0]:
        s = 0.0
        for i in range(full * BLOCK, p.shape[0]):
            s += np.float64(p[i])
        out[full] = s


class ExpBuffers:
    """The output and scratch arrays of one vocabulary size, reused step after step."""

    def __init__(self, size: int) -> None:
        self.p = np.empty(size, dtype=np.float32)
        self.sums = np.empty(-(-size // BLOCK), dtype=np.float64)


def exp_and_block_sums(x: np.ndarray, shift: float, buffers: ExpBuffers | None = None
                       ) -> tuple[np.ndarray, np.ndarray, ExpBuffers]:
    """(p = exp(x - shift) in float32, float64 sum of each block of p, the buffers used) for a
    float32 x. With `buffers` of the right size the arrays are reused (the caller's previous p
    and sums are overwritten)."""
    if buffers is None or buffers.p.shape != x.shape:
        buffers = ExpBuffers(x.shape[0])
    exp_shifted(x, np.float32(shift), buffers.p)
    sums_of_blocks(buffers.p, buffers.sums)
    return buffers.p, buffers.sums, buffers


@njit(boundscheck=False, cache=True)
def draw_offset(local, u):
    """Inverse CDF over a block's float64 masses `local` at fraction u of their total (a
    sequential running sum, so exactly cumsum + searchsorted 'right'); the token drawn is zeroed.
    Returns (offset, mass left): total minus it, re-summed when that lost half the total."""
    total = 0.0
    for v in local:
        total += v
    r = u * total
    acc = 0.0
    i = -1
    for j in range(local.shape[0]):
        acc += local[j]
        if local[j] > 0.0:
            i = j
            if acc > r:
                break
    left = total - local[i]
    local[i] = 0.0
    if left < 0.5 * total:
        left = 0.0
        for v in local:
            left += v
    return i, left


def warm_up() -> None:
    """Load (or compile, ~2 s the first time on a machine) every kernel on tiny inputs, so no
    generation's time includes it: samplers that use them call this when they are built."""
    x = np.zeros(BLOCK + 1, dtype=np.float32)
    exp_and_block_sums(x, 0.0)
    draw_offset(np.ones(4), 0.5)
    for p in (x, x.astype(np.float64)):
        kept_block_sums(p, np.array([1], dtype=np.int64))
        take_head(p.copy(), p.dtype.type(1.0))
        block_local(p, 0, 4, NO_OFFSETS)
    race_clocks(np.ones(4), np.ones(4), 0.0)
    for p in (x, x.astype(np.float64)):
        draw_marked(p + 1, NO_MASK, np.array([float(BLOCK), 1.0]), np.array([5.0]), -1, np.array([3], dtype=np.int64))
        block_kept_sum(p, 0, np.array([3], dtype=np.int64))
        first_tokens(p + 1, np.array([float(BLOCK), 1.0]), np.array([3], dtype=np.int64), np.array([0.5, 0.1]))


@njit(boundscheck=False, cache=True)
def kept_block_sums(p, removed):
    """For each block holding a token of `removed` (ascending, no repeats): the block and the
    float64 sum of its other tokens (summed afresh, so exact however much was removed)."""
    n = removed.shape[0]
    blocks = np.empty(n, dtype=np.int64)
    sums = np.empty(n, dtype=np.float64)
    found = 0
    j = 0
    while j < n:
        b = removed[j] // BLOCK
        s = 0.0
        for i in range(b * BLOCK, min((b + 1) * BLOCK, p.shape[0])):
            if j < n and removed[j] == i:
                j += 1
            else:
                s += np.float64(p[i])
        blocks[found] = b
        sums[found] = s
        found += 1
    return blocks[:found], sums[:found]


@njit(boundscheck=False, cache=True)
def take_head(q, tau):
    """Move every entry of q at or above tau out of q (zeroed there, so q keeps the rest) into
    (indices, float64 values): two passes, the first counting."""
    n = 0
    for i in range(q.shape[0]):
        n += q[i] >= tau
    head = np.empty(n, dtype=np.int64)
    head_p = np.empty(n, dtype=np.float64)
    n = 0
    for i in range(q.shape[0]):
        v = q[i]
        if v >= tau:
            head[n] = i
            head_p[n] = np.float64(v)
            n += 1
            q[i] = 0
    return head, head_p


@njit(boundscheck=False, cache=True)
def race_clocks(sums, e, start):
    """Clocks start + e[b] / sums[b] of the blocks with mass, latest first (popped from the end):
    (clocks, blocks). One compiled call instead of a handful of numpy calls, each of which costs
    tens of microseconds with the caches as a forward pass leaves them."""
    n = 0
    for b in range(sums.shape[0]):
        n += sums[b] > 0.0
    clocks = np.empty(n, dtype=np.float64)
    blocks = np.empty(n, dtype=np.int64)
    j = 0
    for b in range(sums.shape[0]):
        if sums[b] > 0.0:
            clocks[j] = start + e[b] / sums[b]
            blocks[j] = b
            j += 1
    order = np.argsort(clocks)[::-1]
    return clocks[order], blocks[order]


@njit(boundscheck=False, cache=True)
def block_local(p, lo, hi, gone):
    """p[lo:hi] in float64 with the offsets `gone` zeroed, and its sum (sequential)."""
    local = np.empty(hi - lo, dtype=np.float64)
    for i in range(hi - lo):
        local[i] = np.float64(p[lo + i])
    for g in gone:
        local[g] = 0.0
    s = 0.0
    for v in local:
        s += v
    return local, s


@njit(boundscheck=False, cache=True)
def is_allowed_bit(bitmask, i):
    return (np.int64(bitmask[i >> 5]) >> (i & 31)) & 1


@njit(boundscheck=False, cache=True)
def draw_marked(p, bitmask, block_mass, targets, want, excl):
    """Inverse CDF at each of the ascending `targets` (in [0, sum of block_mass)) over the tokens of
    positive mass of kind `want` (1 allowed by the packed int32 `bitmask`, 0 not, -1 either: the
    mask is then not read) that are not in `excl` (ascending), block_mass their per-block sums. One sweep; a target that rounding puts past a block's last token of the kind
    gets that token."""
    n = p.shape[0]
    out = np.empty(targets.shape[0], dtype=np.int64)
    k = 0
    e = 0
    base = 0.0
    last = -1
    for b in range(block_mass.shape[0]):
        top = base + block_mass[b]
        if k >= targets.shape[0]:
            break
        if targets[k] >= top and b < block_mass.shape[0] - 1:
            base = top
            continue
        lo = b * BLOCK
        while e < excl.shape[0] and excl[e] < lo:
            e += 1
        acc = base
        for i in range(lo, min(n, lo + BLOCK)):
            if e < excl.shape[0] and excl[e] == i:
                e += 1
                continue
            if p[i] > 0.0 and (want < 0 or is_allowed_bit(bitmask, i) == want):
                acc += np.float64(p[i])
                last = i
                while k < targets.shape[0] and targets[k] < acc:
                    out[k] = i
                    k += 1
        while last >= 0 and k < targets.shape[0] and (targets[k] < top or b == block_mass.shape[0] - 1):
            out[k] = last
            k += 1
        base = top
    return out[:k]


@njit(boundscheck=False, cache=True)
def block_kept_sum(p, b, gone):
    """The float64 sum of block b's tokens not in `gone` (ascending)."""
    lo = b * BLOCK
    j = np.searchsorted(gone, lo)
    s = 0.0
    for i in range(lo, min(p.shape[0], lo + BLOCK)):
        if j < gone.shape[0] and gone[j] == i:
            j += 1
        else:
            s += np.float64(p[i])
    return s


@njit(boundscheck=False, cache=True)
def first_tokens(p, sums, gone, u):
    """The first len(u) tokens of sampling without replacement from p over the tokens not in `gone`
    (ascending), `sums` their per-block masses (overwritten): token j by inverse CDF at u[j] of the
    mass left (draw_marked), then its block re-summed without it. Fewer when the mass runs out."""
    out = np.empty(u.shape[0], dtype=np.int64)
    taken = gone
    for j in range(u.shape[0]):
        total = 0.0
        for v in sums:
            total += v
        if not total > 0.0:
            return out[:j]
        t = draw_marked(p, NO_MASK, sums, np.array([u[j] * total]), -1, taken)
        if t.shape[0] == 0:
            return out[:j]
        out[j] = t[0]
        k = np.searchsorted(taken, t[0])
        merged = np.empty(taken.shape[0] + 1, dtype=np.int64)
        merged[:k] = taken[:k]
        merged[k] = t[0]
        merged[k + 1:] = taken[k:]
        taken = merged
        sums[t[0] // BLOCK] = block_kept_sum(p, t[0] // BLOCK, taken)
    return out
