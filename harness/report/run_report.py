"""The HTML report of one `cdbench run`: run_dir/report.html, self-contained.

Read from the run directory: rows.jsonl (one row per case), environment.json, config.toml. The
metrics follow harness.reporting.summary: cases skipped by a harness limit are left out of every
metric; declared coverage = compile ok over cases, empirical coverage = valid over cases,
compliance = valid over compiled cases; timings are over cases whose compile succeeded and mask
percentiles pool every token. Every such number comes from the metric registry
(harness.results.metrics: proportion_counts, aggregate, pooled, per_token_ms), the path compare, gate
and leaderboard use. Here each proportion carries a Wilson 95% interval (cases treated as
independent; summary.md has the task-level bootstrap standard error).
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..compiling import STATUSES
from ..reporting.summary import FINISHES, SKIPPED, is_skipped
from ..reporting.writer import ROWS_FILE, read_rows
from ..analysis.stats import wilson_interval
from ..results.metrics import METRICS, aggregate, per_token_ms, pooled, proportion_counts
from . import plots
from .page import Figure, KeyValues, Links, Page, Section, Table, Text, render_page

REPORT_FILE = "report.html"
EXCERPT = 200
WORST_N = 15
ARTIFACTS = ("rows.jsonl", "results.parquet", "results.csv", "summary.md", "summary.csv", "manifest.json",
             "config.toml", "environment.json")


@dataclass
class RunData:
    run_dir: Path
    rows: pd.DataFrame  # every row, with `row_id` (line in rows.jsonl), `group` (engine/sampler) and
    #                     `_row` (the row as read, the metric registry's input)
    env: dict[str, Any]
    config: dict[str, Any]

    @property
    def scored(self) -> pd.DataFrame:
        return self.rows[~is_skipped(self.rows)] if not self.rows.empty else self.rows

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.rows["group"])) if not self.rows.empty else []


def build_run_report(run_dir: Path) -> Path:
    """Write run_dir/report.html and return its path."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT_FILE
    out.write_text(render_page(run_report_page(run_dir)), encoding="utf-8")
    return out


def run_report_page(run_dir: Path) -> Page:
    """The report of one run as a Page (sections in reading order)."""
    data = load_run(Path(run_dir))
    sections: list[Section] = [_provenance(data), *_headline(data), *_outcomes(data), *_breakdowns(data),
                               *_worst(data), *_plots(data), *_step_evals(data), _links(data)]
    started = data.env.get("started") or "date unknown"
    return Page(title=f"cdbench run {_run_id(data)}",
                subtitle=f"started {started} · {len(data.rows)} rows · {len(data.groups)} engine/sampler pairs",
                sections=sections)


# ---------------------------------------------------------------- loading

def _line_numbers(path: Path) -> list[int]:
    """1-based line numbers of the non-blank lines of the journal (the rows read_rows returns)."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        return [n for n, raw in enumerate(fh, 1) if raw.strip()]


def _frame(run_dir: Path) -> pd.DataFrame:
    rows = read_rows(run_dir)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["row_id"] = _line_numbers(run_dir / ROWS_FILE)[: len(df)]
    df["_row"] = pd.Series(rows, index=df.index, dtype=object)
    for col, default in (("sampler", "?"), ("engine", "?"), ("compile_status", ""), ("finish_reason", "")):
        if col not in df:
            df[col] = default
    df["group"] = df["engine"].astype(str) + "/" + df["sampler"].astype(str)
    return df


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _read_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_run(run_dir: Path) -> RunData:
    """From the manifest (results format 2); a format-1 run's environment.json and config.toml otherwise."""
    manifest = _read_json(run_dir / "manifest.json")
    if manifest:
        env = {**manifest.get("environment", {}), "started": manifest.get("started"), "command": manifest.get("command")}
        return RunData(run_dir, _frame(run_dir), env, {"run": manifest.get("config", {})})
    return RunData(run_dir, _frame(run_dir), _read_json(run_dir / "environment.json"),
                   _read_toml(run_dir / "config.toml"))


def _run_id(data: RunData) -> str:
    return str(data.config.get("run", {}).get("run_id") or data.run_dir.name)


# ---------------------------------------------------------------- small helpers

def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def _rate(k: int, n: int) -> str:
    """"p (low–high)" with the Wilson 95% interval, or "–" when n = 0."""
    if not n:
        return "–"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.3f} ({lo:.3f}–{hi:.3f})"


