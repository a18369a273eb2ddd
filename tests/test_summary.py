"""The summary's metrics (ANCHORS.md 1.4) on synthetic result tables, against values worked out
by hand from the definitions, and its bootstrap, which must resample tasks (all seeds of a task
together), not cases.

Definitions (JSONSchemaBench): declared coverage = mean of dc over all cases; empirical
coverage = mean of ec over all cases, failed compiles included; compliance = mean of ec over
the cases with dc = 1. Skipped cases (a harness limit) enter none of them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.reporting.summary import summarize_frame, summary_table

# (task, compile status per engine, ec of seeds 0 and 1 per engine); "skipped" = a harness limit
CASES = {
    "A": [("t1", "ok", [1, 1]), ("t2", "ok", [1, 0]), ("t3", "unsupported", [0, 0]),
          ("t4", "ok", [0, 0]), ("t5", "skipped", [None, None])],
    "B": [("t1", "error", [0, 0]), ("t2", "ok", [1, 1]), ("t3", "ok", [1, 1]),
          ("t4", "timeout", [0, 0]), ("t5", "skipped", [None, None])],
}
# Worked by hand from the table above (8 scored cases per engine):
#   A: dc = 6/8 (t1, t2, t4 compile), ec = 3/8, compliance = 3 valid of 6 compiled = 1/2
#   B: dc = 4/8 (t2, t3 compile),     ec = 4/8, compliance = 4 valid of 4 compiled = 1
EXPECTED = {"A": (0.75, 0.375, 0.5), "B": (0.5, 0.5, 1.0)}


def _row(engine: str, task: str, status: str, seed: int, ec: int | None) -> dict:
    skipped = status == "skipped"
    return {"engine": engine, "sampler": "masking", "task_id": task, "seed": seed, "compile_status": status,
            "finish_reason": "skipped" if skipped else ("eos" if status == "ok" else "not_run"),
            "dc": None if skipped else int(status == "ok"), "ec": ec,
            "compile_s": 0.01 if status == "ok" else None, "ttft_s": None, "tpot_ms": None,
            "mask_times_us": [], "output_tokens": 0, "lm_s": 0.0, "engine_s": 0.0}


def hand_table() -> pd.DataFrame:
    return pd.DataFrame([_row(e, t, status, seed, ec) for e, cases in CASES.items()
                         for t, status, ecs in cases for seed, ec in enumerate(ecs)])


def test_metrics_match_the_definitions_worked_by_hand():
    s = summarize_frame(hand_table()).set_index("engine")
    for engine, (dc, ec, compliance) in EXPECTED.items():
        got = s.loc[engine]
        assert got["declared_coverage"] == pytest.approx(dc, abs=1e-12), engine
        assert got["empirical_coverage"] == pytest.approx(ec, abs=1e-12), engine
        assert got["compliance"] == pytest.approx(compliance, abs=1e-12), engine
        assert got["cases"] == 8 and got["skipped"] == 2


def test_skipped_cases_are_counted_and_shown_not_scored():
    s = summarize_frame(hand_table())
    assert (s["compile_ok"] + s["compile_unsupported"] + s["compile_error"] + s["compile_timeout"] == 8).all()
    table = summary_table(s)
    assert "| skipped |" in table.splitlines()[0]
    assert "| A | masking | 8 | 2 | 0.750 ± " in table


def test_all_skipped_gives_no_metric():
    df = hand_table()
    df = df[df.task_id == "t5"]
    s = summarize_frame(df).iloc[0]
    assert s["cases"] == 0 and s["skipped"] == 2
    assert s["declared_coverage"] is None and s["compliance"] is None


def seeded_table(tasks: int, seeds: int, correlated: bool, seed: int = 7) -> pd.DataFrame:
    """ec per (task, seed): with `correlated`, every seed of a task repeats the task's outcome
    (the greedy-decoding case); otherwise every case is an independent draw with one success
    rate for all tasks (no correlation of any kind within a task)."""
    rng = np.random.default_rng(seed)
    p_task = rng.uniform(0.1, 0.9, size=tasks) if correlated else np.full(tasks, 0.4)
    rows = []
    for t in range(tasks):
        first = int(rng.random() < p_task[t])
        for s in range(seeds):
            ec = first if correlated else int(rng.random() < p_task[t])
            rows.append({"engine": "e", "sampler": "masking", "task_id": f"t{t}", "seed": s,
                         "compile_status": "ok", "finish_reason": "eos", "dc": 1, "ec": ec,
                         "compile_s": 0.01, "ttft_s": None, "tpot_ms": None, "mask_times_us": [],
                         "output_tokens": 0, "lm_s": 0.0, "engine_s": 0.0})
    return pd.DataFrame(rows)


def se_over_tasks(df: pd.DataFrame) -> float:
    """The right answer with equal seeds per task: the plug-in standard error of a mean of the
    task means (what resampling tasks estimates)."""
    means = df.groupby("task_id")["ec"].mean().to_numpy(dtype=float)
    return float(means.std(ddof=0) / math.sqrt(means.size))


def naive_case_bootstrap_se(df: pd.DataFrame) -> float:
    ec = df["ec"].to_numpy(dtype=float)
    res = stats.bootstrap((ec,), np.mean, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(1))
    return float(res.standard_error)


@pytest.mark.parametrize("correlated", [True, False])
def test_bootstrap_resamples_tasks(correlated):
    """Perfectly correlated seeds: the spread is that of the task means, sqrt(seeds) = 2 times
    what resampling cases shows. Independent seeds: both agree (the cluster bootstrap does not
    inflate the spread when there is no correlation)."""
    seeds = 4
    df = seeded_table(tasks=120, seeds=seeds, correlated=correlated)
    got = summarize_frame(df, bootstrap_seed=0).iloc[0]
    assert got["empirical_coverage_std"] == pytest.approx(se_over_tasks(df), rel=0.12)
    ratio = got["empirical_coverage_std"] / naive_case_bootstrap_se(df)
    assert ratio == pytest.approx(math.sqrt(seeds) if correlated else 1.0, rel=0.15)
    assert got["empirical_coverage"] == pytest.approx(df["ec"].mean(), abs=1e-12)
    assert got["declared_coverage_std"] == 0.0  # every case compiles: no spread at all


def test_bootstrap_is_seeded():
    df = seeded_table(tasks=40, seeds=3, correlated=True)
    a = summarize_frame(df, bootstrap_seed=0)
    b = summarize_frame(df, bootstrap_seed=0)
    c = summarize_frame(df, bootstrap_seed=1)
    assert a["empirical_coverage_std"].iloc[0] == b["empirical_coverage_std"].iloc[0]
    assert a["empirical_coverage_std"].iloc[0] != c["empirical_coverage_std"].iloc[0]


def test_compliance_bootstrap_resamples_compiled_tasks():
    """Compliance clusters are the tasks with compiled cases; a task that never compiles does not
    enter it, so resamples never divide by zero."""
    df = seeded_table(tasks=30, seeds=2, correlated=True)
    df.loc[df.task_id.isin(["t0", "t1", "t2"]), ["dc", "ec", "compile_status"]] = [0, 0, "error"]
    got = summarize_frame(df).iloc[0]
    compiled = df[df.dc == 1]
    assert got["compliance"] == pytest.approx(compiled["ec"].mean(), abs=1e-12)
    assert got["compliance_std"] == pytest.approx(se_over_tasks(compiled), rel=0.15)
    assert math.isfinite(got["compliance_median"])
