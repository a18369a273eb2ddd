"""Each kind of bad input gets a one-line error naming the thing and the problem, exit 2."""
from __future__ import annotations

import json

from harness.cli import main
from harness.engines import ENGINES


def run_cli(capsys, *args):
    code = main(["run", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_schema_file_not_json(tmp_path, capsys):
    f = tmp_path / "broken.json"
    f.write_text('{"type": "object",')
    code, err = run_cli(capsys, "--schema", str(f))
    assert code == 2
    assert len(err.splitlines()) == 1 and "broken.json" in err and "not JSON" in err


def test_schema_file_not_a_schema(tmp_path, capsys):
    f = tmp_path / "notschema.json"
    f.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strng"}}}))
    code, err = run_cli(capsys, "--schema", str(f))
    assert code == 2 and "notschema.json" in err and "not a valid JSON Schema" in err


def test_unknown_engine(capsys):
    code, err = run_cli(capsys, "--engines", "xgrammar,warpdrive", "--limit", "1")
    assert code == 2 and "unknown engine 'warpdrive'" in err


def test_engine_not_installed(capsys):
    ENGINES.register("ghost", "harness_ghost_engine_not_installed:GhostEngine")
    try:
        code, err = run_cli(capsys, "--engines", "ghost", "--limit", "1")
    finally:
        ENGINES._entries.pop("ghost")
    assert code == 2 and "engine 'ghost' is not installed" in err


def test_missing_model_file(tmp_path, capsys):
    code, err = run_cli(capsys, "--engines", "llguidance", "--limit", "1", "--model", str(tmp_path / "nope.gguf"),
                        "--reports-dir", str(tmp_path))
    assert code == 2 and "model file not found" in err and "nope.gguf" in err


def test_model_file_not_gguf(tmp_path, capsys):
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"not a model")
    code, err = run_cli(capsys, "--engines", "llguidance", "--limit", "1", "--model", str(f),
                        "--reports-dir", str(tmp_path))
    assert code == 2 and "not a GGUF" in err


def test_dataset_row_not_json(tmp_path, capsys):
    d = tmp_path / "jsb"
    d.mkdir()
    (d / "Tiny.jsonl").write_text('{"unique_id": "a", "json_schema": {"type": "object"}}\n{"unique_id": "b", \n')
    code, err = run_cli(capsys, "--dataset", str(d), "--engines", "llguidance")
    assert code == 2 and "Tiny.jsonl:2" in err and "not JSON" in err


def test_dataset_row_missing_fields(tmp_path, capsys):
    d = tmp_path / "jsb"
    d.mkdir()
    (d / "Tiny.jsonl").write_text('{"id": "a", "schema": {}}\n')
    code, err = run_cli(capsys, "--dataset", str(d), "--engines", "llguidance")
    assert code == 2 and "Tiny.jsonl:1" in err and "unique_id" in err


def test_unknown_subset(capsys, tmp_path):
    d = tmp_path / "jsb"
    d.mkdir()
    (d / "Tiny.jsonl").write_text('{"unique_id": "a", "json_schema": {"type": "object"}}\n')
    code, err = run_cli(capsys, "--dataset", str(d), "--subset", "Huge")
    assert code == 2 and "Huge" in err and "Tiny" in err


def test_missing_dataset_dir(capsys, tmp_path):
    code, err = run_cli(capsys, "--dataset", str(tmp_path / "absent"))
    assert code == 2 and "absent" in err


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nengines = [\n")
    code, err = run_cli(capsys, "--config", str(bad))
    assert code == 2 and "bad.toml" in err and "not TOML" in err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[run]\nengnes = ["xgrammar"]\n')
    code, err = run_cli(capsys, "--config", str(unknown))
    assert code == 2 and "unknown config key(s): engnes" in err


def test_bad_values(capsys):
    code, err = run_cli(capsys, "--max-tokens", "0")
    assert code == 2 and "max_tokens" in err