def _records(g: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `g` as read from rows.jsonl (what the metric registry reads)."""
    return list(g["_row"]) if "_row" in g else []


RATES = {"declared coverage": "declared_coverage", "empirical coverage": "empirical_coverage",
         "compliance": "compliance"}


def _counts(g: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(k, n) of declared coverage, empirical coverage and compliance over the rows of `g`."""
    rows = _records(g)
    return {label: proportion_counts(METRICS[name], rows) for label, name in RATES.items()}


def _stat(g: pd.DataFrame, metric: str, q: float) -> float | None:
    return aggregate(METRICS[metric], _records(g), q)


def _pool(g: pd.DataFrame, metric: str) -> list[float]:
    return pooled(METRICS[metric], _records(g))


def _excerpt(value: Any, n: int = EXCERPT) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return text if len(text) <= n else text[:n] + "…"


def _by_group(df: pd.DataFrame, groups: list[str]) -> list[tuple[str, pd.DataFrame]]:
    return [(name, df[df["group"] == name]) for name in groups]


# ---------------------------------------------------------------- sections

def _settings_text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False) if isinstance(value, dict) else str(value)


def _engine_items(data: RunData) -> list[tuple[str, str]]:
    items = [(f"engine {name}", f"{info.get('version', '?')} · {_settings_text(info.get('settings', {}))}")
             for name, info in data.env.get("engines", {}).items()]
    if data.rows.empty or "sampler_settings" not in data.rows:
        return items
    firsts = data.rows.drop_duplicates("sampler")
    return items + [(f"sampler {r['sampler']}", _settings_text(r["sampler_settings"])) for _, r in firsts.iterrows()]


def _dataset_text(run: dict[str, Any]) -> str:
    parts = [str(run.get("dataset") or "unknown")]
    subset = run.get("subset")
    if subset:
        parts.append("subset " + (", ".join(map(str, subset)) if isinstance(subset, list) else str(subset)))
    if run.get("split"):
        parts.append(f"split {run['split']}")
    if run.get("limit"):
        parts.append(f"limit {run['limit']}")
    return " · ".join(parts)


def _provenance(data: RunData) -> KeyValues:
    env, run = data.env, data.config.get("run", {})
    model = env.get("model", {})
    command = env.get("command") or env.get("argv")
    items = [("run id", _run_id(data)), ("started", env.get("started") or "unknown"),
             ("cdbench commit", env.get("cdbench_commit") or "unknown"),
             ("command", " ".join(command) if isinstance(command, list) else command or "not recorded"),
             ("model", f"{model.get('model_name') or ''} {model.get('model') or 'unknown'}".strip()),
             ("model sha256", model.get("model_sha256") or "unknown"),
             ("CPU", f"{env.get('cpu_model', 'unknown')} · {env.get('cpu_count', '?')} CPUs · "
                     f"LM threads {model.get('lm_threads', '?')}"),
             ("python", env.get("python") or "unknown"),
             ("dataset", _dataset_text(run)),
             ("protocol / seeds", f"{run.get('protocol', '?')} / {run.get('seeds', '?')}"),
             ("max tokens / temperature", f"{run.get('max_tokens', '?')} / {run.get('temperature', '?')}")]
    return KeyValues("Provenance", [(k, str(v)) for k, v in items] + _engine_items(data))


def _coverage_row(name: str, g: pd.DataFrame, skipped: int) -> list[Any]:
    c = _counts(g)
    return [name, len(g), skipped, *(_rate(*c[m]) for m in c)]


def _latency_row(name: str, g: pd.DataFrame) -> list[Any]:
    rows = _records(g)
    return [name, _stat(g, "compile", 50), _stat(g, "compile", 99), _stat(g, "ttft", 50),
            _stat(g, "tpot", 50), _stat(g, "tpot", 99),
            _stat(g, "mask", 50), _stat(g, "mask", 99), _stat(g, "mask", 99.9),
            per_token_ms(rows, "lm_s"), per_token_ms(rows, "engine_s")]


def _headline(data: RunData) -> list[Section]:
    scored, groups = data.scored, data.groups
    if scored.empty:
        return [Text("Headline", ["This run has no scored rows."])]
    skipped = is_skipped(data.rows)
    cov = [_coverage_row(n, g, int(skipped[data.rows["group"] == n].sum())) for n, g in _by_group(scored, groups)]
    lat = [_latency_row(n, g) for n, g in _by_group(scored, groups)]
    return [
        Table("Headline: coverage and compliance",
              ["engine/sampler", "n", "skipped", "declared coverage", "empirical coverage", "compliance"], cov,
              note="Proportion (Wilson 95% interval). Declared coverage = compile ok / cases; empirical coverage "
                   "= valid output / cases; compliance = valid output / compiled cases. Skipped cases "
                   "(a harness limit) are left out."),
        Table("Headline: latency",
              ["engine/sampler", "compile p50 ms", "compile p99 ms", "TTFT p50 ms", "TPOT p50 ms", "TPOT p99 ms",
               "mask p50 µs", "mask p99 µs", "mask p99.9 µs", "LM ms/token", "engine ms/token"], lat,
              note="Over cases whose compile succeeded; mask percentiles pool every generated token. "
                   "TTFT includes compile and matcher set-up."),
    ]


