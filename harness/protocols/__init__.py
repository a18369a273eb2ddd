"""Measurement protocols: how the prompt is built, how an output is judged, and the limits.

A protocol is one named choice recorded in every row and in the run's config, so numbers
measured under different protocols are never set side by side unknowingly.

- `cdbench` (default): 0-shot prompt in JSONSchemaBench's convention (system instruction, the
  schema as one-line JSON, preceded by the task's own request sentence when it has one); the
  output is validated under the draft its `$schema` names (2020-12 when absent), format
  checking on; compile limit 5 s, max_tokens 256 (fits the default run's time budget).
- `jsonschemabench`: JSONSchemaBench exactly (ANCHORS.md §1.2-1.4): the system instruction, two
  schema -> instance shots of the task's subset family (user / assistant turns, text as JSB
  ships it), then the target schema as `json.dumps(schema)`; every output validated under
  Draft 2020-12 with a format checker whatever `$schema` says, ipv4 / ipv6 / uuid checked
  strictly; compile limit 10 s, generation limit 60 s, max_tokens 2048; 100 bootstrap resamples.
  Tasks outside JSB's subset families (the built-in suite) get the same construction with no
  shots and no request sentence: their rows say `prompt_shots = 0`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tasks.prompts import JSON_INSTRUCTION
from ..tasks.task import Task

FEWSHOT_FILE = Path(__file__).with_name("jsb_fewshot.json")


@dataclass(frozen=True)
class Protocol:
    name: str
    shots: int                       # schema -> instance examples before the target
    force_draft: str | None          # None: the draft the schema's $schema names
    strict_formats: bool             # JSB's stricter ipv4 / ipv6 / uuid checks
    settings: dict[str, Any] = field(default_factory=dict)  # run settings it fixes unless a flag says otherwise

    def messages(self, task: Task) -> list[dict[str, str]]:
        if self.shots == 0 or task.kind != "json_schema" or task.scorer:  # quality tasks carry JSB's own prompt
            return task.prompt
        messages = [{"role": "system", "content": JSON_INSTRUCTION}]
        for schema_text, instance_text in fewshot_examples(subset_of(task))[: self.shots]:
            messages.append({"role": "user", "content": schema_text})
            messages.append({"role": "assistant", "content": instance_text})
        messages.append({"role": "user", "content": json.dumps(task.schema)})
        return messages

    def shots_for(self, task: Task) -> int:
        if task.scorer:  # a quality task: the few-shot turns of its own prompt
            return sum(m["role"] == "assistant" for m in task.prompt)
        if self.shots == 0 or task.kind != "json_schema":
            return 0
        return min(self.shots, len(fewshot_examples(subset_of(task))))


PROTOCOLS: dict[str, Protocol] = {
    "cdbench": Protocol("cdbench", shots=0, force_draft=None, strict_formats=False),
    "jsonschemabench": Protocol(
        "jsonschemabench", shots=2, force_draft="2020-12", strict_formats=True,
        settings={"compile_timeout_s": 10.0, "generation_timeout_s": 60.0, "max_tokens": 2048,
                  "bootstrap_resamples": 100},
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol '{name}' (have: {', '.join(PROTOCOLS)})") from None


def subset_of(task: Task) -> str | None:
    """JSONSchemaBench subset of a task from its source (jsonschemabench:NAME, hub:NAME:split)."""
    parts = task.source.split(":")
    if parts[0] in ("jsonschemabench", "hub") and len(parts) > 1:
        return parts[1]
    return None


@lru_cache(maxsize=1)
def _families() -> list[dict[str, Any]]:
    return json.loads(FEWSHOT_FILE.read_text(encoding="utf-8"))["families"]


def fewshot_examples(subset: str | None) -> list[tuple[str, str]]:
    """The subset family's (schema text, instance text) pairs; none for other tasks."""
    for family in _families():
        if subset in family["subsets"]:
            return [(e["schema"], e["instance"]) for e in family["examples"]]
    return []
