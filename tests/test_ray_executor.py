"""`cdbench replay --executor ray`: the same rows as the local executor, and a worker that
segfaults, hangs or runs out of memory classified, its actor replaced, while the run goes on.

Needs the `ray` package (pip install ray, or the `ray` extra); skipped without it, except the
check that --executor ray without ray is a one-line configuration error."""
from __future__ import annotations

import json
import os
import sys

import pytest

from harness.errors import ConfigError
from harness.replay.run import ReplayConfig, replay
from harness.reporting.writer import read_rows

from conftest import needs_ray

# Fields that measure time: the only ones two executors may disagree on.
TIMING = {"wall_s", "cold_compile_s", "warm_compile_s", "mask_us", "advance_us", "loop_s"}

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
     "tests": [{"valid": True, "data": {"b": 1, "a": 2}}, {"valid": True, "data": {"a": 1, "b": 2}}]},
    {"id": "notkw", "schema": {"type": "object", "properties": {"x": {"not": {"type": "string"}}}},
     "tests": [{"valid": True, "data": {"x": 1}}]},
    {"id": "list", "schema": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
     "tests": [{"valid": True, "data": ["ab", "c"]}, {"valid": False, "data": ["abcd"]},
               {"valid": False, "data": ["a", "b", "c"]}]},
]


def maskbench_dir(tmp_path, records):
    d = tmp_path / "mb"
    d.mkdir(exist_ok=True)
    (d / "Hand.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return d


def cfg(tmp_path, source, run_id, **kw):
    base = dict(source=str(source), reports_dir=str(tmp_path / "reports"), run_id=run_id, timeout_s=30.0,
                memory_gb=4.0, workers=2)
    base.update(kw)
    return ReplayConfig(**base)


def untimed(run_dir):
    return {(r["engine"], r["task_id"]): {k: v for k, v in r.items() if k not in TIMING} for r in read_rows(run_dir)}


@needs_ray
def test_ray_rows_equal_local_rows(tmp_path, local_ray):
    src = maskbench_dir(tmp_path, RECORDS)
    engines = ["llguidance", "outlines"]
    local = replay(cfg(tmp_path, src, "local", engines=engines))
    remote = replay(cfg(tmp_path, src, "ray", engines=engines, executor="ray"))
    a, b = untimed(local), untimed(remote)
    assert len(a) == len(RECORDS) * len(engines)
    assert a == b  # every verdict, count, rejection index and token: only times differ
    assert {r["bucket"] for r in a.values()} >= {"pass", "unsupported", "policy"}
    manifest = json.loads((remote / "manifest.json").read_text())
    assert manifest["config"]["executor"] == "ray"
    info = manifest["environment"]["engines"]["llguidance"]
    assert info["executor"] == "ray" and info["niceness"] == 0  # not Ray's default 15: engines time as locally
    # the executor is recorded but is not a setting that changes results
    assert manifest["fingerprint"] == json.loads((local / "manifest.json").read_text())["fingerprint"]
    assert "executor" not in manifest["fingerprint"]["settings"]


@needs_ray
def test_ray_crash_timeout_oom_classified_and_actor_replaced(tmp_path, local_ray):
    src = maskbench_dir(tmp_path, RECORDS[:2])
    run_dir = replay(cfg(tmp_path, src, "faults", engines=["faulty-segfault", "faulty-hang", "faulty-oom", "llguidance"],
                         executor="ray", workers=1, timeout_s=2.0))
    rows = {(r["engine"], r["task_id"]): r for r in read_rows(run_dir)}
    tasks = ("Hand/flags", "Hand/color")
    assert {rows["faulty-segfault", t]["bucket"] for t in tasks} == {"crash"}
    assert rows["faulty-segfault", "Hand/flags"]["error"] == "worker killed by SIGSEGV"  # the local pool's words
    assert {rows["faulty-hang", t]["bucket"] for t in tasks} == {"timeout"}
    assert rows["faulty-hang", "Hand/flags"]["phase"] == "compile"
    assert {rows["faulty-oom", t]["bucket"] for t in tasks} == {"oom"}
    assert {rows["llguidance", t]["bucket"] for t in tasks} == {"pass"}  # after all that, a healthy engine runs
    engines = json.loads((run_dir / "manifest.json").read_text())["environment"]["engines"]
    for name in ("faulty-segfault", "faulty-hang", "faulty-oom"):
        assert engines[name]["workers_replaced"] == 2, name  # each schema ran once: no Ray-level retry
        first, second = engines[name]["replaced_workers"]
        assert first["replacement_pid"] == second["pid"] and first["pid"] != second["pid"]
    assert engines["llguidance"]["workers_replaced"] == 0
    # killed and crashed actors leave no fault-report files behind
    from harness.ray_cluster import report_dir

    dead = {str(r["pid"]) for e in engines.values() for r in e["replaced_workers"]}
    assert not [f for f in os.listdir(report_dir()) if f.split("-", 1)[0] in dead]


def test_executor_ray_without_ray_is_a_config_error(tmp_path, monkeypatch):
    from harness.replay.run import _pool

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"^--executor ray needs the ray package: pip install ray$"):
        _pool(ReplayConfig(executor="ray"), "llguidance", "unused.gguf")
    with pytest.raises(ConfigError, match="--address needs --executor ray"):
        _pool(ReplayConfig(address="127.0.0.1:6379"), "llguidance", "unused.gguf")


def test_fatal_signal_names():
    import signal

    from harness.ray_cluster import fatal_signal

    assert fatal_signal("Fatal Python error: Segmentation fault\n\nStack ...") == signal.SIGSEGV
    assert fatal_signal("Fatal Python error: Aborted\n") == signal.SIGABRT
    assert fatal_signal("") is None


def test_unreachable_address_is_a_config_error():
    from harness.ray_cluster import _check_reachable

    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1")  # at once, not after ray.init's minutes of retries
    with pytest.raises(ConfigError, match=r"\(ray://\) are not supported"):
        _check_reachable("ray://head:10001")
