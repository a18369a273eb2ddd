"""A task: one constraint (JSON Schema or grammar), a prompt, and labelled examples."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["json_schema", "cfg"]


@dataclass(frozen=True)
class Example:
    """A labelled instance: a JSON value for schema tasks, a string for grammar tasks."""

    value: Any
    valid: bool
    description: str = ""


@dataclass
class Task:
    id: str
    kind: TaskKind
    source: str
    prompt: list[dict[str, str]]
    schema: Any = None
    grammars: dict[str, str] = field(default_factory=dict)  # format -> grammar text (cfg tasks)
    examples: list[Example] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    length_bound: int | None = None  # fidelity tasks: the token bound T that makes L finite and small
    # quality tasks: the reference answer (BFCL: function and possible answers) and the name of
    # the scorer in harness.scoring.quality that judges an output against it
    reference: Any = None
    scorer: str | None = None

    @property
    def schema_text(self) -> str:
        """The schema as one-line JSON, as engines and prompts take it."""
        return json.dumps(self.schema)

    def example_text(self, example: Example) -> str:
        """Serialise an example the way the data's convention says (compact, non-ASCII kept)."""
        if self.kind == "json_schema":
            return json.dumps(example.value, ensure_ascii=False, separators=(",", ":"))
        return str(example.value)
