"""`cdbench export github-benchmark` on synthetic run directories (no model).

Expected numbers are computed here independently: Wilson intervals by scipy's binomtest, latency
percentiles by numpy over the pooled values, their intervals by scipy.stats.bootstrap over case
indices; the direction of each statistic from the metric registry; the file format from
github-action-benchmark's custom tools (an array of {name, unit, value[, range][, extra]})."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from harness.analysis import export_github as ex
from harness.cli import main
from harness.errors import ConfigError
from harness.results.metrics import METRICS, resolve, statistic_names
from harness.results.rows import blank
from harness.results.rundir import RunDir, make_fingerprint

REPO = Path(__file__).resolve().parents[1]
DASH = "\u2013"
ALLOWED_KEYS = {"name", "unit", "value", "range", "extra"}


def run_row(engine: str, task: str, valid: bool, dc: int = 1, masks: list[float] | None = None,
            compile_s: float = 0.002) -> dict[str, Any]:
    return blank("run") | {
        "engine": engine, "sampler": "masking", "engine_version": "1.2.3", "source": "synthetic", "task_id": task,
        "seed": 0, "tags": "type", "compile_status": "ok" if dc else "error", "dc": dc,
            "valid": bool(valid and dc), "compile_s": compile_s if dc else None, "ttft_s": 0.01 if dc else None,
            "tpot_ms": 5.0 if dc else None, "mask_times_us": (masks or [10.0, 20.0]) if dc else [],
            "finish_reason": "eos" if dc else "not_run", "output_tokens": 10 if dc else 0}


def replay_row(engine: str, task: str, bucket: str = "pass", vr: int = 0, ia: int = 0,
               mask: list[float] | None = None) -> dict[str, Any]:
    return blank("replay") | {
        "engine": engine, "group": "G1", "task_id": task, "status": "done", "bucket": bucket,
        "compile_status": "ok", "valid_rejected": vr, "invalid_accepted": ia, "cold_compile_s": 0.001,
            "mask_us": list(mask or [10.0, 12.0]), "tags": ["type"]}


def make_run(root: Path, run_id: str, kind: str, rows: list[dict], env: dict | None = None) -> Path:
    fp = make_fingerprint(kind, {"model": "m", "tokenizer": "t", "task_set": "A"}, {"run": run_id})
    rd = RunDir.create(root, run_id, kind, {}, fp, env or {})
    w = rd.writer()
    for r in rows:
        w.append(r)
    w.close()
    rd.finish()
    return rd.path


def synthetic_run_rows(seed: int, k_valid: int = 50, n: int = 60) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        masks = np.round(rng.lognormal(np.log(50), 0.4, size=int(rng.integers(3, 30))), 2)
        rows.append(run_row("xgrammar", f"t{i}", valid=i < k_valid, masks=[float(x) for x in masks],
                            compile_s=float(rng.lognormal(np.log(0.002), 0.5))))
    # a second configuration where nothing compiled: its compliance and latencies have no value
    rows += [run_row("llguidance", f"t{i}", valid=False, dc=0) for i in range(5)]
    return rows


def parse_range(text: str) -> tuple[float, float]:
    low, high = text.split(DASH)
    return float(low), float(high)


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in entries}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """60 cases of xgrammar/masking (50 valid) and 5 of llguidance/masking that did not compile."""
    return make_run(tmp_path_factory.mktemp("export"), "r1", "run", synthetic_run_rows(0))


@pytest.fixture(scope="module")
def exported(run_dir) -> ex.Export:
    return ex.export_run(RunDir.open(run_dir))


@pytest.fixture()
def small_run(tmp_path) -> Path:
    return make_run(tmp_path, "small", "run", synthetic_run_rows(3, k_valid=6, n=8))


# ---------------------------------------------------------------- numbers


def test_proportion_value_and_range_are_scipy_wilson(exported):
    exp = exported
    e = by_name(exp.bigger)["xgrammar/masking compliance"]
    assert e["unit"] == "fraction" and e["value"] == pytest.approx(50 / 60)
    ci = sps.binomtest(50, 60).proportion_ci(method="wilson")
    low, high = parse_range(e["range"])
    assert low == pytest.approx(ci.low, abs=5.1e-5) and high == pytest.approx(ci.high, abs=5.1e-5)
    # llguidance compiled nothing: declared coverage is 0 of 5, with its Wilson interval
    d = by_name(exp.bigger)["llguidance/masking declared_coverage"]
    ci0 = sps.binomtest(0, 5).proportion_ci(method="wilson")
    assert d["value"] == 0.0 and parse_range(d["range"]) == pytest.approx((ci0.low, ci0.high), abs=5.1e-5)


def _bootstrap_over_cases(cases: list[list[float]], q: float) -> tuple[float, float]:
    """The percentile's 95% percentile-bootstrap interval resampling whole cases, straight from scipy."""
    arrays = [np.asarray(c, float) for c in cases]

    def statistic(idx: np.ndarray) -> float:
        return float(np.percentile(np.concatenate([arrays[i] for i in idx.astype(int)]), q))

    res = sps.bootstrap((np.arange(len(arrays)),), statistic, n_resamples=ex.N_RESAMPLES, vectorized=False,
                        method="percentile", rng=np.random.default_rng(ex.SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def test_latency_value_is_the_pooled_percentile_and_range_a_bootstrap_over_cases(run_dir, exported):
    rows = RunDir.open(run_dir).rows()
    exp = exported
    smaller = by_name(exp.smaller)
    xg = [r for r in rows if r["engine"] == "xgrammar"]
    mask_cases = [r["mask_times_us"] for r in xg]
    compile_cases = [[r["compile_s"] * 1000.0] for r in xg]
    for name, cases, unit, q in [("xgrammar/masking mask_p99_us", mask_cases, "us", 99),
                                 ("xgrammar/masking mask_p50_us", mask_cases, "us", 50),
                                 ("xgrammar/masking compile_p90_ms", compile_cases, "ms", 90)]:
        e = smaller[name]
        assert e["unit"] == unit
        assert e["value"] == pytest.approx(float(np.percentile(np.concatenate(cases), q)), rel=1e-12)
        low, high = parse_range(e["range"])
        want = _bootstrap_over_cases(cases, q)
        assert (low, high) == pytest.approx(want, rel=1e-4)
        assert low <= e["value"] <= high
    assert "60 cases" in smaller["xgrammar/masking mask_p99_us"]["extra"]
    assert f"{sum(map(len, mask_cases))} samples" in smaller["xgrammar/masking mask_p99_us"]["extra"]


def test_statistics_without_a_value_are_skipped_and_counted(small_run, tmp_path, capsys):
    exp = ex.export_run(RunDir.open(small_run))
    latencies = [s for s in statistic_names("run") if resolve(s, "run")[0].is_latency]
    want = sorted(["llguidance/masking compliance"] + [f"llguidance/masking {s}" for s in latencies])
    assert exp.skipped == want
    names = {e["name"] for e in exp.smaller + exp.bigger}
    assert not names & set(want)
    assert main(["export", "github-benchmark", str(small_run), "--out", str(tmp_path / "elsewhere")]) == 0
    assert f"skipped {len(want)} statistics with no value" in capsys.readouterr().out
    assert [e["name"] for e in _strict_json(tmp_path / "elsewhere" / ex.SMALLER_FILE)] == \
        [e["name"] for e in exp.smaller]


# ---------------------------------------------------------------- direction, names, format


def test_direction_follows_the_registry(tmp_path, exported, small_run, monkeypatch):
    exp = exported
    for entries, higher in ((exp.bigger, True), (exp.smaller, False)):
        assert entries
        for e in entries:
            assert resolve(e["name"].split(" ", 1)[1], "run")[0].higher_is_better is higher
    # replay: lower-is-better proportions go to the smaller file, as fractions
    rp = make_run(tmp_path, "rp", "replay", [replay_row("xgrammar", f"s{i}", ia=int(i < 2)) for i in range(10)])
    rexp = ex.export_run(RunDir.open(rp))
    assert [e["name"] for e in rexp.bigger] == ["xgrammar pass"]
    ia = by_name(rexp.smaller)["xgrammar invalid_accepted"]
    assert ia["unit"] == "fraction" and ia["value"] == pytest.approx(0.2)
    # flip a metric's direction in the registry: its statistic changes files
    monkeypatch.setitem(METRICS, "compliance", dataclasses.replace(METRICS["compliance"], higher_is_better=False))
    flipped = ex.export_run(RunDir.open(small_run))
    assert "xgrammar/masking compliance" in by_name(flipped.smaller)
    assert "xgrammar/masking compliance" not in by_name(flipped.bigger)


def test_names_are_stable_and_sorted(tmp_path):
    a = ex.export_run(RunDir.open(make_run(tmp_path, "a", "run", synthetic_run_rows(1, k_valid=6, n=8))))
    b = ex.export_run(RunDir.open(make_run(tmp_path, "b", "run", synthetic_run_rows(2, k_valid=2, n=8))))
    for exp in (a, b):
        for entries in (exp.smaller, exp.bigger):
            names = [e["name"] for e in entries]
            assert names == sorted(names) and len(set(names)) == len(names)
    assert [e["name"] for e in a.smaller] == [e["name"] for e in b.smaller]
    assert [e["name"] for e in a.bigger] == [e["name"] for e in b.bigger]
    every = {f"{g} {s}" for g in ("xgrammar/masking", "llguidance/masking") for s in statistic_names("run")}
    assert {e["name"] for e in a.smaller + a.bigger} | set(a.skipped) == every
    assert "xgrammar/masking mask_p99_us" in every and "xgrammar/masking compliance" in every


def _strict_json(path: Path) -> Any:
    def no_constant(name: str) -> None:
        raise AssertionError(f"{path}: {name} is not JSON the action can read")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


def assert_action_format(path: Path) -> list[dict]:
    """github-action-benchmark's custom tools: a JSON array of {name, unit, value, range?, extra?}."""
    data = _strict_json(path)
    assert isinstance(data, list) and data
    for e in data:
        assert isinstance(e, dict) and set(e) <= ALLOWED_KEYS and {"name", "unit", "value"} <= set(e)
        assert isinstance(e["name"], str) and e["name"] and isinstance(e["unit"], str) and e["unit"]
        assert isinstance(e["value"], (int, float)) and not isinstance(e["value"], bool)
        assert math.isfinite(e["value"])
        assert all(isinstance(e[k], str) for k in ("range", "extra") if k in e)
    return data


def test_files_validate_and_extra_carries_n_run_engine_and_digest(tmp_path):
    env = {"engines": {"xgrammar": {"version": "0.2.9"}}}
    rp = make_run(tmp_path, "rp", "replay", [replay_row("xgrammar", f"s{i}", bucket="pass" if i else "fail",
                                                        mask=[10.0 + i, 20.0 + i]) for i in range(12)], env)
    rd = RunDir.open(rp)
    smaller, bigger = ex.write_export(ex.export_run(rd), tmp_path / "out")
    assert (smaller.name, bigger.name) == (ex.SMALLER_FILE, ex.BIGGER_FILE)
    entries = assert_action_format(smaller) + assert_action_format(bigger)
    digest = rd.manifest.fingerprint["comparable_digest"]
    for e in entries:
        assert "run: rp" in e["extra"] and "engine: xgrammar 0.2.9" in e["extra"]
        assert f"comparable_digest: {digest}" in e["extra"] and "n: " in e["extra"]
    p = by_name(entries)["xgrammar pass"]
    assert p["value"] == pytest.approx(11 / 12) and "11 of 12 cases" in p["extra"]


# ---------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "export", "github-benchmark", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_both_files(small_run):
    run_dir = small_run
    res = _cli(str(run_dir))
    assert res.returncode == 0, res.stderr
    out = run_dir / "export"
    for name in (ex.SMALLER_FILE, ex.BIGGER_FILE):
        assert str(out / name) in res.stdout
        assert_action_format(out / name)
    assert "skipped 13 statistics with no value" in res.stdout


def test_cli_refuses_a_fidelity_run_and_a_missing_dir(tmp_path):
    fid = RunDir.create(tmp_path, "fid", "fidelity", {}, make_fingerprint("fidelity", {}, {})).path
    res = _cli(str(fid))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "export covers run and replay results; this is a fidelity run" in res.stderr
    assert not (fid / "export").exists()
    res = _cli(str(tmp_path / "nosuch"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "nosuch" in res.stderr


def test_a_run_without_rows_is_a_config_error(tmp_path):
    empty = make_run(tmp_path, "empty", "run", [])
    with pytest.raises(ConfigError, match="no rows"):
        ex.export_run(RunDir.open(empty))
