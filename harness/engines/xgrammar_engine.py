"""xgrammar: JSON Schema and EBNF grammars over the model's raw byte vocabulary."""
from __future__ import annotations

import re

import time
from typing import Any

import numpy as np
import torch
import xgrammar as xgr

from ..environment import package_version
from ..lm.base import TokenizerView
from ..tasks.task import Task
from .base import CompileError, ConstraintEngine, EngineOptions

# The bound of the compiler's cache (xgrammar evicts beyond it; vLLM caps it at the same 512 MiB,
# ADVERSARIAL.md #16). In the cold mode it holds one schema at a time anyway.
CACHE_LIMIT_BYTES = 512 << 20


class XGrammarMatcher:
    def __init__(self, matcher: "xgr.GrammarMatcher", eos_id: int, special: frozenset[int] = frozenset()) -> None:
        self._m = matcher
        self._eos = eos_id
        self._special = special  # never allowed; accept_token would log a warning for each one
        self._views: dict[int, torch.Tensor] = {}

    def _view(self, bitmask: np.ndarray) -> torch.Tensor:
        key = bitmask.__array_interface__["data"][0]
        view = self._views.get(key)
        if view is None:
            view = torch.from_numpy(bitmask).view(1, -1)  # shares memory: xgrammar writes our array
            self._views = {key: view}
        return view

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self._m.fill_next_token_bitmask(self._view(bitmask), 0)

    def check(self, token: int) -> bool:
        if token == self._eos:
            return self._m.is_completed()
        if token in self._special:
            return False
        if self._m.accept_token(token):
            self._m.rollback(1)
            return True
        return False

    def advance(self, token: int) -> bool:
        return bool(self._m.accept_token(token))

    def rollback(self, n: int) -> None:
        if n:
            self._m.rollback(n)

    def fork(self) -> "XGrammarMatcher":
        return XGrammarMatcher(self._m.fork(), self._eos, self._special)

    def is_accepting(self) -> bool:
        return bool(self._m.is_completed())


class XGrammarCompiled:
    def __init__(self, compiled: "xgr.CompiledGrammar", eos_id: int, special: frozenset[int] = frozenset()) -> None:
        self._compiled = compiled
        self._eos = eos_id
        self._special = special

    def matcher(self) -> XGrammarMatcher:
        return XGrammarMatcher(xgr.GrammarMatcher(self._compiled), self._eos, self._special)


def error_line(exc: BaseException) -> str:
    """xgrammar's message in one line, without the wall-clock stamp it starts with ("[17:04:57] "),
    so that the same schema gives the same row on every run."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^\[\d{2}:\d{2}:\d{2}\] ", "", text)


class XGrammarEngine(ConstraintEngine):
    name = "xgrammar"
    kinds = frozenset({"json_schema", "cfg"})
    grammar_format = "ebnf"

    def __init__(self, tokenizer: TokenizerView, options: EngineOptions | None = None) -> None:
        super().__init__(tokenizer, options)
        self._special = frozenset(tokenizer.special_ids - {tokenizer.eos_id})
        self._info = xgr.TokenizerInfo(
            list(tokenizer.token_bytes),
            vocab_type=xgr.VocabType.RAW,
            vocab_size=tokenizer.vocab_size,
            stop_token_ids=[tokenizer.eos_id],
            add_prefix_space=False,
        )
        # One compiler per engine (a fresh one per schema would re-pay tokenizer preprocessing).
        # compile_cache "cold": its cache is emptied before every compile, so no compile reuses
        # another schema's rules, and the cache then holds just that schema (a repeat is the warm
        # compile). "shared": never emptied, as in a server and in MaskBench's runner, whose
        # compiler keeps the rules of every schema it compiled before.
        self._compiler = xgr.GrammarCompiler(self._info, max_threads=self.options.threads, cache_enabled=True,
                                             cache_limit_bytes=CACHE_LIMIT_BYTES)
        self._cached_key: str | None = None

    def version(self) -> str:
        return package_version("xgrammar") or "?"

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update({"any_whitespace": self.options.whitespace == "flexible", "strict_mode": self.options.strict,
                  "separators": None if self.options.whitespace == "flexible" else [",", ":"],
                  "any_order": False, "property_order": "declared",
                  "cache": ("emptied before every compile (cold)" if self._cold else
                            "kept across schemas (shared, order-dependent)") + "; warm = a repeat of the same schema",
                  "cache_limit_mb": CACHE_LIMIT_BYTES >> 20})
        return s

    @property
    def _cold(self) -> bool:
        return self.options.compile_cache == "cold"

    def _compile(self, task: Task) -> XGrammarCompiled:
        if self._cold:
            self._compiler.clear_cache()
        self._cached_key = None
        compiled = self._compile_with(self._compiler, task)
        self._cached_key = self._key(task)
        return XGrammarCompiled(compiled, self.tokenizer.eos_id, self._special)

    def _key(self, task: Task) -> str:
        return task.schema_text if task.kind == "json_schema" else task.grammars.get("ebnf", "")

    def warm_compile_s(self, task: Task) -> float:
        """The same schema again, answered from the cache its cold compile filled."""
        if self._cached_key != self._key(task):
            self._compile(task)  # not the schema compiled last: fill the cache, untimed
        t0 = time.perf_counter()
        self._compile_with(self._compiler, task)
        return time.perf_counter() - t0

    def _compile_with(self, compiler: "xgr.GrammarCompiler", task: Task) -> "xgr.CompiledGrammar":
        try:
            if task.kind == "json_schema":
                flexible = self.options.whitespace == "flexible"
                compiled = compiler.compile_json_schema(
                    task.schema_text,
                    any_whitespace=flexible,
                    separators=None if flexible else (",", ":"),
                    strict_mode=self.options.strict,
                )
            else:
                compiled = compiler.compile_grammar(task.grammars["ebnf"])
        except RuntimeError as exc:
            raise CompileError(error_line(exc)) from exc
        return compiled

    def export(self, compiled: XGrammarCompiled) -> bytes:
        return compiled._compiled.serialize_json().encode("utf-8")

    def load(self, data: bytes) -> XGrammarCompiled:
        return XGrammarCompiled(xgr.CompiledGrammar.deserialize_json(data.decode("utf-8"), self._info),
                                self.tokenizer.eos_id, self._special)
