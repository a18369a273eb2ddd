"""The one mask format all engines write: packed int32 words, bit i set = token i allowed.

xgrammar, llguidance and outlines-core all fill this layout natively, so adapters write
into it without conversion; samplers read single bits in O(1).
"""
from __future__ import annotations

import numpy as np


def new_bitmask(vocab_size: int) -> np.ndarray:
    return np.zeros((vocab_size + 31) // 32, dtype=np.int32)


def is_allowed(bitmask: np.ndarray, token: int) -> bool:
    return bool((int(bitmask[token >> 5]) >> (token & 31)) & 1)


def set_allowed(bitmask: np.ndarray, token: int, allowed: bool) -> None:
    bit = np.int32(np.uint32(1 << (token & 31)).view(np.int32))
    word = token >> 5
    bitmask[word] = (bitmask[word] | bit) if allowed else (bitmask[word] & ~bit)


def allowed_at(bitmask: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """is_allowed for an int array of tokens at once: a bool array."""
    return ((bitmask[tokens >> 5].astype(np.int64) >> (tokens & 31)) & 1).astype(bool)


def to_bool(bitmask: np.ndarray, vocab_size: int) -> np.ndarray:
    bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")
    return bits[:vocab_size].astype(bool)


def from_bool(allowed: np.ndarray) -> np.ndarray:
    n = len(allowed)
    padded = np.zeros(((n + 31) // 32) * 32, dtype=bool)
    padded[:n] = allowed
    return np.packbits(padded, bitorder="little").view(np.int32).copy()


def allowed_ids(bitmask: np.ndarray, vocab_size: int) -> np.ndarray:
    return np.flatnonzero(to_bool(bitmask, vocab_size))

