"""Leaderboards: rank the configurations of comparable runs, with intervals, tie groups and win rates.

Boards. Runs share a board only when their manifests carry the same comparable fingerprint
(`fingerprint["comparable_digest"]`: same kind, model, tokenizer, task set and protocol). Runs that
cannot be on any board (results format 1, not a directory, a fidelity run, no rows) are listed as
excluded with the reason; every board also lists the runs on other boards with the fingerprint
parts that differ.

Entries. One per (run, group), the group being metrics.group_key (engine and sampler for run,
engine for replay). Every number comes from the metric registry (harness.results.metrics): a
proportion is k of n with a Wilson 95% interval, a case latency is a percentile over cases, a
pooled latency (per-token mask time) a percentile over every token of every case.

Task set. "intersection" keeps only the cases (metrics.case_key) present for every entry of the
board and says how many were left out; "union" keeps every case, so entries may differ in n, and
a breakdown cell an entry has no case for is "n/a".

Ranking. By the board's primary proportion (run: compliance, replay: pass), in the direction the
registry gives. The leader's tie group holds every entry not significantly different from the
leader: exact McNemar on the cases paired with the leader (both scored), Fisher's exact test on the
2x2 counts when no case pairs; labels from stats.tie_groups ("1–3"). Each entry also carries HELM's
mean win rate over the headline statistics (every proportion, p50 and p99 of every latency).

Reference rows (reference_rows.json, copied from ANCHORS.md) are shown under the entries of their
kind, labelled "reference (not ranked)": never ranked, never in a win rate.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from scipy import stats as sps

from ..errors import ConfigError
from ..results.metrics import (METRICS, Metric, aggregate, case_key, group_key, metrics_for, per_token_ms,
                               proportion_counts, resolve, stat_name)
from ..results.rundir import RunDir, fingerprint_differences
from . import stats

FORMAT_VERSION = 1
BEGIN = "<!-- cdbench:leaderboard begin -->"
END = "<!-- cdbench:leaderboard end -->"
PRIMARY = {"run": "compliance", "replay": "pass"}
SOURCE_FIELD = {"run": "source", "replay": "group"}
OUTCOME_FIELDS = {"run": ("compile_status", "finish_reason"), "replay": ("bucket",)}
CASE_PERCENTILES = (50.0, 99.0)
POOLED_PERCENTILES = (50.0, 99.0, 99.9)
HEADLINE_PERCENTILES = (50.0, 99.0)
TASK_SETS = ("intersection", "union")
REFERENCE_FILE = Path(__file__).with_name("reference_rows.json")
REFERENCE_LABEL = "reference (not ranked)"
FIDELITY_REASON = "fidelity runs have no per-case rows for a board"
UNIT_TEXT = {"us": "µs", "ms": "ms", "": ""}
HEATMAP_TAGS = 12
NA = "n/a"


@dataclass
class Excluded:
    """A run left off a board, and why."""
    path: str
    reason: str


@dataclass
class Entry:
    """One (run, group) on a board. `proportions`: metric -> {k, n, p, low, high}; `latencies`:
    statistic (compile_p50_ms, mask_p99.9_us, ...) -> value; `by_source` / `by_tag`: the primary
    proportion per category."""
    label: str
    run_id: str
    group: list[str]
    engine: str
    engine_version: str
    sampler: str
    n: int
    n_all: int
    proportions: dict[str, dict[str, Any]]
    latencies: dict[str, float | None]
    per_token: dict[str, float | None]
    outcomes: dict[str, dict[str, int]]
    by_source: dict[str, dict[str, Any]]
    by_tag: dict[str, dict[str, Any]]
    started: str
    commit: str
    cpu: str
    rank: str = ""
    win_rate: float | None = None
    p_vs_leader: float | None = None
    test: str = ""


@dataclass
class Board:
    """One leaderboard: the entries of runs sharing a comparable fingerprint, ranked."""
    id: str
    kind: str
    comparable_digest: str
    comparable: dict[str, Any]
    primary: str
    task_set: str
    alpha: float
    ranking_rule: str
    task_set_note: str
    headline: list[str]
    cases_total: int = 0
    cases_kept: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    method_kind: str = "engine"


@dataclass
class _Run:
    path: Path
    rd: RunDir
    rows: list[dict[str, Any]]
    method: str = "engine"  # engine or frontend: the two kinds are never ranked on one board


def _by_method(run: _Run) -> list[_Run]:
    """A run's rows split by method kind (engine rows may predate the field): one part per kind."""
    parts: dict[str, list[dict[str, Any]]] = {}
    for r in run.rows:
        parts.setdefault(r.get("method_kind") or "engine", []).append(r)
    return [_Run(run.path, run.rd, rows, method) for method, rows in sorted(parts.items())]


