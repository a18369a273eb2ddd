"""The vocabulary of a GGUF file (every token's bytes, control and stop tokens), read once.

Reading it through llama.cpp takes about 2 s for Gemma's 262,144 tokens (a vocab-only model
load, then four C calls per token). Every replay worker, test and command needs it, so the
result is kept on disk, keyed by the file (resolved path, size, modification time), the
llama-cpp-python version and the Python version; a stale or unreadable entry is read again
from the GGUF. Bound: MAX_ENTRIES files (about 3 MB each for Gemma; the least recently written
are removed when a new one is stored), in $CDBENCH_CACHE_DIR/vocab (default ~/.cache/cdbench/vocab). The format is `marshal` (plain
data only; nothing in it can run code), written to a temporary name and renamed into place.
"""
from __future__ import annotations

import ctypes
import hashlib
import marshal
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..environment import package_version

FORMAT = 1
MAX_ENTRIES = 16
# Control-token attribute bits in llama.cpp's llama_token_attr.
_ATTR_CONTROL = 1 << 3
_ATTR_UNKNOWN = 1 << 0


@dataclass(frozen=True)
class GGUFVocabulary:
    token_bytes: tuple[bytes, ...]   # b"" for control, unknown and end-of-generation tokens
    special: frozenset[int]
    eog: frozenset[int]              # llama.cpp's end-of-generation tokens
    eot: int                         # -1 when the vocabulary has none
    eos: int
    bos: int
    add_bos: bool
    metadata: dict[str, str]


def cache_dir() -> Path:
    root = os.environ.get("CDBENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cdbench")
    return Path(root) / "vocab"


def read_vocabulary(path: str, load_model: Callable[[], Any]) -> GGUFVocabulary:
    """The vocabulary of the GGUF at `path`, from the cache or (via `load_model()`, a llama_cpp.Llama)
    from the file itself."""
    entry = cache_dir() / f"{_cache_key(path)}.marshal"
    vocab = _load(entry)
    if vocab is None:
        vocab = from_model(load_model())
        _store(entry, vocab)
    return vocab


def _cache_key(path: str) -> str:
    st = os.stat(path)
    parts = [str(FORMAT), str(Path(path).resolve()), str(st.st_size), str(st.st_mtime_ns),
             package_version("llama-cpp-python") or "?", sys.version]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32]


def _load(entry: Path) -> GGUFVocabulary | None:
    try:
        data = marshal.loads(entry.read_bytes())
        if data.get("format") != FORMAT:
            return None
        return GGUFVocabulary(token_bytes=data["token_bytes"], special=data["special"], eog=data["eog"],
                              eot=data["eot"], eos=data["eos"], bos=data["bos"], add_bos=data["add_bos"],
                              metadata=data["metadata"])
    except (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _store(entry: Path, vocab: GGUFVocabulary) -> None:
    data = {"format": FORMAT, "token_bytes": vocab.token_bytes, "special": vocab.special, "eog": vocab.eog,
            "eot": vocab.eot, "eos": vocab.eos, "bos": vocab.bos, "add_bos": vocab.add_bos,
            "metadata": vocab.metadata}
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(marshal.dumps(data))
        os.replace(tmp, entry)
        _prune(entry.parent)
    except OSError:
        pass  # a read-only home: read the GGUF every time


def _prune(directory: Path) -> None:
    """Keep the MAX_ENTRIES most recently written entries."""
    entries = sorted(directory.glob("*.marshal"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)


def from_model(llama: Any) -> GGUFVocabulary:
    """Every token's bytes and kind, through llama.cpp's own vocabulary calls."""
    import llama_cpp

    vocab = llama._model.vocab
    is_eog, get_attr, to_piece = (llama_cpp.llama_vocab_is_eog, llama_cpp.llama_vocab_get_attr,
                                  llama_cpp.llama_token_to_piece)
    buf = ctypes.create_string_buffer(512)
    pieces: list[bytes] = []
    special: set[int] = set()
    eog: set[int] = set()
    for tok in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if is_eog(vocab, tok) or get_attr(vocab, tok) & (_ATTR_CONTROL | _ATTR_UNKNOWN):
            (eog if is_eog(vocab, tok) else special).add(tok)
            pieces.append(b"")
            continue
        n = to_piece(vocab, tok, buf, 512, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = to_piece(vocab, tok, big, len(big), 0, False)
            pieces.append(ctypes.string_at(big, n))
        else:
            pieces.append(ctypes.string_at(buf, n))
    return GGUFVocabulary(token_bytes=tuple(pieces), special=frozenset(special | eog), eog=frozenset(eog),
                          eot=int(llama_cpp.llama_vocab_eot(vocab)), eos=int(llama_cpp.llama_vocab_eos(vocab)),
                          bos=int(llama_cpp.llama_vocab_bos(vocab)),
                          add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
                          metadata={str(k): str(v) for k, v in dict(llama.metadata).items()})
