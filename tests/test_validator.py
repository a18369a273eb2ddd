"""The referee's verdicts: parse, schema validity, instance validity, draft choice, formats."""
from __future__ import annotations

import json

import pytest

from harness.scoring.jsonschema_check import check_schema, judge

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name"], "additionalProperties": False}


@pytest.mark.parametrize("text,parses,valid", [
    ('{"name":"Ada","age":36}', True, True),
    ('{"name": "Ada"}', True, True),
    ('{"name":"Ada","age":-1}', True, False),
    ('{"age":3}', True, False),
    ('{"name":"Ada","x":1}', True, False),
    ('{"name":"Ada"', False, False),
    ('', False, False),
    ('{"name":"Ada"} trailing', False, False),
])
def test_basic_verdicts(text, parses, valid):
    v = judge(PERSON, text)
    assert (v.parses, v.valid) == (parses, valid)
    assert v.draft == "Draft202012"


@pytest.mark.parametrize("fmt,good,bad", [
    ("email", "a@b.org", "not-an-email"),
    ("date", "2024-02-29", "2024-13-45"),
    ("date-time", "2024-02-29T10:00:00Z", "2024-02-29 10:00"),
    ("ipv4", "192.168.0.1", "300.1.1.1"),
    ("uuid", "12345678-1234-5678-1234-567812345678", "1234"),
    ("uri", "https://example.org/x", "not a uri"),
])
def test_formats_are_checked(fmt, good, bad):
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    assert judge(schema, json.dumps({"v": good})).valid
    assert not judge(schema, json.dumps({"v": bad})).valid


def test_draft_named_by_schema_is_used():
    # Draft 4: exclusiveMinimum is a boolean modifier of minimum; 2020-12 rejects that schema shape.
    d4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
          "minimum": 5, "exclusiveMinimum": True}
    v = judge(d4, "5")
    assert v.draft == "Draft4" and v.schema_valid and not v.valid
    assert judge(d4, "6").valid
    assert judge(d4, "5", force_draft="2020-12").schema_valid is False


def test_invalid_schema_is_never_valid():
    bad = {"type": "object", "properties": {"a": {"type": "strng"}}}
    assert check_schema(bad)
    v = judge(bad, '{"a": 1}')
    assert v.parses and not v.schema_valid and not v.valid


def test_unresolvable_ref_is_not_valid():
    v = judge({"$ref": "#/$defs/missing"}, "{}")
    assert not v.valid
