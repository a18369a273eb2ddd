"""The language-model seam: a tokenizer view plus next-token scores for a token prefix.

Engines are built from `TokenizerView` alone, so every engine sees the same vocabulary,
taken from the model. Samplers only call `logits` / `logprobs`; implementations reuse
their state (a llama.cpp KV cache, say) across calls that share a prefix, because AWRS,
SMC and ASAp branch and backtrack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TokenizerView:
    """What engines need of a tokenizer: the bytes of every token id and the stop token.

    token_bytes[i] is what token i contributes to the output text (b"" for control tokens).
    eos_id is the stop token every engine is told about (the one compiled into grammars).
    stop_ids are further tokens that also end a generation (Gemma 3 ends with <eos> as well as
    <end_of_turn>; llama.cpp calls these end-of-generation tokens). They are aliases of eos_id:
    allowed exactly when eos_id is, so the target is P(w, any stop | prompt). Leaving them out
    makes a model that prefers <eos> look as if it never wanted to stop.
    special_ids are control tokens that never appear inside constrained text.
    gguf_path, when set, lets an engine that needs the model's own vocabulary object
    (llama.cpp grammars) load it in vocab-only mode.
    encoder, when set, is the model's own tokenizer (bytes -> ids); engines that
    tokenize forced text themselves (llguidance) use it so their choices match the model's.
    """

    token_bytes: tuple[bytes, ...]
    eos_id: int
    special_ids: frozenset[int] = field(default_factory=frozenset)
    bos_id: int | None = None
    name: str = "tokenizer"
    gguf_path: str | None = None
    encoder: Callable[[bytes], list[int]] | None = field(default=None, compare=False, repr=False)
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    @property
    def stops(self) -> frozenset[int]:
        """Every token that ends a generation: eos_id and its aliases."""
        return self.stop_ids | {self.eos_id}

    def decode(self, ids: Sequence[int]) -> bytes:
        stops = self.stops
        return b"".join(self.token_bytes[i] for i in ids if i not in stops)


@runtime_checkable
class LanguageModel(Protocol):
    """Next-token scores over the full vocabulary for a prompt + continuation prefix."""

    name: str
    tokenizer: TokenizerView

    def encode(self, text: str) -> list[int]: ...

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids for a chat, ending where the model's answer starts."""

    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        """Raw next-token logits (float32, length vocab_size) after `prefix`.

        The array may be a view into the model's buffer: valid until the next call.
        """

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        """Log-probabilities normalised over the full vocabulary (a fresh array)."""

    def info(self) -> dict[str, object]:
        """Everything that identifies the model for results (path, sha256, settings)."""


def logsumexp(a: Sequence[float] | np.ndarray) -> float:
    """log(sum(exp(a))) in float64; -inf for an empty or all -inf input."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return float("-inf")
    m = float(np.max(a))
    if not np.isfinite(m):
        return float("-inf")
    return m + float(np.log(np.sum(np.exp(a - m))))


def softmax_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-probabilities, probabilities) in x's float dtype (float32 logits stay float32: half
    the memory traffic of the sampler's per-step passes), with one exp over the vocabulary and
    no temporaries beyond the two outputs; the normaliser is summed in float64 as in log_softmax."""
    x = np.asarray(x)
    dtype = x.dtype.type if np.issubdtype(x.dtype, np.floating) else np.float64
    logp = np.subtract(x, np.max(x), dtype=dtype)
    p = np.exp(logp)
    z = float(np.sum(p, dtype=np.float64))
    logp -= dtype(math.log(z))
    p /= dtype(z)
    return logp, p


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities; the sum is taken in float64 so large vocabularies stay exact."""
    x = np.asarray(x)
    shifted = x - np.max(x)
    return shifted - np.log(np.sum(np.exp(shifted), dtype=np.float64))
