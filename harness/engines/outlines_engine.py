"""outlines-core: JSON Schema -> regex -> token-level DFA index (regular languages only).

Grammar tasks need a `regex` translation; a context-free language has none, and the
result is then "unsupported", stated honestly.
"""
from __future__ import annotations

import pickle
from collections import defaultdict
from typing import Any

import numpy as np
import outlines_core
from outlines_core.json_schema import WHITESPACE, build_regex_from_schema

from ..environment import package_version
from ..lm.base import TokenizerView
from ..tasks.task import Task
from .base import CompileError, ConstraintEngine, EngineOptions, Unsupported


class OutlinesMatcher:
    def __init__(self, index: "outlines_core.Index", eos_id: int, history: list[int] | None = None) -> None:
        self._index = index
        self._eos = eos_id
        self._guide = outlines_core.Guide(index, max_rollback=1 << 20)
        self._history: list[int] = []
        for t in history or []:
            self._guide.advance(t, return_tokens=False)
            self._history.append(t)

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self._guide.write_mask_into(bitmask.ctypes.data, bitmask.size, 4)

    def check(self, token: int) -> bool:
        if token == self._eos:
            return bool(self._guide.is_finished())
        return bool(self._guide.accepts_tokens([token]))

    def advance(self, token: int) -> bool:
        if token == self._eos or not self._guide.accepts_tokens([token]):
            return False
        self._guide.advance(token, return_tokens=False)
        self._history.append(token)
        return True

    def rollback(self, n: int) -> None:
        if n:
            self._guide.rollback_state(n)
            del self._history[-n:]

    def fork(self) -> "OutlinesMatcher":
        return OutlinesMatcher(self._index, self._eos, self._history)

    def is_accepting(self) -> bool:
        return bool(self._guide.is_finished())


class OutlinesCompiled:
    def __init__(self, index: "outlines_core.Index", eos_id: int, regex: str) -> None:
        self.index = index
        self.regex = regex
        self._eos = eos_id

    def matcher(self) -> OutlinesMatcher:
        return OutlinesMatcher(self.index, self._eos)


def byte_vocabulary(tokenizer: TokenizerView) -> dict[bytes, list[int]]:
    """Every token's exact bytes -> its ids (the end token, special tokens and empty pieces left out)."""
    by_bytes: dict[bytes, list[int]] = defaultdict(list)
    for i, b in enumerate(tokenizer.token_bytes):
        if b and i != tokenizer.eos_id and i not in tokenizer.special_ids:
            by_bytes[b].append(i)
    return dict(by_bytes)


class OutlinesEngine(ConstraintEngine):
    name = "outlines"
    kinds = frozenset({"json_schema", "cfg"})
    grammar_format = "regex"

    def __init__(self, tokenizer: TokenizerView, options: EngineOptions | None = None) -> None:
        super().__init__(tokenizer, options)
        self._vocab = outlines_core.Vocabulary(tokenizer.eos_id, byte_vocabulary(tokenizer))

    def version(self) -> str:
        return package_version("outlines-core") or "?"

    def _whitespace(self) -> str:
        return WHITESPACE if self.options.whitespace == "flexible" else ""

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s["whitespace_pattern"] = self._whitespace()
        s["strict"] = "n/a (regex from schema; extra properties follow additionalProperties)"
        s["property_order"] = "declared"
        return s

    def _compile(self, task: Task) -> OutlinesCompiled:
        if task.kind == "json_schema":
            try:
                regex = build_regex_from_schema(task.schema_text, self._whitespace())
            except (ValueError, TypeError, NotImplementedError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "support" in message.lower() or "not implemented" in message.lower():
                    raise Unsupported(message[:300]) from exc
                raise CompileError(message[:300]) from exc
        else:
            regex = task.grammars["regex"]
        try:
            index = outlines_core.Index(regex, self._vocab)
        except (ValueError, TypeError) as exc:
            raise CompileError(str(exc).splitlines()[0][:300]) from exc
        return OutlinesCompiled(index, self.tokenizer.eos_id, regex)

    def export(self, compiled: OutlinesCompiled) -> bytes:
        return pickle.dumps((compiled.index, compiled.regex))

    def load(self, data: bytes) -> OutlinesCompiled:
        index, regex = pickle.loads(data)
        return OutlinesCompiled(index, self.tokenizer.eos_id, regex)
