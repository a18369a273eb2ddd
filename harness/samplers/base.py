"""The sampler seam: drives an LM and a matcher to produce one output, timing each part.

Time is split per step into LM time (forward passes), engine time (mask, check, advance)
and the sampler's own time (everything else: choosing, bookkeeping). Constraint
evaluations are counted as ALGORITHMS.md defines them, so masking and rejection samplers
compare directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ..engines.base import Matcher
from ..lm.base import LanguageModel

FINISH_REASONS = ("eos", "max_tokens", "forced_stop", "dead_end", "timeout", "error")


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


def now() -> float:
    return time.perf_counter()


def logits_and_mask(gen: Generation, lm: LanguageModel, matcher: Matcher, prefix: Sequence[int],
                    bitmask: np.ndarray) -> np.ndarray:
    """One masking step's two calls, each timed into its own bucket: the LM's logits after
    `prefix` and the engine's full mask (|V| evaluations; EOS is inside V here)."""
    t0 = now()
    logits = lm.logits(prefix)
    t1 = now()
    matcher.fill_mask(bitmask)
    t2 = now()
    gen.lm_s += t1 - t0
    gen.mask_s += t2 - t1
    gen.mask_times.append(t2 - t1)
    gen.forward_passes += 1
    gen.constraint_evals += lm.tokenizer.vocab_size
    gen.step_evals.append(lm.tokenizer.vocab_size)
    return logits


def advance_or_fail(gen: Generation, matcher: Matcher, token: int) -> bool:
    """Advance the matcher, timed into advance_s. An engine refusing a token it has just allowed
    (by mask or check) is an engine bug: the sample ends as an error that says so."""
    t0 = now()
    ok = matcher.advance(token)
    gen.advance_s += now() - t0
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
