"""A vocabulary-only GGUF for a Hugging Face tokenizer, so llama.cpp grammars can run over it.

llama.cpp's grammar sampler needs llama.cpp's own vocabulary object; it only asks each token for
its text. A GGUF holding the vocabulary alone (no tensors) gives it one: every token is written
in GPT-2's byte-level spelling (tokenizer model "gpt2"), which llama.cpp turns back into exactly
these bytes, and every token without bytes is a control token. The llama.cpp grammar engine
reads the file back through llama.cpp and refuses it unless the bytes are identical. No merges
are written but one placeholder: nothing tokenizes with this file. Needs the `gguf` package; without it the
transformers backend has no GGUF and the llama.cpp grammar engine says it is unsupported.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .gguf_vocab import cache_dir
from .transformers_vocab import byte_to_unicode

FORMAT = 1


def gguf_available() -> bool:
    try:
        import gguf  # noqa: F401
    except ImportError:
        return False
    return True


def vocab_gguf_path(token_bytes: tuple[bytes, ...], eos_id: int, bos_id: int | None) -> str | None:
    """The cached vocab-only GGUF for this vocabulary (written on first use); None without `gguf`."""
    if not gguf_available():
        return None
    h = hashlib.sha256(f"{FORMAT}\n{eos_id}\n{bos_id}\n".encode())
    for b in token_bytes:
        h.update(len(b).to_bytes(4, "little") + b)
    path = cache_dir().parent / "hf-vocab-gguf" / f"{h.hexdigest()[:32]}.gguf"
    if not path.exists():
        _write(path, token_bytes, eos_id, bos_id)
    return str(path)


def _write(path: Path, token_bytes: tuple[bytes, ...], eos_id: int, bos_id: int | None) -> None:
    import gguf

    table = byte_to_unicode()
    tokens = ["".join(table[x] for x in b) if b else f"<|cdbench-control-{i}|>" for i, b in enumerate(token_bytes)]
    types = [gguf.TokenType.NORMAL if b else gguf.TokenType.CONTROL for b in token_bytes]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".gguf")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        # llama.cpp reads these hyper-parameters even for a vocab-only load; no tensor uses them.
        w.add_context_length(4096)
        w.add_embedding_length(64)
        w.add_block_count(1)
        w.add_feed_forward_length(64)
        w.add_head_count(1)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(["Ġ Ġ"])  # llama.cpp insists on a merges key (an empty list is not written)
        w.add_eos_token_id(eos_id)
        if bos_id is not None:
            w.add_bos_token_id(bos_id)
        w.add_add_bos_token(False)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
