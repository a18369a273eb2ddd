"""The transformers backend on tiny models built here: no download, no shared data.

Two tokenizers are trained in memory, one byte-level BPE (GPT-2 spelling) and one sentencepiece
style (Metaspace "▁" and <0xNN> byte fallback); tiny random Llama and Mistral (sliding window)
models are built from configs and saved with save_pretrained. Independent references: the
tokenizer's own decoding, llama.cpp's own reading of a GGUF written here from the raw token
strings (as llama.cpp's converter does), and a straight KV-cache evaluation written here.
"""
from __future__ import annotations

import inspect
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the transformers extra is not installed")
tokenizers = pytest.importorskip("tokenizers", reason="the transformers extra is not installed")
torch = pytest.importorskip("torch")

from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from harness.errors import ConfigError  # noqa: E402
from harness.lm.transformers_lm import TransformersLM  # noqa: E402
from harness.lm.transformers_vocab import byte_to_unicode, continuation_encoder, vocabulary_bytes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAT = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CORPUS = ([json.dumps({"id": i, "name": f"item {i}", "ok": i % 2 == 0, "tags": ["a", "b"][: i % 3]})
           for i in range(60)] + ["héllo wörld, ça va? 10 € 中文 😀", "Return a JSON object.\n"] * 3)
STRINGS = ['{"id":42,"ok":true}', '{"name": "item 7", "tags": ["a"]}', "héllo wörld",
           " leading space", "tabs\tand\nnewlines\r\n", "€ ☃ 😀 中文字 ç", '{"x":"\\u00e9\\n"}',
           "<|endoftext|> as text", "  ", "a"]
SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"},
                                           "name": {"type": "string"}},
          "required": ["id", "ok", "name"], "additionalProperties": False}
VALID = [{"id": 42, "ok": True, "name": "item 7"}, {"id": -3, "ok": False, "name": "héllo ☃"}]
INVALID = [{"id": "42", "ok": True, "name": "x"}, {"id": 1, "ok": True}, {"id": 1, "ok": 1, "name": "x"}]


def random_strings(n: int, seed: int = 0) -> list[str]:
    """Strings mixing ASCII, accents, CJK, emoji, whitespace and JSON punctuation."""
    rng = random.Random(seed)
    alphabet = list('abcxyz019 {}[]":,.\n\t_-') + list("éüçß€☃中文字😀🎉")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    hf.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|system|>", "<|assistant|>"]})
    hf.chat_template = CHAT
    return hf


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """BPE with byte fallback: <0xNN> tokens in the model's vocabulary, "▁" for spaces."""
    trained = tokenizers.Tokenizer(models.BPE(byte_fallback=True))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=250, special_tokens=["<unk>", "<s>", "</s>"]))
    state = json.loads(trained.to_str())["model"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])}
    for t, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    tok = tokenizers.Tokenizer(models.BPE(vocab, [tuple(m) for m in state["merges"]], byte_fallback=True,
                                          unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   add_bos_token=True)


TOKENIZERS = {"byte-level": byte_level_tokenizer, "sentencepiece": sentencepiece_tokenizer}


@pytest.fixture(scope="module")
def toks():
    return {k: f() for k, f in TOKENIZERS.items()}


def save_model(directory: Path, tok, sliding: bool = False) -> Path:
    torch.manual_seed(0)
    size = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)
    model = (MistralForCausalLM(MistralConfig(sliding_window=4, **size)) if sliding
             else LlamaForCausalLM(LlamaConfig(**size)))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, toks):
    return save_model(tmp_path_factory.mktemp("tiny-llama"), toks["byte-level"])


