"""A Hugging Face tokenizer's vocabulary as bytes, and its tokenizer for continuation text.

Engines need what each token id adds to the output, as bytes. Hugging Face stores token strings
in one of two spellings, told apart by the tokenizer's decoder:
  - byte-level BPE (GPT-2, Llama 3, Qwen): every byte is a printable stand-in character
    (GPT-2's byte-to-unicode table; " " is "Ġ");
  - sentencepiece style (Llama 2, Mistral, Gemma): "▁" stands for a space and, with byte
    fallback, "<0xNN>" tokens are single raw bytes.
Special added tokens (BOS, EOS, chat markup) add nothing to the text: b"" and special.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Iterator

from ..errors import ConfigError

SPACE_MARK = "\u2581"  # sentencepiece's "▁"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the other 68 bytes are shifted
    to code points from 256 up, so every byte has a visible character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every component of a (possibly nested Sequence) decoder/normalizer/pre-tokenizer."""
    if isinstance(node, dict):
        yield node
        for key in ("decoders", "normalizers", "pretokenizers"):
            for child in node.get(key) or []:
                yield from _walk(child)


def backend_state(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's serialised form (tokenizer.json); slow tokenizers are refused."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no fast (tokenizers) backend; "
                          "cdbench reads token bytes from tokenizer.json")
    return json.loads(backend.to_str())


def spelling(state: dict[str, Any]) -> str:
    """'byte-level' or 'sentencepiece': how the vocabulary spells bytes, read from the decoder."""
    parts = list(_walk(state.get("decoder")))
    kinds = {p.get("type") for p in parts}
    if "ByteLevel" in kinds:
        return "byte-level"
    space_replace = any(p.get("type") == "Replace" and (p.get("pattern") or {}).get("String") == SPACE_MARK
                        for p in parts)
    if kinds & {"Metaspace", "ByteFallback"} or space_replace:
        return "sentencepiece"
    raise ConfigError(f"tokenizer decoder {sorted(k for k in kinds if k) or 'none'} is neither byte-level BPE nor "
                      "sentencepiece style: its tokens' bytes cannot be read")


def piece_bytes(piece: str, kind: str) -> bytes:
    """What one token string adds to the text, as its decoder would write it."""
    if kind == "byte-level":
        table = unicode_to_byte()
        try:
            return bytes(table[c] for c in piece)
        except KeyError:  # a character outside the table (an added token): the decoder keeps it as is
            return piece.encode("utf-8")
    match = _BYTE_TOKEN.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace(SPACE_MARK, " ").encode("utf-8")


def vocabulary_bytes(tokenizer: Any, size: int) -> tuple[tuple[bytes, ...], frozenset[int]]:
    """(token_bytes, special ids) for ids 0..size-1. Ids the tokenizer lacks (a model's padded
    embedding rows) and special added tokens are b"" and special; so is any token with no bytes."""
    kind = spelling(backend_state(tokenizer))
    if len(tokenizer) > size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model only {size} output rows")
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    out: list[bytes] = []
    special: set[int] = set()
    for i in range(size):
        token = added.get(i)
        piece = pieces[i] if i < len(pieces) else None
        data = b"" if piece is None or (token is not None and token.special) else piece_bytes(piece, kind)
        if not data:
            special.add(i)
        out.append(data)
    return tuple(out), frozenset(special)


def _drops_prefix_space(state: dict[str, Any]) -> dict[str, Any]:
    """The same tokenizer without sentencepiece's prepended "▁" (Metaspace prepend_scheme, or a
    Prepend normalizer): text that continues a generation does not start a new word."""
    for part in _walk(state.get("pre_tokenizer")):
        if part.get("type") == "Metaspace":
            part["prepend_scheme"] = "never"
            if "add_prefix_space" in part:
                part["add_prefix_space"] = False
    norm = state.get("normalizer")
    if isinstance(norm, dict):
        if norm.get("type") == "Prepend":
            state["normalizer"] = None
        elif norm.get("type") == "Sequence":
            norm["normalizers"] = [n for n in norm.get("normalizers", []) if n.get("type") != "Prepend"]
    state["post_processor"] = None  # no BOS/EOS around continuation text
    return state


def continuation_encoder(tokenizer: Any, token_bytes: tuple[bytes, ...]) -> Callable[[bytes], list[int]]:
    """bytes -> ids as the model would write them mid-text: no special tokens, no prefix space.
    Bytes that are not valid UTF-8 (llguidance may ask for a partial character) end with the
    single-byte tokens the vocabulary has for them."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(json.dumps(_drops_prefix_space(backend_state(tokenizer))))
    backend.encode_special_tokens = True  # "<|endoftext|>" inside JSON text is text, as in llama.cpp
    single = {b[0]: i for i, b in reversed(list(enumerate(token_bytes))) if len(b) == 1}

    def encode(data: bytes) -> list[int]:
        try:
            text, rest = data.decode("utf-8"), b""
        except UnicodeDecodeError as exc:
            text, rest = data[:exc.start].decode("utf-8"), data[exc.start:]
        ids = backend.encode(text, add_special_tokens=False).ids if text else []
        for b in rest:
            if b not in single:
                raise ValueError(f"no token spells byte 0x{b:02x}")
            ids.append(single[b])
        return ids

    return encode
