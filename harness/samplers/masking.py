"""Token masking (locally constrained decoding): full mask every step, then greedy or sample.

Greedy decoding first tests the unconstrained argmax against the mask (one bit read) and
only builds the masked logits when it is disallowed; the result is identical to a full
masked argmax, and the harness's own time stays small next to a forward pass.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..engines.base import Matcher
from ..engines.bitmask import allowed_ids, is_allowed, new_bitmask, to_bool
from ..lm.base import LanguageModel
from .base import Generation, Seams, advance_or_fail, run_generation, sample_from_logits


class MaskingSampler:
    name = "masking"

    def __init__(self, temperature: float = 0.0) -> None:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self.temperature = temperature

    def settings(self) -> dict[str, Any]:
        return {"sampler": self.name, "temperature": self.temperature}

    def generate(self, lm: LanguageModel, matcher: Matcher, prompt: Sequence[int], max_tokens: int, seed: int,
                 deadline: float | None = None) -> Generation:
        return run_generation(lambda seams: self._decode(seams, list(prompt), max_tokens), lm, matcher, seed, deadline)

    def _decode(self, s: Seams, prefix: list[int], max_tokens: int) -> None:
        gen, vocab, stops = s.gen, s.lm.tokenizer.vocab_size, s.lm.tokenizer.stops
        bitmask = new_bitmask(vocab)
        while True:
            if len(gen.tokens) >= max_tokens:
                gen.finish_reason = "max_tokens"
                return
            if s.expired():
                gen.finish_reason = "timeout"
                return
            logits = s.lm.logits(prefix)
            s.matcher.fill_mask(bitmask)
            s.step.end()
            token = self._choose(logits, bitmask, vocab, s.rng)
            if token < 0:
                gen.finish_reason = "dead_end"
                return
            s.first_token()
            if token in stops:
                gen.finish_reason = "eos"
                return
            if not advance_or_fail(gen, s.matcher, token):
                return
            gen.tokens.append(token)
            prefix.append(token)

    def _choose(self, logits: np.ndarray, bitmask: np.ndarray, vocab: int, rng: np.random.Generator) -> int:
        if self.temperature == 0.0:
            top = int(np.argmax(logits))
            if is_allowed(bitmask, top):
                return top
            masked = np.where(to_bool(bitmask, vocab), logits, -np.inf)
            best = int(np.argmax(masked))
            return best if np.isfinite(masked[best]) else -1
        allowed = allowed_ids(bitmask, vocab)
        if allowed.size == 0:
            return -1
        return int(allowed[sample_from_logits(logits[allowed].astype(np.float64), self.temperature, rng)])
