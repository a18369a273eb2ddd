"""A replay killed with SIGKILL at seeded random points, then resumed, ends with exactly the rows of
an uninterrupted replay (timings aside): none lost, none duplicated. Real engine (llguidance) over
the built-in suite's 35 schemas, in subprocesses; needs the default model's vocabulary."""
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

from harness.reporting.writer import read_rows

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_s", "cold_compile_s", "warm_compile_s", "mask_us", "advance_us"}

pytestmark = pytest.mark.model


def _cmd(reports: Path, run_id: str, resume: bool) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "replay", "--source", "builtin", "--engines", "llguidance",
            "-j", "1", "--reports-dir", str(reports), "--run-id", run_id, "--no-progress"] + (["--resume"] if resume else [])


def _outcome(row: dict) -> str:
    insts = [{k: v for k, v in i.items() if "time" not in k and not k.endswith("_us") and not k.endswith("_s")}
             for i in row.get("instances") or []]
    return json.dumps([{k: v for k, v in row.items() if k not in TIMING and k != "instances"}, insts], sort_keys=True)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_replay_killed_at_random_points_then_resumed_has_the_uninterrupted_rows(tmp_path, gemma_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = subprocess.run(_cmd(tmp_path, "whole", False), cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    reference = read_rows(tmp_path / "whole")
    assert len(reference) == 35
    rows_path = tmp_path / "killed" / "rows.jsonl"
    rng = np.random.default_rng(5)
    kills = []
    for i, (lo, hi) in enumerate(((1, 10), (10, 20), (20, 30))):  # well before the end: a kill must land mid-run
        proc = subprocess.Popen(_cmd(tmp_path, "killed", i > 0), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        target, deadline = int(rng.integers(lo, hi)), time.time() + 300
        while _lines(rows_path) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.02)))
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its engine workers, as a killed job would be
        proc.wait()
        kills.append(_lines(rows_path))
    final = subprocess.run(_cmd(tmp_path, "killed", True), cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    rows = read_rows(tmp_path / "killed")
    print(f"replay killed with SIGKILL after {kills} rows; {len(rows)} rows at the end")
    assert all(0 < k < 35 for k in kills)
    assert sorted(map(_outcome, rows)) == sorted(map(_outcome, reference))
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
