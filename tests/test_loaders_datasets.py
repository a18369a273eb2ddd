"""MaskBench and JSON Schema Test Suite loaders, read in place from the shared data directory.

Tests of the real datasets skip (saying where they looked) when the data directory does not
have them; tests that build their own files in tmp_path always run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import default_data_dir
from harness.errors import ConfigError
from harness.tasks.jsts import keyword_of, list_drafts, load_test_suite
from harness.tasks.maskbench import list_groups, load_maskbench


def _dataset(*parts: str) -> Path:
    path = default_data_dir().joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"dataset not present: {path} (set CDBENCH_DATA_DIR, place ../shared/datasets, or run cdbench data fetch all)")
    return path


@pytest.fixture(scope="module")
def maskbench_dir() -> Path:
    return _dataset("jsonschemabench", "maskbench")


@pytest.fixture(scope="module")
def jsts_dir() -> Path:
    return _dataset("json-schema-test-suite")


@pytest.fixture(scope="module")
def all_maskbench(maskbench_dir):
    """Every MaskBench record, loaded once (the largest read in this file)."""
    return load_maskbench(maskbench_dir)


def test_maskbench_small_group(maskbench_dir):
    tasks = load_maskbench(maskbench_dir, groups=["Handwritten"])
    assert tasks
    assert all(t.id.startswith("Handwritten/") and t.source == "maskbench:Handwritten" for t in tasks)
    assert len({t.id for t in tasks}) == len(tasks)
    t = tasks[0]
    assert t.kind == "json_schema" and isinstance(t.schema, dict)
    assert json.dumps(t.schema) in t.prompt[-1]["content"]
    labels = {e.valid for task in tasks for e in task.examples}
    assert labels == {True, False}
    assert any(task.tags for task in tasks)
    assert all(task.tags == sorted(task.tags) for task in tasks)


def test_maskbench_totals(all_maskbench, maskbench_dir):
    """Counts stated in jsonschemabench/PROVENANCE.md."""
    assert len(all_maskbench) == 10_747
    valid = sum(e.valid for t in all_maskbench for e in t.examples)
    invalid = sum(not e.valid for t in all_maskbench for e in t.examples)
    assert (valid, invalid) == (13_711, 22_724)
    assert {t.source.split(":", 1)[1] for t in all_maskbench} == set(list_groups(maskbench_dir))


def test_maskbench_malformed_line(tmp_path):
    good = {"id": "a", "schema": {"type": "integer"}, "tests": [{"data": 1, "valid": True}]}
    (tmp_path / "G.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ConfigError) as exc:
        load_maskbench(tmp_path)
    msg = str(exc.value)
    assert f"{tmp_path / 'G.jsonl'}:2" in msg and "\n" not in msg


def test_maskbench_record_without_tests_and_string_schema(tmp_path):
    rows = [{"id": "a", "schema": json.dumps({"type": "string"}), "tests": []}, {"id": "b", "schema": {}}]
    (tmp_path / "G.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"G\.jsonl:2: .*'tests'"):
        load_maskbench(tmp_path)
    (tmp_path / "G.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert load_maskbench(tmp_path)[0].schema == {"type": "string"}


def test_maskbench_unknown_group(maskbench_dir):
    with pytest.raises(ConfigError, match="unknown maskbench group 'Nope'.*Handwritten"):
        load_maskbench(maskbench_dir, groups=["Nope"])


def test_maskbench_missing_dir(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_maskbench(tmp_path / "missing")


def test_jsts_draft2020_12(jsts_dir):
    tasks = load_test_suite(jsts_dir)
    assert len(tasks) == 383  # core files only, per json-schema-test-suite/PROVENANCE.md
    assert all(t.examples for t in tasks)
    assert all(t.source == "jsts:draft2020-12" for t in tasks)
    required = [t for t in tasks if keyword_of(t) == "required"]
    assert required and all(t.tags[0] == "required" for t in required)
    assert required[0].id == "draft2020-12/required/0"
    assert any(isinstance(t.schema, bool) for t in tasks)  # boolean schemas are kept
    assert any("remote-ref" in t.tags for t in tasks if keyword_of(t) == "refRemote")


def test_jsts_optional(jsts_dir):
    tasks = load_test_suite(jsts_dir / "tests", include_optional=True)
    assert len(tasks) == 461
    opt = [t for t in tasks if t.id.startswith("draft2020-12/optional/")]
    assert opt and all("optional" in t.tags for t in opt)
    assert any(t.id.startswith("draft2020-12/optional/format/date/") for t in opt)


def test_jsts_unknown_draft(jsts_dir):
    assert "draft2020-12" in list_drafts(jsts_dir)
    with pytest.raises(ConfigError, match="unknown draft 'draft99'.*draft2020-12"):
        load_test_suite(jsts_dir, draft="draft99")


def test_jsts_malformed_files(tmp_path):
    bad = tmp_path / "tests" / "draftX"
    bad.mkdir(parents=True)
    (bad / "type.json").write_text('[{"description": "x", "tests": []}]')
    with pytest.raises(ConfigError, match=r"type\.json: group 0"):
        load_test_suite(tmp_path, draft="draftX")
    (bad / "type.json").write_text("[")
    with pytest.raises(ConfigError, match=r"type\.json: not JSON"):
        load_test_suite(tmp_path, draft="draftX")