# ---------------------------------------------------------------- loading


def _check_rows(kind: str, rows: list[dict[str, Any]]) -> str:
    """'' when every row has what grouping and pairing read, else what is missing."""
    for i, r in enumerate(rows, 1):
        try:
            group_key(kind, r)
            case_key(kind, r)
        except KeyError as exc:
            return f"row {i} has no field {exc}"
    return "" if rows else "no rows"


def _open_run(path: Path) -> tuple[_Run | None, str]:
    """The run and '' when it can be on a board, else (None, the reason)."""
    if not path.is_dir():
        return None, "not a directory"
    try:
        rd = RunDir.open(path)
    except ConfigError as exc:
        return None, str(exc)
    if rd.kind == "fidelity":
        return None, FIDELITY_REASON
    if rd.kind not in PRIMARY:
        return None, f"unknown run kind {rd.kind!r}"
    if not rd.manifest.fingerprint.get("comparable_digest"):
        return None, "the manifest has no comparable fingerprint"
    try:
        rows = rd.rows()
    except ConfigError as exc:
        return None, str(exc)
    problem = _check_rows(rd.kind, rows)
    return (None, problem) if problem else (_Run(path, rd, rows), "")


def _load(run_dirs: list[Path]) -> tuple[list[_Run], list[Excluded]]:
    """Open every directory once; the ones that cannot be ranked become exclusions."""
    runs: list[_Run] = []
    excluded: list[Excluded] = []
    seen_paths: set[Path] = set()
    seen_ids: dict[str, Path] = {}
    for raw in run_dirs:
        path = Path(raw)
        if path.resolve() in seen_paths:
            excluded.append(Excluded(str(path), "listed twice"))
            continue
        seen_paths.add(path.resolve())
        run, reason = _open_run(path)
        if run is not None and run.rd.run_id in seen_ids:
            run, reason = None, f"run id {run.rd.run_id!r} already given by {seen_ids[run.rd.run_id]}"
        if run is None:
            excluded.append(Excluded(str(path), reason))
            continue
        seen_ids[run.rd.run_id] = path
        runs.append(run)
    return runs, excluded


def _started_key(run: _Run) -> tuple[float, str]:
    """Sort key of a run's start time (ISO 8601 with offset); unparsable times sort first."""
    text = run.rd.manifest.started or ""
    try:
        return _dt.datetime.fromisoformat(text).timestamp(), run.rd.run_id
    except ValueError:
        return -math.inf, run.rd.run_id


# ---------------------------------------------------------------- statistics


def _prop(k: int, n: int) -> dict[str, Any]:
    """k of n with its Wilson 95% interval (None when n == 0)."""
    if n == 0:
        return {"k": 0, "n": 0, "p": None, "low": None, "high": None}
    low, high = stats.wilson_interval(k, n)
    return {"k": k, "n": n, "p": k / n, "low": low, "high": high}


def _percentiles(m: Metric) -> tuple[float, ...]:
    return POOLED_PERCENTILES if m.kind == "pooled_latency" else CASE_PERCENTILES


def headline(kind: str) -> list[str]:
    """The statistics a win rate is taken over: every proportion, p50 and p99 of every latency."""
    out: list[str] = []
    for m in metrics_for(kind):
        out += [stat_name(m, q) for q in HEADLINE_PERCENTILES] if m.is_latency else [m.name]
    return out


def _direction(kind: str, names: list[str]) -> dict[str, bool]:
    """statistic -> higher is better, from the registry."""
    return {s: resolve(s, kind)[0].higher_is_better for s in names}


