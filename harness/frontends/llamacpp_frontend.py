"""llama-cpp-python's `create_chat_completion(response_format={"type": "json_object", "schema": ...})`.

What llama-cpp-python users call for JSON output: the library converts the schema to a GBNF grammar
and samples under llama.cpp's grammar sampler. When its converter raises, llama-cpp-python silently
constrains to any JSON instead; cdbench runs the same conversion first and says so in the row
(`x_schema_fallback`), because the output is then no longer constrained by the schema.
"""
from __future__ import annotations

import json
from typing import Any

from ..environment import package_version
from ..tasks.task import Task
from .base import Frontend, FrontendOptions, FrontendResult, StreamClock, one_line
from .local import fresh_llama, generated_tokens, llama_of


class LlamaCppResponseFormat(Frontend):
    name = "llamacpp-response-format"
    kinds = frozenset({"json_schema"})

    def __init__(self, lm: Any, options: FrontendOptions) -> None:
        super().__init__(lm, options)
        llama_of(lm)  # opened now, at set-up, not inside the first case's clock

    def version(self) -> str:
        return package_version("llama-cpp-python") or "?"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "response_format": "json_object + schema", "stream": True,
                "chat_template": "cdbench render_chat (the engines' prompt)",
                "schema_fallback": "any JSON when llama-cpp-python's schema converter raises (flagged per row)"}

    def schema_fallback(self, task: Task) -> str:
        """'' when llama-cpp-python's converter takes the schema, else its error (it would fall back)."""
        from llama_cpp.llama_grammar import LlamaGrammar

        try:
            LlamaGrammar.from_json_schema(json.dumps(task.schema), verbose=False)
        except Exception as exc:  # noqa: BLE001 - whatever the converter raises, llama-cpp-python swallows
            return one_line(exc)
        return ""

    def unparsable(self, task: Task) -> str:
        """'' when llama.cpp parses the grammar llama-cpp-python makes from the schema, else why not.
        llama-cpp-python does not check: an unparsable grammar (its converter writes escapes such as
        "\\." that llama.cpp rejects) makes llama_sampler_sample segfault and ends the whole run."""
        import llama_cpp
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(task.schema))
        except Exception:  # noqa: BLE001 - llama-cpp-python falls back to its generic JSON grammar
            return ""
        sampler = llama_cpp.llama_sampler_init_grammar(llama_of(self.lm)._model.vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            return "llama.cpp cannot parse the grammar llama-cpp-python made from the schema (its sampler would crash)"
        llama_cpp.llama_sampler_free(sampler)
        return ""

    def generate(self, task: Task, messages: list[dict[str, str]], max_tokens: int, seed: int,
                 deadline: float) -> FrontendResult:
        broken = self.unparsable(task)
        if broken:
            return FrontendResult(status="error", error=broken)
        fallback = self.schema_fallback(task)
        prompt_tokens = len(self.lm.encode_chat(messages))
        finish: list[str | None] = [None]

        def pieces(stream: Any) -> Any:
            for chunk in stream:
                choice = chunk["choices"][0]
                finish[0] = choice.get("finish_reason") or finish[0]
                yield choice["delta"].get("content")

        with fresh_llama(self.lm) as llm:
            clock = StreamClock()
            try:
                stream = llm.create_chat_completion(
                    messages=messages, response_format={"type": "json_object", "schema": task.schema},
                    max_tokens=max_tokens, temperature=self.options.temperature, seed=seed, stream=True)
                cut = clock.consume(pieces(stream), deadline)
            except Exception as exc:  # noqa: BLE001 - one case's failure is its row
                return FrontendResult(status="error", finish_reason="error", error=one_line(exc),
                                      total_s=clock.elapsed_s(), prompt_tokens=prompt_tokens)
            total = clock.elapsed_s()
            reason = "timeout" if cut else {"length": "max_tokens"}.get(finish[0] or "stop", "eos")
            n_out = generated_tokens(llm, prompt_tokens, clock.text)
        note = f"schema converter failed, llama-cpp-python constrained to any JSON: {fallback}" if fallback else ""
        return FrontendResult(text=clock.text, finish_reason=reason, prompt_tokens=prompt_tokens, output_tokens=n_out,
                              token_count="llama", ttft_s=clock.ttft_s(), total_s=total, error=note,
                              extra={"schema_fallback": bool(fallback)})
