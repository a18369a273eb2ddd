"""llama.cpp grammars (GBNF) through llama-cpp-python's grammar sampler, full-mask mode.

The mask is what llama.cpp's grammar sampler leaves finite when applied to every
candidate of the vocabulary (the mode MaskBench measures). JSON schemas go through
llama-cpp-python's schema-to-GBNF converter (required properties first). The sampler
needs llama.cpp's own vocabulary object, so the engine loads the GGUF named by the
tokenizer view in vocab-only mode; a tokenizer with no GGUF behind it is unsupported.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import sys
import tempfile
from typing import Any, Iterator

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import json_schema_to_gbnf

from ..environment import package_version
from ..lm.base import TokenizerView
from ..lm.llamacpp import load_tokenizer_view
from ..tasks.task import Task
from .base import CompileError, ConstraintEngine, EngineOptions, Unsupported
from .bitmask import from_bool

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)

_SPACE_RULE = re.compile(r"^space ::= .*$", re.MULTILINE)
SPACE_RULES = {"compact": 'space ::= ""', "flexible": r"space ::= [ \t\n\r]*"}


class _Candidates:
    """A reusable llama_token_data_array over the whole vocabulary (or one token)."""

    def __init__(self, n: int) -> None:
        self.data = np.zeros(n, dtype=_TOKEN_DATA)
        self.array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self.data.ctypes.data, llama_cpp.llama_token_data_p),
            size=n, selected=-1, sorted=False,
        )
        self.ref = ctypes.byref(self.array)


class LlamaCppMatcher:
    def __init__(self, compiled: "LlamaCppCompiled", sampler: Any = None, history: list[int] | None = None) -> None:
        self._c = compiled
        self._smpl = sampler if sampler is not None else compiled.new_sampler()
        self._history = list(history or [])
        self._full = _Candidates(compiled.vocab_size)
        self._full.data["id"] = np.arange(compiled.vocab_size, dtype=np.int32)
        self._one = _Candidates(1)

    def __del__(self) -> None:
        smpl = getattr(self, "_smpl", None)
        if smpl:
            llama_cpp.llama_sampler_free(smpl)
            self._smpl = None

    def fill_mask(self, bitmask: np.ndarray) -> None:
        full = self._full
        full.data["logit"] = 0.0
        full.array.size = len(full.data)
        full.array.selected = -1
        full.array.sorted = False
        llama_cpp.llama_sampler_apply(self._smpl, full.ref)
        allowed = np.isfinite(full.data["logit"]) & self._c.allowed_ids
        bitmask[:] = from_bool(allowed)

    def check(self, token: int) -> bool:
        if not self._c.allowed_ids[token]:
            return False
        one = self._one
        one.data[0] = (token, 0.0, 0.0)
        one.array.size = 1
        one.array.selected = -1
        llama_cpp.llama_sampler_apply(self._smpl, one.ref)
        return bool(np.isfinite(one.data["logit"][0]))

    def advance(self, token: int) -> bool:
        if token == self._c.eos_id or not self.check(token):
            return False
        llama_cpp.llama_sampler_accept(self._smpl, token)
        self._history.append(token)
        return True

    def rollback(self, n: int) -> None:
        """llama.cpp grammars cannot step back: rebuild and replay the kept tokens."""
        if not n:
            return
        keep = self._history[:-n]
        llama_cpp.llama_sampler_free(self._smpl)
        self._smpl = self._c.new_sampler()
        for t in keep:
            llama_cpp.llama_sampler_accept(self._smpl, t)
        self._history = keep

    def fork(self) -> "LlamaCppMatcher":
        return LlamaCppMatcher(self._c, llama_cpp.llama_sampler_clone(self._smpl), self._history)

    def is_accepting(self) -> bool:
        return self.check(self._c.eos_id)


class LlamaCppCompiled:
    def __init__(self, engine: "LlamaCppGrammarEngine", gbnf: str) -> None:
        self.gbnf = gbnf
        self._vocab_ptr = engine.vocab_ptr
        self.vocab_size = engine.tokenizer.vocab_size
        self.eos_id = engine.tokenizer.eos_id
        self.allowed_ids = engine.allowed_ids
        self._gbnf_bytes = gbnf.encode("utf-8")
        with _captured_stderr() as captured:  # llama.cpp prints parse errors (and the grammar) to fd 2
            first = llama_cpp.llama_sampler_init_grammar(self._vocab_ptr, self._gbnf_bytes, b"root")
        if not first:
            lines = [ln for ln in captured.read().splitlines() if "error" in ln.lower()]
            raise CompileError("llama.cpp could not parse the GBNF grammar" + (f": {lines[0][:200]}" if lines else ""))
        llama_cpp.llama_sampler_free(first)

    def new_sampler(self) -> Any:
        smpl = llama_cpp.llama_sampler_init_grammar(self._vocab_ptr, self._gbnf_bytes, b"root")
        if not smpl:
            raise CompileError("llama.cpp could not parse the GBNF grammar")
        return smpl

    def matcher(self) -> LlamaCppMatcher:
        return LlamaCppMatcher(self)


class LlamaCppGrammarEngine(ConstraintEngine):
    name = "llamacpp"
    kinds = frozenset({"json_schema", "cfg"})
    grammar_format = "gbnf"

    def __init__(self, tokenizer: TokenizerView, options: EngineOptions | None = None) -> None:
        super().__init__(tokenizer, options)
        if not tokenizer.gguf_path:
            raise Unsupported("llama.cpp grammars need a GGUF vocabulary; this tokenizer has none")
        self._gguf = load_tokenizer_view(tokenizer.gguf_path)
        if self._gguf.view.token_bytes != tokenizer.token_bytes:
            raise CompileError("GGUF vocabulary differs from the model's tokenizer view")
        self.vocab_ptr = self._gguf.model()._model.vocab
        allowed = np.ones(tokenizer.vocab_size, dtype=bool)
        allowed[list(tokenizer.special_ids)] = False
        allowed[tokenizer.eos_id] = True  # the one stop token every engine shares
        self.allowed_ids = allowed
        llama_cpp.llama_log_set(_silent_log, ctypes.c_void_p())

    def version(self) -> str:
        return package_version("llama-cpp-python") or "?"

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update({"space_rule": SPACE_RULES[self.options.whitespace], "property_order": "required-first",
                  "mask_mode": "full", "strict": "n/a (additionalProperties as the schema says)"})
        return s

    def schema_to_gbnf(self, schema_text: str) -> str:
        try:
            gbnf = json_schema_to_gbnf(schema_text)
        except NotImplementedError as exc:
            raise Unsupported(str(exc)[:300] or "unsupported schema feature") from exc
        except (ValueError, KeyError, TypeError, AssertionError, RecursionError) as exc:
            raise CompileError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        return _SPACE_RULE.sub(SPACE_RULES[self.options.whitespace].replace("\\", "\\\\"), gbnf)

    def _compile(self, task: Task) -> LlamaCppCompiled:
        gbnf = self.schema_to_gbnf(task.schema_text) if task.kind == "json_schema" else task.grammars["gbnf"]
        return LlamaCppCompiled(self, gbnf)

    def export(self, compiled: LlamaCppCompiled) -> bytes:
        return compiled.gbnf.encode("utf-8")

    def load(self, data: bytes) -> LlamaCppCompiled:
        return LlamaCppCompiled(self, data.decode("utf-8"))


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Capture what C code writes to file descriptor 2 (Python's sys.stderr is not enough)."""
    out = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.write(tmp.read().decode("utf-8", errors="replace"))
            out.seek(0)


@llama_cpp.llama_log_callback
def _silent_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp prints grammar parse errors to stderr; the row's status carries them instead."""
