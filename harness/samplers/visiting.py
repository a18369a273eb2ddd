"""The visiting order of an AWRS step: tokens in the order of sampling without replacement from p.

The order is an exponential race (ALGORITHMS.md 3.2): every token t of positive mass gets an
independent arrival time Exp(p(t)), and tokens are visited by arrival, which is sampling without
replacement from p (Plackett-Luce). The race is run lazily over blocks of BLOCK tokens, so a typical step never draws, sorts or walks
the whole vocabulary:
- a block's first arrival is Exp(S_b), S_b its kept mass, and that token is drawn from p within
  the block (inverse CDF over the block alone); its next arrival is then time + Exp(mass left)
  (memoryless), again an inverse-CDF draw;
- after OPEN_AFTER such draws the block opens: its other tokens get arrivals time + Exp(p(t)),
  drawn at once and sorted (the earliest few first);
- the global order merges the unopened blocks' clocks with the fired and opened blocks' next
  arrivals (a heap);
- after BULK_AFTER visits in one race (a step whose allowed tokens are rare) every token not yet
  visited restarts at the last arrival, which is its law given the visits so far (memoryless):
  the tokens holding HEAD_SHARE of the mass left get their arrivals drawn at once and sorted
  lazily, the others race as a block race of their own, and the two are merged by time
  (`race_order`).
Tokens whose probability underflows to 0 but whose logp is finite come after all positive mass,
in Gumbel order on logp (`gumbel_order`); a token of logp -inf never comes.

`StepTables` is what one step shares: p (normalised or not: every use is a ratio), its float64
block sums, the total, and logp on demand.
"""
from __future__ import annotations

import heapq
import math
from operator import itemgetter
from typing import Iterable, Iterator

import numpy as np

BLOCK = 1024  # step_kernels.BLOCK too
FIRST_CHUNK = 16  # arrivals of an opened block sorted first; the rest only when those are used


def ascending_unique(tokens: np.ndarray) -> np.ndarray:
    """The distinct entries of an int array, ascending: a sort and a comparison (numpy 2.4's
    np.unique hashes, ~40x slower here: 130 ms for 200,000 tokens)."""
    a = np.sort(np.asarray(tokens, dtype=np.int64))
    if a.size < 2:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


class StepTables:
    """p, the float64 sum of each block of BLOCK tokens (the last may be shorter), their total, and
    the normalised logp (given, or computed from the logits on first use). Unpacks as (p, sums)."""

    def __init__(self, p: np.ndarray, sums: np.ndarray, logp: np.ndarray | None = None,
                 logits: np.ndarray | None = None, shift: float = 0.0) -> None:
        self.p = p
        self.sums = sums
        self.sum_list: list[float] = sums.tolist()
        self.total = math.fsum(self.sum_list)
        self._logp, self._logits, self._shift = logp, logits, shift
        self.buffers: object | None = None  # arrays p and sums live in, for the next step to reuse
        self._kept: tuple[bytes, list[float]] | None = None  # (removed tokens, kept_sums) last asked

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.p, self.sums))

    def log_norm(self) -> float:
        """log of the normaliser that turns logits - shift into normalised logp."""
        return math.log(self.total) if self.total > 0.0 else math.inf

    def logp(self) -> np.ndarray:
        """Normalised log-probabilities of the whole vocabulary (computed once, only when asked)."""
        if self._logp is None:
            self._logp = self._logits.astype(np.float64) - (self._shift + self.log_norm())
        return self._logp

    def logp_at(self, ids: Iterable[int]) -> np.ndarray:
        ids = list(ids)
        if self._logp is not None:
            return np.asarray(self._logp, dtype=np.float64)[ids]
        return self._logits[ids].astype(np.float64) - (self._shift + self.log_norm())

    def kept_mass(self, removed: Iterable[int]) -> float:
        """The mass of every token not in `removed`, exact to float64 rounding: untouched blocks'
        sums plus the touched blocks re-summed over their kept tokens."""
        return math.fsum(self.kept_sums(removed))

    def kept_sums(self, removed: Iterable[int]) -> list[float]:
        """Every block's mass without its tokens in `removed` (those blocks summed afresh). The last
        answer is kept: a paper step asks twice for the same rejections (the weight after pass 1,
        then pass 2's clocks)."""
        from .step_kernels import kept_block_sums
        removed = ascending_unique(removed if isinstance(removed, np.ndarray)
                                   else np.fromiter(removed, dtype=np.int64))
        key = removed.tobytes()
        if self._kept is not None and self._kept[0] == key:
            return list(self._kept[1])
        sums = list(self.sum_list)
        if removed.size:
            blocks, kept = kept_block_sums(self.p, removed)
            for b, s in zip(blocks.tolist(), kept.tolist()):
                sums[b] = s
        self._kept = (key, sums)
        return list(sums)


