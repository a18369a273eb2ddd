"""`cdbench quality RUN`: accuracy on the quality tasks, constrained against unconstrained.

Per (dataset, engine, sampler): accuracy with a Wilson interval, over every case that was
not skipped by a harness limit. A case with nothing to judge (the engine did not compile, so
nothing was generated) counts as wrong, as JSONSchemaBench counts it; how many there were is
reported beside. Per engine against the baseline (default `unconstrained`), paired by task
and seed: the accuracy difference with a paired bootstrap interval and McNemar's exact p
(harness.analysis.stats, scipy underneath).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from ..reporting.markdown import row as md_row
from .stats import NAN, mcnemar_exact, paired_bootstrap_diff, wilson_interval


@dataclass
class Accuracy:
    dataset: str
    engine: str
    sampler: str
    n: int
    correct: int
    accuracy: float
    low: float
    high: float
    valid: int        # outputs valid against the output schema (compliance)
    not_judged: int   # cases with nothing generated, counted wrong


@dataclass
class Difference:
    dataset: str
    engine: str
    baseline: str
    sampler: str
    n_pairs: int
    diff: float       # accuracy(engine) - accuracy(baseline), paired cases only
    low: float
    high: float
    engine_only: int  # pairs only the engine got right
    baseline_only: int
    mcnemar_p: float


def quality_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quality cases of a run: rows with a `correct` field, harness-skipped cases left out."""
    return [r for r in rows if "correct" in r and r.get("finish_reason") != "skipped"]


def _dataset(row: dict[str, Any]) -> str:
    return row["source"]


def accuracies(rows: list[dict[str, Any]]) -> list[Accuracy]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(_dataset(r), r["engine"], r["sampler"])].append(r)
    out = []
    for (dataset, engine, sampler), rs in sorted(groups.items()):
        k = sum(r["correct"] is True for r in rs)
        low, high = wilson_interval(k, len(rs))
        out.append(Accuracy(dataset, engine, sampler, len(rs), k, k / len(rs), low, high,
                            sum(bool(r.get("valid")) for r in rs), sum(r["correct"] is None for r in rs)))
    return out


def _pairs(rows: list[dict[str, Any]], engine: str, baseline: str) -> tuple[list[float], list[float]]:
    by_case: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by_case[(r["task_id"], r["seed"])][r["engine"]] = 1.0 if r["correct"] is True else 0.0
    keys = sorted(k for k, v in by_case.items() if engine in v and baseline in v)
    return [by_case[k][baseline] for k in keys], [by_case[k][engine] for k in keys]


def differences(rows: list[dict[str, Any]], baseline: str = "unconstrained", seed: int = 0,
                n_resamples: int = 2000) -> list[Difference]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(_dataset(r), r["sampler"])].append(r)
    out = []
    for (dataset, sampler), rs in sorted(groups.items()):
        engines = sorted({r["engine"] for r in rs} - {baseline})
        if baseline not in {r["engine"] for r in rs}:
            continue
        for engine in engines:
            base, new = _pairs(rs, engine, baseline)
            diff, low, high = paired_bootstrap_diff(base, new, seed, n_resamples) if base else (NAN, NAN, NAN)
            engine_only = sum(n > b for b, n in zip(base, new))
            baseline_only = sum(b > n for b, n in zip(base, new))
            out.append(Difference(dataset, engine, baseline, sampler, len(base), diff, low, high,
                                  engine_only, baseline_only, mcnemar_exact(baseline_only, engine_only)))
    return out


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def markdown(accs: list[Accuracy], diffs: list[Difference]) -> str:
    lines = ["## Quality: accuracy (95 % Wilson interval)", "",
             "| dataset | engine | sampler | n | correct | accuracy % | interval % | valid (schema) | not judged |",
             "|---|---|---|---:|---:|---:|---|---:|---:|"]
    for a in accs:
        lines.append(md_row([a.dataset, a.engine, a.sampler, a.n, a.correct, _pct(a.accuracy),
                             f"{_pct(a.low)}–{_pct(a.high)}", f"{a.valid}/{a.n}", a.not_judged]))
    lines += ["", "## Constrained minus unconstrained (paired by task and seed; bootstrap 95 % interval; McNemar exact p)", "",
              "| dataset | engine | baseline | sampler | pairs | difference (points) | interval (points) | engine only | baseline only | McNemar p |",
              "|---|---|---|---|---:|---:|---|---:|---:|---:|"]
    for d in diffs:
        lines.append(md_row([d.dataset, d.engine, d.baseline, d.sampler, d.n_pairs, _pct(d.diff),
                             f"{_pct(d.low)} to {_pct(d.high)}", d.engine_only, d.baseline_only, f"{d.mcnemar_p:.3g}"]))
    if not diffs:
        lines.append("(no engine shares cases with the baseline in this run)")
    return "\n".join(lines) + "\n"


def quality_report(run_dir: str | Path, baseline: str = "unconstrained", seed: int = 0,
                   n_resamples: int = 2000) -> tuple[list[Accuracy], list[Difference]]:
    from ..errors import ConfigError
    from ..results.rundir import RunDir

    rows = quality_rows(RunDir.open(run_dir).rows())
    if not rows:
        raise ConfigError(f"{run_dir}: no quality cases (rows with `correct`); run a quality-* dataset first")
    return accuracies(rows), differences(rows, baseline, seed, n_resamples)


def write_quality(out: Path, accs: list[Accuracy], diffs: list[Difference]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(markdown(accs, diffs), encoding="utf-8")
    payload = {"accuracy": [asdict(a) for a in accs], "differences": [asdict(d) for d in diffs]}
    (out / "quality.json").write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n", encoding="utf-8")
