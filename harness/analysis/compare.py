"""Compare two runs (or two configurations of one run), metric by metric, group by group.

Cases are paired by metrics.case_key within a group (engine and sampler for run, engine for
replay). Proportions: each side's k of n with a Wilson interval, the paired difference with a
bootstrap interval, the exact McNemar test on the discordant pairs, and the cases that flipped.
Latencies: the NEW/BASE ratio of p50, p90 and p99 with a bootstrap interval that resamples cases,
and the Wilcoxon signed-rank test on per-case log ratios (Mann-Whitney when cases cannot be
paired); each paired case's (BASE, NEW) value is kept in `Comparison.pairs` (compare.json
"pairs"). All p-values of a comparison are adjusted together (Benjamini-Hochberg); a change is
marked `+` (worse) or `-` (better) only when it is past the threshold and significant, `~` when
past the threshold only, `x` when the runs are not comparable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..results.metrics import PERCENTILES, Metric, case_key, group_key, metrics_for, samples, stat_name
from ..results.rundir import RunDir, fingerprint_differences
from . import stats

FORMAT_VERSION = 1


@dataclass
class Check:
    """One statistic of one metric for one group."""
    group: str
    statistic: str
    metric: str
    unit: str
    higher_is_better: bool
    relative: bool                  # change is a ratio NEW/BASE (latency) or a difference (proportion)
    base: float | None
    new: float | None
    change: float | None
    low: float | None
    high: float | None
    p: float | None
    test: str
    n_base: int
    n_new: int
    n_paired: int
    base_ci: tuple[float, float] | None = None
    new_ci: tuple[float, float] | None = None
    p_adjusted: float | None = None
    mark: str = " "
    low_power: bool = False


@dataclass
class Flip:
    group: str
    case: str
    mark: str                       # "!" good -> bad, "*" bad -> good
    metric: str
    message: str


@dataclass
class Comparison:
    kind: str
    base: str
    new: str
    comparable: bool
    differences: list[str]          # comparable fingerprint parts that differ
    settings: list[str]             # settings that differ (what is being compared)
    checks: list[Check] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    unpaired_groups: list[str] = field(default_factory=list)
    # latency metric -> group -> (BASE, NEW) per paired case in case-key order (a pooled metric's
    # per-case mean): the points of compare.html's per-case scatter
    pairs: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    verdict: str = "NOT SIGNIFICANTLY CHANGED"
    factor: float = 1.10
    delta: float = 0.02
    alpha: float = 0.05
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Options:
    factor: float = 1.10            # a latency change past x1.10 (or /1.10) counts
    delta: float = 0.02             # a proportion change of 2 points counts
    alpha: float = 0.05
    seed: int = 0
    n_resamples: int = 1000
    allow_mismatch: bool = False
    cross: tuple[str, str, str] | None = None   # (field, base value, new value) inside one run


def _groups(kind: str, rows: list[dict[str, Any]], cross: tuple[str, str, str] | None, side: int) -> dict[str, dict]:
    """group label -> {case key: row}."""
    out: dict[str, dict] = {}
    for r in rows:
        if cross:
            fld, a, b = cross
            if r.get(fld) != (a if side == 0 else b):
                continue
            r = {**r, fld: f"{a}:{b}"}
        out.setdefault("/".join(map(str, group_key(kind, r))), {})[case_key(kind, r)] = r
    return out


def _case_label(key: tuple[Any, ...]) -> str:
    return "/".join(str(k) for k in key if k is not None)


def _proportion(group: str, m: Metric, base: dict, new: dict, o: Options) -> tuple[Check, list[Flip]]:
    bv = {k: m.value(r) for k, r in base.items()}
    nv = {k: m.value(r) for k, r in new.items()}
    bv = {k: v for k, v in bv.items() if v is not None}
    nv = {k: v for k, v in nv.items() if v is not None}
    paired = sorted(set(bv) & set(nv), key=str)
    kb, kn = sum(bv.values()), sum(nv.values())
    b_only = sum(1 for k in paired if bv[k] and not nv[k])
    n_only = sum(1 for k in paired if nv[k] and not bv[k])
    diff, low, high = (stats.paired_bootstrap_diff([bv[k] for k in paired], [nv[k] for k in paired], o.seed,
                                                   o.n_resamples) if paired else (None, None, None))
    check = Check(group, m.name, m.name, "", m.higher_is_better, False,
                  kb / len(bv) if bv else None, kn / len(nv) if nv else None, diff, low, high,
                  stats.mcnemar_exact(b_only, n_only) if paired else None, "mcnemar", len(bv), len(nv), len(paired),
                  stats.wilson_interval(kb, len(bv)), stats.wilson_interval(kn, len(nv)),
                  low_power=stats.low_power("mcnemar", b_only + n_only, o.alpha))
    flips = []
    for k in paired:
        if bv[k] != nv[k]:
            worse = bool(bv[k]) == m.higher_is_better
            r = new[k]
            msg = r.get("validation_error") or r.get("compile_error") or r.get("error") or r.get("bucket") or ""
            flips.append(Flip(group, _case_label(k), "!" if worse else "*", m.name, str(msg)[:200]))
    return check, flips


def _case_values(m: Metric, rows: dict) -> dict:
    values = {k: m.value(r) for k, r in rows.items()}
    return {k: samples(m, v) for k, v in values.items() if v is not None}


def _latency(group: str, m: Metric, base: dict, new: dict, o: Options) -> list[Check]:
    bv, nv = _case_values(m, base), _case_values(m, new)
    paired = sorted(set(bv) & set(nv), key=str)
    if len(paired) >= 2:
        b_cases, n_cases, is_paired = [bv[k] for k in paired], [nv[k] for k in paired], True
        p = stats.wilcoxon_log_ratio([np.mean(c) for c in b_cases], [np.mean(c) for c in n_cases])
        test, lp = "wilcoxon", stats.low_power("wilcoxon", len(paired), o.alpha)
    else:
        b_cases, n_cases, is_paired = list(bv.values()), list(nv.values()), False
        p = stats.mann_whitney([np.mean(c) for c in b_cases], [np.mean(c) for c in n_cases])
        test, lp = "mannwhitney", stats.low_power("mannwhitney", len(b_cases), o.alpha, len(n_cases))
    checks = []
    pool_b = np.concatenate([np.asarray(c, float) for c in b_cases]) if b_cases else np.array([])
    pool_n = np.concatenate([np.asarray(c, float) for c in n_cases]) if n_cases else np.array([])
    for q in PERCENTILES:
        ratio, low, high = stats.percentile_ratio(b_cases, n_cases, q, o.seed, is_paired, o.n_resamples) \
            if b_cases and n_cases else (None, None, None)
        checks.append(Check(group, stat_name(m, q), m.name, m.unit, m.higher_is_better, True,
                            float(np.percentile(pool_b, q)) if pool_b.size else None,
                            float(np.percentile(pool_n, q)) if pool_n.size else None, ratio, low, high,
                            p if b_cases and n_cases else None, test, len(bv), len(nv), len(paired), low_power=lp))
    return checks


def case_pairs(kind: str, base_rows: list[dict], new_rows: list[dict],
               cross: tuple[str, str, str] | None = None) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per latency metric and group, the (BASE, NEW) value of every case both sides have (paired by
    case_key, in the order the tests pair them); a pooled metric's case value is its mean, the value
    the Wilcoxon test compares. Metrics and groups without a paired case are left out."""
    bg, ng = _groups(kind, base_rows, cross, 0), _groups(kind, new_rows, cross, 1)
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for m in metrics_for(kind):
        if not m.is_latency:
            continue
        per_group = {}
        for group in sorted(set(bg) & set(ng)):
            bv, nv = _case_values(m, bg[group]), _case_values(m, ng[group])
            paired = sorted(set(bv) & set(nv), key=str)
            if paired:
                per_group[group] = [(float(np.mean(bv[k])), float(np.mean(nv[k]))) for k in paired]
        if per_group:
            out[m.name] = per_group
    return out


