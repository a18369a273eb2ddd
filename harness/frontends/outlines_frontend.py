"""The `outlines` library (1.x) over the run's own Llama: `outlines.from_llamacpp`, a `Generator`
with a JSON-schema output type (`outlines.types.JsonSchema`; its default backend is outlines-core)
or a Lark grammar (`outlines.types.CFG`, llguidance backend), streamed with a `Chat` input.

Building the Generator is the library's compile (schema -> regex -> index over its own view of the
vocabulary); a user waits for it, so it is inside TTFT, and also reported alone as `x_setup_s`. It
runs in-process and cannot be interrupted, so under the run's compile guard it is tried first in a
forked child with the compile time limit, as engines' compiles are: a hang becomes a row.
"""
from __future__ import annotations

import time
from typing import Any

import outlines
from outlines.inputs import Chat
from outlines.types import CFG, JsonSchema

from ..environment import package_version
from ..errors import ConfigError
from ..isolation import run_forked
from ..tasks.task import Task
from .base import Frontend, FrontendOptions, FrontendResult, StreamClock, one_line
from .local import fresh_llama, generated_tokens, llama_of


class OutlinesFrontend(Frontend):
    name = "outlines"
    kinds = frozenset({"json_schema", "cfg"})

    def __init__(self, lm: Any, options: FrontendOptions) -> None:
        super().__init__(lm, options)
        llama_of(lm)  # opened now, at set-up, not inside the first case's clock
        t0 = time.perf_counter()
        self.model = outlines.from_llamacpp(llama_of(lm))  # reads the vocabulary: once per run
        self.model_s = time.perf_counter() - t0
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny constrained generation at set-up: numba compiles outlines' numpy kernels on first use
        (seconds that belong to no case), and a missing kernel must stop the run here. llama-cpp-python
        only prints an exception raised in a logits processor and goes on unconstrained."""
        try:
            from outlines_core.kernels import numpy as _kernels  # noqa: F401 - needs numba
        except ImportError as exc:
            raise ConfigError(f"outlines frontend: {exc} (the frontends extra installs it)") from exc
        with fresh_llama(self.lm):
            generator = outlines.Generator(self.model, JsonSchema('{"type": "boolean"}', whitespace_pattern=""))
            text = generator(Chat([{"role": "user", "content": "true or false?"}]), max_tokens=4, temperature=0.0)
        if text not in ("true", "false"):
            raise ConfigError(f"outlines frontend: the warm-up generation was not constrained (got {text!r})")

    def version(self) -> str:
        return package_version("outlines") or "?"

    def whitespace(self) -> str | None:
        """The JSON whitespace pattern the outlines engine uses for the same run setting."""
        from outlines_core.json_schema import WHITESPACE

        return WHITESPACE if self.options.whitespace == "flexible" else ""

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "backend": "library default (JSON: outlines_core, CFG: llguidance)",
                "whitespace_pattern": self.whitespace(), "input": "outlines.inputs.Chat", "stream": True,
                "chat_template": "cdbench render_chat (the engines' prompt)",
                "compile_guard_s": self.options.compile_timeout_s if self.options.compile_guard else None}

    def output_type(self, task: Task) -> Any:
        if task.kind == "json_schema":
            return JsonSchema(task.schema_text, whitespace_pattern=self.whitespace())
        return CFG(task.grammars["lark"])

    def _guard(self, task: Task) -> FrontendResult | None:
        """None when building the Generator finishes within the compile limit, else the case's row."""
        if not self.options.compile_guard:
            return None
        out = run_forked(lambda: outlines.Generator(self.model, self.output_type(task)) and None,
                         self.options.compile_timeout_s)
        if out.status == "ok":
            return None
        status = "timeout" if out.status == "timeout" else _status_of(out.status)
        return FrontendResult(status=status, error=f"Generator: {out.status} {out.message}".strip()[:300])

    def generate(self, task: Task, messages: list[dict[str, str]], max_tokens: int, seed: int,
                 deadline: float) -> FrontendResult:
        refused = self._guard(task)
        if refused is not None:
            return refused
        prompt_tokens = len(self.lm.encode_chat(messages))
        with fresh_llama(self.lm) as llm:
            clock = StreamClock()
            try:
                generator = outlines.Generator(self.model, self.output_type(task))
            except Exception as exc:  # noqa: BLE001 - the library refusing the constraint is the case's row
                return FrontendResult(status=_status_of(type(exc).__name__), error=one_line(exc))
            setup_s = clock.elapsed_s()
            try:
                stream = generator.stream(Chat(messages), max_tokens=max_tokens,
                                          temperature=self.options.temperature, seed=seed)
                cut = clock.consume(stream, deadline)
            except Exception as exc:  # noqa: BLE001
                return FrontendResult(status="error", finish_reason="error", error=one_line(exc), setup_s=setup_s,
                                      total_s=clock.elapsed_s(), prompt_tokens=prompt_tokens)
            total = clock.elapsed_s()
            n_out = generated_tokens(llm, prompt_tokens, clock.text)
            reason = "timeout" if cut else ("max_tokens" if n_out >= max_tokens else "eos")
        return FrontendResult(text=clock.text, finish_reason=reason, prompt_tokens=prompt_tokens, output_tokens=n_out,
                              token_count="llama", ttft_s=clock.ttft_s(), total_s=total, setup_s=setup_s)


def _status_of(exception_name: str) -> str:
    """A refusal the library states (NotImplementedError, ValueError on the schema) is unsupported."""
    return "unsupported" if exception_name in ("NotImplementedError", "ValueError", "TypeError") else "error"
