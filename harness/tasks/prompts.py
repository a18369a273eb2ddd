"""Prompts in the JSONSchemaBench convention: a fixed instruction, then the schema as one line."""
from __future__ import annotations

import json
from typing import Any

JSON_INSTRUCTION = "You need to generate a JSON object that matches the schema below."


def json_schema_prompt(schema: Any, request: str | None = None) -> list[dict[str, str]]:
    """System instruction + user turn holding json.dumps(schema) (JSB core/messages.py, 0-shot).

    A task's own request sentence, when it has one, goes on the line before the schema.
    """
    user = json.dumps(schema)
    if request:
        user = f"{request}\n{user}"
    return [{"role": "system", "content": JSON_INSTRUCTION}, {"role": "user", "content": user}]
