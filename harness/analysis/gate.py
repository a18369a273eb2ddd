"""`cdbench gate`: a regression gate with exit codes for CI.

Thresholds (flags or a gate.toml with tables [thresholds], [min], [max]):
- relative change of a latency statistic: `mask_p99_us:+20%` fails when NEW/BASE >= 1.20;
- absolute change of a proportion: `compliance:-0.02` fails when it got worse by 0.02 or more;
- bounds with no baseline: `--min compliance=0.95`, `--max invalid_accepted=0`.
"Worse" comes from the metric registry, so an improvement never fails. A change check fails only
when it is past its threshold and significant (BH-adjusted p < alpha; `--no-stats` drops the
test). Exit codes: 0 passed, 1 a check failed, 2 usage or policy error, 3 not comparable or
missing (fingerprints differ, no rows, fewer than 90% of the baseline's cases paired).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..results.metrics import aggregate, case_key, group_key, resolve
from ..results.rundir import RunDir, fingerprint_differences
from .compare import Check, Options, compare_rows

PASSED, FAILED, USAGE, NOT_COMPARABLE = 0, 1, 2, 3
MIN_PAIRED = 0.90
_CHANGE = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*(%?)\s*$")


class NotComparable(Exception):
    """Exit 3: the runs cannot be gated against each other."""


@dataclass
class Threshold:
    statistic: str
    form: str                       # relative | absolute | min | max
    value: float                    # factor (1.20) for relative, delta for absolute, the bound for min/max
    text: str


@dataclass
class GateCheck:
    statistic: str
    group: str
    threshold: str
    form: str
    verdict: str                    # pass | fail | skipped
    baseline: float | None = None
    current: float | None = None
    change: float | None = None     # ratio (relative) or difference (absolute)
    low: float | None = None
    high: float | None = None
    p: float | None = None
    p_adjusted: float | None = None
    message: str = ""
    seconds: float = 0.0


@dataclass
class GateResult:
    current: str
    baseline: str | None
    checks: list[GateCheck] = field(default_factory=list)
    paired_fraction: float | None = None
    exit_code: int = PASSED
    format_version: int = 1


def parse_change(spec: str, kind: str) -> Threshold:
    """`name:+20%` (relative, latency) or `name:-0.02` (absolute, proportion)."""
    name, _, amount = spec.partition(":")
    m = _CHANGE.match(amount)
    if not name or not m:
        raise ConfigError(f"threshold {spec!r}: expected NAME:+20% or NAME:-0.02")
    metric, _ = _resolve(name.strip(), kind)
    if m[3] == "%":
        if not metric.is_latency:
            raise ConfigError(f"threshold {spec!r}: {metric.name} is a proportion; give an absolute change such as -0.02")
        return Threshold(name.strip(), "relative", 1 + float(m[2]) / 100, spec)
    if metric.is_latency:
        raise ConfigError(f"threshold {spec!r}: {name} is a latency; give a relative change such as +20%")
    return Threshold(name.strip(), "absolute", float(m[2]), spec)


def parse_bound(spec: str, form: str, kind: str) -> Threshold:
    name, _, value = spec.partition("=")
    try:
        bound = float(value)
    except ValueError:
        raise ConfigError(f"--{form} {spec!r}: expected NAME=NUMBER") from None
    _resolve(name.strip(), kind)
    return Threshold(name.strip(), form, bound, f"{form} {bound:g}")


def _resolve(name: str, kind: str) -> tuple[Any, float | None]:
    try:
        return resolve(name, kind)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def load_gate_toml(path: str, kind: str) -> list[Threshold]:
    import tomllib

    try:
        data = tomllib.loads(open(path, encoding="utf-8").read())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - {"thresholds", "min", "max"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (expected thresholds, min, max)")
    out = [parse_change(f"{k}:{v}", kind) for k, v in data.get("thresholds", {}).items()]
    out += [parse_bound(f"{k}={v}", form, kind) for form in ("min", "max") for k, v in data.get(form, {}).items()]
    return out


def _keys(kind: str, rows: list[dict]) -> set[tuple]:
    return {(group_key(kind, r), case_key(kind, r)) for r in rows}


def paired_fraction(kind: str, base_rows: list[dict], cur_rows: list[dict]) -> float:
    base = _keys(kind, base_rows)
    return len(base & _keys(kind, cur_rows)) / len(base) if base else 0.0


def _current_value(kind: str, rows: list[dict], group: str, statistic: str) -> float | None:
    """A statistic of one group of one run, without a baseline (for --min / --max)."""
    metric, q = resolve(statistic, kind)
    return aggregate(metric, (r for r in rows if "/".join(map(str, group_key(kind, r))) == group), q)


def _change_check(t: Threshold, c: Check, no_stats: bool, alpha: float) -> GateCheck:
    g = GateCheck(t.statistic, c.group, t.text, t.form, "pass", c.base, c.new, c.change, c.low, c.high, c.p,
                  c.p_adjusted)
    if c.change is None or c.change != c.change:
        g.verdict, g.message = "skipped", "no value on one side"
        return g
    worse = (c.change >= t.value if not c.higher_is_better else c.change <= 1 / t.value) if t.form == "relative" \
        else ((-c.change if c.higher_is_better else c.change) >= t.value)
    significant = no_stats or (c.p_adjusted is not None and c.p_adjusted < alpha)
    if worse and significant:
        g.verdict = "fail"
        g.message = f"{t.statistic} {c.group}: {_fmt(c.base)} -> {_fmt(c.new)} " + \
                    (f"(x{c.change:.3f}, limit x{t.value:.3f})" if t.form == "relative" else f"({c.change:+.4f}, limit {t.value:g})")
    elif worse:
        g.message = f"past the threshold but not significant (adjusted p {c.p_adjusted})"
    return g


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _bound_check(t: Threshold, kind: str, rows: list[dict], group: str) -> GateCheck:
    v = _current_value(kind, rows, group, t.statistic)
    g = GateCheck(t.statistic, group, t.text, t.form, "pass", current=v)
    if v is None:
        g.verdict, g.message = "skipped", "no value in this run"
    elif (t.form == "min" and v < t.value) or (t.form == "max" and v > t.value):
        g.verdict, g.message = "fail", f"{t.statistic} {group} = {v:.4g}, {t.form} {t.value:g}"
    return g


def run_gate(current: RunDir, baseline: RunDir | None, thresholds: list[Threshold], alpha: float = 0.05,
             no_stats: bool = False, seed: int = 0) -> GateResult:
    """Every threshold for every group of the current run; raises NotComparable (exit 3)."""
    cur_rows = current.rows()
    if not cur_rows:
        raise NotComparable(f"{current.path}: no rows")
    res = GateResult(current.run_id, baseline.run_id if baseline else None)
    groups = sorted({"/".join(map(str, group_key(current.kind, r))) for r in cur_rows})
    checks_by_key: dict[tuple[str, str], Check] = {}
    if baseline is not None and any(t.form in ("relative", "absolute") for t in thresholds):
        base_rows = _baseline_rows(current, baseline)
        res.paired_fraction = paired_fraction(current.kind, base_rows, cur_rows)
        if res.paired_fraction < MIN_PAIRED:
            raise NotComparable(f"only {res.paired_fraction:.0%} of the baseline's cases are in the current run "
                                f"(at least {MIN_PAIRED:.0%} needed)")
        checks, _, _ = compare_rows(current.kind, base_rows, cur_rows, Options(alpha=alpha, seed=seed))
        checks_by_key = {(c.statistic, c.group): c for c in checks}
    for t in thresholds:
        for group in groups:
            t0 = time.perf_counter()
            if t.form in ("min", "max"):
                g = _bound_check(t, current.kind, cur_rows, group)
            elif baseline is None:
                raise ConfigError(f"threshold {t.text!r} is a change and needs --baseline")
            elif (t.statistic, group) not in checks_by_key:
                g = GateCheck(t.statistic, group, t.text, t.form, "skipped", message="group not in the baseline")
            else:
                g = _change_check(t, checks_by_key[(t.statistic, group)], no_stats, alpha)
            g.seconds = time.perf_counter() - t0
            res.checks.append(g)
    res.exit_code = FAILED if any(c.verdict == "fail" for c in res.checks) else PASSED
    return res


def _baseline_rows(current: RunDir, baseline: RunDir) -> list[dict]:
    if baseline.kind != current.kind:
        raise NotComparable(f"baseline is a {baseline.kind}, current a {current.kind}")
    fb, fc = baseline.manifest.fingerprint, current.manifest.fingerprint
    if fb.get("comparable_digest") != fc.get("comparable_digest"):
        raise NotComparable("fingerprints differ: " + "; ".join(fingerprint_differences(fb, fc)))
    rows = baseline.rows()
    if not rows:
        raise NotComparable(f"{baseline.path}: no rows")
    return rows