def _mark(c: Check, o: Options, comparable: bool) -> str:
    if not comparable:
        return "x"
    if c.change is None or c.change != c.change:
        return " "
    threshold = o.factor if c.relative else o.delta
    p = c.p_adjusted if c.p_adjusted is not None else float("nan")
    # The test is per metric (per-case values); a statistic whose own interval still holds "no
    # change" (ratio 1, difference 0) is not called significant whatever the test says.
    none = 1.0 if c.relative else 0.0
    if c.low is not None and c.high is not None and c.low == c.low and c.low <= none <= c.high:
        p = float("nan")
    return stats.verdict_mark(c.change, threshold, p, o.alpha, c.higher_is_better, c.relative)


def compare_rows(kind: str, base_rows: list[dict], new_rows: list[dict], o: Options, comparable: bool = True) -> tuple[
        list[Check], list[Flip], list[str]]:
    """Every check of every group both sides have, with adjusted p-values and marks."""
    bg, ng = _groups(kind, base_rows, o.cross, 0), _groups(kind, new_rows, o.cross, 1)
    checks: list[Check] = []
    flips: list[Flip] = []
    for group in sorted(set(bg) & set(ng)):
        for m in metrics_for(kind):
            if m.is_latency:
                checks += _latency(group, m, bg[group], ng[group], o)
            else:
                c, f = _proportion(group, m, bg[group], ng[group], o)
                checks.append(c)
                flips += f
    tested = [i for i, c in enumerate(checks) if c.p is not None]
    for i, padj in zip(tested, stats.bh_adjust([checks[i].p for i in tested])):
        checks[i].p_adjusted = padj
    for c in checks:
        c.mark = _mark(c, o, comparable)
    unpaired = sorted(set(bg) ^ set(ng))
    return checks, flips, unpaired


def verdict(checks: list[Check]) -> str:
    marks = {c.mark for c in checks}
    if "+" in marks:
        return "PERFORMANCE DECREASED"
    if "-" in marks:
        return "PERFORMANCE INCREASED"
    return "NOT SIGNIFICANTLY CHANGED"


def compare(base: RunDir, new: RunDir, o: Options) -> Comparison:
    if base.kind != new.kind:
        raise ConfigError(f"cannot compare a {base.kind} ({base.path}) with a {new.kind} ({new.path})")
    if base.kind == "fidelity":
        raise ConfigError("compare takes run and replay results; fidelity runs have no per-case rows to pair")
    fb, fn = base.manifest.fingerprint, new.manifest.fingerprint
    same = fb.get("comparable_digest") == fn.get("comparable_digest")
    comp = Comparison(base.kind, base.run_id, new.run_id, same or o.allow_mismatch,
                      fingerprint_differences(fb, fn), fingerprint_differences(fb, fn, "settings"),
                      factor=o.factor, delta=o.delta, alpha=o.alpha)
    base_rows, new_rows = base.rows(), (base.rows() if base.path == new.path else new.rows())
    comp.checks, comp.flips, comp.unpaired_groups = compare_rows(base.kind, base_rows, new_rows, o, comp.comparable)
    comp.pairs = case_pairs(base.kind, base_rows, new_rows, o.cross)
    comp.verdict = verdict(comp.checks) if comp.comparable else "NOT COMPARABLE"
    return comp