def _statistics(kind: str, rows: list[dict[str, Any]]) -> tuple[dict[str, dict], dict[str, float | None]]:
    """Every registry metric of the kind over these rows: proportions and latency percentiles."""
    props: dict[str, dict] = {}
    lats: dict[str, float | None] = {}
    for m in metrics_for(kind):
        if not m.is_latency:
            props[m.name] = _prop(*proportion_counts(m, rows))
            continue
        for q in _percentiles(m):
            lats[stat_name(m, q)] = aggregate(m, rows, q)
    return props, lats


def _per_token(kind: str, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """LM and engine ms per output token (metrics.per_token_ms); run kind only."""
    if kind != "run":
        return {}
    return {"lm_ms_per_token": per_token_ms(rows, "lm_s"), "engine_ms_per_token": per_token_ms(rows, "engine_s")}


def _tags(row: dict[str, Any]) -> list[str]:
    """A row's feature tags: a comma-joined string (run) or a list (replay)."""
    raw = row.get("tags") or []
    items = raw.split(",") if isinstance(raw, str) else raw
    return list(dict.fromkeys(str(t).strip() for t in items if str(t).strip()))


def _breakdown(m: Metric, rows: list[dict[str, Any]],
               categories: Callable[[dict[str, Any]], list[str]]) -> dict[str, dict[str, Any]]:
    """The proportion `m` per category; a category the rows have but never score has n = 0."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        v = m.value(r)
        for c in categories(r):
            kn = counts.setdefault(c, [0, 0])
            if v is not None:
                kn[0] += int(v)
                kn[1] += 1
    return {c: _prop(k, n) for c, (k, n) in sorted(counts.items())}


def _engine_version(run: _Run, rows: list[dict[str, Any]], engine: str) -> str:
    """The rows' engine_version, else the manifest environment's engines[name].version."""
    versions = sorted({str(r["engine_version"]) for r in rows if r.get("engine_version")})
    if versions:
        return ", ".join(versions)
    info = (run.rd.manifest.environment.get("engines") or {}).get(engine) or {}
    return str(info.get("version") or "") if isinstance(info, dict) else ""


def _make_entry(run: _Run, group: tuple[str, ...], rows: list[dict[str, Any]], n_all: int) -> Entry:
    """One entry's numbers over the rows kept for it."""
    kind = run.rd.kind
    props, lats = _statistics(kind, rows)
    primary = METRICS[PRIMARY[kind]]
    env = run.rd.manifest.environment
    outcomes = {f: dict(sorted(Counter(str(r.get(f)) for r in rows).items())) for f in OUTCOME_FIELDS[kind]}
    return Entry(
        label=f"{'/'.join(group)} @ {run.rd.run_id}", run_id=run.rd.run_id, group=list(group), engine=group[0],
        engine_version=_engine_version(run, rows, group[0]), sampler=group[1] if len(group) > 1 else "",
        n=len(rows), n_all=n_all, proportions=props, latencies=lats, per_token=_per_token(kind, rows),
        outcomes=outcomes,
        by_source=_breakdown(primary, rows, lambda r: [str(r.get(SOURCE_FIELD[kind]))]),
        by_tag=_breakdown(primary, rows, _tags), started=run.rd.manifest.started,
        commit=str(env.get("cdbench_commit") or ""), cpu=str(env.get("cpu_model") or ""))


# ---------------------------------------------------------------- boards


def _cases(runs: list[_Run]) -> dict[tuple[str, tuple[str, ...]], dict[tuple, dict[str, Any]]]:
    """(run id, group) -> {case key: row} (a repeated case keeps its last row)."""
    out: dict[tuple[str, tuple[str, ...]], dict[tuple, dict[str, Any]]] = {}
    for run in runs:
        kind = run.rd.kind
        for r in run.rows:
            out.setdefault((run.rd.run_id, tuple(group_key(kind, r))), {})[case_key(kind, r)] = r
    return out


def _entries(runs: list[_Run], task_set: str) -> tuple[list[Entry], dict[str, dict[tuple, Any]], int, int]:
    """The board's entries, each entry's kept cases, and the (total, kept) distinct case counts."""
    by_id = {run.rd.run_id: run for run in runs}
    cases = _cases(runs)
    every = set().union(*(set(c) for c in cases.values()))
    common = set.intersection(*(set(c) for c in cases.values())) if task_set == "intersection" else every
    entries: list[Entry] = []
    kept: dict[str, dict[tuple, Any]] = {}
    for (run_id, group), rows in cases.items():
        mine = {k: r for k, r in rows.items() if k in common}
        entry = _make_entry(by_id[run_id], group, list(mine.values()), len(rows))
        entries.append(entry)
        kept[entry.label] = mine
    return entries, kept, len(every), len(common)


def _primary_values(kind: str, rows: dict[tuple, dict[str, Any]]) -> dict[tuple, int]:
    """case key -> 0/1 of the board's primary metric, scored cases only."""
    m = METRICS[PRIMARY[kind]]
    return {k: int(v) for k, v in ((k, m.value(r)) for k, r in rows.items()) if v is not None}


def _test_vs_leader(lead: dict[tuple, int], other: dict[tuple, int]) -> tuple[float, str]:
    """p against the leader: exact McNemar over paired cases, else Fisher's exact test on 2x2 counts."""
    if not other or not lead:
        return math.nan, "untested (no scored case)"
    paired = set(lead) & set(other)
    if paired:
        lead_only = sum(1 for k in paired if lead[k] and not other[k])
        other_only = sum(1 for k in paired if other[k] and not lead[k])
        return stats.mcnemar_exact(lead_only, other_only), f"McNemar exact, {len(paired)} paired cases"
    k1, n1, k2, n2 = sum(lead.values()), len(lead), sum(other.values()), len(other)
    p = float(sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)
    return p, "Fisher exact (no paired case)"


def _rank_start(label: str) -> int:
    digits = label.split("\u2013")[0]
    return int(digits) if digits.isdigit() else 1 << 30


def _rank(kind: str, entries: list[Entry], kept: dict[str, dict[tuple, Any]], alpha: float) -> list[Entry]:
    """Rank labels, tests against the leader, entries in rank order (unscored entries last, unranked)."""
    primary = METRICS[PRIMARY[kind]]
    sign = -1.0 if primary.higher_is_better else 1.0
    scored = [e for e in entries if e.proportions[primary.name]["n"]]
    unscored = sorted((e for e in entries if not e.proportions[primary.name]["n"]), key=lambda e: e.label)
    scored.sort(key=lambda e: (sign * e.proportions[primary.name]["p"], e.label))
    values = {e.label: _primary_values(kind, kept[e.label]) for e in scored}
    ps: list[float] = []
    for i, e in enumerate(scored):
        p, test = (math.nan, "leader") if i == 0 else _test_vs_leader(values[scored[0].label], values[e.label])
        e.p_vs_leader, e.test = (None if math.isnan(p) else p), test
        ps.append(p)
    labels = stats.tie_groups([e.proportions[primary.name]["p"] for e in scored], ps, alpha,
                              primary.higher_is_better)
    for e, label in zip(scored, labels):
        e.rank = label
    for e in unscored:
        e.rank, e.test = "–", f"unranked: no case scored for {primary.name}"
    order = sorted(range(len(scored)), key=lambda i: (_rank_start(scored[i].rank), i))
    return [scored[i] for i in order] + unscored


def _value_of(entry: Entry, statistic: str) -> float | None:
    if statistic in entry.proportions:
        return entry.proportions[statistic]["p"]
    return entry.latencies.get(statistic)


def _win_rates(kind: str, entries: list[Entry]) -> None:
    """HELM mean win rate of each entry over the board's headline statistics (ranked entries only)."""
    names = headline(kind)
    table = {e.label: {s: _value_of(e, s) for s in names} for e in entries}
    rates = stats.mean_win_rate(table, _direction(kind, names))
    for e in entries:
        e.win_rate = rates.get(e.label)


def _ranking_rule(kind: str, alpha: float) -> str:
    primary = METRICS[PRIMARY[kind]]
    direction = "higher" if primary.higher_is_better else "lower"
    return (f"Ranked by {primary.name} ({direction} is better, per the metric registry). The leader's tie group "
            f"(rank 1–k) holds every entry not significantly different from the leader at alpha = {alpha:g}: an "
            f"exact McNemar test on the cases paired with the leader (both scored), or Fisher's exact test on the "
            f"2x2 counts when no case pairs; the other entries follow in {primary.name} order. An entry with no "
            f"scored case is unranked (–). Win rate: HELM's mean win rate over {', '.join(headline(kind))} "
            f"(direction from the registry; ties count 1/2). Reference rows are never ranked nor in win rates.")


def _task_set_note(task_set: str, total: int, kept: int) -> str:
    if task_set == "intersection":
        return (f"Task set: intersection. {kept} of {total} distinct cases are present for every entry and kept; "
                f"{total - kept} excluded (missing from at least one entry).")
    return (f"Task set: union. All {total} distinct cases kept; each entry is scored on the cases it has (n), "
            f"and '{NA}' marks a category an entry has no case for.")


def _run_info(run: _Run, first: _Run) -> dict[str, Any]:
    """One run of a board: identity, environment and the settings that differ from the board's first run."""
    m = run.rd.manifest
    return {"run_id": m.run_id, "path": str(run.path), "started": m.started, "status": m.status,
            "commit": str(m.environment.get("cdbench_commit") or ""), "cpu": str(m.environment.get("cpu_model") or ""),
            "rows": len(run.rows), "settings_digest": str(m.fingerprint.get("digest") or ""),
            "settings_differ": fingerprint_differences(first.rd.manifest.fingerprint, m.fingerprint, "settings")}


def _board(runs: list[_Run], task_set: str, alpha: float) -> Board:
    """One board from runs that share a comparable fingerprint."""
    runs = sorted(runs, key=_started_key)
    kind = runs[0].rd.kind
    fp = runs[0].rd.manifest.fingerprint
    entries, kept, total, n_kept = _entries(runs, task_set)
    entries = _rank(kind, entries, kept, alpha)
    _win_rates(kind, [e for e in entries if e.rank != "–"])
    suffix = "" if runs[0].method == "engine" else f"-{runs[0].method}s"
    return Board(id=f"{kind}-{fp['comparable_digest'][:8]}{suffix}", kind=kind, method_kind=runs[0].method, comparable_digest=fp["comparable_digest"],
                 comparable=dict(fp.get("comparable") or {}), primary=PRIMARY[kind], task_set=task_set, alpha=alpha,
                 ranking_rule=_ranking_rule(kind, alpha), task_set_note=_task_set_note(task_set, total, n_kept),
                 headline=headline(kind), cases_total=total, cases_kept=n_kept,
                 runs=[_run_info(r, runs[0]) for r in runs], entries=entries,
                 references=references_for(kind), history=_history(runs))


def _cross_exclusions(boards: list[Board], by_board: dict[str, list[_Run]]) -> None:
    """On every board, the runs of the other boards, with the comparable parts that differ."""
    for board in boards:
        mine = by_board[board.id][0].rd.manifest.fingerprint
        for other in boards:
            if other.id == board.id or other.comparable_digest == board.comparable_digest:
                continue  # the same runs' other method kind (engines / frontends): comparable, ranked apart
            for run in by_board[other.id]:
                diffs = fingerprint_differences(mine, run.rd.manifest.fingerprint) or ["digest"]
                board.excluded.append(Excluded(str(run.path), f"different comparable fingerprint (on board "
                                                              f"{other.id}): {'; '.join(diffs)}"))


def build_leaderboards(run_dirs: list[Path], task_set: str = "intersection", alpha: float = 0.05) -> list[Board]:
    """One board per comparable fingerprint among `run_dirs`, ranked; runs that cannot be ranked are
    listed on every board (or on a single empty board when no run can be ranked)."""
    if task_set not in TASK_SETS:
        raise ConfigError(f"unknown task set {task_set!r} (known: {', '.join(TASK_SETS)})")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    runs, excluded = _load(run_dirs)
    by_digest: dict[tuple[str, str], list[_Run]] = {}
    for run in runs:
        for part in _by_method(run):
            key = (run.rd.kind, run.rd.manifest.fingerprint["comparable_digest"], part.method)
            by_digest.setdefault(key, []).append(part)
    groups = sorted(by_digest.values(), key=lambda rs: (rs[0].rd.kind, rs[0].method, min(_started_key(r) for r in rs)))
    boards = [_board(rs, task_set, alpha) for rs in groups]
    _cross_exclusions(boards, {b.id: rs for b, rs in zip(boards, groups)})
    for board in boards:
        board.excluded[:0] = excluded
    if not boards:
        boards = [Board(id="none", kind="", comparable_digest="", comparable={}, primary="", task_set=task_set,
                        alpha=alpha, ranking_rule="No run could be ranked.", task_set_note="", headline=[],
                        excluded=list(excluded))]
    return boards


# ---------------------------------------------------------------- history


def _history(runs: list[_Run]) -> dict[str, Any]:
    """Per configuration (kind:engine[/sampler]) and headline statistic, the values over runs ordered by
    start time, each run scored on all of its own cases."""
    configs: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=_started_key):
        kind = run.rd.kind
        names = headline(kind)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in run.rows:
            groups.setdefault(tuple(group_key(kind, r)), []).append(r)
        for group, rows in groups.items():
            props, lats = _statistics(kind, rows)
            values = {**{k: v["p"] for k, v in props.items()}, **lats}
            c = configs.setdefault(f"{kind}:{'/'.join(group)}", {
                "kind": kind, "configuration": "/".join(group), "runs": [], "values": {s: [] for s in names}})
            c["runs"].append({"run_id": run.rd.run_id, "started": run.rd.manifest.started,
                              "commit": str(run.rd.manifest.environment.get("cdbench_commit") or ""),
                              "comparable_digest": run.rd.manifest.fingerprint.get("comparable_digest"),
                              "engine_version": _engine_version(run, rows, group[0]), "n": len(rows)})
            for s in names:
                c["values"][s].append(values.get(s))
    return {"format_version": FORMAT_VERSION, "configurations": configs}


