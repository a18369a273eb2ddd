"""The referee for JSON tasks: json.loads, then jsonschema with the schema's own draft.

The draft is the one `$schema` names (Draft 2020-12 when absent or unknown), with format
checking on, as the issue asks; JSONSchemaBench forces 2020-12 on every schema, which
`force_draft="2020-12"` reproduces, and checks ipv4, ipv6 and uuid more strictly than
jsonschema's defaults (`strict_formats=True`: ASCII dotted quads without leading zeros, IPv6
without a zone id, the hyphenated 8-4-4-4-12 UUID form only).
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import NoSuchResource


def _no_remote(uri: str) -> Any:
    """A `$ref` outside the schema is never fetched: the reference is unresolvable, and the
    verdict (validation_error) says so."""
    raise NoSuchResource(ref=f"{uri} (remote $ref: cdbench never fetches)")


NO_REMOTE = Registry(retrieve=_no_remote)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Verdict:
    parses: bool
    schema_valid: bool
    valid: bool
    draft: str
    error: str = ""


def validator_class(schema: Any, force_draft: str | None = None):
    if force_draft == "2020-12" or not isinstance(schema, dict) or not isinstance(schema.get("$schema", ""), str):
        return Draft202012Validator
    return validator_for(schema, default=Draft202012Validator)


_IPV4 = re.compile(r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _strict_ipv6(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    if not value.isascii() or "%" in value:
        return False
    ipaddress.IPv6Address(value)  # raises ValueError when malformed
    return True


def format_checker(cls: type, strict_formats: bool = False) -> jsonschema.FormatChecker:
    """The draft's format checker; with strict_formats, JSONSchemaBench's stricter ipv4/ipv6/uuid."""
    if not strict_formats:
        return cls.FORMAT_CHECKER
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    checker.checks("ipv4")(lambda v: not isinstance(v, str) or _IPV4.fullmatch(v) is not None)
    checker.checks("ipv6", raises=ValueError)(_strict_ipv6)
    checker.checks("uuid")(lambda v: not isinstance(v, str) or _UUID.fullmatch(v) is not None)
    return checker


def draft_name(cls: type) -> str:
    return cls.__name__.replace("Validator", "")


def check_schema(schema: Any, force_draft: str | None = None) -> str:
    """'' if the schema is a valid schema under its draft, else the first problem."""
    cls = validator_class(schema, force_draft)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"{exc.message} at {'/'.join(map(str, exc.absolute_path)) or '<root>'}"
    except (RecursionError, ValueError, TypeError) as exc:  # hostile schemas: too deep, odd values
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return ""


def validate_instance(schema: Any, instance: Any, force_draft: str | None = None,
                      strict_formats: bool = False) -> tuple[bool, str]:
    cls = validator_class(schema, force_draft)
    try:
        validator = cls(schema, format_checker=format_checker(cls, strict_formats), registry=NO_REMOTE)
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except Exception as exc:  # unresolvable $ref, bad regex, recursion...: the instance is not shown valid
        text = f"{type(exc).__name__}: {str(exc)[:300]}"
        if str(exc).startswith("Unresolvable: ") and not str(exc)[len("Unresolvable: "):].startswith("#"):
            text += " (a $ref outside the schema: remote: cdbench never fetches)"
        return False, text
    if error is None:
        return True, ""
    return False, error.message[:300]


def judge(schema: Any, text: str, force_draft: str | None = None, strict_formats: bool = False) -> Verdict:
    cls = validator_class(schema, force_draft)
    draft = draft_name(cls)
    try:
        instance = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Verdict(False, not check_schema(schema, force_draft), False, draft, f"not JSON: {exc}")
    schema_problem = check_schema(schema, force_draft)
    if schema_problem:
        return Verdict(True, False, False, draft, f"invalid schema: {schema_problem}")
    ok, err = validate_instance(schema, instance, force_draft, strict_formats)
    return Verdict(True, True, ok, draft, err)