def _category_counts(data: RunData, col: str, known: list[str]) -> tuple[list[str], dict[str, dict[str, int]]]:
    counts = {n: g[col].astype(str).value_counts().to_dict() for n, g in _by_group(data.rows, data.groups)}
    seen = {c for cs in counts.values() for c in cs}
    cats = [c for c in known if c in seen] + sorted(seen - set(known))
    return cats, counts


def _outcomes(data: RunData) -> list[Section]:
    if data.rows.empty:
        return []
    out: list[Section] = []
    for col, known, label in (("compile_status", [*STATUSES, SKIPPED], "Compile status"),
                              ("finish_reason", [*FINISHES, SKIPPED], "Finish reason")):
        cats, counts = _category_counts(data, col, known)
        rows = [[n, *(counts[n].get(c, 0) for c in cats), sum(counts[n].values())] for n in data.groups]
        out.append(Table(f"{label} counts", ["engine/sampler", *cats, "total"], rows))
        out.append(Figure(f"{label} by engine/sampler",
                          plots.stacked_counts(data.groups, cats, counts, f"{label} (cases)"),
                          f"Cases per {label.lower()}, every row of the run including skipped ones."))
    return out


def _compliance_cell(g: pd.DataFrame) -> str:
    k, n = _counts(g)["compliance"]
    return f"{k / n:.3f} ({k}/{n})" if n else "–"


def _breakdown_table(data: RunData, title: str, keyed: pd.DataFrame, key: str) -> Table:
    keys = keyed[key].value_counts(sort=True)
    order = sorted(keys.index, key=lambda k: (-keys[k], str(k)))
    rows = []
    for value in order:
        sub = keyed[keyed[key] == value]
        rows.append([value, int(sub["task_id"].nunique()) if "task_id" in sub else len(sub),
                     *(_compliance_cell(g) for _, g in _by_group(sub, data.groups))])
    return Table(title, [key, "tasks", *(f"{g} compliance" for g in data.groups)], rows,
                 note="Compliance = valid / compiled cases, as proportion (valid/compiled).")


def _tag_frame(scored: pd.DataFrame) -> pd.DataFrame:
    tags = _col(scored, "tags").fillna("").astype(str).str.split(",")
    exploded = scored.assign(tag=tags).explode("tag")
    exploded["tag"] = exploded["tag"].str.strip()
    return exploded[exploded["tag"] != ""]


def _source_heatmap(data: RunData, scored: pd.DataFrame) -> Figure:
    sources = sorted(scored["source"].astype(str).unique())
    values = []
    for src in sources:
        sub = scored[scored["source"].astype(str) == src]
        values.append([(k / n if n else None) for k, n in
                       (_counts(g)["compliance"] for _, g in _by_group(sub, data.groups))])
    svg = plots.heatmap(sources, data.groups, values, "Compliance per source", "{:.2f}", vmin=0.0, vmax=1.0)
    return Figure("Compliance per source (heatmap)", svg, "n/a: no compiled case of that source.")


def _breakdowns(data: RunData) -> list[Section]:
    scored = data.scored
    if scored.empty:
        return []
    out: list[Section] = []
    if "source" in scored:
        scored = scored.assign(source=scored["source"].fillna("").astype(str))
        out += [_breakdown_table(data, "Compliance per source", scored, "source"), _source_heatmap(data, scored)]
    tagged = _tag_frame(scored)
    if not tagged.empty:
        out.append(_breakdown_table(data, "Compliance per feature tag", tagged, "tag"))
    return out


def _case_rows(df: pd.DataFrame, extra: list[str]) -> list[list[Any]]:
    base = ["row_id", "task_id", "group", "seed"]
    return [[r.get(c) for c in base] + [_extra_cell(r, c) for c in extra] for _, r in df.iterrows()]


def _extra_cell(r: pd.Series, col: str) -> Any:
    if col in ("ttft_s", "tgt_s"):
        v = r.get(col)
        return None if v is None or pd.isna(v) else float(v) * 1e3
    return _excerpt(r.get(col))


def _shown(n: int) -> str:
    return f"{n}, the first {WORST_N} in run order shown" if n > WORST_N else f"{n}, all shown"


