"""Any OpenAI-compatible endpoint through the `openai` client: llama.cpp's server, vLLM, SGLang,
hosted APIs. JSON tasks send `response_format` (`json_schema`, the OpenAI form, or `json_object`
with a `schema`, the form llama-cpp-python's server takes); grammar tasks send the task's GBNF in the
endpoint's grammar field (`grammar` on llama.cpp servers) when one is configured.

Streamed, so TTFT is request start -> first content chunk (the prompt's prefill is inside it). The
API key is read from the environment variable the run names and is never recorded; retries are off,
so what the endpoint answers is what the row says: an HTTP status (4xx for a refused schema, 5xx), a
timeout, or a refused connection becomes that case's row and the run goes on.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import openai

from ..environment import package_version
from ..errors import ConfigError
from ..tasks.task import Task
from .base import Frontend, FrontendOptions, FrontendResult, StreamClock, finish_from_api, fold_system, one_line

NO_KEY = "none"  # local servers take any key; the client insists on one


def check_base_url(url: str | None) -> str:
    """The endpoint URL, checked: http(s), a host, and no credentials in it (they would be recorded)."""
    if not url:
        raise ConfigError("--frontends openai needs --base-url URL (an OpenAI-compatible endpoint, e.g. "
                          "http://127.0.0.1:8000/v1)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {url!r}: not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ConfigError("--base-url: credentials in the URL would be recorded; put the key in the environment "
                          "variable --api-key-env names")
    return url


class OpenAIFrontend(Frontend):
    name = "openai"
    kinds = frozenset({"json_schema", "cfg"})

    def __init__(self, lm: Any, options: FrontendOptions) -> None:
        super().__init__(lm, options)
        self.base_url = check_base_url(options.base_url)
        self.client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(options.api_key_env) or NO_KEY,
                                    timeout=options.request_timeout_s, max_retries=0)
        self.model = options.openai_model

    def version(self) -> str:
        return package_version("openai") or "?"

    def settings(self) -> dict[str, Any]:
        o = self.options
        return {**super().settings(), "base_url": self.base_url, "model": self.model or "(first of /models)",
                "response_format": o.openai_response_format, "grammar_field": o.openai_grammar or None,
                "request_timeout_s": o.request_timeout_s, "max_retries": 0, "stream": True,
                "extra_body": dict(o.frontend_args), "fold_system": o.fold_system, "api_key_env": o.api_key_env}

    def supports(self, task: Task) -> str:
        if task.kind == "cfg" and not (self.options.openai_grammar and "gbnf" in task.grammars):
            return "no grammar field configured for this endpoint (--openai-grammar) or no GBNF for the task"
        return super().supports(task)

    def constraint(self, task: Task) -> dict[str, Any]:
        """The request fields that carry the task's constraint."""
        if task.kind == "cfg":
            return {"extra_body": {**self.options.frontend_args, self.options.openai_grammar: task.grammars["gbnf"]}}
        if self.options.openai_response_format == "json_object":
            fmt: dict[str, Any] = {"type": "json_object", "schema": task.schema}
        else:
            fmt = {"type": "json_schema", "json_schema": {"name": "output", "schema": task.schema, "strict": True}}
        return {"response_format": fmt, "extra_body": dict(self.options.frontend_args) or None}

    def _model_name(self) -> str:
        if not self.model:
            self.model = next(iter(self.client.models.list())).id
        return self.model

    def generate(self, task: Task, messages: list[dict[str, str]], max_tokens: int, seed: int,
                 deadline: float) -> FrontendResult:
        msgs = fold_system(messages) if self.options.fold_system else messages
        clock = StreamClock()
        state: dict[str, Any] = {"finish": None, "usage": None}

        def pieces(stream: Any) -> Any:
            for chunk in stream:
                state["usage"] = getattr(chunk, "usage", None) or state["usage"]
                for choice in chunk.choices[:1]:
                    state["finish"] = choice.finish_reason or state["finish"]
                    yield choice.delta.content

        try:
            stream = self.client.chat.completions.create(
                model=self._model_name(), messages=msgs, max_tokens=max_tokens, temperature=self.options.temperature,
                seed=seed, stream=True, stream_options={"include_usage": True}, **self.constraint(task))
            cut = clock.consume(pieces(stream), deadline)
            if cut:
                stream.close()
        except Exception as exc:  # noqa: BLE001 - every failure over HTTP is the case's row
            return self._failure(exc, clock)
        return self._result(clock, cut, state)

    def _result(self, clock: StreamClock, cut: bool, state: dict[str, Any]) -> FrontendResult:
        usage = state["usage"]
        if not cut and clock.chunks == 0 and state["finish"] is None:  # llama_cpp.server, after its 200
            return FrontendResult(status="error", finish_reason="error", total_s=clock.elapsed_s(), http_status=200,
                                  error="the endpoint answered 200 and an empty stream (no text, no finish_reason)")
        return FrontendResult(
            text=clock.text, finish_reason="timeout" if cut else finish_from_api(state["finish"]),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=usage.completion_tokens if usage and not cut else clock.chunks,
            token_count="usage" if usage and not cut else "chunks",
            ttft_s=clock.ttft_s(), total_s=clock.elapsed_s(), http_status=200)

    def _failure(self, exc: Exception, clock: StreamClock) -> FrontendResult:
        """An exception of the client as a status: timeout, connection_error, http_error (with the code)."""
        o = openai
        total = clock.elapsed_s()
        if isinstance(exc, o.APITimeoutError) or "Timeout" in type(exc).__name__:  # also a read timeout mid-stream
            return FrontendResult(status="timeout", finish_reason="timeout", total_s=total, error=one_line(exc))
        if isinstance(exc, o.APIConnectionError):
            return FrontendResult(status="connection_error", finish_reason="error", total_s=total, error=one_line(exc))
        if isinstance(exc, o.APIStatusError):
            return FrontendResult(status="http_error", finish_reason="error", total_s=total,
                                  http_status=exc.status_code, error=f"HTTP {exc.status_code}: {one_line(exc)}")
        return FrontendResult(status="error", finish_reason="error", total_s=total, error=one_line(exc))
