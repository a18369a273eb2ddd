"""Row types: declared once per kind, with units; checked when written and when read."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import rows as R
from harness.results.rundir import RunDir, make_fingerprint

ROOT = Path(__file__).resolve().parents[1]
SUFFIX_UNITS = {"_s": "s", "_ms": "ms", "_us": "µs"}


@pytest.mark.parametrize("kind", sorted(R.ROW_TYPES))
def test_every_field_has_a_meaning_and_times_carry_their_unit(kind):
    for f in dataclasses.fields(R.ROW_TYPES[kind]):
        assert f.metadata["doc"], (kind, f.name)
        for suffix, unit in SUFFIX_UNITS.items():
            if f.name.endswith(suffix):
                assert f.metadata["unit"] == unit, (kind, f.name)
        assert not (f.metadata["key"] and f.metadata["optional"]), (kind, f.name)


def _rundir(tmp_path, kind: str = "run") -> RunDir:
    fp = make_fingerprint(kind, {"model": "m"}, {})
    return RunDir.create(tmp_path, f"r-{kind}", kind, {}, fp, {})


def test_writing_refuses_undeclared_missing_and_mistyped_fields(tmp_path):
    w = _rundir(tmp_path).writer()
    good = R.blank("run", task_id="t", engine="e", sampler="masking", source="s", compile_s=0.5)
    w.append(good)
    with pytest.raises(R.RowTypeError, match="undeclared field 'latency'"):
        w.append(good | {"latency": 1.0})
    with pytest.raises(R.RowTypeError, match="missing field 'ttft_s'"):
        w.append({k: v for k, v in good.items() if k != "ttft_s"})
    with pytest.raises(R.RowTypeError, match="'compile_s' is str"):
        w.append(good | {"compile_s": "0.5"})
    w.append(good | {"x_log_zhat": -1.5})  # a sampler's extra, by its prefix
    w.close()
    assert len((tmp_path / "r-run" / "rows.jsonl").read_text().splitlines()) == 2


def test_blank_rows_are_complete_and_neutral():
    for kind in R.ROW_TYPES:
        row = R.blank(kind)
        assert R.problems(kind, row) == []
    assert R.blank("run")["valid"] is None and R.blank("run")["tgt_s"] == 0.0 and R.blank("run")["step_evals"] == []


def test_reading_names_the_line_of_a_row_without_its_key_fields(tmp_path, capsys):
    rd = _rundir(tmp_path)
    good = R.blank("run", task_id="t", engine="e", sampler="masking", source="s")
    bad = {k: v for k, v in good.items() if k != "engine"}
    (rd.path / "rows.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert main(["compare", str(rd.path), str(rd.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.jsonl:2" in err[0] and "missing field 'engine'" in err[0]


def test_reading_tolerates_fields_of_other_versions_but_not_wrong_types(tmp_path):
    rd = _rundir(tmp_path, "replay")
    row = {"engine": "e", "task_id": "t", "group": "g", "status": "done", "bucket": "pass", "future_field": 1}
    (rd.path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    assert rd.rows() == [row]
    (rd.path / "rows.jsonl").write_text(json.dumps(row | {"cold_compile_s": "fast"}) + "\n")
    with pytest.raises(Exception, match="rows.jsonl:1: not a replay row: 'cold_compile_s' is str"):
        rd.rows()


def test_results_format_doc_lists_the_declared_fields():
    doc = (ROOT / "docs" / "results-format.md").read_text(encoding="utf-8")
    printed = subprocess.run([sys.executable, "-m", "harness.results.rows"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    assert printed.strip() in doc, "docs/results-format.md is out of date: python -m harness.results.rows"
