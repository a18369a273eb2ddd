"""`cdbench run --resume`: recorded cases are kept, the rest run, nothing is lost or duplicated,
a changed config is refused, and ASAp's trie groups that were cut short are run again whole.

The SIGKILL test runs the runner in subprocesses on a small in-memory LM (a few ms per token, so
that kills land inside cases) and kills them at seeded random points, then resumes to the end and
compares with an uninterrupted run, timings aside."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.config import RunConfig
from harness.errors import ConfigError
from harness.reporting.writer import read_rows
from harness.runner import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_runner import byte_lm, write_dataset  # noqa: E402

# What a case's outcome is, timings and run-specific fields aside.
OUTCOME = ("source", "task_id", "engine", "sampler", "seed", "compile_status", "finish_reason", "output_text",
           "output_tokens", "valid", "dc", "ec", "x_trie_samples")


def outcomes(rows):
    return sorted(json.dumps([r.get(k) for k in OUTCOME]) for r in rows)


def _cfg(tmp_path, run_id, **over):
    values = dict(dataset=str(write_dataset(tmp_path) if not (tmp_path / "data").exists() else tmp_path / "data"),
                  engines=["llguidance"], samplers=["masking", "asap"], seeds=[0, 1, 2], max_tokens=12,
                  reports_dir=str(tmp_path / "reports"), run_id=run_id, progress=False, compile_guard=False)
    values.update(over)
    return RunConfig(**values)


@pytest.fixture()
def reference(tmp_path):
    return read_rows(run(_cfg(tmp_path, "whole"), lm=byte_lm()))


def _interrupt_after(n):
    def progress(done, total, row):
        if done == n:
            raise KeyboardInterrupt
    return progress


def test_resume_completes_an_interrupted_run_without_loss_or_duplicates(tmp_path, reference):
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, "cut"), lm=byte_lm(), progress=_interrupt_after(5))  # inside the first task's asap seeds
    path = tmp_path / "reports" / "cut"
    assert len(read_rows(path)) == 5
    seen = []
    run(_cfg(tmp_path, "cut", resume=str(path)), lm=byte_lm(), progress=lambda d, t, r: seen.append(d))
    rows = read_rows(path)
    assert len(rows) == len(reference) == 24
    assert outcomes(rows) == outcomes(reference)
    # 3 masking rows kept; the first task's asap group (2 of 3 seeds recorded) was dropped and rerun whole
    assert seen[0] == 4 and seen[-1] == 24
    first = [r for r in rows if r["task_id"] == reference[0]["task_id"] and r["sampler"] == "asap"]
    assert sorted(r["x_trie_samples"] for r in first) == [1, 2, 3]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["environment"]["resumed"] == [3]


def test_resume_refuses_a_changed_config(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, "cut"), lm=byte_lm(), progress=_interrupt_after(2))
    path = str(tmp_path / "reports" / "cut")
    with pytest.raises(ConfigError, match="cannot resume: the config differs.*max_tokens"):
        run(_cfg(tmp_path, "cut", resume=path, max_tokens=20), lm=byte_lm())
    assert len(read_rows(Path(path))) == 2


def test_cli_resume_of_a_missing_or_other_kind_directory_is_one_line(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a cdbench run directory" in err[0]


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_runner import byte_lm
from harness.config import RunConfig
from harness.runner import run

class SlowLM(type(byte_lm())):
    def logits(self, prefix):
        time.sleep(0.004)
        return super().logits(prefix)

lm = byte_lm()
lm.__class__ = SlowLM
cfg = RunConfig(dataset={data!r}, engines=["llguidance"], samplers=["masking", "asap"], seeds=[0, 1, 2],
                max_tokens=12, reports_dir={reports!r}, run_id="killed", progress=False, compile_guard=False,
                resume={resume!r})
run(cfg, lm=lm)
"""


