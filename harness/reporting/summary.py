"""Per-engine summary, with the metrics defined as in ANCHORS.md (JSONSchemaBench).

declared coverage = mean(dc) over all cases; empirical coverage = mean(ec) over all cases
(failed compiles count as 0); compliance = mean(ec) over cases with dc = 1. A case is one
(task, seed) row. Each metric is reported as that mean, with the median and the standard
error of a seeded bootstrap that resamples tasks, not cases (a cluster bootstrap: draw task
ids with replacement and take all their rows). The seeds of one task are not independent
(compile status is identical across seeds, greedy outputs repeat), so resampling cases
would understate the spread by up to sqrt(seeds).
Cases skipped by a harness limit (prompt + max_tokens over the LM's context) are counted
apart and left out of every metric: they say nothing about any engine.
Timing percentiles are over cases where they are defined; mask percentiles pool every token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..compiling import STATUSES
from ..results import metrics as registry
from ..samplers.base import FINISH_REASONS
from .writer import read_rows

FINISHES = [*FINISH_REASONS, "not_run"]  # not_run: nothing compiled, so no generation
SKIPPED = "skipped"
METRICS = ["declared_coverage", "empirical_coverage", "compliance"]
N_RESAMPLES = 1000


def _ratio_of_sums(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, rng: np.random.Generator,
                      n_resamples: int = N_RESAMPLES) -> tuple[float | None, float | None]:
    """(median, standard error) of the mean of `values` over resamples of whole clusters.

    Each resample draws as many clusters as there are, with replacement, and takes the mean of
    all their rows (the sum of their sums over the sum of their row counts). With fewer than two
    clusters there is no spread to estimate: (the mean, None)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None, None
    codes, uniques = pd.factorize(pd.Series(clusters))
    if len(uniques) < 2:
        return float(values.mean()), None
    sums = np.bincount(codes, weights=values)
    counts = np.bincount(codes).astype(float)
    res = stats.bootstrap((sums, counts), _ratio_of_sums, paired=True, vectorized=True, n_resamples=n_resamples,
                          batch=100, method="percentile", rng=rng)
    return float(np.median(res.bootstrap_distribution)), float(res.standard_error)


def is_skipped(df: pd.DataFrame) -> pd.Series:
    """Rows the harness did not run (a harness limit, not an engine's outcome)."""
    skipped = pd.Series(False, index=df.index)
    for col in ("compile_status", "finish_reason"):
        if col in df:
            skipped |= df[col] == SKIPPED
    return skipped


