"""Leaderboard output: markdown, CSV, JSON and the HTML page of the boards, and the README table.

The boards are built by harness.analysis.leaderboard; this module only formats them. Dataset
text (task ids, sources, tags) is untrusted: markdown cells are escaped, HTML goes through the
autoescaping page renderer.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..report import plots
from ..report.page import Figure, Page, Section, Table, Text, render_page
from ..reporting.markdown import cell, row as md_row
from ..results.metrics import METRICS, metrics_for, stat_name
from .leaderboard import (BEGIN, END, FORMAT_VERSION, HEATMAP_TAGS, NA, REFERENCE_LABEL, SOURCE_FIELD, UNIT_TEXT,
                          Board, Entry, _percentiles)


# ---------------------------------------------------------------- formatting


def _fmt_num(v: float | None) -> str:
    """A latency or rate as text: no exponent, 3 significant digits below 100."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def _fmt_prop(p: dict[str, Any] | None) -> str:
    """'0.667 (0.47–0.82)'; a proportion stated without n as '0.61 (n not stated)'."""
    if not p or p.get("p") is None:
        return NA
    if "n" not in p:
        return f"{p['p']:g} (n not stated)"
    return f"{p['p']:.3f} ({p['low']:.2f}\u2013{p['high']:.2f})"


def _fmt_count(p: dict[str, Any] | None) -> str:
    """A breakdown cell: '0.83 (50/60)'."""
    if not p or not p.get("n"):
        return NA
    return f"{p['p']:.2f} ({p['k']}/{p['n']})"


def _metric_columns(kind: str) -> list[tuple[str, str]]:
    """(statistic, header) for every registry metric of the kind, in registry order."""
    cols: list[tuple[str, str]] = []
    for m in metrics_for(kind):
        label = m.name.replace("_", " ")
        if m.is_latency:
            cols += [(stat_name(m, q), f"{label} p{q:g} {UNIT_TEXT.get(m.unit, m.unit)}") for q in _percentiles(m)]
        else:
            cols.append((m.name, label))
    return cols


def entry_columns(kind: str) -> list[tuple[str, str]]:
    """The entries table's columns (key, header) for a board kind."""
    ident = [("rank", "rank"), ("entry", "entry"), ("engine", "engine"), ("engine_version", "version")]
    ident += [("sampler", "sampler")] if kind == "run" else []
    extra = [("lm_ms_per_token", "LM ms/token"), ("engine_ms_per_token", "engine ms/token")] if kind == "run" else []
    tail = [("outcomes", "outcomes"), ("win_rate", "win rate"), ("vs_leader", "vs leader"), ("run_id", "run"),
            ("started", "date"), ("commit", "commit"), ("cpu", "CPU")]
    return ident + [("n", "n")] + _metric_columns(kind) + extra + tail


def _fmt_outcomes(outcomes: dict[str, dict[str, int]]) -> str:
    return "; ".join(", ".join(f"{k} {v}" for k, v in counts.items()) for counts in outcomes.values())


def _fmt_vs_leader(e: Entry) -> str:
    if e.test == "leader" or e.p_vs_leader is None:
        return e.test
    return f"p={e.p_vs_leader:.3g} ({e.test})"


def entry_cells(e: Entry, kind: str) -> dict[str, str]:
    """An entry's cells as text, keyed like entry_columns."""
    cells = {"rank": e.rank, "entry": e.label, "engine": e.engine, "engine_version": e.engine_version,
             "sampler": e.sampler, "n": str(e.n), "outcomes": _fmt_outcomes(e.outcomes),
             "win_rate": NA if e.win_rate is None else f"{e.win_rate:.3f}", "vs_leader": _fmt_vs_leader(e),
             "run_id": e.run_id, "started": e.started, "commit": e.commit, "cpu": e.cpu}
    cells.update({k: _fmt_prop(v) for k, v in e.proportions.items()})
    cells.update({k: _fmt_num(v) for k, v in {**e.latencies, **e.per_token}.items()})
    return cells


def _fmt_stated(row: dict[str, Any]) -> str:
    return "; ".join(f"{k} {v['value']}{(' ' + v['unit']) if v.get('unit') not in ('', None, k) else ''}"
                     for k, v in row["stated"].items())


def _fmt_source(row: dict[str, Any]) -> str:
    s = row["source"]
    parts = [s.get("name"), s.get("table"), s.get("date"), s.get("url"), s.get("anchors")]
    return "; ".join(str(p) for p in parts if p)


