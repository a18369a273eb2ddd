"""Feature tags from a static schema walk, and the task catalog's counts."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config import default_data_dir
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


def _catalog(argv: list[str], capsys) -> dict[str, str]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return {" ".join(line.split()[:2]): line for line in out.splitlines()}


def test_tasks_list_without_datasets(tmp_path, capsys):
    """A clone without the data directory: the sources in the repository are counted, every
    external one is a row saying where it was looked for."""
    lines = _catalog(["tasks", "list", "--data-dir", str(tmp_path)], capsys)
    assert int(lines["builtin json_schema"].split()[2]) >= 30
    assert int(lines["cfg TOTAL"].split()[2]) >= 4
    for source, sub in [("jsonschemabench", "jsonschemabench/schemas"), ("maskbench", "jsonschemabench/maskbench"),
                        ("json-schema-test-suite", "json-schema-test-suite")]:
        assert lines[f"{source} -"].split()[2] == "0"
        assert f"not found: {tmp_path / sub}" in lines[f"{source} -"]


def _need(*parts: str) -> Path:
    path = default_data_dir().joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"dataset not present: {path} (set CDBENCH_DATA_DIR, place ../shared/datasets, or run cdbench data fetch all)")
    return path


@pytest.mark.parametrize("parts,key,count", [
    (("jsonschemabench", "schemas"), "jsonschemabench TOTAL", "9557"),  # jsonschemabench/PROVENANCE.md
    (("jsonschemabench", "maskbench"), "maskbench TOTAL", "10747"),
    (("json-schema-test-suite",), "json-schema-test-suite draft2020-12", "383"),  # its PROVENANCE.md
])
def test_tasks_list_counts_of_the_local_datasets(capsys, parts, key, count):
    _need(*parts)
    lines = _catalog(["tasks", "list"], capsys)  # the default data directory, as _need found it
    assert lines[key].split()[2] == count
