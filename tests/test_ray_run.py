"""`cdbench run --executor ray`: the same rows as a local run (timings aside), and an engine that
kills its worker recorded as that case's row while the run goes on, without any Ray retry.

The runs use the small in-memory LM of test_runner, shipped to the actors through Ray's object
store, on a local Ray of 2 CPUs (needs the `ray` package; skipped without it)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import needs_ray
from harness.config import RunConfig
from harness.errors import ConfigError
from harness.reporting.writer import read_rows
from harness.runner import run

sys.path.insert(0, str(Path(__file__).parent))
from test_runner import byte_lm, write_dataset  # noqa: E402

# What a case's outcome is: everything but timings and where it ran.
OUTCOME = ("source", "task_id", "engine", "sampler", "seed", "compile_status", "compile_error", "finish_reason",
           "output_text", "output_tokens", "parses", "valid", "dc", "ec", "error", "forward_passes",
           "constraint_evals", "step_evals", "x_trie_samples", "prompt_tokens", "sampler_settings")


def outcomes(rows, engine=None):
    return sorted(json.dumps([r.get(k) for k in OUTCOME]) for r in rows if engine in (None, r["engine"]))


def _cfg(tmp_path, run_id, **over):
    data = tmp_path / "data"
    values = dict(dataset=str(data if data.exists() else write_dataset(tmp_path)), engines=["llguidance"],
                  samplers=["masking", "asap"], seeds=[0, 1], max_tokens=12, reports_dir=str(tmp_path / "reports"),
                  run_id=run_id, progress=False, compile_guard=False)
    values.update(over)
    return RunConfig(**values)


@needs_ray
def test_a_ray_run_gives_the_local_runs_rows(tmp_path, local_ray):
    local = read_rows(run(_cfg(tmp_path, "local"), lm=byte_lm()))
    path = run(_cfg(tmp_path, "ray", executor="ray", workers=2), lm=byte_lm())
    remote = read_rows(path)
    assert len(remote) == len(local) == 4 * 2 * 2
    assert outcomes(remote) == outcomes(local)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["environment"]["executor"]["executor"] == "ray"
    assert manifest["environment"]["executor"]["replaced_workers"] == []


@needs_ray
def test_a_worker_killed_by_its_engine_is_that_cases_row_and_the_run_goes_on(tmp_path, local_ray):
    """Without the compile guard the segfaulting compiler kills the actor itself: each of its cases
    is recorded once as a compiler crash (SIGSEGV from the actor's fatal-signal report), the actor
    is replaced, and every llguidance case still runs, as in a local run without the faulty engine."""
    local = read_rows(run(_cfg(tmp_path, "local", seeds=[0], samplers=["masking"]), lm=byte_lm()))
    path = run(_cfg(tmp_path, "ray", seeds=[0], samplers=["masking"], engines=["llguidance", "faulty-segfault"],
                    executor="ray", workers=2), lm=byte_lm())
    rows = read_rows(path)
    assert outcomes(rows, "llguidance") == outcomes(local)
    crashed = [r for r in rows if r["engine"] == "faulty-segfault"]
    assert len(crashed) == 4 and len(rows) == 8
    for r in crashed:
        assert r["compile_status"] == "crash" and r["finish_reason"] == "not_run" and r["dc"] == 0
        assert "SIGSEGV" in r["compile_error"]
    replaced = json.loads((path / "manifest.json").read_text())["environment"]["executor"]["replaced_workers"]
    assert sorted(r["job"] for r in replaced) == sorted(r["task_id"] for r in crashed)


@needs_ray
def test_a_killed_ray_run_resumes_with_either_executor(tmp_path, local_ray):
    local = read_rows(run(_cfg(tmp_path, "local"), lm=byte_lm()))

    def stop_after(n):
        def progress(done, total, row):
            if done == n:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, "cut", executor="ray", workers=2), lm=byte_lm(), progress=stop_after(5))
    cut = tmp_path / "reports" / "cut"
    assert 5 <= len(read_rows(cut)) < len(local)
    resumed = read_rows(run(_cfg(tmp_path, "cut", resume=str(cut)), lm=byte_lm()))
    assert outcomes(resumed) == outcomes(local)


def test_address_without_ray_executor_is_refused():
    from harness.config import build_config

    with pytest.raises(ConfigError, match="--address needs --executor ray"):
        build_config({}, {"address": "10.0.0.1:6379"})


def test_workers_without_ray_executor_are_refused_not_ignored():
    """`run -j 2` on the local executor used to run one case at a time without a word."""
    from harness.config import build_config

    with pytest.raises(ConfigError, match="-j 2 needs --executor ray"):
        build_config({}, {"workers": 2})
    assert build_config({}, {"workers": 2, "executor": "ray"}).workers == 2
