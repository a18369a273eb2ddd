"""BFCL `simple` function-calling items as cdbench tasks: one call, judged by BFCL's AST rules.

BFCL has no JSON-mode prompt of its own (its prompting models answer `[func(a=1)]`), so the
output format here is ours: one JSON object {"name": ..., "arguments": {...}}; the system
prompt is BFCL's default one ("classic" persona and task, plaintext) with that format put in
place of the Python-call format. The constraint is the function's parameter schema turned
into JSON Schema (dict -> object, float -> number, tuple -> array, any -> no type), with no
properties beyond the declared ones (BFCL's checker rejects unexpected parameters).
"""
from __future__ import annotations

import json
from typing import Any

from .task import Task

TYPES = {"dict": "object", "float": "number", "tuple": "array"}

SYSTEM = (
    "You are an expert in composing functions.You are given a question and a set of possible functions. "
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. "
    "If none of the functions can be used, point it out. If the given question lacks the parameters required "
    "by the function, also point it out.\n\n"
    "You should only return the function call in your response.\n\n"
    "If you decide to invoke the function, you MUST put it in the format of "
    '{{"name": "func_name", "arguments": {{"param_name1": param_value1, "param_name2": param_value2}}}} '
    "You SHOULD NOT include any other text in the response.\n\n"
    "Here is a list of functions in json format that you can invoke.\n{functions}\n"
)


def to_json_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """BFCL's parameter description (Python-flavoured types) as a JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "type":
            if value != "any":
                out["type"] = TYPES.get(value, value)
        elif key == "properties":
            out["properties"] = {k: to_json_schema(v) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out["items"] = to_json_schema(value)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
    return out


def call_schema(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"name": {"type": "string", "enum": [function["name"]]},
                           "arguments": to_json_schema(function.get("parameters", {"type": "dict", "properties": {}}))},
            "required": ["name", "arguments"], "additionalProperties": False}


def question_text(item: dict[str, Any]) -> str:
    """The user turn: BFCL nests turns as [[{role, content}, ...]]; `simple` has one user message."""
    turns = item["question"]
    first = turns[0] if turns and isinstance(turns[0], list) else turns
    return "\n".join(m["content"] for m in first if m.get("role") == "user")


def bfcl_task(item: dict[str, Any], source: str) -> Task:
    function = item["function"][0]
    system = SYSTEM.format(functions=json.dumps(item["function"]))
    return Task(id=f"bfcl/{item['id']}", kind="json_schema", source=source,
                prompt=[{"role": "system", "content": system}, {"role": "user", "content": question_text(item)}],
                schema=call_schema(function), tags=["quality", "bfcl"],
                reference={"function": function, "ground_truth": item["ground_truth"][0]}, scorer="bfcl_ast")
