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
  visited gets a fresh arrival at once, which is its law given the visits so far (memoryless),
  and the rest of the order is theirs (`race_order`).
Tokens whose probability underflows to 0 but whose logp is finite come after all positive mass,
in Gumbel order on logp (`gumbel_order`); a token of logp -inf never comes.

`StepTables` is what one step shares: p (normalised or not: every use is a ratio), its float64
block sums, the total, and logp on demand.
"""
from __future__ import annotations

import heapq
import math
from typing import Iterable, Iterator

import numpy as np

BLOCK = 1024  # step_kernels.BLOCK too
FIRST_CHUNK = 16  # arrivals of an opened block sorted first; the rest only when those are used


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
        self._kept: dict[tuple[int, tuple[int, ...]], float] = {}
        self.buffers: object | None = None  # arrays p and sums live in, for the next step to reuse

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

    def kept_sum(self, b: int, gone: Iterable[int]) -> float:
        """Block b's mass without the tokens at offsets `gone`, summed afresh in float64 (no
        cancellation however much was removed); cached, since every pass of a step removes the
        same rejections."""
        key = (b, tuple(sorted(gone)))
        s = self._kept.get(key)
        if s is None:
            local = self.p[b * BLOCK:(b + 1) * BLOCK].astype(np.float64)
            local[list(key[1])] = 0.0
            s = self._kept[key] = float(local.sum())
        return s

    def kept_mass(self, removed: Iterable[int]) -> float:
        """The mass of every token not in `removed`, exact to float64 rounding: untouched blocks'
        sums plus the touched blocks re-summed over their kept tokens."""
        return math.fsum(self.kept_sums(by_block(removed)))

    def kept_sums(self, gone: dict[int, list[int]]) -> list[float]:
        """Every block's mass without its tokens in `gone` (block -> offsets)."""
        sums = list(self.sum_list)
        for b, offsets in gone.items():
            sums[b] = self.kept_sum(b, offsets)
        return sums


def by_block(tokens: Iterable[int]) -> dict[int, list[int]]:
    """block -> offsets in it of `tokens` (ascending when many: sorted with numpy)."""
    tokens = tokens if isinstance(tokens, (list, tuple)) else list(tokens)
    if len(tokens) > 64:
        arr = np.unique(np.asarray(tokens, dtype=np.int64))
        blocks, starts = np.unique(arr // BLOCK, return_index=True)
        offsets = np.split(arr % BLOCK, starts[1:])
        return dict(zip(blocks.tolist(), (o.tolist() for o in offsets)))
    out: dict[int, list[int]] = {}
    for t in tokens:
        out.setdefault(t // BLOCK, []).append(t % BLOCK)
    return out


def block_sums(p: np.ndarray) -> np.ndarray:
    """float64 sums of p's blocks: one pass over the vocabulary."""
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
BULK_AFTER = 128  # visits of one race after which the rest of the order comes in one vectorised race


class BlockRace:
    """The exponential race over the positive-mass tokens not in `removed` (module docstring).

    Blocks that have not fired wait in `clocks`/`blocks`, sorted (earliest last), each clock drawn
    from the block's kept mass. A block that fires has its token drawn from p over its tokens left
    and moves to the heap, as (time, block, state): a Drawn block's next fire at time + Exp(mass
    left) (memoryless), or after OPEN_AFTER fires an OpenBlock's next arrival.
    After BULK_AFTER visits (a step whose allowed tokens are rare) every token not yet visited
    gets a fresh arrival at once, now + Exp(p(t)), which is its law given the visits so far
    (memoryless), and the rest of the order is theirs, sorted lazily (`race_order`)."""

    def __init__(self, tables: StepTables, rng: np.random.Generator, removed: Iterable[int] = ()) -> None:
        self.tables, self.rng, self.draws = tables, rng, Draws(rng)
        self.removed = removed
        self.gone = by_block(removed)
        sums = np.array(tables.kept_sums(self.gone)) if self.gone else tables.sums
        live = np.flatnonzero(sums > 0.0)
        clocks = rng.standard_exponential(live.size) / sums[live]
        order = np.argsort(clocks)[::-1]
        self.clocks: list[float] = clocks[order].tolist()
        self.blocks: list[int] = live[order].tolist()

    def __iter__(self) -> Iterator[int]:
        visited: list[int] = []
        for t in self._lazy():
            visited.append(t)
            yield t
            if len(visited) >= BULK_AFTER:
                yield from race_order(self.tables.p, self.rng, [*self.removed, *visited])
                return

    def _lazy(self) -> Iterator[int]:
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
                    yield t
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
            yield b * BLOCK + i

    def _fired(self, b: int) -> Drawn:
        lo = b * BLOCK
        local = self.tables.p[lo:lo + BLOCK].astype(np.float64)
        gone = self.gone.get(b)
        if gone:
            local[gone] = 0.0
        return Drawn(local, float(local.sum()))

    def _open(self, b: int, local: np.ndarray, time: float) -> OpenBlock:
        """Block b's tokens left get their arrivals, time + Exp(p(t)) (memoryless)."""
        live = np.flatnonzero(local)
        times = time + self.rng.standard_exponential(live.size) / local[live]
        return OpenBlock(times, live + b * BLOCK)


def race_order(p: np.ndarray, rng: np.random.Generator, excluded: Iterable[int], chunk: int = 1024
               ) -> Iterator[int]:
    """The positive-mass tokens not excluded, in the order of fresh arrivals Exp(p(t)) (= sampling
    without replacement from p), sorted lazily in growing chunks."""
    with np.errstate(divide="ignore"):
        keys = rng.standard_exponential(p.shape[0]) / p
    excluded = list(excluded)
    if excluded:
        keys[excluded] = np.inf
    left = int(np.count_nonzero(np.isfinite(keys)))
    while left > 0:
        k = min(chunk, left)
        top = np.argpartition(keys, k - 1)[:k] if k < keys.shape[0] else np.arange(keys.shape[0])
        top = top[np.argsort(keys[top], kind="stable")]
        yield from top.tolist()
        keys[top] = np.inf
        left -= k
        chunk *= 4


def without_replacement(logp: np.ndarray | None, rng: np.random.Generator,
                        removed: set[int] | frozenset[int] = frozenset(),
                        tables: StepTables | None = None) -> Iterator[int]:
    """Every token not removed, in the order of sampling without replacement from p: the block race
    over positive mass, then the zero-mass tokens of finite logp in Gumbel order on logp.
    `tables` = the step's tables when the caller has them (then logp may be None)."""
    tables = tables if tables is not None else step_tables(logp)
    yield from BlockRace(tables, rng, removed)
    zero = tables.p == 0.0
    if removed:
        zero[list(removed)] = False
    if zero.any():
        yield from gumbel_order(np.where(zero, tables.logp(), -np.inf), rng)
