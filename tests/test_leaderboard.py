"""Leaderboards over synthetic format-2 run directories (no model): fingerprint rule, task sets,
Wilson numbers, ranks and tie groups, win rate, reference rows, README markers, escaping, outputs.
Expected numbers are computed here independently (closed-form Wilson, binomial and hypergeometric
sums, a win rate worked by hand)."""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import leaderboard as lb
from harness.analysis import leaderboard_render as lbr
from harness.analysis.leaderboard import BEGIN, END, FIDELITY_REASON, REFERENCE_LABEL, build_leaderboards, history
from harness.analysis.leaderboard_render import update_readme, write_leaderboards
from harness.errors import ConfigError
from harness.results.rows import blank
from harness.results.rundir import RunDir, make_fingerprint

HOSTILE = "</script><script>alert(1)</script>"
ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ANCHORS.md"
Z = 1.959963984540054  # standard normal 97.5% quantile


# ---------------------------------------------------------------- fixtures


def run_row(engine: str, task: str, valid: bool = True, dc: int = 1, source: str = "jsb:Github_easy",
            sampler: str = "masking", tags: str = "type,properties", **over: Any) -> dict[str, Any]:
    row = blank("run") | {"engine": engine, "sampler": sampler, "engine_version": "1.0", "source": source, "task_id": task,
           "seed": 0, "tags": tags, "compile_status": "ok" if dc else "error", "dc": dc, "valid": bool(valid and dc),
           "compile_s": 0.002 if dc else None, "ttft_s": 0.01 if dc else None, "tpot_ms": 5.0 if dc else None,
           "mask_times_us": [10.0, 20.0] if dc else [], "lm_s": 0.1 if dc else 0.0, "engine_s": 0.01 if dc else 0.0,
           "output_tokens": 10 if dc else 0, "finish_reason": "eos" if dc else "not_run"}
    row.update(over)
    return row


def replay_row(engine: str, task: str, bucket: str = "pass", group: str = "G1", vr: int = 0, ia: int = 0,
               compile_s: float = 0.001, mask: list[float] | None = None, tags: list[str] | None = None) -> dict:
    return blank("replay") | {"engine": engine, "group": group, "task_id": task, "status": "done", "bucket": bucket,
            "compile_status": "ok", "valid_rejected": vr, "invalid_accepted": ia, "cold_compile_s": compile_s,
            "mask_us": list(mask or [10.0]), "tags": list(tags or ["type"])}


def make_run(root: Path, run_id: str, kind: str, rows: list[dict], task_set: str = "A",
             started: str | None = None) -> Path:
    env = {"cdbench_commit": "abc123", "cpu_model": "Test CPU", "engines": {"eng": {"version": "9.9"}}}
    fp = make_fingerprint(kind, {"model": "m", "tokenizer": "t", "task_set": task_set}, {"run": run_id})
    rd = RunDir.create(root, run_id, kind, {}, fp, env)
    if started:
        rd.manifest.started = started
        rd.save()
    w = rd.writer()
    for r in rows:
        w.append(r)
    w.close()
    return rd.path


def compliance_rows(engine: str, k: int, n: int, prefix: str = "t", **over: Any) -> list[dict]:
    return [run_row(engine, f"{prefix}{i}", valid=i < k, **over) for i in range(n)]


def wilson(k: int, n: int) -> tuple[float, float]:
    """Closed-form Wilson score interval (independent of scipy)."""
    p = k / n
    den = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / den
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / den
    return centre - half, centre + half


def fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p of [[a, b], [c, d]] by summing hypergeometric probabilities."""
    r1, c1, n = a + b, a + c, a + b + c + d

    def prob(x: int) -> float:
        return math.comb(c1, x) * math.comb(n - c1, r1 - x) / math.comb(n, r1)

    observed = prob(a)
    support = range(max(0, r1 + c1 - n), min(r1, c1) + 1)
    return min(1.0, sum(prob(x) for x in support if prob(x) <= observed * (1 + 1e-7)))


def board_of(boards: list[lb.Board], run_id: str) -> lb.Board:
    return next(b for b in boards if any(r["run_id"] == run_id for r in b.runs))


# ---------------------------------------------------------------- boards


def test_fingerprint_rule_and_exclusions(tmp_path):
    a1 = make_run(tmp_path, "a1", "run", compliance_rows("x", 3, 4))
    a2 = make_run(tmp_path, "a2", "run", compliance_rows("y", 2, 4))
    b1 = make_run(tmp_path, "b1", "run", compliance_rows("x", 4, 4), task_set="B")
    old = tmp_path / "old"
    old.mkdir()
    (old / "rows.jsonl").write_text(json.dumps(run_row("x", "t0")) + "\n")
    (old / "config.json").write_text("{}")
    a_file = tmp_path / "note.txt"
    a_file.write_text("x")
    fid = RunDir.create(tmp_path, "fid", "fidelity", {}, make_fingerprint("fidelity", {}, {})).path
    boards = build_leaderboards([a1, a2, b1, old, a_file, fid])
    assert len(boards) == 2
    board_a, board_b = board_of(boards, "a1"), board_of(boards, "b1")
    assert board_a is not board_b
    assert {e.run_id for e in board_a.entries} == {"a1", "a2"}
    assert {e.run_id for e in board_b.entries} == {"b1"}
    for board in boards:
        reasons = {Path(x.path).name: x.reason for x in board.excluded}
        assert "results format 1" in reasons["old"]
        assert reasons["note.txt"] == "not a directory"
        assert reasons["fid"] == FIDELITY_REASON
    reasons_a = {Path(x.path).name: x.reason for x in board_a.excluded}
    assert "different comparable fingerprint" in reasons_a["b1"] and "task_set: 'A' -> 'B'" in reasons_a["b1"]
    md = lbr.leaderboard_markdown(boards)
    assert FIDELITY_REASON in md and "results format 1" in md


def test_only_format1_runs_give_an_empty_board(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "rows.jsonl").write_text("{}\n")
    boards = build_leaderboards([old])
    assert len(boards) == 1 and not boards[0].entries
    assert "results format 1" in boards[0].excluded[0].reason
    with pytest.raises(ConfigError):
        build_leaderboards([old], task_set="everything")


def test_intersection_and_union(tmp_path):
    rows = [run_row("A", f"t{i}") for i in range(10)]
    rows += [run_row("B", f"t{i}") for i in range(8)] + [run_row("B", f"u{i}", source="other") for i in range(2)]
    path = make_run(tmp_path, "r", "run", rows)
    (inter,) = build_leaderboards([path])
    assert (inter.cases_total, inter.cases_kept) == (12, 8)
    assert [e.n for e in inter.entries] == [8, 8] and sorted(e.n_all for e in inter.entries) == [10, 10]
    assert "4 excluded" in inter.task_set_note
    (union,) = build_leaderboards([path], task_set="union")
    assert (union.cases_total, union.cases_kept) == (12, 12)
    assert [e.n for e in union.entries] == [10, 10]
    cells = {row[0]: row[1:] for row in lbr.breakdown_rows(union.entries, "by_source")}
    a_col = [e.engine for e in union.entries].index("A")
    assert cells["other"][a_col] == "n/a"
    assert "n/a" in lbr.leaderboard_markdown([union])


def test_wilson_numbers_and_columns(tmp_path):
    rows = compliance_rows("A", 50, 60) + [run_row("A", f"f{i}", dc=0) for i in range(6)]
    (board,) = build_leaderboards([make_run(tmp_path, "r", "run", rows)])
    (e,) = board.entries
    comp, dcov, ecov = (e.proportions[m] for m in ("compliance", "declared_coverage", "empirical_coverage"))
    assert (comp["k"], comp["n"], dcov["k"], dcov["n"], ecov["k"], ecov["n"]) == (50, 60, 60, 66, 50, 66)
    lo, hi = wilson(50, 60)
    assert comp["low"] == pytest.approx(lo, abs=1e-9) and comp["high"] == pytest.approx(hi, abs=1e-9)
    cells = lbr.entry_cells(e, "run")
    assert cells["compliance"] == f"{50 / 60:.3f} ({lo:.2f}\u2013{hi:.2f})" == "0.833 (0.72\u20130.91)"
    # every case has mask times [10, 20]: pooled p50 = 15; compile 2 ms; 0.1 s LM over 10 tokens = 10 ms/token
    assert e.latencies["mask_p50_us"] == pytest.approx(15.0)
    assert e.latencies["compile_p99_ms"] == pytest.approx(2.0)
    assert e.per_token["lm_ms_per_token"] == pytest.approx(10.0)
    assert e.per_token["engine_ms_per_token"] == pytest.approx(1.0)
    assert e.outcomes["compile_status"] == {"error": 6, "ok": 60}
    assert e.engine_version == "1.0" and e.commit == "abc123" and e.cpu == "Test CPU"


def test_ranks_and_tie_groups_paired(tmp_path):
    near = make_run(tmp_path, "near", "run", compliance_rows("A", 50, 60) + compliance_rows("B", 49, 60))
    far = make_run(tmp_path, "far", "run", compliance_rows("C", 59, 60) + compliance_rows("D", 20, 60),
                   task_set="other")
    boards = build_leaderboards([near, far])
    ranks = {e.engine: e.rank for b in boards for e in b.entries}
    assert ranks == {"A": "1\u20132", "B": "1\u20132", "C": "1", "D": "2"}
    d = next(e for b in boards for e in b.entries if e.engine == "D")
    # paired on the same 60 cases: C alone right on 39, D alone on none -> binomial 2 * 0.5**39
    assert "McNemar" in d.test and d.p_vs_leader == pytest.approx(2 * 0.5**39, rel=1e-9)
    b = next(e for bd in boards for e in bd.entries if e.engine == "B")
    assert b.p_vs_leader == pytest.approx(1.0)
    assert [e.engine for e in board_of(boards, "far").entries] == ["C", "D"]


def test_ranks_unpaired_use_fisher(tmp_path):
    near = make_run(tmp_path, "near", "run", compliance_rows("A", 50, 60, prefix="a") +
                    compliance_rows("B", 49, 60, prefix="b"))
    far = make_run(tmp_path, "far", "run", compliance_rows("C", 59, 60, prefix="c") +
                   compliance_rows("D", 20, 60, prefix="d"), task_set="other")
    boards = build_leaderboards([near, far], task_set="union")
    by = {e.engine: e for b in boards for e in b.entries}
    assert all("Fisher" in by[x].test for x in "BD")
    assert by["B"].p_vs_leader == pytest.approx(fisher_two_sided(50, 10, 49, 11), rel=1e-6)
    assert by["D"].p_vs_leader == pytest.approx(fisher_two_sided(59, 1, 20, 40), rel=1e-6)
    assert (by["A"].rank, by["B"].rank, by["C"].rank, by["D"].rank) == ("1\u20132", "1\u20132", "1", "2")


def test_win_rate_worked_by_hand(tmp_path):
    # replay headline: pass, valid_rejected, invalid_accepted, compile_cold p50/p99, replay_mask p50/p99
    rows = [replay_row("A", f"s{i}", compile_s=0.001, mask=[10.0]) for i in range(4)]
    rows += [replay_row("B", f"s{i}", bucket="pass" if i < 2 else "invalid_accepted", ia=int(i >= 2),
                        compile_s=0.002, mask=[5.0]) for i in range(4)]
    c_buckets = ["pass", "pass", "valid_rejected", "invalid_accepted"]
    rows += [replay_row("C", f"s{i}", bucket=c_buckets[i], vr=int(i == 2), ia=int(i == 3), compile_s=0.003,
                        mask=[20.0]) for i in range(4)]
    (board,) = build_leaderboards([make_run(tmp_path, "r", "replay", rows)])
    rates = {e.engine: e.win_rate for e in board.entries}
    # A: pass 1, vr 0.75 (ties B), ia 1, compile 1, 1, mask 0.5, 0.5 -> 5.75 / 7
    # B: pass 0.25 (ties C), vr 0.75, ia 0, compile 0.5, 0.5, mask 1, 1 -> 4 / 7
    # C: pass 0.25, vr 0, ia 0.5, compile 0, 0, mask 0, 0 -> 0.75 / 7
    assert rates["A"] == pytest.approx(5.75 / 7)
    assert rates["B"] == pytest.approx(4 / 7)
    assert rates["C"] == pytest.approx(0.75 / 7)
    assert board.headline == ["pass", "valid_rejected", "invalid_accepted", "compile_cold_p50_ms",
                              "compile_cold_p99_ms", "replay_mask_p50_us", "replay_mask_p99_us"]


def test_reference_rows_shown_not_ranked(tmp_path):
    rp = make_run(tmp_path, "rp", "replay", [replay_row("A", "s0"), replay_row("B", "s0")])
    rn = make_run(tmp_path, "rn", "run", compliance_rows("A", 1, 2))
    boards = build_leaderboards([rp, rn])
    replay_b, run_b = board_of(boards, "rp"), board_of(boards, "rn")
    assert replay_b.references and all(r["id"].startswith("maskbench-2025-03-27") for r in replay_b.references)
    assert run_b.references and all(r["id"].startswith("jsb-") for r in run_b.references)
    for board in boards:
        assert all(r["rank"] == REFERENCE_LABEL for r in board.references)
        entry_labels = {e.label for e in board.entries}
        assert not entry_labels & {r["engine"] for r in board.references}
        assert all(e.rank != REFERENCE_LABEL for e in board.entries)
    llg = next(r for r in replay_b.references if r["engine"] == "LLGuidance")
    assert (llg["values"]["pass"]["k"], llg["values"]["pass"]["n"]) == (8909, 11306)
    assert llg["values"]["replay_mask_p99_us"] == 533.0
    assert llg["values"]["compile_cold_p50_ms"] == pytest.approx(1.037)
    assert len({e.win_rate for e in replay_b.entries}) >= 1  # win rates cover the two entries only
    md = lbr.leaderboard_markdown(boards)
    assert md.count(REFERENCE_LABEL) >= len(replay_b.references) + len(run_b.references)


@pytest.mark.skipif(not ANCHORS.exists(), reason="ANCHORS.md not beside the repository")
def test_reference_numbers_are_copied_from_anchors():
    lines = ANCHORS.read_text(encoding="utf-8").splitlines()
    for row in lb.load_reference_rows():
        first, last = map(int, re.search(r"lines (\d+)-(\d+)", row["source"]["anchors"]).groups())
        text = "\n".join(lines[first - 1:last])
        for label, stated in row["stated"].items():
            assert re.search(rf"(?<![\d,.]){re.escape(stated['value'])}(?![\d]|[,.]\d)", text), (row["id"], label)


# ---------------------------------------------------------------- history, outputs


def test_history_orders_runs_by_start(tmp_path):
    later = make_run(tmp_path, "later", "run", compliance_rows("A", 2, 4), started="2026-02-01T10:00:00+00:00")
    early = make_run(tmp_path, "early", "run", compliance_rows("A", 4, 4), started="2026-01-01T10:00:00+00:00")
    h = history([later, early])
    trend = h["configurations"]["run:A/masking"]
    assert [r["run_id"] for r in trend["runs"]] == ["early", "later"]
    assert trend["values"]["compliance"] == [1.0, 0.5]
    (board,) = build_leaderboards([later, early])
    assert "Trend: run:A/masking" in lbr.leaderboard_markdown([board])


def test_outputs_json_csv_html(tmp_path):
    hostile = {"source": HOSTILE, "tags": f"type,{HOSTILE}"}
    rows = compliance_rows("A", 3, 4, **hostile) + compliance_rows("B", 1, 4, **hostile)
    (board,) = build_leaderboards([make_run(tmp_path, "r", "run", rows)])
    paths = write_leaderboards([board], tmp_path / "out")
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html"]
    doc = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert doc["format_version"] == 1 and doc["boards"][0]["id"] == board.id
    records = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").open()))
    assert len(records) == 2 and {r["board"] for r in records} == {board.id}
    html = (tmp_path / "out" / "leaderboard.html").read_text()
    assert HOSTILE not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the page's own sorting script only
    assert "<script>alert" not in (tmp_path / "out" / "leaderboard.md").read_text()


def test_update_readme_replaces_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    update_readme(readme, "## new board\n| a |\n")
    assert readme.read_text() == f"intro\n{BEGIN}\n## new board\n| a |\n{END}\noutro\n"
    update_readme(readme, "second")
    assert readme.read_text() == f"intro\n{BEGIN}\nsecond\n{END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(ConfigError, match="README.md"):
        update_readme(readme, "x")
    readme.write_text(f"{END}\n{BEGIN}\n")
    with pytest.raises(ConfigError, match="README.md"):
        update_readme(readme, "x")
    assert readme.read_text() == f"{END}\n{BEGIN}\n"
