"""A deterministic in-memory LM over a small vocabulary, for exact-distribution tests.

Logits come from an explicit table (continuation token tuple -> logits) where given, and
otherwise from standard-normal draws seeded by the CRC-32 of `seed_key` + the decoded
continuation text. With tokens "0", "1" and EOS and seed_key "lm" this is exactly the toy
world of ALGORITHMS.md section 7.1.
"""
from __future__ import annotations

import random
import zlib
from typing import Mapping, Sequence

import numpy as np

from .base import TokenizerView, log_softmax


class TabularLM:
    def __init__(
        self,
        tokens: Sequence[bytes | str],
        eos_id: int,
        table: Mapping[tuple[int, ...], Sequence[float]] | None = None,
        seed_key: str = "lm",
        prompt: Sequence[int] = (),
        name: str = "tabular",
    ) -> None:
        token_bytes = tuple(t.encode() if isinstance(t, str) else bytes(t) for t in tokens)
        self.tokenizer = TokenizerView(
            token_bytes=tuple(b"" if i == eos_id else t for i, t in enumerate(token_bytes)),
            eos_id=eos_id,
            special_ids=frozenset({eos_id}),
            name=name,
        )
        self.name = name
        self.table = {tuple(k): np.asarray(v, dtype=np.float64) for k, v in (table or {}).items()}
        self.seed_key = seed_key
        self.prompt = list(prompt)
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        """Greedy longest-match tokenization (enough for small test vocabularies)."""
        data = text.encode()
        out: list[int] = []
        pos = 0
        by_len = sorted(
            (i for i, t in enumerate(self.tokenizer.token_bytes) if t), key=lambda i: -len(self.tokenizer.token_bytes[i])
        )
        while pos < len(data):
            for i in by_len:
                t = self.tokenizer.token_bytes[i]
                if data.startswith(t, pos):
                    out.append(i)
                    pos += len(t)
                    break
            else:
                raise ValueError(f"cannot tokenize {text!r} at byte {pos}")
        return out

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return list(self.prompt)

    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        self.calls += 1
        cont = tuple(prefix[len(self.prompt):])
        if cont in self.table:
            return self.table[cont].copy()
        text = self.tokenizer.decode(cont).decode("utf-8", errors="replace")
        rng = random.Random(zlib.crc32((self.seed_key + text).encode()) & 0xFFFFFFFF)
        return np.array([rng.gauss(0.0, 1.0) for _ in range(self.tokenizer.vocab_size)])

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        return log_softmax(self.logits(prefix))

    def info(self) -> dict[str, object]:
        return {"model": self.name, "vocab_size": self.tokenizer.vocab_size, "seed_key": self.seed_key}


def toy_binary_lm() -> TabularLM:
    """The toy LM of ALGORITHMS.md 7.1: tokens 0, 1, EOS; CRC-32-seeded Gaussian logits."""
    return TabularLM(["0", "1", b""], eos_id=2, seed_key="lm", name="toy-binary")
