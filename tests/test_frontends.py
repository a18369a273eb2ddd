"""Frontends: the outlines library, llama-cpp-python's response_format and an OpenAI-compatible server,
run for real (the default model, a real llama_cpp.server subprocess, real sockets).

References are independent of the code under test: cdbench's own outlines-core engine (greedy
masking) for the outlines library; llama-cpp-python's non-streamed completion and its `usage` count
for the streamed frontend; jsonschema for validity; the operating system for refused connections.
"""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

for _module in ("outlines", "numba", "openai", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_module, reason="the `frontends` extra is not installed (pip install -e .[frontends] "
                                        "-c constraints.txt)")

from harness.config import RunConfig  # noqa: E402
from harness.frontends.cases import frontend_rows, make_frontends, run_case  # noqa: E402
from harness.frontends.local import llama_of  # noqa: E402
from harness.protocols import get_protocol  # noqa: E402
from harness.results import rows as R  # noqa: E402
from harness.tasks.loaders import load_tasks  # noqa: E402
from harness.tasks.task import Task  # noqa: E402

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}

PLAIN = {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
         "required": ["name", "ok"], "additionalProperties": False}


def _task(schema: dict, tid: str = "person") -> Task:
    prompt = [{"role": "system", "content": "Answer with one JSON object only."},
              {"role": "user", "content": "A person: " + json.dumps(schema)}]
    return Task(id=tid, kind="json_schema", source="test", prompt=prompt, schema=schema)


def _builtin(*ids: str) -> list[Task]:
    tasks = {t.id: t for t in load_tasks("builtin", None, None, None)}
    return [tasks[i] for i in ids]


def _messages(task: Task) -> list[dict[str, str]]:
    return get_protocol("cdbench").messages(task)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lm():
    from harness.runner import load_lm

    return load_lm(RunConfig(lm_threads=1))


# ---------------------------------------------------------------- no model needed


def test_connection_refused_and_timeout_become_rows_and_the_run_goes_on(tmp_path):
    """A closed port and a server that never answers: each case is a row with its status, every
    task still gets its row, and the rows pass the RunRow type check."""
    closed = _free_port()  # bound then released: nothing listens there
    cfg = RunConfig(frontends=["openai"], base_url=f"http://127.0.0.1:{closed}/v1", openai_model="m",
                    max_tokens=8, request_timeout_s=2.0)
    tasks = [_task(PERSON, "a"), _task(PERSON, "b")]
    st = SimpleNamespace(frontends=make_frontends(cfg, None), protocol=get_protocol("cdbench"),
                         lm=_PromptOnly(), model_info={})
    rows = [r for t in tasks for r in frontend_rows(t, cfg, st, "r", set())]
    assert [r["task_id"] for r in rows] == ["a", "b"]
    for r in rows:
        R.check("run", r)
        assert (r["x_status"], r["compile_status"], r["dc"], r["valid"]) == ("connection_error", "error", 0, False)
        assert r["method_kind"] == "frontend" and r["sampler"] == "frontend" and r["http_status"] is None
        assert r["lm_s"] is None and r["constraint_evals"] is None and r["mask_times_us"] == []

    with _silent_server() as port:
        cfg = RunConfig(frontends=["openai"], base_url=f"http://127.0.0.1:{port}/v1", openai_model="m",
                        max_tokens=8, request_timeout_s=0.5)
        res = run_case(make_frontends(cfg, None)[0], tasks[0], _messages(tasks[0]), cfg, 0)
    assert res.status == "timeout" and res.finish_reason == "timeout", res


def test_the_api_key_is_read_from_the_environment_and_never_recorded(monkeypatch):
    monkeypatch.setenv("CDBENCH_TEST_KEY", "sk-secret-123")
    cfg = RunConfig(frontends=["openai"], base_url="http://127.0.0.1:9/v1", api_key_env="CDBENCH_TEST_KEY")
    fe = make_frontends(cfg, None)[0]
    assert fe.client.api_key == "sk-secret-123"
    assert "sk-secret" not in json.dumps(fe.settings()) and "sk-secret" not in json.dumps(cfg.to_dict())