def _worst(data: RunData) -> list[Section]:
    scored = data.scored
    if scored.empty:
        return []
    base = ["row", "task", "engine/sampler", "seed"]
    invalid = scored[(_col(scored, "dc") == 1) & (_col(scored, "ec") != 1)]
    failed = scored[scored["compile_status"] != "ok"]
    out = [Table("Invalid outputs", [*base, "finish", "validation error", "output (excerpt)"],
                 _case_rows(invalid.head(WORST_N), ["finish_reason", "validation_error", "output_text"]),
                 note=f"Compiled cases whose output failed validation: {_shown(len(invalid))}.",
                 numeric={0, 3}),
           Table("Compile failures", [*base, "status", "compile error"],
                 _case_rows(failed.head(WORST_N), ["compile_status", "compile_error"]),
                 note=f"Cases whose grammar did not compile: {_shown(len(failed))}.", numeric={0, 3})]
    for col, label in (("ttft_s", "TTFT"), ("tgt_s", "total time")):
        if col in scored:
            slow = scored.assign(_t=pd.to_numeric(scored[col], errors="coerce")).nlargest(WORST_N // 3, "_t")
            out.append(Table(f"Slowest cases by {label}", [*base, f"{label} ms", "finish", "output (excerpt)"],
                             _case_rows(slow, [col, "finish_reason", "output_text"]), numeric={0, 3, 4}))
    return out


def _plots(data: RunData) -> list[Section]:
    scored, groups = data.scored, data.groups
    if scored.empty:
        return []
    by = _by_group(scored, groups)
    metrics = list(RATES)
    rates = {n: [_counts(g)[m] for m in metrics] for n, g in by}
    compile_ms = {n: _pool(g, "compile") for n, g in by}
    masks = {n: _pool(g, "mask") for n, g in by}
    tpot = {n: _pool(g, "tpot") for n, g in by}
    points = [(n, _stat(g, "mask", 99), k / c) for n, g in by for k, c in [_counts(g)["compliance"]] if c and masks[n]]
    return [
        Figure("Coverage and compliance", plots.rate_bars(metrics, rates, "Coverage and compliance"),
               "Bars: proportion of cases; error bars: Wilson 95% interval."),
        Figure("Compile time: fraction slower", plots.fraction_slower(compile_ms, "ms", "Grammar compile time"),
               "Fraction of successful compiles taking at least t (log-log)."),
        Figure("Mask time: fraction slower", plots.fraction_slower(masks, "µs", "Per-token mask computation"),
               "Fraction of token masks taking at least t, all tokens pooled (log-log)."),
        Figure("Mask time: percentile ladder", plots.percentile_ladder(masks, "µs per token mask", "Mask time percentiles"),
               "Each bar is annotated with its multiple of the fastest engine/sampler at that percentile."),
        Figure("Time per output token", plots.box_plots(tpot, "ms per token", "TPOT per case"),
               "TPOT = (generation time − time to first token) / (output tokens − 1), one value per case."),
        Figure("Compliance vs mask p99", plots.pareto(points, "mask p99 (µs)", "compliance", "Compliance vs mask p99"),
               "Up and to the left is better; the line joins the pairs no other pair beats on both."),
    ]


def _step_evals_of(g: pd.DataFrame) -> list[float]:
    return [float(x) for r in _records(g) for x in (r.get("step_evals") or []) if x is not None]


def _step_evals(data: RunData) -> list[Section]:
    """Constraint evaluations per generation step (each particle's step under SMC), per engine/sampler:
    the whole vocabulary for token masking, a handful of checks for AWRS when the LM agrees with the
    constraint. Only when some row recorded them."""
    scored = data.scored
    if scored.empty:
        return []
    series = {n: _step_evals_of(g) for n, g in _by_group(scored, data.groups)}
    series = {n: v for n, v in series.items() if v}
    if not series:
        return []
    rows = []
    for n, g in _by_group(scored, data.groups):
        v = np.asarray(series.get(n, []), dtype=float)
        if not v.size:
            continue
        cases = sum(1 for r in _records(g) if r.get("step_evals"))
        rows.append([n, cases, int(v.size), float(v.mean()), *(float(np.percentile(v, q)) for q in (50, 90, 99)),
                     float(v.max()), float(np.mean(v == 0)), float(v.sum())])
    return [
        Table("Constraint evaluations per step",
              ["engine/sampler", "cases", "steps", "mean", "p50", "p90", "p99", "max", "share at 0", "total"], rows,
              note="Evaluations of the constraint (tokens checked) per generation step, pooled over the steps "
                   "of every scored case; under SMC each particle's step counts once. Token masking checks the "
                   "whole vocabulary at every step; ASAp's revisited trie nodes cost 0."),
        Figure("Constraint evaluations per step: distribution",
               plots.step_ecdf(series, "evaluations", "Constraint evaluations per step"),
               "Fraction of steps needing at most x evaluations (ECDF, every step of every scored case); the "
               "legend gives each engine/sampler's mean, p99 and share of steps at 0 evaluations."),
    ]


def _links(data: RunData) -> Links:
    present = [(name, name) for name in ARTIFACTS if (data.run_dir / name).exists()]
    return Links("Files of this run", present)