def history(run_dirs: list[Path]) -> dict[str, Any]:
    """The trend view: per configuration and headline statistic, the value over runs ordered by
    manifest.started (all runs that can be read, whatever their fingerprint; each point records its
    comparable digest), plus the runs that could not be read."""
    runs, excluded = _load(run_dirs)
    out = _history(runs)
    out["excluded"] = [asdict(e) for e in excluded]
    return out


# ---------------------------------------------------------------- reference rows


def _validate_reference(row: dict[str, Any], path: Path) -> None:
    """A reference row's kind and columns must name what a board of that kind shows."""
    if row.get("kind") not in PRIMARY:
        raise ConfigError(f"{path}: reference row {row.get('id')!r}: unknown kind {row.get('kind')!r}")
    for column, spec in (row.get("columns") or {}).items():
        try:
            resolve(column, row["kind"])
        except KeyError as exc:
            raise ConfigError(f"{path}: reference row {row.get('id')!r}: {exc.args[0]}") from exc
        for label in [spec.get("stated"), spec.get("k"), spec.get("n")]:
            if label is not None and label not in row.get("stated", {}):
                raise ConfigError(f"{path}: reference row {row.get('id')!r}: {column} uses {label!r}, not stated")


def load_reference_rows(path: Path = REFERENCE_FILE) -> list[dict[str, Any]]:
    """The published reference rows (reference_rows.json), checked against the registry."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the reference rows: {exc}") from exc
    rows = list(data.get("rows") or [])
    for row in rows:
        _validate_reference(row, Path(path))
    return rows


def _stated_number(row: dict[str, Any], label: str) -> float | None:
    """A stated value as a number ('8,909' -> 8909.0); None for a range or text."""
    try:
        return float(str(row["stated"][label]["value"]).replace(",", ""))
    except ValueError:
        return None


def _reference_values(row: dict[str, Any]) -> dict[str, Any]:
    """Board column -> value of a reference row: {k, n, p, low, high} or {p} for proportions, a float else."""
    out: dict[str, Any] = {}
    for column, spec in (row.get("columns") or {}).items():
        if "k" in spec:
            k, n = _stated_number(row, spec["k"]), _stated_number(row, spec["n"])
            out[column] = _prop(int(k), int(n)) if k is not None and n is not None else None
            continue
        v = _stated_number(row, spec["stated"])
        v = None if v is None else v * float(spec.get("scale", 1))
        out[column] = {"p": v} if not resolve(column, row["kind"])[0].is_latency else v
    return out


def references_for(kind: str) -> list[dict[str, Any]]:
    """The reference rows shown on a board of this kind, with their values placed in board columns."""
    out = []
    for row in load_reference_rows():
        if row["kind"] == kind:
            out.append({**row, "rank": REFERENCE_LABEL, "values": _reference_values(row)})
    return out