def reference_columns(board: Board) -> list[tuple[str, str]]:
    """The reference table's columns: identity, the board columns some reference fills, stated, source."""
    used = {c for r in board.references for c in r["values"]}
    metric_cols = [(k, h) for k, h in _metric_columns(board.kind) if k in used]
    return ([("rank", "rank"), ("engine", "engine"), ("engine_version", "version"), ("dataset", "dataset")]
            + metric_cols + [("stated", "stated (as published)"), ("notes", "notes"), ("source", "source")])


def reference_cells(row: dict[str, Any]) -> dict[str, str]:
    """A reference row's cells as text, keyed like reference_columns."""
    cells = {"rank": REFERENCE_LABEL, "engine": row["engine"], "engine_version": row.get("engine_version") or "",
             "dataset": row.get("dataset", ""), "stated": _fmt_stated(row), "notes": "; ".join(row.get("notes", [])),
             "source": _fmt_source(row)}
    for k, v in row["values"].items():
        cells[k] = _fmt_prop(v) if isinstance(v, dict) or (v is None and k in METRICS) else _fmt_num(v)
    return cells


def _categories(entries: list[Entry], attr: str) -> list[str]:
    return sorted({c for e in entries for c in getattr(e, attr)})


def breakdown_rows(entries: list[Entry], attr: str) -> list[list[str]]:
    """Category x entry cells of the primary proportion ('n/a' where an entry has no scored case)."""
    return [[c] + [_fmt_count(getattr(e, attr).get(c)) for e in entries] for c in _categories(entries, attr)]


# ---------------------------------------------------------------- markdown


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [md_row(headers), "|" + "---|" * len(headers)] + [md_row(r) for r in rows]


def _md_history(board: Board) -> list[str]:
    """A trend table per configuration with at least two runs on the board."""
    out: list[str] = []
    for name, c in board.history.get("configurations", {}).items():
        if len(c["runs"]) < 2:
            continue
        stats_ = list(c["values"])
        rows = [[r["started"], r["run_id"], r["commit"][:12], r["engine_version"], str(r["n"])]
                + [_fmt_num(c["values"][s][i]) for s in stats_] for i, r in enumerate(c["runs"])]
        out += ["", f"#### Trend: {cell(name)}", ""]
        out += _md_table(["date", "run", "commit", "version", "n"] + stats_, rows)
    return (["", "### History (runs ordered by start time)"] + out) if out else []


def _md_fingerprint(board: Board) -> str:
    parts = [f"{k}={str(v)[:16]}" for k, v in board.comparable.items()]
    return f"Comparable fingerprint `{board.comparable_digest}`: " + cell(", ".join(parts))


def _md_board_tables(board: Board) -> list[str]:
    """Entries, references, per-source and per-tag tables of one board."""
    cols = entry_columns(board.kind)
    out = _md_table([h for _, h in cols], [[entry_cells(e, board.kind).get(k, "") for k, _ in cols]
                                           for e in board.entries])
    if board.references:
        rcols = reference_columns(board)
        out += ["", "### Reference rows (not ranked)", ""]
        out += _md_table([h for _, h in rcols], [[reference_cells(r).get(k, "") for k, _ in rcols]
                                                 for r in board.references])
    labels = [e.label for e in board.entries]
    for attr, title in (("by_source", SOURCE_FIELD[board.kind]), ("by_tag", "feature tag")):
        if board.entries:
            out += ["", f"### {board.primary} by {title}", ""]
            out += _md_table([title] + labels, breakdown_rows(board.entries, attr))
    return out


def _md_runs(board: Board) -> list[str]:
    rows = [[r["run_id"], r["started"], r["status"], r["commit"][:12], r["cpu"], str(r["rows"]),
             "; ".join(r["settings_differ"]) or "–"] for r in board.runs]
    out = ["", "### Runs on this board", ""] + _md_table(
        ["run", "started", "status", "commit", "CPU", "rows", "settings that differ from the first run"], rows)
    out += ["", "### Excluded runs", ""]
    out += [f"- `{cell(x.path)}`: {cell(x.reason)}" for x in board.excluded] or ["- none"]
    return out