def by_block(tokens: Iterable[int]) -> dict[int, list[int]]:
    """block -> offsets in it of `tokens` (ascending when many: sorted with numpy)."""
    tokens = tokens if isinstance(tokens, (list, tuple)) else list(tokens)
    if len(tokens) > 64:
        arr = ascending_unique(np.asarray(tokens, dtype=np.int64))
        blocks, starts = np.unique(arr // BLOCK, return_index=True)  # at most 256 blocks
        offsets = np.split(arr % BLOCK, starts[1:])
        return dict(zip(blocks.tolist(), (o.tolist() for o in offsets)))
    out: dict[int, list[int]] = {}
    for t in tokens:
        out.setdefault(t // BLOCK, []).append(t % BLOCK)
    return out


def block_sums(p: np.ndarray) -> np.ndarray:
    """float64 sums of p's blocks: one pass over the vocabulary (compiled for float32 p)."""
    if p.dtype == np.float32:
        from .step_kernels import sums_of_blocks
        out = np.empty(-(-len(p) // BLOCK))
        sums_of_blocks(p, out)
        return out
    full = len(p) // BLOCK * BLOCK
    sums = p[:full].reshape(-1, BLOCK).sum(axis=1, dtype=np.float64)
    if full < len(p):
        sums = np.append(sums, p[full:].sum(dtype=np.float64))
    return sums


def step_tables(logp: np.ndarray, p: np.ndarray | None = None) -> StepTables:
    """Tables from log-probabilities (p = exp(logp) unless given)."""
    p = np.exp(logp) if p is None else p
    return StepTables(p, block_sums(p), logp=logp)


def logit_tables(logits: np.ndarray, buffers: object | None = None) -> StepTables:
    """Tables straight from an LM's logits: p = exp(logits - max), unnormalised, its float64 block
    sums, and logp only if asked. float32 logits (every LM here) go through the compiled kernel
    (step_kernels: 1 ulp, a quarter of numpy's time) into reused `buffers` (tables.buffers of the
    previous step: no fresh pages per step); other dtypes through numpy in their own dtype."""
    x = np.asarray(logits)
    shift = float(np.max(x))
    if x.dtype == np.float32:
        from .step_kernels import exp_and_block_sums
        p, sums, buffers = exp_and_block_sums(x, shift, buffers)
    else:
        x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)
        p = np.exp(x - x.dtype.type(shift))
        sums, buffers = block_sums(p), None
    tables = StepTables(p, sums, logits=x, shift=shift)
    tables.buffers = buffers
    return tables


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


class OpenBlock:
    """An opened block's arrivals not yet visited, as lists popped from the end (earliest last):
    the earliest FIRST_CHUNK are sorted when the block opens, the rest only if those run out."""

    __slots__ = ("keys", "tokens", "rest")

    def __init__(self, times: np.ndarray, tokens: np.ndarray) -> None:
        self.keys: list[float] = []
        self.tokens: list[int] = []
        if times.size > 2 * FIRST_CHUNK:
            part = np.argpartition(times, FIRST_CHUNK - 1)
            self.rest = (times[part[FIRST_CHUNK:]], tokens[part[FIRST_CHUNK:]])
            self._sort(times[part[:FIRST_CHUNK]], tokens[part[:FIRST_CHUNK]])
        else:
            self.rest = None
            self._sort(times, tokens)

    def _sort(self, times: np.ndarray, tokens: np.ndarray) -> None:
        order = np.argsort(times, kind="stable")[::-1]
        self.keys = times[order].tolist()
        self.tokens = tokens[order].tolist()

    def refill(self) -> bool:
        """Sort the arrivals left once the first chunk is used up: False if there are none."""
        if self.rest is None:
            return False
        times, tokens = self.rest
        self.rest = None
        self._sort(times, tokens)
        return bool(self.keys)


class Draws:
    """Uniforms and standard exponentials from the step's rng, drawn in batches (a scalar rng call
    costs ~1 us) and used in order: the same stream for the same seed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._u: list[float] = []
        self._e: list[float] = []
        self._n = 8

    def uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(self._grow()).tolist()
        return self._u.pop()

    def exponential(self) -> float:
        if not self._e:
            self._e = self.rng.standard_exponential(self._grow()).tolist()
        return self._e.pop()

    def _grow(self) -> int:
        n, self._n = self._n, min(4 * self._n, 1024)
        return n


class Drawn:
    """A block that has fired but is not opened: its float64 p with the tokens visited (or removed)
    zeroed, and their mass. Each fire draws the next token by inverse CDF over it, which is
    cheaper than opening while a block is visited only once or twice."""

    __slots__ = ("local", "mass", "fires")

    def __init__(self, local: np.ndarray, mass: float) -> None:
        self.local, self.mass, self.fires = local, mass, 0

    def draw(self, u: float) -> int:
        """The offset at fraction u of the mass left (then zeroed: never drawn again)."""
        from .step_kernels import draw_offset
        i, self.mass = draw_offset(self.local, u)
        self.fires += 1
        return i


OPEN_AFTER = 2  # fires of a block drawn by inverse CDF before the block opens
BULK_AFTER = 32  # visits of one race after which the rest of the order comes from race_order


class BlockRace:
    """The exponential race over the positive-mass tokens not in `removed` (module docstring).

    Blocks that have not fired wait in `clocks`/`blocks`, sorted (earliest last), each clock drawn
    from the block's kept mass. A block that fires has its token drawn from p over its tokens left
    and moves to the heap, as (time, block, state): a Drawn block's next fire at time + Exp(mass
    left) (memoryless), or after OPEN_AFTER fires an OpenBlock's next arrival.
    After BULK_AFTER visits (a step whose allowed tokens are rare) every token not yet visited
    restarts at the last arrival, now + Exp(p(t)), which is its law given the visits so far
    (memoryless), and the rest of the order comes from `race_order`."""

    def __init__(self, tables: StepTables, rng: np.random.Generator, removed: Iterable[int] = (),
                 start: float = 0.0) -> None:
        self.tables, self.rng, self.draws = tables, rng, Draws(rng)
        self.removed = removed
        self.gone = by_block(removed)
        from .step_kernels import race_clocks
        sums = np.array(tables.kept_sums(removed)) if self.gone else tables.sums
        clocks, blocks = race_clocks(sums, rng.standard_exponential(len(sums)), start)
        self.clocks: list[float] = clocks.tolist()
        self.blocks: list[int] = blocks.tolist()

    def __iter__(self) -> Iterator[int]:
        return map(itemgetter(1), self.timed())

    def timed(self) -> Iterator[tuple[float, int]]:
        """(arrival time, token) in order; after BULK_AFTER visits the rest from `race_order`,
        restarted at the last arrival (memoryless)."""
        visited: list[int] = []
        for time, t in self._lazy():
            visited.append(t)
            yield time, t
            if len(visited) >= BULK_AFTER:
                yield from race_order(self.tables.p, self.rng, [*self.removed, *visited], start=time)
                return

    def _lazy(self) -> Iterator[tuple[float, int]]:
        clocks, blocks, draws = self.clocks, self.blocks, self.draws
        heap: list[tuple[float, int, Drawn | OpenBlock]] = []
        while heap or blocks:
            if blocks and (not heap or clocks[-1] < heap[0][0]):
                time, b, state = clocks.pop(), blocks.pop(), None
            else:
                time, b, state = heap[0]
                if type(state) is OpenBlock:
                    t = state.tokens.pop()
                    state.keys.pop()
                    if state.keys or state.refill():
                        heapq.heapreplace(heap, (state.keys[-1], b, state))
                    else:
                        heapq.heappop(heap)
                    yield time, t
                    continue
                heapq.heappop(heap)
            if state is None:
                state = self._fired(b)
            i = state.draw(draws.uniform())
            if state.mass > 0.0:
                if state.fires < OPEN_AFTER:
                    heapq.heappush(heap, (time + draws.exponential() / state.mass, b, state))
                else:
                    opened = self._open(b, state.local, time)
                    heapq.heappush(heap, (opened.keys[-1], b, opened))
            yield time, b * BLOCK + i

    def _fired(self, b: int) -> Drawn:
        from .step_kernels import NO_OFFSETS, block_local
        gone = self.gone.get(b)
        p = self.tables.p
        local, mass = block_local(p, b * BLOCK, min((b + 1) * BLOCK, len(p)),
                                  np.array(gone, dtype=np.int64) if gone else NO_OFFSETS)
        return Drawn(local, mass)

    def _open(self, b: int, local: np.ndarray, time: float) -> OpenBlock:
        """Block b's tokens left get their arrivals, time + Exp(p(t)) (memoryless)."""
        live = np.flatnonzero(local)
        times = time + self.rng.standard_exponential(live.size) / local[live]
        return OpenBlock(times, live + b * BLOCK)


HEAD_SHARE = 1e-6  # in race_order, tokens holding at least this share of the mass race as one vector


def race_order(p: np.ndarray, rng: np.random.Generator, excluded: Iterable[int], start: float = 0.0
               ) -> Iterator[tuple[float, int]]:
    """(arrival time, token) for the positive-mass tokens not excluded, in arrival order, arrivals
    start + Exp(p(t)) (= sampling without replacement from p). The tokens holding at least
    HEAD_SHARE of the mass get their arrivals drawn at once and sorted lazily; the others race
    as a BlockRace of their own (so their arrivals are drawn only if they come); the two streams
    are merged by time."""
    q = np.array(p)  # excluded tokens, then the head, zeroed: what is left is the tail
    excluded = list(excluded)
    if excluded:
        q[excluded] = 0
    total = math.fsum(block_sums(q).tolist())
    if total <= 0.0:
        return
    from .step_kernels import take_head
    head, head_p = take_head(q, q.dtype.type(HEAD_SHARE * total))
    head_stream = sorted_arrivals(start + rng.standard_exponential(head.size) / head_p, head)
    tail = StepTables(q, block_sums(q))
    if tail.total > 0.0:
        yield from merge_by_time(head_stream, BlockRace(tail, rng, start=start).timed())
    else:
        yield from head_stream


def sorted_arrivals(times: np.ndarray, tokens: np.ndarray, chunk: int = 256) -> Iterator[tuple[float, int]]:
    """(time, token) in time order, sorted lazily in growing chunks."""
    while times.size:
        k = min(chunk, times.size)
        if k < times.size:
            part = np.argpartition(times, k - 1)
            first, rest = part[:k], part[k:]
        else:
            first, rest = np.arange(times.size), np.arange(0)
        first = first[np.argsort(times[first], kind="stable")]
        yield from zip(times[first].tolist(), tokens[first].tolist())
        times, tokens = times[rest], tokens[rest]
        chunk *= 4


def merge_by_time(a: Iterator[tuple[float, int]], b: Iterator[tuple[float, int]]) -> Iterator[tuple[float, int]]:
    x, y = next(a, None), next(b, None)
    while x is not None and y is not None:
        if x[0] <= y[0]:
            yield x
            x = next(a, None)
        else:
            yield y
            y = next(b, None)
    if x is not None:
        yield x
        yield from a
    if y is not None:
        yield y
        yield from b


SEQUENTIAL = 4  # the first visits of an order are drawn one by one (first_draws), the rest race


def first_draws(tables: StepTables, rng: np.random.Generator, removed: Iterable[int],
                visited: list[int]) -> Iterator[int]:
    """Up to SEQUENTIAL tokens of positive mass drawn one after another from p without the removed
    and the visited ones (each appended to `visited`): the start of sampling without replacement,
    by inverse CDF over the kept block sums then inside the block, each draw's block re-summed
    without it (step_kernels.first_tokens, one compiled call), so a step that accepts one of its
    first tokens never sets up a race. The order does not depend on the checks, so all are drawn
    at once and handed out one by one."""
    from .step_kernels import first_tokens
    if SEQUENTIAL <= 0:
        return
    gone = ascending_unique(np.fromiter(removed, dtype=np.int64))
    sums = np.array(tables.kept_sums(gone) if gone.size else tables.sums)
    for t in first_tokens(tables.p, sums, gone, rng.random(SEQUENTIAL)).tolist():
        visited.append(t)
        yield t


def without_replacement(logp: np.ndarray | None, rng: np.random.Generator,
                        removed: Iterable[int] = (),
                        tables: StepTables | None = None) -> Iterator[int]:
    """Every token not removed, in the order of sampling without replacement from p: the first few
    drawn one by one (first_draws), the block race over the rest of the positive mass (memoryless:
    sampling without replacement goes on from what was drawn), then the zero-mass tokens of finite
    logp in Gumbel order on logp.
    `tables` = the step's tables when the caller has them (then logp may be None)."""
    tables = tables if tables is not None else step_tables(logp)
    visited: list[int] = []
    yield from first_draws(tables, rng, removed, visited)
    removed = [*removed, *visited] if visited else removed
    yield from BlockRace(tables, rng, removed)
    zero = tables.p == 0.0
    if removed:
        zero[list(removed)] = False
    if zero.any():
        yield from gumbel_order(np.where(zero, tables.logp(), -np.inf), rng)
