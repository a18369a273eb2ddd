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
from .base import Generation, advance_or_fail, logits_and_mask, now, sample_from_logits


class MaskingSampler:
    name = "masking"

    def __init__(self, temperature: float = 0.0) -> None:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self.temperature = temperature

    def settings(self) -> dict[str, Any]:
        return {"sampler": self.name, "temperature": self.temperature}

    def generate(
        self,
        lm: LanguageModel,
        matcher: Matcher,
        prompt: Sequence[int],
        max_tokens: int,
        seed: int,
        deadline: float | None = None,
    ) -> Generation:
        view = lm.tokenizer
        vocab = view.vocab_size
        stops = view.stops
        rng = np.random.default_rng(seed)
        bitmask = new_bitmask(vocab)
        gen = Generation()
        prefix = list(prompt)
        start = now()
        try:
            while True:
                if len(gen.tokens) >= max_tokens:
                    gen.finish_reason = "max_tokens"
                    break
                if deadline is not None and now() > deadline:
                    gen.finish_reason = "timeout"
                    break
                logits = logits_and_mask(gen, lm, matcher, prefix, bitmask)
                token = self._choose(logits, bitmask, vocab, rng)
                if token < 0:
                    gen.finish_reason = "dead_end"
                    break
                if gen.first_token_s is None:
                    gen.first_token_s = now() - start
                if token in stops:
                    gen.finish_reason = "eos"
                    break
                if not advance_or_fail(gen, matcher, token):
                    break
                gen.tokens.append(token)
                prefix.append(token)
        except Exception as exc:  # an engine or LM failure ends this case, not the run
            gen.finish_reason = "error"
            gen.error = f"{type(exc).__name__}: {exc}"
        gen.total_s = now() - start
        return gen

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