def board_markdown(board: Board) -> str:
    """One board as markdown."""
    if not board.kind:
        lines = ["## Leaderboard: no board", "", board.ranking_rule, "", "### Excluded runs", ""]
        lines += [f"- `{cell(x.path)}`: {cell(x.reason)}" for x in board.excluded] or ["- none"]
        return "\n".join(lines) + "\n"
    what = board.kind if board.method_kind == "engine" else f"{board.kind}, {board.method_kind}s: end-to-end, ranked apart"
    lines = [f"## Board {board.id} ({what})", "", _md_fingerprint(board), "",
             f"**Ranking rule.** {board.ranking_rule}", "", f"**{board.task_set_note}**", ""]
    lines += _md_board_tables(board) + _md_runs(board) + _md_history(board)
    return "\n".join(lines) + "\n"


def leaderboard_markdown(boards: list[Board]) -> str:
    """Every board as one markdown document (what update_readme takes)."""
    return "# cdbench leaderboard\n\n" + "\n".join(board_markdown(b) for b in boards)


# ---------------------------------------------------------------- csv / json


def _entry_record(board: Board, e: Entry) -> dict[str, Any]:
    """A flat CSV record of one entry."""
    rec: dict[str, Any] = {"board": board.id, "kind": board.kind, "rank": e.rank, "entry": e.label,
                           "run_id": e.run_id, "engine": e.engine, "engine_version": e.engine_version,
                           "sampler": e.sampler, "n": e.n, "n_all": e.n_all}
    for name, p in e.proportions.items():
        rec.update({name: p["p"], f"{name}_k": p["k"], f"{name}_n": p["n"], f"{name}_low": p["low"],
                    f"{name}_high": p["high"]})
    rec.update(e.latencies)
    rec.update(e.per_token)
    rec.update({"outcomes": json.dumps(e.outcomes, sort_keys=True), "win_rate": e.win_rate,
                "p_vs_leader": e.p_vs_leader, "test": e.test, "started": e.started, "commit": e.commit,
                "cpu": e.cpu})
    return rec


