"""The runner writes one row per case as soon as it finishes, keeps going past per-case
failures, and writes the final tables and the resolved config."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.config import RunConfig
from harness.engines import ENGINES
from harness.engines.llguidance_engine import LLGuidanceEngine
from harness.lm.tabular import TabularLM
from harness.reporting.writer import read_rows
from harness.runner import run

VOCAB = [bytes([c]) for c in range(32, 127)] + [b'{"', b'":', b'true', b'false', b""]


def byte_lm() -> TabularLM:
    return TabularLM(VOCAB, eos_id=len(VOCAB) - 1, seed_key="runner-test", name="bytes")


def write_dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rows = [
        {"unique_id": "flag", "json_schema": {"type": "object", "properties": {"on": {"type": "boolean"}},
                                               "required": ["on"], "additionalProperties": False}},
        {"unique_id": "boom", "json_schema": {"type": "object", "properties": {"n": {"type": "integer"}},
                                               "required": ["n"], "additionalProperties": False}},
        {"unique_id": "nocompile", "json_schema": {"type": "object"}},
        {"unique_id": "color", "json_schema": {"type": "object", "properties": {"c": {"enum": ["red", "blue"]}},
                                                "required": ["c"], "additionalProperties": False}},
    ]
    (d / "Mini.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


class FlakyEngine(LLGuidanceEngine):
    """llguidance, except that it fails to compile one task and crashes mid-generation on another."""

    name = "flaky"

    def _compile(self, task):
        if task.id.endswith("nocompile"):
            raise RuntimeError("compiler exploded")
        compiled = super()._compile(task)
        if task.id.endswith("boom"):
            original = compiled.matcher

            def matcher():
                m = original()
                m.fill_mask = lambda bitmask: (_ for _ in ()).throw(RuntimeError("mask exploded"))
                return m

            compiled.matcher = matcher
        return compiled


@pytest.fixture
def flaky_registered():
    ENGINES.register("flaky", FlakyEngine)
    yield
    ENGINES._entries.pop("flaky")


def test_rows_written_as_cases_finish(tmp_path, flaky_registered):
    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance", "flaky"], seeds=[0, 1],
                    max_tokens=24, reports_dir=str(tmp_path / "reports"), run_id="t1", progress=False,
                    compile_guard=False)
    seen = []

    def progress(done, total, row):
        on_disk = read_rows(tmp_path / "reports" / "t1")
        seen.append((done, len(on_disk), total))
        assert on_disk[-1]["task_id"] == row["task_id"] and on_disk[-1]["engine"] == row["engine"]

    run_dir = run(cfg, lm=byte_lm(), progress=progress)
    assert seen == [(i, i, 16) for i in range(1, 17)]
    rows = read_rows(run_dir)
    by = {(r["task_id"], r["engine"], r["seed"]): r for r in rows}
    assert by["Mini/nocompile", "flaky", 0]["compile_status"] == "error"
    assert "compiler exploded" in by["Mini/nocompile", "flaky", 0]["compile_error"]
    assert by["Mini/boom", "flaky", 1]["finish_reason"] == "error"
    assert "mask exploded" in by["Mini/boom", "flaky", 1]["error"]
    # the run went on after both failures, and llguidance's own cases are whole
    good = by["Mini/color", "llguidance", 0]
    assert good["compile_status"] == "ok" and good["forward_passes"] >= 1
    assert good["lm_s"] > 0 and good["engine_s"] > 0 and good["mask_p50_us"] > 0
    # greedy decoding over the byte LM completes {"c": "red" or "blue"} well within 24 tokens
    assert good["finish_reason"] == "eos", good
    assert good["valid"] is True and good["ec"] == 1 and json.loads(good["output_text"])["c"] in ("red", "blue")
    # final tables and the resolved config
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 16 and len(pd.read_csv(run_dir / "results.csv")) == 16
    assert "| llguidance | masking | 8 |" in (run_dir / "summary.md").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["kind"] == "run" and manifest["status"] == "complete"
    resolved = manifest["config"]
    assert resolved["seeds"] == [0, 1] and resolved["max_tokens"] == 24 and resolved["run_id"] == "t1"
    env = manifest["environment"]
    assert env["packages"]["llguidance"] and env["engines"]["llguidance"]["settings"]["whitespace"] == "compact"


class ContextLM(TabularLM):
    """The byte LM with a context size and a prompt whose length depends on the task: the
    "color" task's prompt is long, every other prompt short."""

    def __init__(self, n_ctx: int, long_prompt: int) -> None:
        super().__init__(VOCAB, eos_id=len(VOCAB) - 1, seed_key="runner-test", name="bytes")
        self.n_ctx = n_ctx
        self.long_prompt = long_prompt

    def encode_chat(self, messages):
        long = any('"red"' in m["content"] for m in messages)
        self.prompt = [0] * (self.long_prompt if long else 2)
        return list(self.prompt)


