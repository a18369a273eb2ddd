"""Frontends that call llama-cpp-python in this process: a `llama_cpp.Llama` of the run's model.

The run's LM (harness.lm.llamacpp.LlamaCppLM) drives llama.cpp through the low-level API with its
own KV sequences, so it has no `Llama` object to hand to a library; the frontends get one of their
own, opened once per run on the same GGUF with the LM's context size, threads and batch size (a
second copy of the weights, ~0.3 GB for the default model). Two things are made explicit:
- the chat template: the Gemma 3 270M GGUF ships none, and llama-cpp-python would then fall back to
  the llama-2 format; the frontends' Llama gets cdbench's own rendering (the GGUF's template when it
  has one, else the model family's turn format) as its chat handler, so a frontend and an engine see
  the same prompt tokens;
- the KV cache: every frontend case starts from an empty cache (the prompt evaluated as one batch,
  inside the frontend's clock, as a fresh request to a server would be).
"""
from __future__ import annotations

import atexit
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

from ..errors import ConfigError
from ..lm.llamacpp import load_tokenizer_view


def llama_of(lm: Any) -> Any:
    """The frontends' llama_cpp.Llama for the run's LM (opened on first use, then shared)."""
    path = getattr(lm, "model_path", None)
    if path is None:
        raise ConfigError(f"the outlines and llamacpp-response-format frontends run on the llama.cpp LM (--lm llamacpp), "
                          f"not {type(lm).__name__}")
    return _open_llama(str(path), int(getattr(lm, "n_ctx", 4096)), int(getattr(lm, "n_threads", 1) or 1),
                       int(getattr(lm, "n_batch", 512)))


@lru_cache(maxsize=2)
def _open_llama(path: str, n_ctx: int, n_threads: int, n_batch: int) -> Any:
    import llama_cpp
    from llama_cpp import llama_chat_format

    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                          n_batch=n_batch, seed=0, logits_all=False, verbose=False)
    view = load_tokenizer_view(path)

    def formatter(messages: list[dict[str, Any]], **_: Any) -> Any:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        return llama_chat_format.ChatFormatterResponse(prompt=view.render_chat(plain))

    llm.chat_handler = llama_chat_format.chat_formatter_to_chat_completion_handler(formatter)
    atexit.register(llm.close)  # freed while the interpreter is whole (its __del__ at shutdown raises)
    return llm


@contextmanager
def fresh_llama(lm: Any) -> Iterator[Any]:
    """The frontends' Llama with an empty KV cache for one case."""
    llm = llama_of(lm)
    llm.reset()
    try:
        yield llm
    finally:
        llm.reset()


def generated_tokens(llm: Any, prompt_tokens: int, text: str) -> int:
    """Tokens generated in the case just run, from the Llama's own record: each generated token is
    evaluated before the next is sampled, except the last one when the token limit (or cdbench's
    deadline) stopped generation, which shows as streamed text beyond the evaluated tokens' text;
    an end-of-turn token ends generation and is not an output token. Exact, unlike counting stream
    chunks, which merge the pieces of a multi-byte character."""
    evaluated = [int(t) for t in llm.input_ids[prompt_tokens:llm.n_tokens]]
    shown = len(llm.detokenize(evaluated)) if evaluated else 0
    return len(evaluated) + (1 if len(text.encode("utf-8")) > shown else 0)
