"""`cdbench export github-benchmark`: a run's statistics for benchmark-action/github-action-benchmark.

The action's custom tools read a JSON array of {name, unit, value, range, extra}; `customSmallerIsBetter`
and `customBiggerIsBetter` differ only in the direction, so a run is written to two files:
- benchmark-smaller.json: every statistic whose metric is lower-is-better (latencies, and
  proportions such as invalid_accepted);
- benchmark-bigger.json: every higher-is-better statistic (compliance, pass, ...).
The direction is the metric registry's `higher_is_better`, never decided here.

Which statistics: every name of `metrics.statistic_names(kind)` (what gate and compare use) for every
group (`metrics.group_key`: engine/sampler for run, engine for replay), named `<group> <statistic>`
(`xgrammar/masking mask_p99_us`) so that the action's history lines up across runs, sorted by name.
Values: a proportion as a fraction 0..1 with its Wilson 95% interval (analysis.stats); a latency
percentile in the metric's unit with a 95% percentile-bootstrap interval that resamples whole cases
(analysis.stats.percentile_interval, seed 0). A statistic with no value is left out
(the action rejects nulls) and counted. `extra` carries n, the run id, the engine version and the
fingerprint's comparable digest.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results.metrics import Metric, aggregate, group_key, proportion_counts, resolve, samples, statistic_names
from ..results.rundir import RunDir
from . import stats

SMALLER_FILE = "benchmark-smaller.json"      # tool: customSmallerIsBetter
BIGGER_FILE = "benchmark-bigger.json"        # tool: customBiggerIsBetter
PROPORTION_UNIT = "fraction"
SEED = 0
N_RESAMPLES = 1000                           # as compare's bootstrap
KINDS = ("run", "replay")


@dataclass
class Export:
    """The entries of both files and the statistics left out for having no value."""
    smaller: list[dict[str, Any]] = field(default_factory=list)
    bigger: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _groups(kind: str, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """group label (engine/sampler, engine) -> its rows."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault("/".join(map(str, group_key(kind, r))), []).append(r)
    return out


def _engine_version(rd: RunDir, rows: list[dict[str, Any]]) -> str:
    """The rows' engine_version (run rows carry it), else the manifest's environment.engines[name].version."""
    versions = sorted({str(r["engine_version"]) for r in rows if r.get("engine_version")})
    if versions:
        return ", ".join(versions)
    engine = str(rows[0].get("engine") or "") if rows else ""
    info = (rd.manifest.environment.get("engines") or {}).get(engine) or {}
    return str(info.get("version") or "unknown") if isinstance(info, dict) else "unknown"


def _num(x: float, unit: str) -> str:
    if unit == PROPORTION_UNIT:
        return f"{x:.4f}"
    return f"{x:.5g}" if abs(x) < 1e5 else f"{x:.0f}"


def _range(low: float | None, high: float | None, unit: str) -> str | None:
    """'low–high', or None when the interval is undefined (n == 0, fewer than 2 cases)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return f"{_num(low, unit)}{stats.EN_DASH}{_num(high, unit)}"


def _proportion(m: Metric, rows: list[dict[str, Any]]) -> tuple[float | None, str | None, str]:
    """(fraction, Wilson range, n text) of a proportion over the rows that score it."""
    k, n = proportion_counts(m, rows)
    if n == 0:
        return None, None, ""
    low, high = stats.wilson_interval(k, n)
    return k / n, _range(low, high, PROPORTION_UNIT), f"{k} of {n} cases; 95% Wilson"


def _latency(m: Metric, q: float, rows: list[dict[str, Any]]) -> tuple[float | None, str | None, str]:
    """(percentile, bootstrap range, n text) of a latency statistic over the rows that have a value."""
    cases = [samples(m, v) for v in (m.value(r) for r in rows) if v is not None]
    value = aggregate(m, rows, q)
    if value is None:
        return None, None, ""
    _, low, high = stats.percentile_interval(cases, q, SEED, N_RESAMPLES)
    n = f"{len(cases)} cases" + (f", {sum(map(len, cases))} samples" if m.kind == "pooled_latency" else "")
    return value, _range(low, high, m.unit), f"{n}; 95% bootstrap over cases"


def _entry(rd: RunDir, group: str, statistic: str, rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """One statistic of one group as an action entry (None when it has no value), and its direction."""
    m, q = resolve(statistic, rd.kind)
    unit = m.unit if m.is_latency else PROPORTION_UNIT
    value, rng, n = _latency(m, q, rows) if q is not None else _proportion(m, rows)
    if value is None or not math.isfinite(value):
        return None, m.higher_is_better
    extra = "\n".join([f"n: {n}", f"run: {rd.run_id}", f"engine: {group.split('/')[0]} {_engine_version(rd, rows)}",
                       f"comparable_digest: {rd.manifest.fingerprint.get('comparable_digest') or 'none'}"])
    entry: dict[str, Any] = {"name": f"{group} {statistic}", "unit": unit, "value": value}
    if rng is not None:
        entry["range"] = rng
    entry["extra"] = extra
    return entry, m.higher_is_better


def export_run(rd: RunDir) -> Export:
    """Every statistic of the registry for every group of the run, split by direction, sorted by name."""
    if rd.kind == "fidelity":
        raise ConfigError(f"{rd.path}: export covers run and replay results; this is a fidelity run")
    if rd.kind not in KINDS:
        raise ConfigError(f"{rd.path}: export covers run and replay results; this is a {rd.kind!r} run")
    rows = rd.rows()
    if not rows:
        raise ConfigError(f"{rd.path}: no rows to export")
    try:
        groups = _groups(rd.kind, rows)
    except KeyError as exc:
        raise ConfigError(f"{rd.path}: a row has no field {exc}") from None
    out = Export()
    for group, group_rows in sorted(groups.items()):
        for statistic in statistic_names(rd.kind):
            entry, higher = _entry(rd, group, statistic, group_rows)
            if entry is None:
                out.skipped.append(f"{group} {statistic}")
            else:
                (out.bigger if higher else out.smaller).append(entry)
    for entries in (out.smaller, out.bigger, out.skipped):
        entries.sort(key=lambda e: e["name"] if isinstance(e, dict) else e)
    return out


def write_export(export: Export, out_dir: Path) -> tuple[Path, Path]:
    """benchmark-smaller.json and benchmark-bigger.json in out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / SMALLER_FILE, out_dir / BIGGER_FILE
    for path, entries in zip(paths, (export.smaller, export.bigger)):
        path.write_text(json.dumps(entries, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return paths
