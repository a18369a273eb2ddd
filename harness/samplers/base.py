"""The sampler seam: drives an LM and a matcher to produce one output, timing each part.

Time is split per step into LM time (forward passes), engine time (mask, check, advance)
and the sampler's own time (everything else: choosing, bookkeeping). Constraint
evaluations are counted as ALGORITHMS.md defines them, so masking and rejection samplers
compare directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..engines.base import Matcher
from ..lm.base import LanguageModel

# oom: the case's memory budget (--memory-gb); crash: its worker died in it (--executor ray).
FINISH_REASONS = ("eos", "max_tokens", "forced_stop", "dead_end", "timeout", "oom", "crash", "error")


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "eos"
    error: str = ""
    first_token_s: float | None = None  # from generation start to the first sampled token
    total_s: float = 0.0
    lm_s: float = 0.0
    mask_s: float = 0.0
    advance_s: float = 0.0
    check_s: float = 0.0
    fork_s: float = 0.0  # matcher.fork(): engine work (outlines' fork replays the whole history)
    matcher_s: float = 0.0  # making the case's matcher (set by the runner, inside TTFT)
    mask_times: list[float] = field(default_factory=list)
    forward_passes: int = 0
    constraint_evals: int = 0
    step_evals: list[int] = field(default_factory=list)  # evaluations of each step (each particle's step in SMC)
    no_output: bool = False  # nothing was produced (SMC: every particle died): the output is not scored as text
    extra: dict[str, Any] = field(default_factory=dict)
    # SMC: every final particle's tokens and log-weight, for pooling across runs (not a row column)
    particles: list[tuple[list[int], float]] = field(default_factory=list)

    @property
    def engine_s(self) -> float:
        return self.mask_s + self.advance_s + self.check_s + self.fork_s

    @property
    def sampler_s(self) -> float:
        return max(0.0, self.total_s - self.lm_s - self.engine_s)


class Sampler(Protocol):
    name: str

    def settings(self) -> dict[str, Any]: ...

    def generate(
        self,
        lm: LanguageModel,
        matcher: Matcher,
        prompt: Sequence[int],
        max_tokens: int,
        seed: int,
        deadline: float | None = None,
    ) -> Generation: ...


now = time.perf_counter  # the clock of every seam (an alias: no extra call per check)


class TimedLM:
    """The LM seam as a sampler sees it: every forward pass counted and timed into the case's
    Generation (lm_s, forward_passes). Samplers never time the LM themselves."""

    def __init__(self, lm: LanguageModel, gen: Generation) -> None:
        self._lm, self._gen = lm, gen
        self.tokenizer, self.name = lm.tokenizer, lm.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lm, name)

    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        t0 = now()
        out = self._lm.logits(prefix)
        self._gen.lm_s += now() - t0
        self._gen.forward_passes += 1
        return out

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        t0 = now()
        out = self._lm.logprobs(prefix)
        self._gen.lm_s += now() - t0
        self._gen.forward_passes += 1
        return out

    def logits_many(self, prefixes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One batched call (an LM built with --lm-batch): one forward pass per prefix, as if each
        were asked alone, so rows compare with the unbatched schedule."""
        t0 = now()
        out = self._lm.logits_many(prefixes)
        self._gen.lm_s += now() - t0
        self._gen.forward_passes += len(prefixes)
        return out


class TimedMatcher:
    """The engine seam: every mask, check, advance and fork timed into the Generation (mask_s with
    each mask's time, check_s, advance_s, fork_s) and counted as constraint evaluations (a mask is
    |V| of them, a check one). A fork is timed and wrapped too, so a particle's matcher counts."""

    def __init__(self, inner: Matcher, gen: Generation, vocab_size: int) -> None:
        self.inner, self._gen, self._vocab = inner, gen, vocab_size

    def fill_mask(self, bitmask: np.ndarray) -> None:
        t0 = now()
        self.inner.fill_mask(bitmask)
        dt = now() - t0
        self._gen.mask_s += dt
        self._gen.mask_times.append(dt)
        self._gen.constraint_evals += self._vocab

    def check(self, token: int) -> bool:
        t0 = now()
        ok = self.inner.check(token)
        self._gen.check_s += now() - t0
        self._gen.constraint_evals += 1
        return ok

    def advance(self, token: int) -> bool:
        t0 = now()
        ok = self.inner.advance(token)
        self._gen.advance_s += now() - t0
        return ok

    def fork(self) -> "TimedMatcher":
        t0 = now()
        copy = self.inner.fork()
        self._gen.fork_s += now() - t0
        return TimedMatcher(copy, self._gen, self._vocab)

    def rollback(self, n: int) -> None:
        self.inner.rollback(n)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()


class Step:
    """Marks the end of a generation step: the constraint evaluations since the last mark become
    that step's entry in step_evals (one entry per step; per particle step in SMC)."""

    def __init__(self, gen: Generation) -> None:
        self._gen, self._seen = gen, 0

    def end(self) -> None:
        self._gen.step_evals.append(self._gen.constraint_evals - self._seen)
        self._seen = self._gen.constraint_evals


@dataclass
class Seams:
    """What one generation works with: the counted LM and matcher, its rng, clock and deadline."""
    gen: Generation
    lm: TimedLM
    matcher: TimedMatcher
    rng: np.random.Generator
    step: Step
    start: float
    deadline: float | None

    def expired(self) -> bool:
        return self.deadline is not None and now() > self.deadline

    def first_token(self) -> None:
        if self.gen.first_token_s is None:
            self.gen.first_token_s = now() - self.start


def run_generation(body: Callable[[Seams], None], lm: LanguageModel, matcher: Matcher, seed: int,
                   deadline: float | None) -> Generation:
    """The one template every sampler's generate() goes through: the seams wrapped for counting,
    the seeded rng, the deadline, an engine or LM failure ending this sample (not the run) as
    an error, and the total time."""
    gen = Generation()
    seams = Seams(gen, TimedLM(lm, gen), TimedMatcher(matcher, gen, lm.tokenizer.vocab_size),
                  np.random.default_rng(seed), Step(gen), now(), deadline)
    try:
        body(seams)
    except Exception as exc:  # an engine or LM failure ends this sample, not the run
        gen.finish_reason = "error"
        gen.error = f"{type(exc).__name__}: {exc}"
    gen.total_s = now() - seams.start
    return gen


def advance_or_fail(gen: Generation, matcher: Matcher, token: int) -> bool:
    """Advance the matcher. An engine refusing a token it has just allowed (by mask or check) is
    an engine bug: the sample ends as an error that says so."""
    ok = matcher.advance(token)
    if not ok:
        gen.finish_reason = "error"
        gen.error = f"engine refused token {token} that it had allowed"
    return ok


def sample_from_logits(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Draw an index with probability softmax(logits / T); -inf entries never drawn."""
    z = logits / temperature
    z = z - np.max(z)
    p = np.exp(z)
    c = np.cumsum(p)
    return int(np.searchsorted(c, rng.random() * c[-1], side="right"))
