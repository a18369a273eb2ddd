"""Every engine, over the real Gemma vocabulary, accepts valid instances and refuses invalid
ones when their tokens are forced through its matcher (mask checked at every step)."""
from __future__ import annotations

import json

import pytest

from harness.engines import DEFAULT_ENGINES
from harness.forcing import force
from harness.tasks.task import Task

POINT = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
         "required": ["x", "y"], "additionalProperties": False}

CASES = {
    "flags": (
        {"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
         "required": ["id", "ok"], "additionalProperties": False},
        [{"id": 42, "ok": True}, {"id": -7, "ok": False}],
        [{"id": "42", "ok": True}, {"id": 42}, {"id": 1, "ok": False, "extra": 1}],
    ),
    "enum": (
        {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "n": {"type": "integer"}},
         "required": ["color", "n"], "additionalProperties": False},
        [{"color": "green", "n": 7}],
        [{"color": "purple", "n": 7}, {"color": "red", "n": 1.5}],
    ),
    "pattern_array": (
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                          "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
         "required": ["code", "tags"], "additionalProperties": False},
        [{"code": "ABC-12", "tags": ["a"]}, {"code": "XYZ-99", "tags": []}],
        [{"code": "abc-12", "tags": []}, {"code": "ABC-12", "tags": ["a", "b", "a"]}, {"code": "ABC-12", "tags": ["c"]}],
    ),
    "refs": (
        {"$defs": {"pt": POINT}, "type": "object",
         "properties": {"from": {"$ref": "#/$defs/pt"}, "to": {"$ref": "#/$defs/pt"}},
         "required": ["from", "to"], "additionalProperties": False},
        [{"from": {"x": 1, "y": 2}, "to": {"x": 3, "y": 4}}],
        [{"from": {"x": 1}, "to": {"x": 3, "y": 4}}, {"from": {"x": 1, "y": 2}, "to": None}],
    ),
}


def _task(name: str) -> Task:
    return Task(id=name, kind="json_schema", source="test", prompt=[], schema=CASES[name][0])


@pytest.fixture(scope="module")
def compiled(engines):
    return {(e, n): engines[e].compile(_task(n)) for e in DEFAULT_ENGINES for n in CASES}


@pytest.mark.parametrize("engine", DEFAULT_ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_instances_are_accepted(engine, case, compiled, gemma_tok):
    view = gemma_tok.view
    for instance in CASES[case][1]:
        ids = gemma_tok.encode(json.dumps(instance, separators=(",", ":")))
        result = force(compiled[engine, case].matcher(), ids, view)
        assert result.accepted, f"{engine} refused valid {instance} at token {result.reject_index}"
        assert len(result.mask_times) == len(ids) + 1


@pytest.mark.parametrize("engine", DEFAULT_ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_instances_are_refused(engine, case, compiled, gemma_tok):
    view = gemma_tok.view
    for instance in CASES[case][2]:
        ids = gemma_tok.encode(json.dumps(instance, separators=(",", ":")))
        result = force(compiled[engine, case].matcher(), ids, view)
        assert not result.accepted, f"{engine} accepted invalid {instance}"


@pytest.mark.parametrize("engine", DEFAULT_ENGINES)
def test_matcher_check_fork_rollback(engine, compiled, gemma_tok):
    """The seams later samplers need: single-token check, fork and rollback agree with the mask."""
    view = gemma_tok.view
    ids = gemma_tok.encode('{"id":42,"ok":true}')
    m = compiled[engine, "flags"].matcher()
    assert not m.is_accepting()
    for t in ids[:3]:
        assert m.check(t)
        assert m.advance(t)
    twin = m.fork()
    assert twin.check(ids[3]) and m.check(ids[3])
    wrong = gemma_tok.encode('"')[0]  # a string where an integer must go... or continue: both sides agree
    assert twin.check(wrong) == m.check(wrong)
    for t in ids[3:]:
        assert twin.advance(t)
    assert twin.is_accepting() and twin.check(view.eos_id)
    assert not m.is_accepting()  # the fork moved on alone
    twin.rollback(len(ids) - 3)
    assert not twin.is_accepting()
    for t in ids[3:]:
        assert twin.advance(t)
    assert twin.is_accepting()


def test_builtin_valid_examples_accepted_by_llguidance(engines, builtin_tasks, gemma_tok):
    """The built-in suite's own valid instances pass llguidance (declared order, compact)."""
    from harness.engines.base import Unsupported

    view = gemma_tok.view
    checked = 0
    for task in builtin_tasks.values():
        try:
            comp = engines["llguidance"].compile(task)
        except Unsupported:
            continue
        for ex in task.examples:
            if ex.valid:
                ids = gemma_tok.encode(task.example_text(ex))
                assert force(comp.matcher(), ids, view).accepted, (task.id, ex.value)
                checked += 1
    assert checked >= 50


def test_gemma_has_stop_aliases(gemma_tok):
    """Gemma 3 ends with <eos> as often as <end_of_turn>: both are stops (llama.cpp's EOG set)."""
    view = gemma_tok.view
    assert view.eos_id == 106 and {1, 106} <= view.stops


@pytest.mark.parametrize("engine", DEFAULT_ENGINES)
def test_stop_aliases_follow_eos(engine, engines, compiled, gemma_tok):
    """Every stop token is allowed exactly when the engine's EOS is, in mask and check alike."""
    from harness.engines.bitmask import is_allowed, new_bitmask

    view = gemma_tok.view
    m = engines[engine].new_matcher(compiled[engine, "flags"])
    bits = new_bitmask(view.vocab_size)
    ids = gemma_tok.encode('{"id":42,"ok":true}')
    for i, t in enumerate(ids + [None]):
        m.fill_mask(bits)
        done = t is None
        for stop in sorted(view.stops):
            assert is_allowed(bits, stop) == done, (engine, i, stop)
            assert m.check(stop) == done, (engine, i, stop)
        if not done:
            assert m.advance(t)
    other = sorted(view.stops - {view.eos_id})[0]
    assert m.fork().check(other)


def test_grammar_subset_by_name():
    from harness.errors import ConfigError
    from harness.tasks.grammars import load_grammars

    assert [t.id for t in load_grammars(subset=["smiles", "arithmetic"])] == ["smiles", "arithmetic"]
    with pytest.raises(ConfigError, match="unknown grammar task"):
        load_grammars(subset=["nope"])


def test_xgrammar_compile_error_has_no_wall_clock_stamp(engines):
    """xgrammar prefixes its messages with the time of day ("[17:04:57] ..."); a row must not carry
    it, or the same schema gives a different row on every run (local vs Ray replays differed so)."""
    from harness.engines.base import CompileError

    task = Task(id="nul", kind="json_schema", source="test", prompt=[],
                schema={"type": "string", "pattern": "a\u0000b"})
    with pytest.raises(CompileError) as err:
        engines["xgrammar"].compile(task)
    message = str(err.value)
    assert "null characters" in message
    assert not message.startswith("[")
