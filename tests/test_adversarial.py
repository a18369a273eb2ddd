"""The adversarial suite (harness/tasks/adversarial.py): labels that agree with jsonschema,
stable ids, bounded sizes, the ADVERSARIAL.md rows covered, Gemma's byte-fallback spellings,
and a short real replay (two engines, a few cases) in which a dead worker is named."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import jsonschema
import pytest

from harness.errors import ConfigError
from harness.tasks import adversarial as adv
from harness.tasks.adversarial import RawText, load_adversarial, load_spec

REFERENCE = Path("/work/shared/reference/ADVERSARIAL.md")
NO_VALID_INSTANCE = {"ref_cycle", "ref_cycle_required", "enum_empty"}
SCHEMA_LIMIT = 128 * 1024    # bytes of schema text, the largest (enum_size-n10000) is about 119 KB
INSTANCE_LIMIT = 32 * 1024   # bytes of one instance's text


@pytest.fixture(scope="module")
def tasks():
    return load_adversarial()


def family(task) -> str:
    return task.source.split(":", 1)[1]


def independent_label(schema, text: str, value) -> bool:
    """jsonschema alone: the text must be JSON (strict: no raw control characters), then valid.
    A RecursionError (a $ref cycle with no base case) shows no instance valid."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return False
    try:
        return jsonschema.validators.validator_for(schema)(schema).is_valid(parsed)
    except RecursionError:
        return False


def test_every_label_agrees_with_jsonschema(tasks):
    raised = set()
    for task in tasks:
        for ex in task.examples:
            text = task.example_text(ex)
            if isinstance(ex.value, RawText):
                assert text == str(ex.value)  # replayed byte for byte
                with pytest.raises(json.JSONDecodeError):
                    json.loads(text)
            else:
                assert json.loads(text) == ex.value
            try:
                jsonschema.validators.validator_for(task.schema)(task.schema).is_valid(json.loads(text))
            except RecursionError:
                raised.add(family(task))
            except json.JSONDecodeError:
                pass
            assert independent_label(task.schema, text, ex.value) == ex.valid, (task.id, ex.description)
    assert raised == {"ref_cycle"}  # only the cycle without a base case makes jsonschema recurse


def test_valid_and_invalid_instances(tasks):
    for task in tasks:
        valid = [e for e in task.examples if e.valid]
        assert any(not e.valid for e in task.examples), task.id
        if family(task) in NO_VALID_INSTANCE:
            assert not valid, task.id
            assert all("no instance is valid" in e.description for e in task.examples), task.id
        else:
            assert valid, task.id
        assert all(e.description for e in task.examples)


def test_ids_unique_stable_and_named(tasks):
    again = load_adversarial()
    assert [t.id for t in tasks] == [t.id for t in again]
    assert len({t.id for t in tasks}) == len(tasks)
    for a, b in zip(tasks, again):
        assert a.schema_text == b.schema_text
        assert [(a.example_text(e), e.valid) for e in a.examples] == [(b.example_text(e), e.valid) for e in b.examples]
    spec = load_spec()
    for task in tasks:
        fam = spec["families"][family(task)]
        m = re.fullmatch(r"adversarial/(\w+)-(.+)", task.id)
        assert m and m.group(1) == family(task), task.id
        assert m.group(2) in {f"{fam.get('size', '')}{s}" for s in fam["sizes"]}, task.id
        assert task.kind == "json_schema" and task.source == f"adversarial:{family(task)}"
        rows = {int(t.split("#")[1]) for t in task.tags if t.startswith("ADVERSARIAL#")}
        assert rows == set(fam["rows"]), task.id
        assert rows or "ADVERSARIAL:extra" in task.tags, task.id
    assert {family(t) for t in tasks} == set(spec["families"])


def test_sizes_bounded(tasks):
    assert 40 <= len(tasks) <= 60
    for task in tasks:
        assert len(task.schema_text.encode()) < SCHEMA_LIMIT, task.id
        assert 3 <= len(task.examples) <= 10, task.id
        for ex in task.examples:
            assert len(task.example_text(ex).encode()) < INSTANCE_LIMIT, (task.id, ex.description)
        jsonschema.validators.validator_for(task.schema).check_schema(task.schema)  # a schema, if adversarial


