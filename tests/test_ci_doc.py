"""docs/ci.md's commands, run verbatim against two local replays: the page cannot drift from the tool."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ci.md"


def _block(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {name} begin -->\s*```\w*\n(.*?)```\s*<!-- {name} end -->", text, re.S)
    assert m, f"docs/ci.md has no {name} block"
    return m.group(1)


@pytest.mark.model
def test_ci_doc_commands_gate_and_compare_two_local_replays(tmp_path):
    bindir = Path(sys.executable).parent
    assert (bindir / "cdbench").exists(), "the cdbench entry point is not installed next to this Python"
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "cdbench-gate.toml").write_text(_block("ci-gate"), encoding="utf-8")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    env.pop("GITHUB_ACTIONS", None)
    # the baseline: the replay command of the page, into baseline/
    replay = next(line for line in _block("ci-commands").splitlines() if line.startswith("cdbench replay"))
    base = subprocess.run(replay.replace("--reports-dir reports", "--reports-dir baseline"), shell=True, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stderr[-2000:]
    result = subprocess.run(["bash", "-c", _block("ci-commands")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    # Same code, same data: every verdict check passes. A latency check may still fail when the
    # machine's load changed between the two replays (other jobs on a shared runner): that is the
    # gate measuring, not the commands failing, so it is the one failure tolerated here.
    assert result.returncode in (0, 1), (result.stdout[-2000:], result.stderr[-2000:])
    gate = json.loads((tmp_path / "reports" / "gate" / "gate.json").read_text())
    failed = [c for c in gate["checks"] if c["verdict"] == "fail"]
    assert all(c["statistic"].endswith(("_ms", "_us")) for c in failed), failed
    assert gate["exit_code"] == result.returncode and gate["paired_fraction"] == 1.0
    assert {c["statistic"] for c in gate["checks"]} == {"replay_mask_p99_us", "compile_cold_p50_ms", "pass",
                                                        "invalid_accepted"}
    assert len(gate["checks"]) == 10  # 5 checks x 2 engines
    assert {c["group"] for c in gate["checks"]} == {"llguidance", "xgrammar"}
    summary = (tmp_path / "summary.md").read_text()
    assert "cdbench compare: current -> current" in summary and ("GATE PASSED" in summary or failed)
    assert (tmp_path / "reports" / "junit.xml").exists()
    # the export for github-action-benchmark: one file per direction, stable names
    bench = tmp_path / "reports" / "benchmark"
    smaller = json.loads((bench / "benchmark-smaller.json").read_text(encoding="utf-8"))
    bigger = json.loads((bench / "benchmark-bigger.json").read_text(encoding="utf-8"))
    assert [e["name"] for e in bigger] == ["llguidance pass", "xgrammar pass"]
    assert {"llguidance replay_mask_p99_us", "xgrammar compile_cold_p50_ms",
            "xgrammar invalid_accepted"} <= {e["name"] for e in smaller}
    assert all(isinstance(e["value"], (int, float)) for e in smaller + bigger)
    # a baseline made from another task set is not comparable: exit 3 through the same commands
    manifest = tmp_path / "baseline" / "current" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["fingerprint"]["comparable_digest"] = "0" * 16
    manifest.write_text(json.dumps(data))
    result = subprocess.run(["bash", "-c", _block("ci-commands")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 3 and "not comparable" in result.stderr
