"""The metric registry: every number that compare, gate, leaderboard and report show, declared once.

A metric has a name, a unit, a direction (higher or lower is better), a kind and the run kinds it
applies to, and reads one value per row:
- proportion: 1 / 0 per case (None = not in the denominator); aggregated as k of n with a Wilson
  interval; compared per paired case (McNemar, paired bootstrap of the difference);
- case_latency: one time per case (a compile, a TTFT); aggregated as percentiles over cases;
- pooled_latency: a list of times per case (per-token mask times), pooled over every token of
  every case for the percentiles, while statistics resample whole cases.
Latency metrics are used through their percentile statistics, named `<stem>_p<q>_<unit>`
(mask_p99_us, compile_p50_ms); a proportion's statistic is its own name (compliance).
Rows a harness limit skipped (status "skipped") are in no metric.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str                      # "" for proportions
    higher_is_better: bool
    kind: str                      # proportion | case_latency | pooled_latency
    run_kinds: tuple[str, ...]
    value: Callable[[dict[str, Any]], Any]
    description: str

    @property
    def is_latency(self) -> bool:
        return self.kind != "proportion"


def _skipped(r: dict[str, Any]) -> bool:
    return r.get("compile_status") == "skipped" or r.get("finish_reason") == "skipped"


def _scored(f: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda r: None if _skipped(r) else f(r)


def _ms(key: str) -> Callable[[dict[str, Any]], Any]:
    return _scored(lambda r: r[key] * 1000.0 if r.get("compile_status") == "ok" and r.get(key) is not None else None)


def _replay_count(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: None if r.get("status") != "done" or r.get("compile_status") != "ok" else int(bool(r.get(key)))


METRICS: dict[str, Metric] = {m.name: m for m in [
    # cdbench run: one row per case (task x engine x sampler x seed)
    Metric("declared_coverage", "", True, "proportion", ("run",), _scored(lambda r: int(r["dc"] == 1)),
           "the engine compiled the task"),
    Metric("empirical_coverage", "", True, "proportion", ("run",), _scored(lambda r: int(bool(r["valid"]))),
           "valid output over all cases"),
    Metric("compliance", "", True, "proportion", ("run",),
           _scored(lambda r: int(bool(r["valid"])) if r.get("dc") == 1 else None), "valid output over compiled cases"),
    Metric("compile", "ms", False, "case_latency", ("run",), _ms("compile_s"), "grammar compile time per case"),
    Metric("ttft", "ms", False, "case_latency", ("run",), _ms("ttft_s"),
           "time to first token: compile, load, matcher and the first step"),
    Metric("tpot", "ms", False, "case_latency", ("run",),
           _scored(lambda r: r.get("tpot_ms") if r.get("compile_status") == "ok" else None), "time per output token"),
    Metric("mask", "us", False, "pooled_latency", ("run",),
           _scored(lambda r: r.get("mask_times_us") or None), "time to compute one token mask"),
    # cdbench replay: one row per (engine, schema)
    Metric("pass", "", True, "proportion", ("replay",), lambda r: int(r.get("bucket") == "pass"),
           "every labelled instance got the right verdict"),
    Metric("valid_rejected", "", False, "proportion", ("replay",), _replay_count("valid_rejected"),
           "a compiled schema refused a valid instance (engine bug, not policy)"),
    Metric("invalid_accepted", "", False, "proportion", ("replay",), _replay_count("invalid_accepted"),
           "a compiled schema accepted an invalid instance"),
    Metric("compile_cold", "ms", False, "case_latency", ("replay",),
           lambda r: r["cold_compile_s"] * 1000.0 if r.get("compile_status") == "ok" and r.get("cold_compile_s") else None,
           "cold compile time per schema"),
    Metric("replay_mask", "us", False, "pooled_latency", ("replay",),
           lambda r: r.get("mask_us") or None if r.get("status") == "done" else None,
           "time to compute one token mask while forcing the instances"),
]}

_STAT = re.compile(r"^(?P<stem>[a-z_]+)_p(?P<q>\d+(?:\.\d+)?)_(?P<unit>ms|us)$")


def stat_name(m: Metric, q: float) -> str:
    """A latency statistic's name: mask_p99_us, mask_p99.9_us."""
    return f"{m.name}_p{q:g}_{m.unit}"


def samples(m: Metric, value: Any) -> list[float]:
    """One row's value of a latency metric as a list (a pooled metric's per-token times, or one time)."""
    return [float(x) for x in value] if m.kind == "pooled_latency" else [float(value)]


def pooled(m: Metric, rows: Iterable[dict[str, Any]]) -> list[float]:
    """Every sample of a latency metric over rows (a pooled metric's tokens, a case metric's cases)."""
    return [x for v in (m.value(r) for r in rows) if v is not None for x in samples(m, v)]


def aggregate(m: Metric, rows: Iterable[dict[str, Any]], q: float | None = None) -> float | None:
    """A metric over rows: a proportion's mean, or the q-th percentile of a latency pooled over rows."""
    if q is not None:
        pool = pooled(m, rows)
        return float(np.percentile(pool, q)) if pool else None
    values = [v for v in (m.value(r) for r in rows) if v is not None]
    return float(np.mean(values)) if values else None


def proportion_counts(m: Metric, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """A proportion over rows as (k, n): the rows counted as 1, and the rows in its denominator."""
    values = [v for v in (m.value(r) for r in rows) if v is not None]
    return int(sum(values)), len(values)


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def per_token_ms(rows: Iterable[dict[str, Any]], key: str) -> float | None:
    """A time in seconds (`key`: lm_s, engine_s) per output token, in ms: summed over the scored rows
    whose compile succeeded and divided by their output tokens; None when they produced no token."""
    total_s = tokens = 0.0
    for r in rows:
        if _skipped(r) or r.get("compile_status") != "ok":
            continue
        s, n = _number(r.get(key)), _number(r.get("output_tokens"))
        if s is not None and n is not None:
            total_s, tokens = total_s + s, tokens + n
    return 1000.0 * total_s / tokens if tokens else None


def metrics_for(kind: str) -> list[Metric]:
    return [m for m in METRICS.values() if kind in m.run_kinds]


def statistic_names(kind: str) -> list[str]:
    """Every name a gate threshold or a compare row can use for this run kind."""
    out = []
    for m in metrics_for(kind):
        out += [stat_name(m, q) for q in PERCENTILES] if m.is_latency else [m.name]
    return out


def resolve(name: str, kind: str) -> tuple[Metric, float | None]:
    """A statistic name -> (metric, percentile or None); KeyError with the known names otherwise."""
    if name in METRICS and not METRICS[name].is_latency and kind in METRICS[name].run_kinds:
        return METRICS[name], None
    m = _STAT.match(name)
    if m and m["stem"] in METRICS and METRICS[m["stem"]].unit == m["unit"] and kind in METRICS[m["stem"]].run_kinds:
        return METRICS[m["stem"]], float(m["q"])
    raise KeyError(f"unknown metric {name!r} for a {kind} (known: {', '.join(statistic_names(kind))})")


def group_key(kind: str, row: dict[str, Any]) -> tuple[str, ...]:
    """The configuration a row belongs to: (engine, sampler) for run, (engine,) for replay and fidelity."""
    return (row["engine"], row["sampler"]) if kind == "run" else (row.get("engine") or "?",)


def case_key(kind: str, row: dict[str, Any]) -> tuple[Any, ...]:
    """What pairs a row with its counterpart in another run (its group aside)."""
    if kind == "run":
        return (row.get("source"), row["task_id"], row.get("seed"))
    return (row.get("group"), row["task_id"])
