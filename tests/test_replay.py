"""Replay: verdicts on hand-made schemas, a deliberately broken engine caught, and workers
that segfault, hang or allocate without bound classified while the run goes on."""
from __future__ import annotations

import json

import pytest

from harness.replay.run import ReplayConfig, replay
from harness.reporting.writer import read_rows


def write_maskbench(tmp_path, records):
    d = tmp_path / "mb"
    d.mkdir()
    (d / "Hand.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return d


RECORDS = [
    {"id": "flags", "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
                               "required": ["id", "ok"], "additionalProperties": False},
     "tests": [{"valid": True, "data": {"id": 3, "ok": True}}, {"valid": False, "data": {"id": "3", "ok": True}},
               {"valid": False, "data": {"id": 3}}]},
    {"id": "color", "schema": {"type": "object", "properties": {"c": {"enum": ["red", "blue"]}}, "required": ["c"],
                               "additionalProperties": False},
     "tests": [{"valid": True, "data": {"c": "red"}}, {"valid": False, "data": {"c": "green"}}]},
    {"id": "ordered", "schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                 "required": ["a", "b"]},
     # valid JSON-Schema-wise, but in the other key order: llguidance enforces declared order
     "tests": [{"valid": True, "data": {"b": 1, "a": 2}}]},
    {"id": "notkw", "schema": {"type": "object", "properties": {"x": {"not": {"type": "string"}}}},
     "tests": [{"valid": True, "data": {"x": 1}}]},
]


def cfg(tmp_path, source, **kw):
    base = dict(source=str(source), reports_dir=str(tmp_path / "reports"), run_id="r", timeout_s=20.0,
                memory_gb=8.0)
    base.update(kw)
    return ReplayConfig(**base)


def test_replay_verdicts_and_broken_engine(tmp_path):
    src = write_maskbench(tmp_path, RECORDS)
    run_dir = replay(cfg(tmp_path, src, engines=["llguidance", "faulty-allow-all"], differential=True))
    rows = {(r["engine"], r["task_id"]): r for r in read_rows(run_dir)}
    assert rows["llguidance", "Hand/flags"]["bucket"] == "pass"
    assert rows["llguidance", "Hand/color"]["bucket"] == "pass"
    ordered = rows["llguidance", "Hand/ordered"]
    assert ordered["bucket"] == "policy" and ordered["policy"] == "policy:property_order"  # declared order passes
    assert (ordered["valid_rejected"], ordered["policy_rejected"]) == (0, 1)
    inst = ordered["instances"][0]
    assert inst["reject_index"] <= 2 and "b" in inst["reject_token"]  # refused where key "b" starts
    assert rows["llguidance", "Hand/notkw"]["bucket"] == "unsupported"
    # the engine that allows everything is caught on every schema with an invalid instance
    assert rows["faulty-allow-all", "Hand/flags"]["bucket"] == "invalid_accepted"
    assert rows["faulty-allow-all", "Hand/color"]["bucket"] == "invalid_accepted"
    flags = rows["llguidance", "Hand/flags"]
    assert flags["tokens"] > 5 and flags["warm_compile_s"] is None and "no compile cache" in flags["warm_note"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engines"]["llguidance"]["buckets"]["pass"] == 2
    diff = summary["differential"][0]
    assert diff["instances_differing"] >= 2 and diff["examples"]
    text = (run_dir / "summary.md").read_text()
    assert "invalid_accepted" in text and "p99.9" in text and "`policy:property_order` 1" in text


def test_crash_timeout_oom_are_classified_and_run_goes_on(tmp_path):
    src = write_maskbench(tmp_path, RECORDS[:2])
    run_dir = replay(cfg(tmp_path, src, engines=["faulty-segfault", "faulty-hang", "faulty-oom", "llguidance"],
                         timeout_s=3.0, memory_gb=4.0))
    rows = {(r["engine"], r["task_id"]): r for r in read_rows(run_dir)}
    assert {rows["faulty-segfault", t]["bucket"] for t in ("Hand/flags", "Hand/color")} == {"crash"}
    assert {rows["faulty-hang", t]["bucket"] for t in ("Hand/flags", "Hand/color")} == {"timeout"}
    assert {rows["faulty-oom", t]["bucket"] for t in ("Hand/flags", "Hand/color")} == {"oom"}
    assert rows["llguidance", "Hand/flags"]["bucket"] == "pass"  # after all that, a healthy engine still runs
    env = json.loads((run_dir / "manifest.json").read_text())["environment"]
    assert env["engines"]["faulty-segfault"]["workers_replaced"] == 2


def test_resume_skips_finished_schemas(tmp_path):
    src = write_maskbench(tmp_path, RECORDS[:2])
    run_dir = replay(cfg(tmp_path, src, engines=["llguidance"]))
    journal = run_dir / "rows.jsonl"
    first = journal.read_text().splitlines()[0]
    journal.write_text(first + "\n")  # the replay died after its first schema
    with pytest.raises(Exception, match="--resume"):
        replay(cfg(tmp_path, src, engines=["llguidance"]))
    with pytest.raises(Exception, match="config differs.*limit: None -> 1"):
        replay(cfg(tmp_path, src, engines=["llguidance"], limit=1, resume=True))
    run_dir = replay(cfg(tmp_path, src, engines=["llguidance"], resume=True))
    lines = journal.read_text().splitlines()
    assert sorted(json.loads(x)["task_id"] for x in lines) == ["Hand/color", "Hand/flags"]
    assert lines[0] == first  # the finished schema was not replayed again
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_grammar_tasks_replay_with_positive_and_negative_strings(gemma_tok, engines):
    """CFG replay uses the same machinery: a grammar task's strings are forced through each engine."""
    from harness.replay.worker import Job, replay_job
    from harness.tasks.task import Example, Task

    task = Task(id="arith", kind="cfg", source="test", prompt=[],
                grammars={"lark": 'start: expr\nexpr: term (("+"|"-") term)*\nterm: NUM | "(" expr ")"\nNUM: /[0-9]+/',
                          "ebnf": 'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= [0-9]+ | "(" expr ")"'},
                examples=[Example("1+2", True), Example("(10-3)+4", True), Example("1+", False), Example("(2", False),
                          Example("1*2", False)])
    insts = [(i, gemma_tok.encode(task.example_text(e)), e.valid) for i, e in enumerate(task.examples)]
    for name in ("llguidance", "xgrammar"):
        out = replay_job(engines[name], Job(task, insts))
        assert out["compile_status"] == "ok"
        verdicts = [(i["valid"], i["accepted"]) for i in out["instances"]]
        assert verdicts == [(True, True), (True, True), (False, False), (False, False), (False, False)], name
    assert replay_job(engines["outlines"], Job(task, insts))["compile_status"] == "unsupported"  # no regex given
