"""llama-cpp-python over any GGUF: tokenizer view, chat prompts, prefix-cached logits.

The KV cache is kept across calls: a request for a prefix that shares its first k tokens
with what is already evaluated drops the rest of the cache and evaluates only the new
tokens, so branching samplers pay only for the tokens that differ.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .base import TokenizerView, log_softmax
from .gguf_vocab import read_vocabulary


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
    """The vocabulary of a GGUF file (gguf_vocab: read through llama.cpp once, then cached on
    disk); llama.cpp's own tokenizer is loaded (vocab-only) on first use, so a process that only
    needs token bytes (a replay worker, an engine) never loads it."""

    def __init__(self, path: str, llama: Any = None) -> None:
        check_model_path(path)
        self.path = path
        self._llama = llama
        vocab = read_vocabulary(path, self.model)
        # Chat models end an answer with end-of-turn; that is the stop token engines share.
        stop = vocab.eot if vocab.eot >= 0 else vocab.eos
        self.view = TokenizerView(
            token_bytes=vocab.token_bytes,
            eos_id=int(stop),
            special_ids=vocab.special,
            bos_id=vocab.bos if vocab.bos >= 0 else None,
            name=Path(path).name,
            gguf_path=path,
            encoder=self._tokenize,
            stop_ids=frozenset(vocab.eog - {int(stop)}),
        )
        self.add_bos = vocab.add_bos
        self.metadata: dict[str, str] = vocab.metadata

    def model(self) -> Any:
        """llama.cpp's model object (vocab-only unless given), loaded on first use."""
        if self._llama is None:
            self._llama = _import_llama().Llama(model_path=self.path, vocab_only=True, verbose=False)
        return self._llama

    def _tokenize(self, data: bytes) -> list[int]:
        return self.model().tokenize(data, add_bos=False, special=False)

    def encode(self, text: str) -> list[int]:
        return self.model().tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def encode_special(self, text: str) -> list[int]:
        """Tokenize text that contains control-token markup (chat templates)."""
        return self.model().tokenize(text.encode("utf-8"), add_bos=False, special=True)

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
