"""The differential oracle shows what differs: for each example (an instance's first differing
step between two engines) the replay's post-pass brings back both engines' masks from fresh
workers and reports the tokens one allows and the other refuses.

Checked against the two real engines stepped directly in this process: the first differing
step, both counts (popcount of and-not), and every listed token through the matchers' check().
The fake engines below are light (no engine library) and run in replay workers by "module:Class"
(this module is on the spawned workers' sys.path, as pytest put it there).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from harness.engines.base import ConstraintEngine
from harness.engines.bitmask import new_bitmask
from harness.forcing import force
from harness.replay.run import ReplayConfig, replay, write_replay_report
from harness.replay.stats import markdown
from harness.reporting.writer import read_rows

# Strings of at most 3 characters: llguidance and xgrammar disagree inside the first string
# (which control characters and escapes may start it), both ways.
RECORD = {"id": "short", "schema": {"type": "array", "items": {"type": "string", "maxLength": 3}},
          "tests": [{"valid": True, "data": ["ab", "c"]}]}
PAIR = ("llguidance", "xgrammar")  # differential() orders a pair by name
LIMIT = 8  # tokens listed per side


def _run(tmp_path: Path, engines: list[str], **kw) -> tuple[Path, ReplayConfig]:
    d = tmp_path / "mb"
    d.mkdir(exist_ok=True)
    (d / "Hand.jsonl").write_text(json.dumps(RECORD) + "\n")
    cfg = ReplayConfig(source=str(d), engines=engines, reports_dir=str(tmp_path / "reports"), run_id="r",
                       timeout_s=20.0, memory_gb=8.0, differential=True, **kw)
    return replay(cfg), cfg


@pytest.fixture(scope="module")
def direct(gemma_tok):
    """The two engines built in this process, with the replay's default options."""
    from harness.engines import ENGINES

    return {name: ENGINES.create(name, gemma_tok.view) for name in PAIR}


