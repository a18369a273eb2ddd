"""Feature tags from a static schema walk, and the task catalog's counts."""
from __future__ import annotations

from harness.cli import main
from harness.tasks.features import schema_keywords


def test_keywords_found_in_nested_schemas_but_not_in_data():
    schema = {
        "type": "object",
        "properties": {"pattern": {"type": "string", "format": "email"},
                       "tags": {"type": "array", "items": {"enum": ["minimum", "x"]}, "maxItems": 3}},
        "$defs": {"pt": {"anyOf": [{"type": "integer", "minimum": 0}, {"const": {"oneOf": 1}}]}},
        "required": ["pattern"],
        "additionalProperties": False,
    }
    kw = schema_keywords(schema)
    for k in ("type", "properties", "format", "items", "enum", "maxItems", "$defs", "anyOf", "minimum", "const",
              "required", "additionalProperties", "additionalProperties:false"):
        assert k in kw, k
    assert "pattern" not in kw  # a property name, not a keyword
    assert "oneOf" not in kw    # inside a const value


def test_tasks_list_counts(capsys):
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    lines = {" ".join(line.split()[:2]): line.split()[2] for line in out.splitlines()}
    assert lines["jsonschemabench TOTAL"] == "9557"
    assert lines["maskbench TOTAL"] == "10747"
    assert lines["json-schema-test-suite draft2020-12"] == "383"
    assert int(lines["builtin json_schema"]) >= 30
