"""Per-engine summary, with the metrics defined as in ANCHORS.md (JSONSchemaBench).

declared coverage = mean(dc) over all cases; empirical coverage = mean(ec) over all cases
(failed compiles count as 0); compliance = mean(ec) over cases with dc = 1. Each is the
median of 100 bootstrap resample means (seeded, unlike JSB) with their std.
Timing percentiles are over cases where they are defined; mask percentiles pool every token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .writer import read_rows

STATUSES = ["ok", "unsupported", "error", "timeout"]
FINISHES = ["eos", "max_tokens", "dead_end", "timeout", "error", "not_run"]


def bootstrap(values: np.ndarray, rng: np.random.Generator, n: int = 100) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    means = rng.choice(values, size=(n, values.size), replace=True).mean(axis=1)
    return float(np.median(means)), float(np.std(means))


def _pct(values: pd.Series | np.ndarray, q: float) -> float | None:
    a = np.asarray(pd.Series(values).dropna(), dtype=float)
    return float(np.percentile(a, q)) if a.size else None


def summarize_frame(df: pd.DataFrame, bootstrap_seed: int = 0) -> pd.DataFrame:
    out = []
    for (engine, sampler), g in df.groupby(["engine", "sampler"], sort=False):
        rng = np.random.default_rng(bootstrap_seed)
        dc = g["dc"].to_numpy(dtype=float)
        ec = g["ec"].to_numpy(dtype=float)
        comp = g.loc[g["dc"] == 1, "ec"].to_numpy(dtype=float)
        row: dict[str, Any] = {"engine": engine, "sampler": sampler, "cases": len(g)}
        for name, vals in (("declared_coverage", dc), ("empirical_coverage", ec), ("compliance", comp)):
            med, std = bootstrap(vals, rng)
            row[name] = med
            row[f"{name}_std"] = std
        ok = g[g["compile_status"] == "ok"]
        row["gct_p50_s"] = _pct(ok["compile_s"], 50)
        row["ttft_p50_s"] = _pct(ok["ttft_s"], 50)
        row["tpot_p50_ms"] = _pct(ok["tpot_ms"], 50)
        row["tpot_p99_ms"] = _pct(ok["tpot_ms"], 99)
        masks = [t for ts in ok["mask_times_us"] for t in (ts or [])]
        row["mask_p50_us"] = _pct(np.asarray(masks), 50)
        row["mask_p99_us"] = _pct(np.asarray(masks), 99)
        toks = ok["output_tokens"].sum()
        row["lm_ms_per_token"] = 1000 * ok["lm_s"].sum() / toks if toks else None
        row["engine_ms_per_token"] = 1000 * ok["engine_s"].sum() / toks if toks else None
        for s in STATUSES:
            row[f"compile_{s}"] = int((g["compile_status"] == s).sum())
        for f in FINISHES:
            row[f"finish_{f}"] = int((g["finish_reason"] == f).sum())
        out.append(row)
    return pd.DataFrame(out)


def summarize(run_dir: Path, bootstrap_seed: int = 0) -> pd.DataFrame:
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
    return summarize_frame(df, bootstrap_seed)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_table(s: pd.DataFrame) -> str:
    """A Markdown table of the headline numbers, one row per engine and sampler."""
    if s.empty:
        return "(no rows)\n"
    cols = [
        ("engine", "engine", 0), ("sampler", "sampler", 0), ("cases", "n", 0),
        ("declared_coverage", "decl. cov", 3), ("empirical_coverage", "emp. cov", 3), ("compliance", "compliance", 3),
        ("gct_p50_s", "GCT p50 s", 4), ("tpot_p50_ms", "TPOT p50 ms", 1), ("tpot_p99_ms", "TPOT p99 ms", 1),
        ("mask_p50_us", "mask p50 µs", 1), ("mask_p99_us", "mask p99 µs", 1),
        ("lm_ms_per_token", "LM ms/tok", 2), ("engine_ms_per_token", "engine ms/tok", 2),
    ]
    head = "| " + " | ".join(c[1] for c in cols) + " | status ok/unsup/err/timeout | finish eos/max/dead/timeout/err |"
    sep = "|" + "---|" * (len(cols) + 2)
    lines = [head, sep]
    for _, r in s.iterrows():
        cells = [_fmt(r[c], d) if d else _fmt(r[c]) for c, _, d in cols]
        status = "/".join(str(r[f"compile_{x}"]) for x in STATUSES)
        finish = "/".join(str(r[f"finish_{x}"]) for x in ["eos", "max_tokens", "dead_end", "timeout", "error"])
        lines.append("| " + " | ".join(cells) + f" | {status} | {finish} |")
    return "\n".join(lines) + "\n"


def write_summary(run_dir: Path, s: pd.DataFrame, env: dict[str, Any]) -> str:
    model = env.get("model", {})
    text = [
        f"# cdbench run {run_dir.name}\n",
        f"Model: {model.get('model')} (sha256 {str(model.get('model_sha256'))[:16]}…), "
        f"LM threads {model.get('lm_threads')}; CPU: {env.get('cpu_model')}\n",
        "Coverage and compliance: bootstrap median of 100 seeded resamples (std in results). "
        "Declared coverage = compile ok; empirical coverage = valid output over all cases; "
        "compliance = valid output over compiled cases. Mask percentiles pool every token.\n",
        summary_table(s),
        "\nEngines: " + "; ".join(f"{k} {v['version']} {v['settings']}" for k, v in env.get("engines", {}).items()) + "\n",
    ]
    out = "\n".join(text)
    (run_dir / "summary.md").write_text(out, encoding="utf-8")
    s.to_csv(run_dir / "summary.csv", index=False)
    return out
