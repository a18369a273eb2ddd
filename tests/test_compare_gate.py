"""compare and gate on synthetic run directories: verdicts, exit codes, outputs, fingerprints."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.cli import main
from harness.results.rows import blank
from harness.results.rundir import RunDir, make_fingerprint


def _rows(n: int, valid: list[int], mask_scale: float, seed: int, engine: str = "xgrammar") -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        masks = list(np.round(rng.lognormal(np.log(50), 0.3, size=20) * mask_scale, 2))
        rows.append(blank("run") | {"task_id": f"t{i}", "source": "synthetic", "seed": 0, "engine": engine, "sampler": "masking",
                     "engine_version": "1", "tags": "type", "compile_status": "ok", "dc": 1, "valid": bool(valid[i]),
                     "ec": valid[i], "finish_reason": "eos", "compile_s": 0.01 * mask_scale, "ttft_s": 0.02 * mask_scale,
                     "tpot_ms": 10.0, "mask_times_us": masks, "lm_s": 0.1, "engine_s": 0.01, "output_tokens": 20,
                     "validation_error": "" if valid[i] else f"case {i} invalid"})
    return rows


def _run(tmp_path, run_id: str, rows: list[dict], model: str = "m1") -> str:
    fp = make_fingerprint("run", {"model": model, "tokenizer": "v", "task_set": "ts", "protocol": "cdbench"},
                          {"strict": run_id})
    rd = RunDir.create(tmp_path, run_id, "run", {"run_id": run_id}, fp, {"cpu_model": "test"})
    w = rd.writer()
    for r in rows:
        w.append(r)
    w.close()
    rd.finish()
    return str(rd.path)


@pytest.fixture()
def runs(tmp_path):
    n = 60
    base_valid = [1] * 50 + [0] * 10
    new_valid = [1] * 30 + [0] * 30          # 20 cases flip from valid to invalid, none the other way
    base = _run(tmp_path, "base", _rows(n, base_valid, 1.0, 0))
    new = _run(tmp_path, "new", _rows(n, new_valid, 2.0, 1))
    return tmp_path, base, new


def test_compare_marks_a_worse_run_with_independent_statistics(runs, capsys):
    tmp, base, new = runs
    assert main(["compare", base, new, "--out", str(tmp / "cmp")]) == 0
    data = json.loads((tmp / "cmp" / "compare.json").read_text())
    checks = {c["statistic"]: c for c in data["checks"]}
    comp = checks["compliance"]
    assert comp["base"] == pytest.approx(50 / 60) and comp["new"] == pytest.approx(30 / 60)
    # exact McNemar on 20 discordant pairs all one way: 2 * 0.5**20
    assert comp["p"] == pytest.approx(2 * 0.5 ** 20)
    z = 1.959963984540054
    p, n = 50 / 60, 60
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert comp["base_ci"][0] == pytest.approx(centre - half, abs=1e-9)
    assert comp["mark"] == "+"
    mask = checks["mask_p50_us"]
    assert mask["change"] == pytest.approx(2.0, rel=0.1) and mask["mark"] == "+" and mask["low"] > 1.5
    assert sum(1 for f in data["flips"] if f["mark"] == "!" and f["metric"] == "compliance") == 20
    md = (tmp / "cmp" / "compare.md").read_text()
    assert md.strip().splitlines()[-1] == "PERFORMANCE DECREASED"
    assert "<script" not in (tmp / "cmp" / "compare.html").read_text().split("</style>")[-1].split("<script")[0]


def test_compare_other_way_is_better_and_same_run_is_unchanged(runs):
    tmp, base, new = runs
    main(["compare", new, base, "--out", str(tmp / "rev")])
    assert (tmp / "rev" / "compare.md").read_text().strip().splitlines()[-1] == "PERFORMANCE INCREASED"
    main(["compare", base, base, "--out", str(tmp / "same")])
    assert (tmp / "same" / "compare.md").read_text().strip().splitlines()[-1] == "NOT SIGNIFICANTLY CHANGED"


def test_compare_refuses_other_models_unless_forced(runs):
    tmp, base, _ = runs
    other = _run(tmp, "other-model", _rows(60, [1] * 60, 1.0, 3), model="m2")
    main(["compare", base, other, "--out", str(tmp / "x")])
    data = json.loads((tmp / "x" / "compare.json").read_text())
    assert data["verdict"] == "NOT COMPARABLE" and {c["mark"] for c in data["checks"]} == {"x"}
    assert any("model" in d for d in data["differences"])
    main(["compare", base, other, "--allow-mismatch", "--out", str(tmp / "y")])
    assert json.loads((tmp / "y" / "compare.json").read_text())["verdict"] != "NOT COMPARABLE"


def test_gate_exit_codes(runs, tmp_path):
    tmp, base, new = runs
    assert main(["gate", new, "--baseline", base, "--threshold", "mask_p99_us:+20%", "--out", str(tmp / "g1")]) == 1
    assert main(["gate", new, "--baseline", base, "--threshold", "mask_p99_us:+300%",
                 "--threshold", "compliance:-0.5", "--out", str(tmp / "g2")]) == 0
    assert main(["gate", base, "--baseline", new, "--threshold", "mask_p99_us:+20%",
                 "--threshold", "compliance:-0.02", "--out", str(tmp / "g3")]) == 0   # improvements never fail
    assert main(["gate", new, "--min", "compliance=0.95", "--out", str(tmp / "g4")]) == 1
    assert main(["gate", base, "--max", "mask_p50_us=1000", "--out", str(tmp / "g5")]) == 0
    other = _run(tmp, "other", _rows(60, [1] * 60, 1.0, 4), model="m2")
    assert main(["gate", other, "--baseline", base, "--threshold", "compliance:-0.02"]) == 3
    few = _run(tmp, "few", _rows(40, [1] * 40, 1.0, 5))
    assert main(["gate", few, "--baseline", base, "--threshold", "compliance:-0.02"]) == 3   # 40 of 60 paired
    assert main(["gate", new, "--baseline", base, "--threshold", "compliance:+20%"]) == 2   # a proportion is absolute
    assert main(["gate", new, "--baseline", base, "--threshold", "nosuch_metric:-0.1"]) == 2
    assert main(["gate", new]) == 2


def test_gate_without_stats_fails_on_threshold_alone(tmp_path):
    base = _run(tmp_path, "b", _rows(4, [1, 1, 1, 1], 1.0, 0))
    new = _run(tmp_path, "n", _rows(4, [1, 1, 1, 0], 1.0, 0))
    # one flip in four cases can never be significant: with statistics it passes, without it fails
    assert main(["gate", new, "--baseline", base, "--threshold", "compliance:-0.1", "--out", str(tmp_path / "s")]) == 0
    assert main(["gate", new, "--baseline", base, "--threshold", "compliance:-0.1", "--no-stats",
                 "--out", str(tmp_path / "ns")]) == 1


def test_gate_outputs_junit_summary_and_annotations(runs, monkeypatch, capsys):
    tmp, base, new = runs
    summary = tmp / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code = main(["gate", new, "--baseline", base, "--threshold", "mask_p99_us:+20%", "--threshold", "compliance:-0.02",
                 "--max", "tpot_p50_ms=5", "--junit", str(tmp / "junit.xml"), "--out", str(tmp / "g")])
    assert code == 1
    out = capsys.readouterr().out
    assert out.count("::error title=cdbench gate::") == 3
    root = ET.parse(tmp / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 3 and root.get("failures") == "3"
    assert {c.get("classname") for c in cases} == {"cdbench.xgrammar.masking"}
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == 3
    assert all(c.find("failure") is not None and float(c.get("time")) >= 0 for c in cases)
    gate = json.loads((tmp / "g" / "gate.json").read_text())
    assert [c["verdict"] for c in gate["checks"]] == ["fail", "fail", "fail"]
    assert "GATE FAILED" in summary.read_text()


def test_older_results_format_says_how_to_upgrade(tmp_path, capsys):
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "rows.jsonl").write_text("{}\n")
    (old / "config.toml").write_text("[run]\n")
    assert main(["compare", str(old), str(old)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results format 1" in err[0] and "cdbench upgrade" in err[0]