def test_prompt_over_context_is_skipped_for_every_engine(tmp_path):
    """prompt + max_tokens > n_ctx is a harness limit: the case is recorded as skipped (not compiled,
    not generated, dc and ec empty), for every engine, and left out of every engine's metrics."""
    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance", "xgrammar"], seeds=[0, 1],
                    max_tokens=16, reports_dir=str(tmp_path / "reports"), run_id="ctx", progress=False,
                    compile_guard=False)
    run_dir = run(cfg, lm=ContextLM(n_ctx=40, long_prompt=30))  # 30 + 16 > 40 >= 2 + 16
    rows = read_rows(run_dir)
    skipped = [r for r in rows if r["task_id"] == "Mini/color"]
    assert len(rows) == 16 and len(skipped) == 4
    for r in skipped:
        assert r["compile_status"] == "skipped" and r["finish_reason"] == "skipped", r
        assert "30 tokens + max_tokens 16 exceeds n_ctx 40" in r["compile_error"]
        assert r["dc"] is None and r["ec"] is None and r["compile_s"] is None and r["forward_passes"] == 0
    scored = [r for r in rows if r["task_id"] != "Mini/color"]
    assert all(r["compile_status"] != "skipped" and r["dc"] in (0, 1) for r in scored)
    summary = pd.read_csv(run_dir / "summary.csv").set_index("engine")
    for engine in ("llguidance", "xgrammar"):
        mine = [r for r in scored if r["engine"] == engine]
        assert summary.loc[engine, "skipped"] == 2 and summary.loc[engine, "cases"] == 6
        assert summary.loc[engine, "declared_coverage"] == pytest.approx(sum(r["dc"] for r in mine) / 6)
        assert summary.loc[engine, "empirical_coverage"] == pytest.approx(sum(r["ec"] for r in mine) / 6)
    assert "| llguidance | masking | 6 | 2 |" in (run_dir / "summary.md").read_text()


def test_killed_run_keeps_finished_rows(tmp_path):
    """A run that dies mid-way leaves every finished case on disk."""
    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance"], max_tokens=16,
                    reports_dir=str(tmp_path / "reports"), run_id="dies", progress=False, compile_guard=False)

    def progress(done, total, row):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, lm=byte_lm(), progress=progress)
    assert len(read_rows(tmp_path / "reports" / "dies")) == 3


def test_same_run_id_refused(tmp_path):
    from harness.errors import ConfigError

    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance"], max_tokens=4, limit=1,
                    reports_dir=str(tmp_path / "reports"), run_id="once", progress=False, compile_guard=False)
    run(cfg, lm=byte_lm())
    with pytest.raises(ConfigError, match="already exists"):
        run(cfg, lm=byte_lm())


def test_compile_guard_reports_timeout_and_crash(tmp_path):
    """The forked compile guard turns a hang and a segfault into statuses."""
    import ctypes
    import time

    from harness.compiling import compile_task
    from harness.tasks.task import Task

    lm = byte_lm()
    task = Task(id="t", kind="json_schema", source="x", prompt=[], schema={"type": "object"})

    class Hangs(LLGuidanceEngine):
        def _compile(self, task):
            time.sleep(30)

    class Segfaults(LLGuidanceEngine):
        def _compile(self, task):
            ctypes.string_at(0)

    hang = compile_task(Hangs(lm.tokenizer), task, timeout_s=1.0, guard=True)
    assert hang.status == "timeout"
    crash = compile_task(Segfaults(lm.tokenizer), task, timeout_s=5.0, guard=True)
    assert crash.status == "crash" and "SIGSEGV" in crash.message
    ok = compile_task(LLGuidanceEngine(lm.tokenizer), task, timeout_s=5.0, guard=True)
    assert ok.status == "ok" and ok.compiled is not None and ok.seconds is not None


def test_every_engine_is_timed_the_same_way_and_ttft_holds_what_a_user_waits_for(tmp_path):
    """Under the guard, compile_s is the child's own compile for every engine and making the result
    usable here is compile_load_s (a load, or llguidance's second compile); TTFT holds compile,
    load and the matcher's creation before the first step."""
    import time

    from harness.compiling import compile_task
    from harness.tasks.task import Task

    lm = byte_lm()
    task = Task(id="t", kind="json_schema", source="x", prompt=[], schema={"type": "object"})

    class SlowCompile(LLGuidanceEngine):  # no export: compiled again in this process
        def _compile(self, task):
            time.sleep(0.2)
            return super()._compile(task)

    out = compile_task(SlowCompile(lm.tokenizer), task, timeout_s=5.0, guard=True)
    assert out.status == "ok" and out.seconds >= 0.2 and out.load_s >= 0.2  # the parent's compile is load, not hidden
    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), subset=["Mini"], engines=["llguidance", "xgrammar"],
                    max_tokens=12, reports_dir=str(tmp_path / "r"), progress=False)
    rows = read_rows(run(cfg, lm=lm))
    for r in rows:
        if r["compile_status"] != "ok" or r["ttft_s"] is None:
            continue
        assert r["compile_load_s"] is not None and r["matcher_s"] is not None
        assert r["ttft_s"] >= r["compile_s"] + r["compile_load_s"] + r["matcher_s"]
        assert r["tgt_s"] >= r["ttft_s"]


def test_asap_trie_persists_within_a_task_and_not_across(tmp_path):
    """The runner gives ASAp one trie per task and engine: seeds of one task share it, the next
    task starts afresh; GCD's trie is new for every sample."""
    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), subset=["Mini"], engines=["llguidance"],
                    samplers=["asap", "gcd"], seeds=[0, 1, 2], max_tokens=12, reports_dir=str(tmp_path / "r"),
                    run_id="asap", progress=False, compile_guard=False)
    df = pd.read_parquet(run(cfg, lm=byte_lm()) / "results.parquet")
    ran = df[df.compile_status == "ok"]
    for task_id, g in ran.groupby("task_id"):
        asap = g[g.sampler == "asap"].sort_values("seed")
        assert asap["x_trie_samples"].tolist() == [1, 2, 3], task_id
        gcd = g[g.sampler == "gcd"]
        assert gcd["x_trie_samples"].tolist() == [1, 1, 1], task_id
