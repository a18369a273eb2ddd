"""The constraint-engine seam.

`ConstraintEngine.compile(task)` gives a `Compiled` constraint; each `matcher()` of it is a
fresh incremental checker. Matchers offer the full mask (token masking, ASAp), a
non-mutating single-token check (AWRS), advance, rollback, fork (SMC, tries) and an
accepting query. Unsupported features and compile errors are exceptions of two kinds
here, which the runner turns into statuses, never crashes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ..lm.base import TokenizerView
from .bitmask import is_allowed, set_allowed
from ..tasks.task import Task


class Unsupported(Exception):
    """The engine cannot express this task (a keyword, a grammar format it lacks)."""


class CompileError(Exception):
    """The engine tried and failed to compile the constraint."""


class Matcher(Protocol):
    def fill_mask(self, bitmask: np.ndarray) -> None:
        """Write the allowed next tokens (EOS iff accepting) into a packed int32 bitmask."""

    def check(self, token: int) -> bool:
        """Is `token` allowed next? Leaves the state unchanged."""

    def advance(self, token: int) -> bool:
        """Consume `token`; return False (state unchanged) if it is not allowed."""

    def rollback(self, n: int) -> None:
        """Undo the last n advanced tokens."""

    def fork(self) -> "Matcher":
        """An independent copy at the same state."""

    def is_accepting(self) -> bool:
        """Is the text so far a complete member of the language (EOS allowed)?"""


class Compiled(Protocol):
    def matcher(self) -> Matcher: ...


class StopAliases:
    """A matcher that treats every stop token as the engine's EOS.

    Engines are told one stop token; a model may end with several (TokenizerView.stop_ids).
    Each alias is allowed exactly when EOS is, in the mask and in the single-token check,
    so every engine and sampler targets the same language without engine-specific code.
    """

    def __init__(self, inner: Matcher, eos_id: int, aliases: frozenset[int]) -> None:
        self.inner = inner
        self._eos = eos_id
        self._aliases = aliases

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self.inner.fill_mask(bitmask)
        eos_on = is_allowed(bitmask, self._eos)
        for t in self._aliases:
            set_allowed(bitmask, t, eos_on)

    def check(self, token: int) -> bool:
        return self.inner.check(self._eos if token in self._aliases else token)

    def advance(self, token: int) -> bool:
        return self.inner.advance(self._eos if token in self._aliases else token)

    def rollback(self, n: int) -> None:
        self.inner.rollback(n)

    def fork(self) -> "StopAliases":
        return StopAliases(self.inner.fork(), self._eos, self._aliases)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()


class LengthBound:
    """A matcher for the language L intersected with |w| <= T: after T tokens only the stop
    tokens may follow (ALGORITHMS.md 5.1 and 7.7). Exact targets and every sampler compared
    with them use it, so they all aim at P(w | w in L, |w| <= T) and nothing is cut short."""

    def __init__(self, inner: Matcher, bound: int, stops: frozenset[int], depth: int = 0) -> None:
        self.inner = inner
        self.bound = bound
        self.stops = stops
        self.depth = depth

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self.inner.fill_mask(bitmask)
        if self.depth >= self.bound:
            keep = [t for t in self.stops if is_allowed(bitmask, t)]
            bitmask[:] = 0
            for t in keep:
                set_allowed(bitmask, t, True)

    def check(self, token: int) -> bool:
        if self.depth >= self.bound and token not in self.stops:
            return False
        return self.inner.check(token)

    def advance(self, token: int) -> bool:
        if self.depth >= self.bound and token not in self.stops:
            return False
        ok = self.inner.advance(token)
        if ok and token not in self.stops:
            self.depth += 1
        return ok

    def rollback(self, n: int) -> None:
        self.inner.rollback(n)
        self.depth = max(0, self.depth - n)

    def fork(self) -> "LengthBound":
        return LengthBound(self.inner.fork(), self.bound, self.stops, self.depth)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()


@dataclass
class EngineOptions:
    """Settings that change results; stored with every result row.

    whitespace: "compact" forbids optional whitespace in JSON, "flexible" allows it.
    strict: JSON-schema strictness (xgrammar strict_mode: no extra properties / items
    unless the schema allows them explicitly); engines without the notion record it as-is.
    threads: compile/mask threads inside the engine (1, as in MaskBench).
    compile_cache: "cold" empties an engine's compile cache before every compile, so each
    compile time stands alone and does not depend on the schemas before it; "shared" keeps one
    long-lived compiler per worker whose cache carries over from schema to schema, as in a
    server and in MaskBench's own runner (xgrammar reuses compiled rules across schemas, so
    its times then depend on the order of the schemas). Engines without a cache ignore it.
    """

    whitespace: str = "compact"
    strict: bool = True
    threads: int = 1
    compile_cache: str = "cold"

    def as_dict(self) -> dict[str, Any]:
        return {"whitespace": self.whitespace, "strict": self.strict, "threads": self.threads,
                "compile_cache": self.compile_cache}


class ConstraintEngine:
    """Base class: subclasses set `name`, `kinds`, and implement `_compile`."""

    name: ClassVar[str] = "engine"
    kinds: ClassVar[frozenset[str]] = frozenset({"json_schema"})
    grammar_format: ClassVar[str | None] = None  # the cfg format this engine takes

    def __init__(self, tokenizer: TokenizerView, options: EngineOptions | None = None) -> None:
        self.tokenizer = tokenizer
        self.options = options or EngineOptions()
        if self.options.whitespace not in ("compact", "flexible"):
            raise ValueError(f"whitespace must be 'compact' or 'flexible', not {self.options.whitespace!r}")

    def version(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Every setting that changes this engine's results, engine-specific ones included."""
        return self.options.as_dict()

    def compile(self, task: Task) -> Compiled:
        if task.kind not in self.kinds:
            raise Unsupported(f"{self.name} does not take {task.kind} tasks")
        if task.kind == "cfg" and (self.grammar_format is None or self.grammar_format not in task.grammars):
            raise Unsupported(f"{self.name} needs a {self.grammar_format} grammar, task has {sorted(task.grammars)}")
        return self._compile(task)

    def _compile(self, task: Task) -> Compiled:
        raise NotImplementedError

    def warm_compile_s(self, task: Task) -> float | None:
        """Seconds to compile `task` again once the engine's own compile cache holds it (filled
        here, untimed): the warm compile of a repeated schema. None: the engine has no compile
        cache, and warm is not applicable. compile() itself stays cold."""
        return None

    def new_matcher(self, compiled: Compiled) -> Matcher:
        """A fresh matcher that ends on any of the model's stop tokens (see StopAliases).
        Samplers get their matchers here; replay forces the one EOS and uses compiled.matcher()."""
        m = compiled.matcher()
        aliases = self.tokenizer.stop_ids - {self.tokenizer.eos_id}
        return StopAliases(m, self.tokenizer.eos_id, frozenset(aliases)) if aliases else m

    def export(self, compiled: Compiled) -> bytes | None:
        """Bytes from which `load` rebuilds the compiled constraint, or None if the engine
        cannot serialise. Lets the runner compile in a killable child process and use the
        result in the parent instead of compiling twice."""
        return None

    def load(self, data: bytes) -> Compiled:
        raise NotImplementedError