def _line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _start(tmp_path, resume):
    code = SCRIPT.format(tests=str(Path(__file__).parent), data=str(tmp_path / "data"),
                         reports=str(tmp_path / "reports"), resume=resume)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _kill_when(proc, rows_path: Path, at_least: int, extra_s: float) -> int:
    deadline = time.time() + 120
    while _line_count(rows_path) < at_least and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(extra_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _line_count(rows_path)


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_rows(tmp_path, reference):
    rng = np.random.default_rng(13)
    rows_path = tmp_path / "reports" / "killed" / "rows.jsonl"
    kills = []
    resume = None
    for lo, hi in ((1, 6), (6, 12), (12, 18), (18, 23)):  # one kill point in each quarter of the run
        target = int(rng.integers(lo, hi))
        proc = _start(tmp_path, resume)
        kills.append(_kill_when(proc, rows_path, target, float(rng.uniform(0.0, 0.05))))
        resume = str(rows_path.parent)
    proc = _start(tmp_path, resume)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    rows = read_rows(rows_path.parent)
    print(f"killed with SIGKILL after {kills} rows; {len(rows)} rows at the end")
    assert len(kills) == 4 and all(1 <= k < 24 for k in kills)
    assert len(rows) == 24 and outcomes(rows) == outcomes(reference)


def test_fidelity_resume_keeps_finished_tasks_and_reruns_the_one_in_flight(tmp_path):
    from harness.fidelity.run import FidelityConfig, run_fidelity
    from harness.lm.tabular import toy_binary_lm

    def cfg(run_id, **over):
        values = dict(tasks=["binary_skewed", "arith_small"], samples=100, samplers=["masking", "asap"],
                      null_reps=20, reports_dir=str(tmp_path), run_id=run_id)
        return FidelityConfig(**(values | over))

    whole = read_rows(run_fidelity(cfg("whole"), lm=toy_binary_lm(), log=lambda _: None))

    def die_on_second(line):
        if line.startswith("arith_small"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_fidelity(cfg("cut"), lm=toy_binary_lm(), log=die_on_second)
    path = tmp_path / "cut"
    with (path / "rows.jsonl").open("a") as fh:  # as if killed after one row of the task in flight
        fh.write(json.dumps({**whole[-1], "task": "arith_small"}) + "\n")
    started = []
    run_fidelity(cfg("cut", resume=str(path)), lm=toy_binary_lm(),
                 log=lambda line: started.append(line) if line.endswith(":") else None)
    assert started == ["arith_small:"]
    drop = ("seconds", "lm_s")
    strip = lambda rows: sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True) for r in rows)
    assert strip(read_rows(path)) == strip(whole)
    assert [r["task"] for r in json.loads((path / "fidelity.json").read_text())["results"]] == \
        ["binary_skewed", "arith_small"]
    with pytest.raises(ConfigError, match="cannot resume"):
        run_fidelity(cfg("cut", resume=str(path), samples=50), lm=toy_binary_lm(), log=lambda _: None)


def test_memory_limit_ends_a_case_as_oom_and_the_run_goes_on(tmp_path):
    """--memory-gb: a case whose LM calls keep 40 MB each ends as finish_reason oom at the limit;
    the next case, under the same limit, runs normally."""
    lm = byte_lm()
    hold: list = []
    real_logits = lm.logits

    def hog(prefix):
        if hogging:
            hold.append(np.ones(5 * 2**20))  # 40 MB, touched
        return real_logits(prefix)

    lm.logits = hog
    hogging = True

    def progress(done, total, row):
        nonlocal hogging
        hogging = False
        hold.clear()

    cfg = _cfg(tmp_path, "mem", samplers=["masking"], seeds=[0, 1], limit=1, memory_gb=0.1)
    rows = read_rows(run(cfg, lm=lm, progress=progress))
    assert [r["finish_reason"] for r in rows][0] == "oom"
    assert "resident memory grew by" in rows[0]["error"] and "limit 102 MiB" in rows[0]["error"]
    assert rows[1]["finish_reason"] in ("eos", "max_tokens") and rows[1]["output_tokens"] > 0
    from harness.config import build_config

    with pytest.raises(ConfigError, match="memory_gb must be > 0"):
        build_config({}, {"memory_gb": 0.0})