def _docstring_table() -> dict[str, str]:
    rows = {}
    for line in adv.__doc__.splitlines():
        m = re.match(r"\| (\d+|extra) \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_docstring_table_covers_adversarial_rows():
    spec = load_spec()
    table = _docstring_table()
    assert {k for k in table if k != "extra"} == {str(i) for i in range(1, 18)}
    if REFERENCE.exists():  # the reference's own rows, when it is at hand
        ref_rows = {m.group(1) for m in re.finditer(r"^\| (\d+) \| ", REFERENCE.read_text(encoding="utf-8"), re.M)}
        assert ref_rows == {k for k in table if k != "extra"}
    not_applicable = {int(k) for k in spec["not_applicable"]}
    assert not_applicable == {8, 14, 15, 16, 17}
    for row in range(1, 18):
        claimed = {f for f, fam in spec["families"].items() if row in fam["rows"]}
        cell = table[str(row)]
        if row in not_applicable:
            assert cell == "not applicable" and not claimed, row
            assert len(spec["not_applicable"][str(row)]) > 40  # says why, and which mechanism it needs
        else:
            assert {f.strip() for f in cell.split(",")} == claimed, row
    extras = {f for f, fam in spec["families"].items() if fam.get("extra")}
    assert {f.strip() for f in table["extra"].split(",")} == extras


def test_byte_fallback_spellings(tasks, gemma_tok):
    """The characters the data file lists are spelled by Gemma the way it says, and every
    byte_fallback task forces the byte-token path with at least one instance."""
    view = gemma_tok.view
    bf = load_spec()["byte_fallback"]
    byte_tokens = {i for i, b in enumerate(view.token_bytes) if len(b) == 1 and b[0] >= 0x80}
    for ch in [bf["emoji_in_range_byte_fallback"], *bf["emoji_outside_byte_fallback"], *bf["cjk_byte_fallback"],
               *bf["other_byte_fallback"]]:
        ids = gemma_tok.encode(ch)
        assert len(ids) == len(ch.encode("utf-8")) and set(ids) <= byte_tokens, ch
    for ch in bf["emoji_in_range_single_token"]:
        assert len(gemma_tok.encode(ch)) == 1, ch
    for task in tasks:
        if family(task) == "byte_fallback":
            assert any(byte_tokens & set(gemma_tok.encode(task.example_text(e))) for e in task.examples if e.valid), task.id
    boundary = next(t for t in tasks if t.id == "adversarial/token_boundary-queries")
    raw = next(e for e in boundary.examples if isinstance(e.value, RawText) and e.value.endswith('","]}'))
    assert view.token_bytes[gemma_tok.encode(str(raw.value))[-1]] == b'"]}'  # a token across the quote


def test_raw_text_survives_pickling(tasks):
    task = next(t for t in tasks if t.id == "adversarial/control_chars-plain")
    back = pickle.loads(pickle.dumps(task))
    assert type(back) is type(task)
    assert [back.example_text(e) for e in back.examples] == [task.example_text(e) for e in task.examples]
    assert any("\t" in back.example_text(e) for e in back.examples)


def test_replay_source_and_groups():
    from harness.replay.run import ReplayConfig, load_replay_tasks

    got = load_replay_tasks(ReplayConfig(source="adversarial", groups=["enum_empty", "ref_cycle"]))
    assert [t.id for t in got] == ["adversarial/ref_cycle-len1", "adversarial/ref_cycle-len8",
                                   "adversarial/enum_empty-prop", "adversarial/enum_empty-root"]
    with pytest.raises(ConfigError, match="unknown adversarial family"):
        load_replay_tasks(ReplayConfig(source="adversarial", groups=["nope"]))


def test_short_real_replay(tmp_path):
    """A few adversarial cases through xgrammar and llguidance, and a segfaulting engine whose
    dead workers the summary and manifest name: every (engine, case) has its row."""
    from harness.replay.run import ReplayConfig, replay
    from harness.reporting.writer import read_rows

    cfg = ReplayConfig(source="adversarial", groups=["ref_cycle", "enum_empty"], limit=3,
                       engines=["xgrammar", "llguidance", "faulty-segfault"], timeout_s=20.0, memory_gb=8.0,
                       reports_dir=str(tmp_path), run_id="adv")
    run_dir = replay(cfg)
    rows = {(r["engine"], r["task_id"]): r for r in read_rows(run_dir)}
    ids = ["adversarial/ref_cycle-len1", "adversarial/ref_cycle-len8", "adversarial/enum_empty-prop"]
    assert set(rows) == {(e, i) for e in cfg.engines for i in ids}
    for i in ids:
        for engine in ("xgrammar", "llguidance"):
            r = rows[engine, i]
            assert r["bucket"] != "invalid_accepted" and r["n_valid"] == 0 and r["n_invalid"] >= 5, (engine, i, r)
        assert rows["faulty-segfault", i]["bucket"] == "crash"
    assert rows["xgrammar", "adversarial/enum_empty-prop"]["bucket"] == "compile_error"  # xgrammar #639 fixed
    # the cycle compiles in llguidance, whose first mask then fails: the engine error of vLLM #57725
    assert rows["llguidance", "adversarial/ref_cycle-len1"]["bucket"] in ("engine_error", "compile_error")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    named = manifest["environment"]["engines"]["faulty-segfault"]["replaced_workers"]
    assert [r["job"] for r in named] == ids
    assert all(r["worker"] == "faulty-segfault/0" and r["pid"] and r["reason"].startswith("crash") for r in named)
    assert all(r["replacement_pid"] and r["replacement_pid"] != r["pid"] for r in named)
    text = (run_dir / "summary.md").read_text()
    assert "## Workers replaced" in text and "| faulty-segfault | faulty-segfault/0 |" in text
    assert json.loads((run_dir / "summary.json").read_text())["replaced_workers"][0]["job"] == ids[0]