@pytest.mark.parametrize("url, message", [(None, "needs --base-url"), ("ftp://h/v1", "not an http"),
                                          ("http://user:pw@h/v1", "credentials")])
def test_bad_base_url_is_a_config_error(url, message):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_frontends(RunConfig(frontends=["openai"], base_url=url), None)


class _PromptOnly:
    """Prompt lengths from the default model's real tokenizer (vocabulary only, no weights)."""
    n_ctx = 4096

    def __init__(self) -> None:
        from harness.lm.default_model import default_model_path
        from harness.lm.llamacpp import load_tokenizer_view

        self._tok = load_tokenizer_view(str(default_model_path()))

    def encode_chat(self, messages):
        return self._tok.encode_special(self._tok.render_chat(messages))


class _Silent(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the stdlib's name
        time.sleep(5)

    def log_message(self, *args):
        pass


class _silent_server:
    """A local HTTP server that takes the request and answers nothing for 5 s."""

    def __enter__(self) -> int:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.httpd.server_address[1]

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- the real model


@pytest.mark.model
def test_outlines_library_matches_cdbench_outlines_engine_greedy(lm):
    """The differential: outlines-the-library (from_llamacpp, Generator, JsonSchema) and cdbench's
    outlines-core engine under greedy masking produce the same text on the same prompt."""
    from harness.compiling import compile_task
    from harness.engines import ENGINES, EngineOptions
    from harness.samplers.masking import MaskingSampler

    cfg = RunConfig(frontends=["outlines"], max_tokens=40, compile_timeout_s=60.0, compile_guard=False)
    fe = make_frontends(cfg, lm)[0]
    engine = ENGINES.create("outlines", lm.tokenizer, EngineOptions())
    for task in [_task(PERSON), *_builtin("weather_observation")]:
        comp = compile_task(engine, task, 60.0, guard=False)
        assert comp.status == "ok", comp.message
        prompt = lm.encode_chat(_messages(task))
        gen = MaskingSampler().generate(lm, engine.new_matcher(comp.compiled), prompt, cfg.max_tokens, 0)
        want = lm.tokenizer.decode(gen.tokens).decode("utf-8")
        res = run_case(fe, task, _messages(task), cfg, 0)
        assert res.status == "ok", res.error
        assert res.text == want, task.id
        assert res.output_tokens == len(gen.tokens) and res.prompt_tokens == len(prompt)


@pytest.mark.model
def test_llamacpp_response_format_stream_matches_the_library_own_count(lm):
    """Streamed through the frontend vs llama-cpp-python's own non-streamed call: same text, and the
    frontend's token count equals the library's usage.completion_tokens (ended by eos and by the limit)."""
    cfg = RunConfig(frontends=["llamacpp-response-format"], max_tokens=24)
    fe = make_frontends(cfg, lm)[0]
    for task, limit in [(_task(PERSON), 48), (_builtin("payment")[0], 12)]:
        res = run_case(fe, task, _messages(task), RunConfig(max_tokens=limit), 0)
        llm = llama_of(lm)
        llm.reset()
        ref = llm.create_chat_completion(messages=_messages(task), max_tokens=limit, temperature=0.0,
                                            response_format={"type": "json_object", "schema": task.schema})
        assert res.text == ref["choices"][0]["message"]["content"]
        assert res.output_tokens == ref["usage"]["completion_tokens"]
        assert res.finish_reason == {"stop": "eos", "length": "max_tokens"}[ref["choices"][0]["finish_reason"]]
        assert res.ttft_s is not None and res.total_s >= res.ttft_s
    plain = _task(PLAIN)  # llama-cpp-python's schema converter does not enforce PERSON's bounds
    res = run_case(fe, plain, _messages(plain), RunConfig(max_tokens=48), 0)
    from harness.runner import score_row

    assert res.finish_reason == "eos" and score_row(plain, res.text)["valid"], res.text


@pytest.fixture(scope="module")
def server():
    """A real `python -m llama_cpp.server` on a free port with the default model; always stopped."""
    from harness.lm.default_model import default_model_path

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1",
           "--chat_format", "gemma"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/v1/models", proc, timeout_s=90)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"llama_cpp.server not ready within {timeout_s} s")


@pytest.mark.model
def test_openai_frontend_against_a_real_llama_cpp_server(server, lm):
    """Through HTTP the same greedy text as llama-cpp-python in process (the server's gemma format
    with the system turn folded renders cdbench's prompt; repeat_penalty 1.0 as the library's call)."""
    cfg = RunConfig(frontends=["openai"], base_url=server, openai_response_format="json_object", fold_system=True,
                    frontend_args={"repeat_penalty": 1.0}, max_tokens=48)
    fe = make_frontends(cfg, None)[0]
    local = make_frontends(RunConfig(frontends=["llamacpp-response-format"]), lm)[0]
    for task in [_task(PERSON), *_builtin("payment")]:
        res = run_case(fe, task, _messages(task), cfg, 0)
        assert res.status == "ok" and res.http_status == 200, res.error
        ref = run_case(local, task, _messages(task), cfg, 0)
        assert res.text == ref.text, task.id
        assert res.ttft_s is not None and res.finish_reason == ref.finish_reason


@pytest.mark.model
def test_what_the_server_refuses_becomes_a_row_with_the_status(server):
    """A prompt over the server's context: a failure row with its status, and the next case still runs."""
    task = _task(PERSON)
    long_cfg = RunConfig(frontends=["openai"], base_url=server, openai_response_format="json_object", max_tokens=8)
    too_long = [{"role": "user", "content": "word " * 5000}]  # over the server's 4096-token context
    over = run_case(make_frontends(long_cfg, None)[0], task, too_long, long_cfg, 0)
    # Non-streamed, llama_cpp.server answers 400; streamed, it may already have sent its 200 and then
    # closes an empty stream: either way the case is a failure row, never an "ok" answer.
    assert (over.status == "http_error" and 400 <= over.http_status < 500) or (
        over.status == "error" and "empty stream" in over.error), over
    ok_cfg = RunConfig(frontends=["openai"], base_url=server, openai_response_format="json_object", max_tokens=8)
    assert run_case(make_frontends(ok_cfg, None)[0], task, _messages(task), ok_cfg, 0).status == "ok"


@pytest.mark.model
def test_a_grammar_llama_cpp_cannot_parse_is_a_row_not_a_crash(lm):
    """The built-in dns_record schema: llama-cpp-python's converter writes a grammar llama.cpp rejects,
    and llama-cpp-python would then segfault in its sampler; the frontend returns an error row."""
    cfg = RunConfig(frontends=["llamacpp-response-format"], max_tokens=8)
    task = _builtin("dns_record")[0]
    res = run_case(make_frontends(cfg, lm)[0], task, _messages(task), cfg, 0)
    assert res.status == "error" and "cannot parse" in res.error, res


@pytest.mark.model
def test_a_run_records_frontends_apart_and_resume_reruns_a_lost_frontend_case(tmp_path, lm):
    """cdbench run with an engine and a frontend: rows of both kinds, the summary's frontend table,
    separate leaderboard boards; a frontend row lost from the journal is run again by --resume."""
    from harness.analysis.leaderboard import build_leaderboards
    from harness.runner import run

    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    cfg = RunConfig(schema_files=[str(schema)], engines=["xgrammar"], frontends=["llamacpp-response-format"],
                    max_tokens=16, reports_dir=str(tmp_path), run_id="r", progress=False, bootstrap_resamples=10)
    out = run(cfg, lm=lm)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["engine"], r.get("method_kind", "engine")) for r in rows] == [
        ("xgrammar", "engine"), ("llamacpp-response-format", "frontend")]
    assert "## Frontends" in (out / "summary.md").read_text()
    boards = build_leaderboards([out])
    assert sorted(b.method_kind for b in boards) == ["engine", "frontend"]
    assert all(len(b.entries) == 1 for b in boards)

    (out / "rows.jsonl").write_text(json.dumps(rows[0]) + "\n")  # the run died before the frontend case
    resumed = RunConfig(**{**cfg.to_dict(), "resume": str(out)})
    run(resumed, lm=lm)
    again = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["engine"] for r in again] == ["xgrammar", "llamacpp-response-format"]
    assert again[0] == rows[0]