def leaderboard_csv(boards: list[Board]) -> str:
    """One line per entry, with its board id; columns are the union over boards."""
    records = [_entry_record(b, e) for b in boards for e in b.entries]
    fields = list(dict.fromkeys(k for r in records for k in r)) or ["board"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _clean(value: Any) -> Any:
    """NaN -> None and tuples -> lists, recursively, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def leaderboard_json(boards: list[Board]) -> str:
    """The boards as JSON with "format_version"."""
    doc = {"format_version": FORMAT_VERSION, "boards": [_clean(asdict(b)) for b in boards]}
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---------------------------------------------------------------- html


def _plot_label(text: str) -> str:
    """matplotlib treats $...$ as math: escape dollars in labels."""
    return str(text).replace("$", r"\$")


def _pareto_figure(board: Board) -> Figure:
    """The primary proportion against the p99 of the kind's pooled latency (pareto: lower x, higher y)."""
    pooled = next((m for m in metrics_for(board.kind) if m.kind == "pooled_latency"), None)
    primary = METRICS[board.primary]
    if pooled is None:
        return Figure("Trade-off", plots.no_data("trade-off"), "")
    x_stat = stat_name(pooled, 99)
    xs, ys = (1.0 if not pooled.higher_is_better else -1.0), (1.0 if primary.higher_is_better else -1.0)
    points = [(_plot_label(e.label), xs * v, ys * e.proportions[board.primary]["p"]) for e in board.entries
              if (v := e.latencies.get(x_stat)) is not None and e.proportions[board.primary]["p"] is not None]
    xlabel = f"{'' if xs > 0 else '-'}{x_stat}"
    ylabel = f"{'' if ys > 0 else '-'}{board.primary}"
    svg = plots.pareto(points, xlabel, ylabel, title=f"{board.primary} vs {x_stat}")
    return Figure(f"{board.id}: {board.primary} vs {x_stat}", svg,
                  "Each ranked entry; the line is the Pareto frontier. Reference rows are not plotted.")


def _heatmap_figure(board: Board, attr: str, title: str, limit: int | None = None) -> Figure:
    """Entry x category heatmap of the primary proportion (the most frequent categories when limited)."""
    cats = _categories(board.entries, attr)
    if limit is not None and len(cats) > limit:
        size = Counter({c: sum(getattr(e, attr).get(c, {}).get("n", 0) for e in board.entries) for c in cats})
        cats = sorted(c for c, _ in size.most_common(limit))
    values = [[(getattr(e, attr).get(c) or {}).get("p") for c in cats] for e in board.entries]
    svg = plots.heatmap([_plot_label(e.label) for e in board.entries], [_plot_label(c) for c in cats], values,
                        title=f"{board.primary} by {title}", vmin=0.0, vmax=1.0)
    caption = f"{board.primary} per entry and {title}; n/a where an entry has no scored case."
    return Figure(f"{board.id}: {board.primary} by {title}", svg, caption)


def _html_tables(board: Board) -> list[Section]:
    cols = entry_columns(board.kind)
    sections: list[Section] = [Table(f"{board.id}: ranked entries", [h for _, h in cols],
                                     [[entry_cells(e, board.kind).get(k, "") for k, _ in cols] for e in board.entries],
                                     note=board.task_set_note)]
    if board.references:
        rcols = reference_columns(board)
        sections.append(Table(f"{board.id}: reference rows (not ranked)", [h for _, h in rcols],
                              [[reference_cells(r).get(k, "") for k, _ in rcols] for r in board.references],
                              note="Published numbers, never ranked and never in win rates."))
    return sections


def _html_breakdowns(board: Board) -> list[Section]:
    labels = [e.label for e in board.entries]
    source = SOURCE_FIELD[board.kind]
    return [
        Table(f"{board.id}: {board.primary} by {source}", [source] + labels,
              breakdown_rows(board.entries, "by_source")),
        _heatmap_figure(board, "by_source", source),
        Table(f"{board.id}: {board.primary} by feature tag", ["tag"] + labels, breakdown_rows(board.entries, "by_tag")),
        _heatmap_figure(board, "by_tag", "feature tag", HEATMAP_TAGS),
    ]


def _html_runs(board: Board) -> list[Section]:
    rows = [[r["run_id"], r["started"], r["status"], r["commit"], r["cpu"], r["rows"],
             "; ".join(r["settings_differ"]) or "–"] for r in board.runs]
    return [Table(f"{board.id}: runs", ["run", "started", "status", "commit", "CPU", "rows", "settings that differ"],
                  rows),
            Table(f"{board.id}: excluded runs", ["path", "reason"], [[x.path, x.reason] for x in board.excluded])]


def _html_history(board: Board) -> list[Section]:
    out: list[Section] = []
    for name, c in board.history.get("configurations", {}).items():
        if len(c["runs"]) >= 2:
            names = list(c["values"])
            rows = [[r["started"], r["run_id"], r["commit"], r["n"]] + [c["values"][s][i] for s in names]
                    for i, r in enumerate(c["runs"])]
            out.append(Table(f"{board.id}: trend of {name}", ["date", "run", "commit", "n"] + names, rows))
    return out


def _html_board(board: Board) -> list[Section]:
    """Every section of one board."""
    if not board.kind:
        return [Text("No board", [board.ranking_rule]),
                Table("Excluded runs", ["path", "reason"], [[x.path, x.reason] for x in board.excluded])]
    intro = Text(f"Board {board.id} ({board.kind})",
                 [f"Comparable fingerprint {board.comparable_digest}: "
                  + ", ".join(f"{k}={v}" for k, v in board.comparable.items()),
                  board.ranking_rule, board.task_set_note])
    return ([intro] + _html_tables(board) + [_pareto_figure(board)] + _html_breakdowns(board) + _html_runs(board)
            + _html_history(board))


def leaderboard_page(boards: list[Board]) -> Page:
    """All boards as one self-contained page."""
    sections = [s for b in boards for s in _html_board(b)]
    n_entries = sum(len(b.entries) for b in boards)
    return Page("cdbench leaderboard", sections, subtitle=f"{len(boards)} board(s), {n_entries} ranked entries")


def write_leaderboards(boards: list[Board], out_dir: Path) -> list[Path]:
    """leaderboard.md, .csv, .json and .html in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"leaderboard.md": leaderboard_markdown(boards), "leaderboard.csv": leaderboard_csv(boards),
               "leaderboard.json": leaderboard_json(boards), "leaderboard.html": render_page(leaderboard_page(boards))}
    paths = []
    for name, text in outputs.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- README


def update_readme(path: Path, board_markdown: str) -> None:
    """Replace the text between the leaderboard markers of `path` (the markers stay); ConfigError
    naming the file when a marker is missing, repeated or out of order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    for marker in (BEGIN, END):
        if text.count(marker) != 1:
            found = "missing" if marker not in text else "repeated"
            raise ConfigError(f"{path}: the marker {marker} is {found} (one {BEGIN} then one {END} expected)")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    if end < start:
        raise ConfigError(f"{path}: {END} comes before {BEGIN}")
    path.write_text(text[:start] + "\n" + board_markdown.strip("\n") + "\n" + text[end:], encoding="utf-8")
