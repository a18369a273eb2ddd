"""llguidance: JSON Schema and Lark grammars through LLMatcher."""
from __future__ import annotations

from typing import Any

import llguidance
import numpy as np

from ..environment import package_version
from ..lm.base import TokenizerView
from ..tasks.task import Task
from .base import CompileError, ConstraintEngine, EngineOptions, Unsupported


class _Wrapper:
    """The duck-typed tokenizer llguidance's TokenizerWrapper reads."""

    def __init__(self, view: TokenizerView) -> None:
        self.eos_token_id = view.eos_id
        self.bos_token_id = view.bos_id
        # llguidance wants a distinct, non-empty name for special tokens.
        self.tokens = [b if b else f"<[{i}]>".encode() for i, b in enumerate(view.token_bytes)]
        self.special_token_ids = sorted(view.special_ids | {view.eos_id})
        self._by_bytes = {b: i for i, b in enumerate(view.token_bytes) if b}
        self._encoder = view.encoder

    def __call__(self, s: bytes | str) -> list[int]:
        """llguidance tokenizes forced text with this; the model's own tokenizer when known."""
        data = s.encode() if isinstance(s, str) else s
        if self._encoder is not None:
            return list(self._encoder(data))
        out, pos = [], 0
        while pos < len(data):
            for end in range(min(len(data), pos + 32), pos, -1):
                tok = self._by_bytes.get(data[pos:end])
                if tok is not None:
                    out.append(tok)
                    pos = end
                    break
            else:
                pos += 1  # a byte no token spells: nothing can emit it, so it is skipped, not fatal
        return out


class LLGuidanceMatcher:
    def __init__(self, matcher: "llguidance.LLMatcher", eos_id: int) -> None:
        self._m = matcher
        self._eos = eos_id

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self._m.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
        if self._m.is_error():
            raise RuntimeError(f"llguidance: {self._m.get_error().splitlines()[0][:300]}")

    def check(self, token: int) -> bool:
        if token == self._eos:  # validate_tokens never counts EOS; the mask allows it iff accepting
            return bool(self._m.is_accepting())
        return self._m.validate_tokens([token]) == 1

    def advance(self, token: int) -> bool:
        if token == self._eos or self._m.validate_tokens([token]) != 1:
            return False
        ok = bool(self._m.consume_token(token))
        if not ok and self._m.is_error():  # the parser gave up (e.g. its row limit), not a refusal
            raise RuntimeError(f"llguidance: {self._m.get_error().splitlines()[0][:300]}")
        return ok

    def rollback(self, n: int) -> None:
        if n and not self._m.rollback(n):
            raise RuntimeError(f"llguidance rollback failed: {self._m.get_error()}")

    def fork(self) -> "LLGuidanceMatcher":
        return LLGuidanceMatcher(self._m.deep_copy(), self._eos)

    def is_accepting(self) -> bool:
        return bool(self._m.is_accepting())


class LLGuidanceCompiled:
    def __init__(self, tokenizer: "llguidance.LLTokenizer", grammar: str, eos_id: int, first: "llguidance.LLMatcher") -> None:
        self._tok = tokenizer
        self._grammar = grammar
        self._eos = eos_id
        self._fresh = first  # the matcher built at compile time; later matchers are copies

    def matcher(self) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self._fresh.deep_copy(), self._eos)


class LLGuidanceEngine(ConstraintEngine):
    name = "llguidance"
    kinds = frozenset({"json_schema", "cfg"})
    grammar_format = "lark"

    def __init__(self, tokenizer: TokenizerView, options: EngineOptions | None = None) -> None:
        super().__init__(tokenizer, options)
        self._tok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Wrapper(tokenizer)), n_vocab=tokenizer.vocab_size)

    def version(self) -> str:
        return package_version("llguidance") or "?"

    def _json_options(self) -> dict[str, Any]:
        flexible = self.options.whitespace == "flexible"
        return {"whitespace_flexible": flexible, "item_separator": ",", "key_separator": ":",
                "coerce_one_of": False, "lenient": False}

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update(self._json_options())
        s["property_order"] = "declared"
        return s

    def _compile(self, task: Task) -> LLGuidanceCompiled:
        if task.kind == "json_schema":
            try:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(task.schema_text, defaults=self._json_options())
            except ValueError as exc:
                raise CompileError(str(exc)) from exc
        else:
            grammar = llguidance.LLMatcher.grammar_from_lark(task.grammars["lark"])
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._tok)
        if is_error:
            message = messages[0] if messages else "invalid grammar"
            if "nimplemented" in message or "not supported" in message or "unsupported" in message.lower():
                raise Unsupported(message.splitlines()[0][:300])
            raise CompileError(message.splitlines()[0][:300])
        matcher = llguidance.LLMatcher(self._tok, grammar, log_level=0)
        if matcher.is_error():
            raise CompileError(matcher.get_error()[:300])
        return LLGuidanceCompiled(self._tok, grammar, self.tokenizer.eos_id, matcher)
