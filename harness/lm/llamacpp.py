"""llama-cpp-python over any GGUF: tokenizer view, chat prompts, prefix-cached logits.

The KV cache is kept across calls: a request for a prefix that shares its first k tokens
with what is already evaluated drops the rest of the cache and evaluates only the new
tokens, so branching samplers pay only for the tokens that differ.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .base import TokenizerView, log_softmax

# Control-token attribute bits in llama.cpp's llama_token_attr.
_ATTR_CONTROL = 1 << 3
_ATTR_UNKNOWN = 1 << 0


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hash of the model file, cached next to nothing: callers keep it in results."""
    return _sha256_cached(str(Path(path).resolve()), os.path.getsize(path), os.path.getmtime(path))


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _import_llama():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - exercised only without the package
        raise ConfigError(f"llama-cpp-python is not installed: {exc}") from exc
    return llama_cpp


def check_model_path(path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ConfigError(f"model file is not a GGUF file: {path}")


@lru_cache(maxsize=4)
def load_tokenizer_view(path: str) -> "GGUFTokenizer":
    """A vocab-only load of a GGUF: enough for engines and replay, no weights."""
    return GGUFTokenizer(path)


class GGUFTokenizer:
    """The vocabulary of a GGUF file, read through llama.cpp in vocab-only mode."""

    def __init__(self, path: str, llama: Any = None) -> None:
        check_model_path(path)
        llama_cpp = _import_llama()
        self.path = path
        if llama is None:
            llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self._llama = llama
        vocab = llama._model.vocab
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        buf = ctypes.create_string_buffer(512)
        pieces: list[bytes] = []
        special: set[int] = set()
        eog: set[int] = set()
        for tok in range(n_vocab):
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                eog.add(tok)
            attr = llama_cpp.llama_vocab_get_attr(vocab, tok)
            if attr & (_ATTR_CONTROL | _ATTR_UNKNOWN) or llama_cpp.llama_vocab_is_eog(vocab, tok):
                special.add(tok)
                pieces.append(b"")
                continue
            n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(vocab, tok, big, len(big), 0, False)
                pieces.append(big.raw[:n])
            else:
                pieces.append(buf.raw[:n])
        eot = llama_cpp.llama_vocab_eot(vocab)
        eos = llama_cpp.llama_vocab_eos(vocab)
        # Chat models end an answer with end-of-turn; that is the stop token engines share.
        stop = eot if eot >= 0 else eos
        bos = llama_cpp.llama_vocab_bos(vocab)
        self.view = TokenizerView(
            token_bytes=tuple(pieces),
            eos_id=int(stop),
            special_ids=frozenset(special),
            bos_id=int(bos) if bos >= 0 else None,
            name=Path(path).name,
            gguf_path=path,
            encoder=lambda data: llama.tokenize(data, add_bos=False, special=False),
            stop_ids=frozenset(eog - {int(stop)}),
        )
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.metadata: dict[str, str] = dict(llama.metadata)

    def encode(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def encode_special(self, text: str) -> list[int]:
        """Tokenize text that contains control-token markup (chat templates)."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Render with the GGUF's own chat template.

        GGUFs without a template (this Gemma 3 270M has none) get their family's turn format
        when it is known (Gemma: <start_of_turn>/<end_of_turn>, system folded into the user
        turn), else plain lines.
        """
        template = self.metadata.get("tokenizer.chat_template")
        if template:
            import jinja2

            env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise jinja2.TemplateError(message)

            env.globals["raise_exception"] = raise_exception
            return env.from_string(template).render(
                messages=messages, add_generation_prompt=True, bos_token="", eos_token=""
            )
        if str(self.metadata.get("general.architecture", "")).startswith("gemma"):
            return render_gemma(messages)
        return "".join(m["content"] + "\n" for m in messages)


def render_gemma(messages: list[dict[str, str]]) -> str:
    """Gemma's turn format; Gemma has no system role, so system text opens the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        content = m["content"]
        if system and m["role"] == "user":
            content, system = f"{system}\n\n{content}", ""
        role = "model" if m["role"] == "assistant" else "user"
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "".join(out) + "<start_of_turn>model\n"


class LlamaCppLM:
    """A GGUF model through llama-cpp-python with a persistent prefix cache."""

    def __init__(
        self,
        model_path: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
    ) -> None:
        check_model_path(model_path)
        llama_cpp = _import_llama()
        self._llama_cpp = llama_cpp
        self.model_path = model_path
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.n_ctx = n_ctx
        self.llm = llama_cpp.Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_batch=n_batch,
            seed=seed,
            logits_all=False,
            verbose=False,
        )
        self._tok = GGUFTokenizer(model_path, llama=self.llm)
        self.tokenizer: TokenizerView = self._tok.view
        self.name = Path(model_path).name
        self._vocab = self.tokenizer.vocab_size
        self._evaluated: list[int] = []
        self._last: np.ndarray | None = None
        self._anchor = 0  # length of the prompt evaluated as one batch
        self._anchor_logits: np.ndarray | None = None
        self.forward_tokens = 0  # tokens actually pushed through the network
        self.calls = 0

    # tokenizer -----------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tok.render_chat(messages)
        ids = self._tok.encode_special(text)
        if self._tok.add_bos and self.tokenizer.bos_id is not None and (not ids or ids[0] != self.tokenizer.bos_id):
            ids = [self.tokenizer.bos_id] + ids
        return ids

    # scores ----------------------------------------------------------------
    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        """Logits after `prefix`, a pure function of the prefix whatever was asked before.

        llama.cpp's quantised kernels give different numbers for a token evaluated inside a
        batch and alone (up to ~0.8 in a logit here), so the evaluation schedule is fixed:
        the prompt (the first prefix not extending the cached one) as one batch, and every
        later token alone. Branching then only changes the cost, never the numbers.
        """
        self.calls += 1
        prefix = list(prefix)
        if not prefix:
            raise ValueError("logits() needs a non-empty prefix (the prompt)")
        if len(prefix) > self.n_ctx:
            raise ValueError(f"prefix of {len(prefix)} tokens exceeds n_ctx={self.n_ctx}")
        ev = self._evaluated
        if ev == prefix and self._last is not None:
            return self._last
        anchor = self._anchor
        if anchor and len(prefix) >= anchor and prefix[:anchor] == ev[:anchor]:
            if len(prefix) == anchor:
                self._last = self._anchor_logits
                self._evaluated = prefix
                self.llm.n_tokens = anchor
                return self._last
            n = len(ev)
            if len(prefix) > n and prefix[:n] == ev:
                common = n
            else:
                common = anchor
                limit = min(n, len(prefix))
                while common < limit and ev[common] == prefix[common]:
                    common += 1
                if common == len(prefix):
                    common -= 1
            self.llm.n_tokens = common
            for token in prefix[common:]:
                self.llm.eval([token])
            self.forward_tokens += len(prefix) - common
            self._last = self._read_logits()
        else:  # a new prompt: one batch, remembered as the anchor
            self.llm.n_tokens = 0
            self.llm.eval(prefix)
            self.forward_tokens += len(prefix)
            self._last = self._read_logits()
            self._anchor = len(prefix)
            self._anchor_logits = self._last
        self._evaluated = prefix
        return self._last

    def _read_logits(self) -> np.ndarray:
        ptr = self.llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self._vocab,)).copy()

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        return log_softmax(self.logits(prefix))

    def info(self) -> dict[str, object]:
        md = self._tok.metadata
        return {
            "model": self.name,
            "model_path": str(Path(self.model_path).resolve()),
            "model_sha256": file_sha256(self.model_path),
            "model_arch": md.get("general.architecture"),
            "model_name": md.get("general.name"),
            "vocab_size": self._vocab,
            "eos_id": self.tokenizer.eos_id,
            "stop_ids": sorted(self.tokenizer.stops),
            "n_ctx": self.n_ctx,
            "lm_threads": self.n_threads,
            "llama_cpp_python": getattr(self._llama_cpp, "__version__", "?"),
        }