@pytest.fixture(scope="module")
def lm(model_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cdbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDBENCH_CACHE_DIR", str(cache))  # the vocab-only GGUF goes here, not to ~/.cache
        yield TransformersLM(str(model_dir), n_threads=1)  # one thread: tiny matrices, a shared CI machine


# vocabulary ------------------------------------------------------------------

def test_byte_table_is_gpt2s():
    table = byte_to_unicode()
    assert sorted(table.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_token_bytes_agree_with_the_tokenizers_decoding(kind, toks):
    """Joined token bytes decode to what the tokenizer's own decode() writes, for the tokenizer's own
    encoding of many strings and for random id sequences (partial UTF-8 pieces included)."""
    tok = toks[kind]
    tb, special = vocabulary_bytes(tok, len(tok))
    anchor = tok.convert_tokens_to_ids("{")  # decode() strips a leading space (sentencepiece): start with "{"
    for s in STRINGS + random_strings(200):
        ids = tok(s, add_special_tokens=False)["input_ids"]
        joined = b"".join(tb[i] for i in ids).decode("utf-8")
        assert tok.decode([anchor] + ids, skip_special_tokens=True) == "{" + joined, s
    rng = random.Random(1)
    # HF's ByteFallback decoder writes one U+FFFD per <0xNN> token of an invalid run (not per bad
    # byte), so random ids there use the other tokens; byte tokens are covered by the strings above.
    normal = [i for i in range(len(tok)) if i not in special
              and not (kind == "sentencepiece" and tok.convert_ids_to_tokens(i).startswith("<0x"))]
    for _ in range(300):
        ids = [rng.choice(normal) for _ in range(rng.randint(1, 12))]
        expected = (b"{" + b"".join(tb[i] for i in ids)).decode("utf-8", errors="replace")
        assert tok.decode([anchor] + ids, skip_special_tokens=True) == expected, ids
    assert all(tb[i] == b"" for i in special) and {tok.eos_token_id} <= special


def test_sentencepiece_byte_tokens_are_single_bytes(toks):
    tok = toks["sentencepiece"]
    tb, _ = vocabulary_bytes(tok, len(tok))
    for b in (0x00, 0x0A, 0x7B, 0xE2, 0xFF):
        assert tb[tok.convert_tokens_to_ids(f"<0x{b:02X}>")] == bytes([b])
    assert tb[tok.convert_tokens_to_ids("\u2581")] == b" "


def test_padded_output_rows_are_special(toks):
    tok = toks["byte-level"]
    tb, special = vocabulary_bytes(tok, len(tok) + 7)
    assert len(tb) == len(tok) + 7 and all(tb[i] == b"" and i in special for i in range(len(tok), len(tok) + 7))
    with pytest.raises(ConfigError, match="output rows"):
        vocabulary_bytes(tok, len(tok) - 1)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_continuation_encoder_round_trips(kind, toks):
    """Mid-text encoding spells exactly the bytes asked for: no prefix space, no BOS, partial UTF-8 kept."""
    tok = toks[kind]
    tb, _ = vocabulary_bytes(tok, len(tok))
    enc = continuation_encoder(tok, tb)
    for s in STRINGS + random_strings(100, seed=2):
        assert b"".join(tb[i] for i in enc(s.encode())) == s.encode(), s
    partial = '{"a":"☃'.encode()[:-1]
    assert b"".join(tb[i] for i in enc(partial)) == partial
    if kind == "byte-level":  # nothing to strip there: the tokenizer's own ids
        assert enc(STRINGS[0].encode()) == tok(STRINGS[0], add_special_tokens=False)["input_ids"]
    assert enc(b"<|endoftext|>") != [tok.eos_token_id]  # markup in text is text


# agreement with llama.cpp's own reading of the same vocabulary ---------------------------

def write_reference_gguf(path: Path, tok, kind: str) -> Path:
    """A vocab-only GGUF from the tokenizer's raw token strings (no bytes computed here): llama.cpp
    decodes the spelling itself (gpt2: byte-level; llama: "▁" and <0xNN> BYTE tokens)."""
    gguf = pytest.importorskip("gguf", reason="the gguf package writes the reference vocabulary")
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    T = gguf.TokenType
    types = [T.CONTROL if i in special else T.BYTE if kind == "sentencepiece" and p.startswith("<0x") and len(p) == 6
             else T.NORMAL for i, p in enumerate(pieces)]
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_context_length, 1024), (w.add_embedding_length, 32), (w.add_block_count, 1),
                       (w.add_feed_forward_length, 64), (w.add_head_count, 4)):
        add(value)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2" if kind == "byte-level" else "llama")
    w.add_token_list(pieces)
    w.add_token_types(types)
    if kind == "byte-level":
        w.add_token_merges([" ".join(m) for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]])
    else:
        w.add_token_scores([0.0] * len(pieces))
        w.add_add_space_prefix(False)
    w.add_eos_token_id(tok.eos_token_id)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def reference_views(toks, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from harness.lm.llamacpp import load_tokenizer_view

    d = tmp_path_factory.mktemp("gguf")
    return {k: load_tokenizer_view(str(write_reference_gguf(d / f"{k}.gguf", toks[k], k))).view for k in toks}


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_token_bytes_equal_llama_cpps(kind, toks, reference_views):
    tok = toks[kind]
    tb, special = vocabulary_bytes(tok, len(tok))
    ref = reference_views[kind]
    diff = [(i, tb[i], ref.token_bytes[i]) for i in range(len(tok)) if tb[i] != ref.token_bytes[i]]
    assert not diff, diff[:5]
    assert special == {i for i, b in enumerate(ref.token_bytes) if not b}


MASK_ENGINES = ["xgrammar", "llguidance", "outlines", "llamacpp"]


def _task():
    from harness.tasks.task import Task

    return Task(id="flags", kind="json_schema", source="test", prompt=[], schema=SCHEMA)


@pytest.fixture(scope="module")
def compiled(lm, reference_views):
    """Each engine compiled twice: over the transformers view and over llama.cpp's view."""
    from harness.engines import ENGINES

    views = {"transformers": lm.tokenizer, "llama.cpp": reference_views["byte-level"]}
    return {(e, v): ENGINES.create(e, view).compile(_task()) for e in MASK_ENGINES for v, view in views.items()}


@pytest.mark.parametrize("engine", MASK_ENGINES)
def test_masks_agree_with_the_llama_cpp_vocabulary(engine, lm, compiled, reference_views):
    """Forcing valid JSON through the same engine over both views: every step's mask is identical."""
    from harness.forcing import force

    ref = reference_views["byte-level"]
    assert ref.eos_id == lm.tokenizer.eos_id and ref.vocab_size == lm.tokenizer.vocab_size
    for value in VALID:
        ids = lm.encode(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
        ours = force(compiled[engine, "transformers"].matcher(), ids, lm.tokenizer, digests=True)
        theirs = force(compiled[engine, "llama.cpp"].matcher(), ids, ref, digests=True)
        assert ours.accepted and theirs.accepted, (engine, value, ours.reject_index)
        assert ours.digests == theirs.digests


@pytest.mark.parametrize("engine", MASK_ENGINES)
def test_forcing_refuses_invalid_json(engine, lm, compiled):
    from harness.forcing import force

    for value in INVALID:
        ids = lm.encode(json.dumps(value, separators=(",", ":")))
        assert not force(compiled[engine, "transformers"].matcher(), ids, lm.tokenizer).accepted, (engine, value)


def test_llama_cpp_grammars_use_the_written_gguf(lm):
    """The view carries a vocab-only GGUF that llama.cpp reads back to the very same bytes."""
    from harness.lm.llamacpp import load_tokenizer_view

    assert lm.tokenizer.gguf_path and Path(lm.tokenizer.gguf_path).is_file()
    assert load_tokenizer_view(lm.tokenizer.gguf_path).view.token_bytes == lm.tokenizer.token_bytes


# the prefix cache ------------------------------------------------------------------------

def straight(model, prompt: list[int], rest: list[int]) -> np.ndarray:
    """The reference: a fresh cache, the prompt as one batch, then every token alone."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1, **{arg: cache})
        for t in rest:
            out = model(input_ids=torch.tensor([[t]]), use_cache=True, logits_to_keep=1, **{arg: cache})
    return out.logits[0, -1].float().numpy()


def branching_walk(lm, prompt: list[int], steps: int, seed: int) -> list[list[int]]:
    """Prefixes a branching sampler might ask for: extend, back up, jump to the prompt, revisit."""
    rng = random.Random(seed)
    normal = [i for i, b in enumerate(lm.tokenizer.token_bytes) if b]
    cur, asked = list(prompt), []
    for _ in range(steps):
        move = rng.random()
        if move < 0.5:
            cur = cur + [rng.choice(normal) for _ in range(rng.randint(1, 3))]
        elif move < 0.8 and len(cur) > len(prompt):
            cur = cur[: rng.randint(len(prompt), len(cur))]
        elif move < 0.9 and asked:
            cur = list(rng.choice(asked))
        else:
            cur = list(prompt)
        asked.append(cur)
    return asked


@pytest.mark.parametrize("sliding", [False, True], ids=["full-attention", "sliding-window"])
def test_logits_are_a_function_of_the_prefix(sliding, lm, toks, tmp_path):
    """Whatever was asked before, logits(prefix) is bit-identical to a straight evaluation (CPU, float32)."""
    target = lm if not sliding else TransformersLM(
        str(save_model(tmp_path / "mistral", toks["byte-level"], True)), n_threads=1)
    assert (target._anchor_cache is None) or sliding
    prompt = target.encode_chat([{"role": "user", "content": "Give me a JSON object."}])
    target.logits(prompt)  # a task's prompt comes first (the runner's prefill): it is the one batch
    walk = branching_walk(target, prompt, steps=40, seed=3)
    for prefix in [prompt] + walk:
        got = target.logits(prefix).copy()
        assert np.array_equal(got, straight(target.model, prompt, prefix[len(prompt):])), len(prefix)
    assert target.forward_tokens < sum(len(p) for p in walk)  # the cache did save work
    if sliding:
        assert target._anchor_cache is not None  # the copy-of-the-prompt path was the one taken


def test_cached_logits_match_a_single_full_pass(lm):
    """The cached schedule computes the same function as one uncached pass (positions, masks right)."""
    prompt = lm.encode_chat([{"role": "user", "content": "hi"}])
    seq = prompt + lm.encode('{"id":42,"ok":true}')
    lm.logits(prompt)
    got = lm.logits(seq)
    with torch.inference_mode():
        full = lm.model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].numpy()
    assert np.allclose(got, full, atol=1e-4)
    assert np.isclose(np.exp(lm.logprobs(seq)).sum(), 1.0)


# prompts, info, errors ------------------------------------------------------------------

def test_chat_template_and_fallback(lm, toks, tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A JSON object."}]
    text = b"".join(lm.tokenizer.token_bytes[i] for i in lm.encode_chat(msgs))
    assert text == b"Be brief.\nA JSON object.\n"  # markup tokens are special: no bytes
    assert lm.tok.decode(lm.encode_chat(msgs)) == "<|system|>Be brief.\n<|user|>A JSON object.\n<|assistant|>"
    plain = TransformersLM(str(save_model(tmp_path / "spm", toks["sentencepiece"])), n_threads=1)
    ids = plain.encode_chat(msgs)
    assert ids[0] == plain.tok.bos_token_id  # no template: plain lines after the tokenizer's BOS
    assert plain.tok.decode(ids, skip_special_tokens=True) == "Be brief.\nA JSON object.\n"


def test_info_names_the_model(lm, model_dir):
    info = lm.info()
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["lm"] == "transformers"
    assert info["model_path"] == str(model_dir.resolve()) and len(info["model_sha256"]) == 64
    assert info["torch"] == torch.__version__ and info["transformers"]
    assert info["vocab_size"] == lm.tokenizer.vocab_size == lm.model.config.vocab_size


def test_bad_models_are_one_line_errors(tmp_path, monkeypatch):
    from harness.config import RunConfig
    from harness.runner import load_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing can be found
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        TransformersLM("nobody/no-such-model")
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="GGUF file is for --lm llamacpp"):
        TransformersLM(str(gguf_file))
    with pytest.raises(ConfigError, match="needs --model"):
        load_lm(RunConfig(lm="transformers"))
    with pytest.raises(ConfigError, match="no config.json"):
        TransformersLM(str(tmp_path))


def test_cdbench_run_end_to_end(model_dir, tmp_path):
    """`cdbench run --lm transformers` on the tiny model: rows for every case, a summary, the model recorded."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "--lm", "transformers", "--model", str(model_dir),
           "--dataset", "builtin", "--limit", "3", "--engines", "xgrammar,llguidance", "--max-tokens", "16",
           "--reports-dir", str(tmp_path), "--run-id", "tiny", "--no-progress", "--lm-threads", "1"]
    env = {"CDBENCH_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "tiny"
    assert (run_dir / "summary.md").is_file()
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["engine"] for r in rows} == {"xgrammar", "llguidance"}
    outcomes = {(r["compile_status"], r["finish_reason"]) for r in rows}
    # a generation ended by the model or the limit; a schema an engine cannot express is not run
    assert outcomes <= {("ok", "eos"), ("ok", "max_tokens"), ("unsupported", "not_run")}, outcomes
    assert sum(r["compile_status"] == "ok" for r in rows) >= 4
    model = json.loads((run_dir / "manifest.json").read_text())["environment"]["model"]
    assert model["lm"] == "transformers" and model["model_path"] == str(model_dir.resolve())
