"""The frontend seam: an end-to-end path a user calls (a library, a server), measured as a black box.

An engine gives cdbench a mask per token; a frontend gives only what its API returns: the output
text, token counts and the clock around the call (TTFT from a stream where the API streams, TPOT,
total). No mask times, no compile time, no constraint evaluations: rows from frontends say so
(`method_kind` = "frontend") and reports rank them apart from engines.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..tasks.task import Task

# What a frontend case can end as, besides the API's own finish (eos, max_tokens).
STATUSES = ("ok", "unsupported", "http_error", "connection_error", "timeout", "error")


@dataclass
class FrontendOptions:
    """The run settings frontends read (from RunConfig; harness.frontends.cases.options_from)."""
    whitespace: str = "compact"
    temperature: float = 0.0
    compile_timeout_s: float = 5.0
    compile_guard: bool = True
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout_s: float = 60.0
    openai_model: str | None = None
    openai_response_format: str = "json_schema"
    openai_grammar: str = "grammar"
    frontend_args: dict[str, Any] = field(default_factory=dict)
    fold_system: bool = False


@dataclass
class FrontendResult:
    """One call's outcome. status: ok, or why nothing (or only part) came back (STATUSES)."""
    status: str = "ok"
    text: str | None = None
    finish_reason: str = "not_run"      # eos, max_tokens, timeout, error, not_run
    prompt_tokens: int | None = None
    output_tokens: int = 0
    token_count: str = ""               # where output_tokens came from: usage, llama, chunks
    ttft_s: float | None = None         # request start -> first content chunk (None: nothing streamed)
    total_s: float | None = None        # request start -> the call returned
    setup_s: float | None = None        # the frontend's own set-up inside the clock (outlines' Generator)
    http_status: int | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # frontend-specific facts, x_<key> in the row

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first, from the streamed clock."""
        if self.ttft_s is None or self.total_s is None or self.output_tokens < 2:
            return None
        return (self.total_s - self.ttft_s) / (self.output_tokens - 1) * 1000.0


class Frontend:
    """Base class: a name, version() and settings() as engines have, and generate()."""
    name = "?"
    kinds: frozenset[str] = frozenset({"json_schema"})

    def __init__(self, lm: Any, options: FrontendOptions) -> None:
        self.lm = lm
        self.options = options

    def version(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"frontend": self.name, "temperature": self.options.temperature}

    def supports(self, task: Task) -> str:
        """'' when this frontend can express the task's constraint, else why not."""
        return "" if task.kind in self.kinds else f"{self.name} cannot express {task.kind} constraints"

    def generate(self, task: Task, messages: list[dict[str, str]], max_tokens: int, seed: int,
                 deadline: float) -> FrontendResult:
        raise NotImplementedError


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """System text moved into the first user turn (as cdbench's Gemma rendering does), for chat
    formats that drop system messages (llama.cpp's `gemma` chat format)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if system and m["role"] == "user":
            m, system = {"role": "user", "content": f"{system}\n\n{m['content']}"}, ""
        out.append(dict(m))
    return out


@dataclass
class StreamClock:
    """Timing of one streamed call: started at construction, first content chunk, end."""
    t0: float = field(default_factory=time.perf_counter)
    first: float | None = None
    chunks: int = 0
    parts: list[str] = field(default_factory=list)

    def consume(self, pieces: Iterable[str | None], deadline: float) -> bool:
        """Read text pieces, timing the first non-empty one; True when the deadline cut it short."""
        for piece in pieces:
            if piece:
                if self.first is None:
                    self.first = time.perf_counter()
                self.chunks += 1
                self.parts.append(piece)
            if time.perf_counter() > deadline:
                return True
        return False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def ttft_s(self) -> float | None:
        return None if self.first is None else self.first - self.t0

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0


def finish_from_api(reason: str | None) -> str:
    """OpenAI finish reasons in cdbench's vocabulary: stop -> eos, length -> max_tokens."""
    return {"stop": "eos", "length": "max_tokens", None: "eos"}.get(reason, str(reason))


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]