def coverage_metrics(g: pd.DataFrame, rng: np.random.Generator, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """The three JSB metrics over the scored rows of one engine and sampler: the mean over cases,
    and the median and standard error of the task-level (cluster) bootstrap."""
    dc = g["dc"].to_numpy(dtype=float)
    ec = g["ec"].to_numpy(dtype=float)
    tasks = g["task_id"].to_numpy()
    compiled = dc == 1
    samples = {"declared_coverage": (dc, tasks), "empirical_coverage": (ec, tasks),
               "compliance": (ec[compiled], tasks[compiled])}
    out: dict[str, Any] = {}
    for name in METRICS:
        vals, clusters = samples[name]
        median, se = cluster_bootstrap(vals, clusters, rng, n_resamples)
        out[name] = float(vals.mean()) if vals.size else None
        out[f"{name}_std"] = se
        out[f"{name}_median"] = median
    return out


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts again, missing values as None (what the metric registry reads)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _timings(ok: pd.DataFrame) -> dict[str, Any]:
    """Latency percentiles and per-token times, from the metric registry (the statistics compare,
    gate, leaderboard and report show): compile and TTFT over cases, mask times pooled over tokens."""
    recs = _records(ok)
    m = registry.METRICS
    seconds = lambda v: None if v is None else v / 1000.0  # noqa: E731
    return {"gct_p50_s": seconds(registry.aggregate(m["compile"], recs, 50)),
            "ttft_p50_s": seconds(registry.aggregate(m["ttft"], recs, 50)),
            "tpot_p50_ms": registry.aggregate(m["tpot"], recs, 50), "tpot_p99_ms": registry.aggregate(m["tpot"], recs, 99),
            "mask_p50_us": registry.aggregate(m["mask"], recs, 50), "mask_p99_us": registry.aggregate(m["mask"], recs, 99),
            "lm_ms_per_token": registry.per_token_ms(recs, "lm_s"),
            "engine_ms_per_token": registry.per_token_ms(recs, "engine_s")}


def method_kinds(df: pd.DataFrame) -> pd.Series:
    """Each row's method kind: engine (also rows written before frontends existed) or frontend."""
    return df["method_kind"].fillna("engine") if "method_kind" in df else pd.Series("engine", index=df.index)


def summarize_frame(df: pd.DataFrame, bootstrap_seed: int = 0, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    out = []
    skipped = is_skipped(df)
    kinds = method_kinds(df)
    for (engine, sampler), g in df.groupby(["engine", "sampler"], sort=False):
        scored = g[~skipped.loc[g.index]]
        row: dict[str, Any] = {"engine": engine, "sampler": sampler, "method_kind": kinds.loc[g.index[0]],
                               "cases": len(scored), "skipped": int(len(g) - len(scored))}
        row.update(coverage_metrics(scored, np.random.default_rng(bootstrap_seed), n_resamples))
        row.update(_timings(scored[scored["compile_status"] == "ok"]))
        if "tgt_s" in scored:
            row["total_p50_s"] = _median(scored.loc[scored["compile_status"] == "ok", "tgt_s"])
        for s in STATUSES:
            row[f"compile_{s}"] = int((scored["compile_status"] == s).sum())
        for f in FINISHES:
            row[f"finish_{f}"] = int((scored["finish_reason"] == f).sum())
        out.append(row)
    return pd.DataFrame(out)


def summarize(run_dir: Path, bootstrap_seed: int = 0, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    rows = read_rows(run_dir)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame()
    flat = df.drop(columns=["mask_times_us"], errors="ignore")
    flat.to_csv(run_dir / "results.csv", index=False)
    try:
        df.to_parquet(run_dir / "results.parquet", index=False)
    except Exception as exc:  # pyarrow missing or a column it cannot type: keep the CSV, say so
        (run_dir / "results.parquet.error").write_text(f"{type(exc).__name__}: {exc}\n")
    return summarize_frame(df, bootstrap_seed, n_resamples)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(r: pd.Series, col: str, digits: int) -> str:
    """One table cell; a coverage metric with its task-level bootstrap standard error."""
    if not digits:
        return _fmt(r[col])
    text = _fmt(r[col], digits)
    se = r.get(f"{col}_std") if col in METRICS else None
    return text if se is None or (isinstance(se, float) and np.isnan(se)) else f"{text} ± {_fmt(se, digits)}"


def _median(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _of_kind(s: pd.DataFrame, kind: str) -> pd.DataFrame:
    return s[method_kinds(s) == kind] if not s.empty else s


def frontend_table(s: pd.DataFrame) -> str:
    """The frontends' own table: black boxes, so coverage, TTFT (prefill included), TPOT and total time;
    never in one ranking with the engines."""
    s = _of_kind(s, "frontend")
    cols = [("engine", "frontend", 0), ("cases", "n", 0), ("skipped", "skipped", 0),
            ("declared_coverage", "accepted", 3), ("empirical_coverage", "emp. cov", 3), ("compliance", "compliance", 3),
            ("ttft_p50_s", "TTFT p50 s", 3), ("tpot_p50_ms", "TPOT p50 ms", 1), ("tpot_p99_ms", "TPOT p99 ms", 1),
            ("total_p50_s", "total p50 s", 2)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " | status ok/unsup/err/timeout | finish eos/max/timeout/err |",
             "|" + "---|" * (len(cols) + 2)]
    for _, r in s.iterrows():
        status = "/".join(str(r[f"compile_{x}"]) for x in ("ok", "unsupported", "error", "timeout"))
        finish = "/".join(str(r[f"finish_{x}"]) for x in ("eos", "max_tokens", "timeout", "error"))
        lines.append("| " + " | ".join(_cell(r, c, d) for c, _, d in cols) + f" | {status} | {finish} |")
    return "\n".join(lines) + "\n"


def summary_table(s: pd.DataFrame) -> str:
    """A Markdown table of the headline numbers, one row per engine and sampler (coverage metrics
    as mean ± the standard error of the task-level bootstrap). Engines only: frontends have their own."""
    s = _of_kind(s, "engine")
    if s.empty:
        return "(no rows)\n"
    cols = [
        ("engine", "engine", 0), ("sampler", "sampler", 0), ("cases", "n", 0), ("skipped", "skipped", 0),
        ("declared_coverage", "decl. cov", 3), ("empirical_coverage", "emp. cov", 3), ("compliance", "compliance", 3),
        ("gct_p50_s", "GCT p50 s", 4), ("tpot_p50_ms", "TPOT p50 ms", 1), ("tpot_p99_ms", "TPOT p99 ms", 1),
        ("mask_p50_us", "mask p50 µs", 1), ("mask_p99_us", "mask p99 µs", 1),
        ("lm_ms_per_token", "LM ms/tok", 2), ("engine_ms_per_token", "engine ms/tok", 2),
    ]
    head = "| " + " | ".join(c[1] for c in cols) + " | status ok/unsup/err/timeout/crash/oom | finish eos/max/forced/dead/timeout/oom/crash/err |"
    sep = "|" + "---|" * (len(cols) + 2)
    lines = [head, sep]
    for _, r in s.iterrows():
        cells = [_cell(r, c, d) for c, _, d in cols]
        status = "/".join(str(r[f"compile_{x}"]) for x in STATUSES)
        finish = "/".join(str(r[f"finish_{x}"]) for x in FINISH_REASONS)
        lines.append("| " + " | ".join(cells) + f" | {status} | {finish} |")
    return "\n".join(lines) + "\n"


def write_summary(run_dir: Path, s: pd.DataFrame, env: dict[str, Any], n_resamples: int = N_RESAMPLES) -> str:
    model = env.get("model", {})
    text = [
        f"# cdbench run {run_dir.name}\n",
        f"Model: {model.get('model')} (sha256 {str(model.get('model_sha256'))[:16]}…), "
        f"LM threads {model.get('lm_threads')}; CPU: {env.get('cpu_model')}\n",
        "Coverage and compliance: the mean over cases (task x seed); in summary.csv also the median "
        f"and standard error (`_std`) of {n_resamples} seeded bootstrap resamples of tasks (all seeds of a "
        "task drawn together). Declared coverage = compile ok; empirical coverage = valid output over all "
        "cases; compliance = valid output over compiled cases. Skipped cases (prompt + max_tokens over "
        "the LM's context: a harness limit) are counted in `skipped` and left out of every metric. "
        "Mask percentiles pool every token.\n",
        summary_table(s),
        "\nEngines: " + "; ".join(f"{k} {v['version']} {v['settings']}" for k, v in env.get("engines", {}).items()) + "\n",
    ]
    if not _of_kind(s, "frontend").empty:  # end-to-end black boxes: a table of their own (docs/frontends.md)
        text += ["## Frontends (end-to-end; not ranked with the engines)\n",
                 "What a library or server returns: accepted = the call took the constraint; TTFT from the request "
                 "to the first streamed text, prompt prefill included (engine TTFT excludes it); no mask, compile "
                 "or LM/engine split.\n", frontend_table(s),
                 "\nFrontends: " + "; ".join(f"{k} {v['version']}" for k, v in env.get("frontends", {}).items()) + "\n"]
    out = "\n".join(text)
    (run_dir / "summary.md").write_text(out, encoding="utf-8")
    s.to_csv(run_dir / "summary.csv", index=False)
    return out
