"""The referee for JSON tasks: json.loads, then jsonschema with the schema's own draft.

The draft is the one `$schema` names (Draft 2020-12 when absent or unknown), with format
checking on, as the issue asks; JSONSchemaBench forces 2020-12 on every schema, which
`force_draft="2020-12"` reproduces.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for


@dataclass(frozen=True)
class Verdict:
    parses: bool
    schema_valid: bool
    valid: bool
    draft: str
    error: str = ""


def validator_class(schema: Any, force_draft: str | None = None):
    if force_draft == "2020-12" or not isinstance(schema, dict):
        return Draft202012Validator
    return validator_for(schema, default=Draft202012Validator)


def draft_name(cls: type) -> str:
    return cls.__name__.replace("Validator", "")


def check_schema(schema: Any, force_draft: str | None = None) -> str:
    """'' if the schema is a valid schema under its draft, else the first problem."""
    cls = validator_class(schema, force_draft)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"{exc.message} at {'/'.join(map(str, exc.absolute_path)) or '<root>'}"
    return ""


def validate_instance(schema: Any, instance: Any, force_draft: str | None = None) -> tuple[bool, str]:
    cls = validator_class(schema, force_draft)
    try:
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except Exception as exc:  # unresolvable $ref, bad regex...: the instance is not shown valid
        return False, f"{type(exc).__name__}: {exc}"
    if error is None:
        return True, ""
    return False, error.message[:300]


def judge(schema: Any, text: str, force_draft: str | None = None) -> Verdict:
    cls = validator_class(schema, force_draft)
    draft = draft_name(cls)
    try:
        instance = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Verdict(False, not check_schema(schema, force_draft), False, draft, f"not JSON: {exc}")
    schema_problem = check_schema(schema, force_draft)
    if schema_problem:
        return Verdict(True, False, False, draft, f"invalid schema: {schema_problem}")
    ok, err = validate_instance(schema, instance, force_draft)
    return Verdict(True, True, ok, draft, err)
