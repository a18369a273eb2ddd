"""The on-disk vocabulary cache gives exactly what llama.cpp gives, and never a stale answer."""
from __future__ import annotations

import os

import pytest

from harness.lm import gguf_vocab
from harness.lm.llamacpp import GGUFTokenizer


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "vocab"


def _fresh(path):
    import llama_cpp

    return gguf_vocab.from_model(llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False))


def test_cached_vocabulary_equals_llama_cpp_and_its_tokenizer(gemma_path, cache):
    first = GGUFTokenizer(gemma_path)
    assert len(list(cache.iterdir())) == 1
    second = GGUFTokenizer(gemma_path)  # from the cache, no model load
    assert second._llama is None
    ref = _fresh(gemma_path)
    assert second.view.token_bytes == first.view.token_bytes == ref.token_bytes
    assert len(ref.token_bytes) == 262144
    assert second.view.special_ids == first.view.special_ids == ref.special
    assert second.view.eos_id == ref.eot and second.view.stop_ids == ref.eog - {ref.eot}
    assert second.metadata == first.metadata and second.add_bos == first.add_bos
    # the lazily loaded tokenizer agrees with the bytes: decoding its ids gives the text back
    text = '{"name": "Ünïcödé ✓", "n": [1, 2.5e-3]}'
    ids = second.encode(text)
    assert b"".join(second.view.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_corrupt_entry_is_read_again(gemma_path, cache):
    GGUFTokenizer(gemma_path)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"\x00garbage")
    tok = GGUFTokenizer(gemma_path)
    assert len(tok.view.token_bytes) == 262144
    assert entry.read_bytes() != b"\x00garbage"


def test_changed_file_is_a_new_entry(gemma_path, cache, tmp_path):
    copy = tmp_path / "model.gguf"
    copy.write_bytes(b"GGUF" + bytes(100))
    key1 = gguf_vocab._cache_key(str(copy))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert gguf_vocab._cache_key(str(copy)) != key1


def test_the_vocabulary_cache_keeps_a_bounded_number_of_entries(tmp_path, monkeypatch):
    import os
    import time

    from harness.lm import gguf_vocab as gv

    monkeypatch.setenv("CDBENCH_CACHE_DIR", str(tmp_path))
    vocab = gv.GGUFVocabulary(token_bytes=(b"a", b""), special=frozenset({1}), eog=frozenset({1}), eot=-1, eos=1,
                              bos=-1, add_bos=False, metadata={})
    names = []
    for i in range(gv.MAX_ENTRIES + 5):
        entry = gv.cache_dir() / f"k{i:02d}.marshal"
        gv._store(entry, vocab)
        os.utime(entry, ns=(time.time_ns(), 1_000_000_000 * (i + 1)))  # written in this order
        names.append(entry.name)
    gv._prune(gv.cache_dir())
    kept = sorted(p.name for p in gv.cache_dir().glob("*.marshal"))
    assert kept == sorted(names[-gv.MAX_ENTRIES:])
    assert gv._load(gv.cache_dir() / names[-1]) == vocab