def _bits(bitmask: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(bitmask.view(np.uint8), bitorder="little")[:n].astype(bool)


def _matchers_at(direct, task, ids, step):
    """Fresh matchers of both engines with the instance's first `step` tokens advanced."""
    out = {}
    for name in PAIR:
        m = direct[name].compile(task).matcher()
        for t in ids[:step]:
            assert m.advance(t)
        out[name] = m
    return out


def test_detail_matches_the_engines_stepped_directly(tmp_path, gemma_tok, direct):
    from harness.tasks.maskbench import load_maskbench

    run_dir, _ = _run(tmp_path, list(PAIR))
    (pair,) = json.loads((run_dir / "summary.json").read_text())["differential"]
    assert (pair["a"], pair["b"]) == PAIR and pair["instances_differing"] == 1
    (ex,) = pair["examples"]
    assert "detail_error" not in ex and "detail_note" not in ex

    # The first differing step and both masks there, computed here by stepping both matchers.
    (task,) = load_maskbench(tmp_path / "mb")
    view = gemma_tok.view
    ids = gemma_tok.encode(task.example_text(task.examples[0]))
    ms = {name: direct[name].compile(task).matcher() for name in PAIR}
    masks = {name: new_bitmask(view.vocab_size) for name in PAIR}
    step = None
    for i, token in enumerate(ids + [view.eos_id]):
        for name in PAIR:
            ms[name].fill_mask(masks[name])
        if not np.array_equal(*masks.values()):
            step = i
            break
        assert token != view.eos_id and all(ms[name].advance(token) for name in PAIR)
    assert step is not None, "the engines no longer differ on this schema: pick another"
    assert ex["step"] == step and ex["task"] == task.id and ex["example"] == 0

    a, b = (_bits(masks[name], view.vocab_size) for name in PAIR)
    a_only, b_only = np.flatnonzero(a & ~b), np.flatnonzero(b & ~a)
    assert ex["a_only"]["count"] == a_only.size and ex["b_only"]["count"] == b_only.size
    assert a_only.size + b_only.size == int(np.count_nonzero(a ^ b)) > 0
    assert (ex["a_allowed"], ex["b_allowed"]) == (int(a.sum()), int(b.sum()))

    # The listed tokens: the first LIMIT of each side, shortest first then lowest id (EOS before
    # all), each truly allowed by one engine and refused by the other.
    fresh = _matchers_at(direct, task, ids, step)
    for side, only, allows, refuses in (("a_only", a_only, *PAIR), ("b_only", b_only, *reversed(PAIR))):
        listed = ex[side]["tokens"]
        order = sorted(only.tolist(), key=lambda t: (t != view.eos_id, len(view.token_bytes[t]), t))
        assert [t for t, _ in listed] == order[:LIMIT]
        for t, text in listed:
            assert text == ("<EOS>" if t == view.eos_id else view.token_bytes[t].decode("utf-8", "backslashreplace"))
            assert fresh[allows].check(t) and not fresh[refuses].check(t), (side, t, text)

    md = (run_dir / "summary.md").read_text()
    assert f"{PAIR[0]} allows {a_only.size} that {PAIR[1]} refuses" in md
    assert f"{PAIR[1]} allows {b_only.size} that {PAIR[0]} refuses" in md
    if ex["a_only"]["tokens"]:
        t, text = ex["a_only"]["tokens"][0]
        assert f"{repr(text).replace('`', chr(92) + 'x60')}` ({t})" in md


def test_force_keeps_the_masks_it_is_asked_for(gemma_tok, direct):
    from harness.tasks.task import Example, Task

    task = Task(id="t", kind="json_schema", source="test", prompt=[], schema=RECORD["schema"],
                examples=[Example(["ab", "c"], True)])
    view = gemma_tok.view
    ids = gemma_tok.encode(task.example_text(task.examples[0]))
    compiled = direct["llguidance"].compile(task)
    plain = force(compiled.matcher(), ids, view)
    assert plain.accepted and plain.masks == {}  # unchanged when not asked
    kept = force(compiled.matcher(), ids, view, digests=True, keep_masks_at={0, 2, len(ids), len(ids) + 5})
    assert kept.accepted and sorted(kept.masks) == [0, 2, len(ids)]  # a step past the end is never reached
    m = compiled.matcher()
    for i, token in enumerate(ids + [view.eos_id]):
        want = new_bitmask(view.vocab_size)
        m.fill_mask(want)
        if i in kept.masks:
            assert kept.masks[i] == want.tobytes()
        if token != view.eos_id:
            m.advance(token)
    # a truncated instance reaches its last step as the EOS step: the same mask as the full one's
    short = force(compiled.matcher(), ids[:2], view, keep_masks_at={2})
    assert short.masks[2] == kept.masks[2]


# -- the post-pass fails, the replay stands ------------------------------------------------------

class _Compiled:
    def __init__(self, allow: bool, eos: int) -> None:
        self.allow, self.eos = allow, eos

    def matcher(self) -> "_Matcher":
        return _Matcher(self.allow, self.eos)


class _Matcher:
    """Allows every token (allow) or none."""

    def __init__(self, allow: bool, eos: int) -> None:
        self.allow, self.eos = allow, eos

    def fill_mask(self, bitmask: np.ndarray) -> None:
        bitmask[:] = -1 if self.allow else 0

    def check(self, token: int) -> bool:
        return self.allow

    def advance(self, token: int) -> bool:
        return self.allow

    def is_accepting(self) -> bool:
        return self.allow


class AllowAll(ConstraintEngine):
    name = "allow-all"

    def version(self) -> str:
        return "test"

    def _compile(self, task):
        return _Compiled(True, self.tokenizer.eos_id)


class CrashInPostPass(ConstraintEngine):
    """Refuses everything; its second compile (the post-pass's, in a fresh worker) dies by SIGSEGV."""

    name = "crash-in-post-pass"

    def version(self) -> str:
        return "test"

    def _compile(self, task):
        marker = Path(os.environ["CDBENCH_TEST_CRASH_MARKER"])
        if marker.exists():
            os.kill(os.getpid(), signal.SIGSEGV)
        marker.write_text("compiled once")
        return _Compiled(False, self.tokenizer.eos_id)


def test_a_crashing_post_pass_leaves_the_replay_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("CDBENCH_TEST_CRASH_MARKER", str(tmp_path / "compiled"))
    mod = __name__
    engines = [f"{mod}:AllowAll", f"{mod}:CrashInPostPass"]
    run_dir, cfg = _run(tmp_path, engines)
    rows = {r["engine"]: r for r in read_rows(run_dir)}
    assert rows[engines[0]]["bucket"] == "pass" and rows[engines[1]]["bucket"] == "valid_rejected"
    (pair,) = json.loads((run_dir / "summary.json").read_text())["differential"]
    (ex,) = pair["examples"]
    assert ex["step"] == 0 and "a_only" not in ex
    assert ex["detail_error"].startswith(f"{engines[1]}: crash") and "SIGSEGV" in ex["detail_error"]
    md = (run_dir / "summary.md").read_text()
    assert f"  - masks not compared: `'{engines[1]}: crash" in md

    # A post-pass that raises: the report is written all the same, its examples say why.
    def boom(diff):
        raise RuntimeError("no masks today")

    text = write_replay_report(run_dir, cfg, {}, boom)
    (pair,) = json.loads((run_dir / "summary.json").read_text())["differential"]
    assert pair["examples"][0]["detail_error"] == "post-pass failed: RuntimeError: no masks today"
    assert "masks not compared: `'post-pass failed: RuntimeError: no masks today'`" in text


def test_markdown_escapes_untrusted_token_text():
    side = {"count": 3, "tokens": [[7, "a`b\n"], [9, "<EOS>"]]}
    diff = [{"engines": "p vs q", "a": "p", "b": "q", "instances": 1, "steps": 4, "instances_differing": 1,
             "steps_differing": 1, "examples": [{"task": "T", "example": 0, "step": 2, "before": "x`", "next": "|",
                                                 "a_only": side, "b_only": {"count": 0, "tokens": []}}]}]
    text = markdown({}, {}, diff, {})
    assert "after `'x\\x60'` next `'|'`" in text
    assert "  - p allows 3 that q refuses: `'a\\x60b\\n'` (7), `'<EOS>'` (9), … 1 more; q allows 0 that p refuses" in text
