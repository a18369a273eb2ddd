"""The HTML report of a `cdbench fidelity` run, without a browser: a synthetic run directory written
the way run_fidelity writes one (manifest, rows from fidelity_rows, fidelity.json, curve.csv), with a
hostile task id, becomes one self-contained, deterministic report.html with the ASAp convergence
curve drawn once per task."""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from harness.fidelity.run import fidelity_rows
from harness.report.fidelity_report import build_fidelity_report, fidelity_report_page, read_curve
from harness.report.page import Table, render_page
from harness.results.rundir import RunDir, make_fingerprint

HOSTILE = "</script><script>alert(1)</script>"
ALLOWED_URLS = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
CURVE_FIELDS = ["task", "samples", "trie_tv", "theta_root", "distinct", "trie_nodes", "seconds"]
TV_TITLE = "ASAp convergence: TV of the trie-implied distribution"
THETA_TITLE = "ASAp convergence: θ(root) against P(L)"


def _sampler(name: str, tv: float, n: int | None, **extra) -> dict:
    row = {"sampler": name, "samples": n, "tv": tv, "kl": math.inf if tv > 0.5 else tv / 2, "outside_L": 0.0,
           "seconds": 1.5}
    if n:
        row.update(null_tv_mean=0.1, null_tv_p95=0.2, inside_band=tv <= 0.2)
    return {**row, **extra}


def _result(task: str, p_of_l: float, checkpoints: list[int], asap: bool = True) -> dict:
    curve = [{"task": task, "samples": n, "trie_tv": 0.8 / (1 + i) ** 1.7, "theta_root": p_of_l * (1 + 50 / n ** 1.3),
              "distinct": min(n, 7), "trie_nodes": 5 + 3 * i, "seconds": 0.25 * n} for i, n in enumerate(checkpoints)]
    samplers = [_sampler("masking (exact LCD)", 0.12, None), _sampler("masking", 0.15, 100),
                _sampler("awrs-smc", 0.6, 100, runs=20, particles=5, zhat_mean=p_of_l * 0.9, zhat_se=1e-9,
                         zhat_over_p_of_l=0.9, evals_per_step=12.5)]
    if asap:
        samplers.append(_sampler("asap", 0.11, 100, trie_tv=curve[-1]["trie_tv"], theta_root=curve[-1]["theta_root"],
                                 trie_nodes=curve[-1]["trie_nodes"]))
    return {"task": task, "kind": "cfg", "length_bound": 5, "engine": "xgrammar", "level": "tokens",
            "samplers": samplers, "curve": curve if asap else [], "status": "ok", "sequences": 40, "strings": 9,
            "p_of_l": p_of_l, "log_p_of_l": math.log(p_of_l), "walk_prefixes": 55, "walk_lm_calls": 55,
            "walk_evaluations": 55 * 1000, "walk_s": 3.25, "lcd_dead_end_mass": -4e-16,
            "top_strings": [["00", 0.5], [HOSTILE, 0.25]]}


# task -> number of ASAp convergence points (0: no asap on that task)
CURVES = {"binary_small": [1, 2, 5, 10, 20, 50, 100], HOSTILE: [1, 2, 5, 10, 20], "no_asap": []}


def synthetic_results() -> list[dict]:
    out = [_result(t, 10.0 ** -(3 + i), pts, asap=bool(pts)) for i, (t, pts) in enumerate(CURVES.items())]
    out.append({"task": "too_big", "kind": "json_schema", "length_bound": 9, "engine": "xgrammar", "level": "tokens",
                "samplers": [], "curve": [], "status": "budget", "message": "exact walk: over 20000 prefixes"})
    return out


def make_fidelity_run(root: Path, run_id: str = "fid-synthetic", curve_csv: bool = True) -> Path:
    """A fidelity run directory as run_fidelity leaves it."""
    fp = make_fingerprint("fidelity", {"model": "m", "tokenizer": "v", "task_set": "ts", "level": "tokens",
                                       "length_bound": None}, {"samples": 100})
    env = {"python": "3.11.7", "cpu_model": "Test CPU", "cpu_count": 2, "cdbench_commit": "abc123",
           "model": {"model": "tiny.gguf", "model_name": "Tiny", "model_sha256": "f" * 64, "lm_threads": 2},
           "engine": {"name": "xgrammar", "version": "0.2.9", "settings": {"strict": True, "note": HOSTILE}}}
    cfg = {"dataset": "fidelity", "tasks": [], "engine": "xgrammar", "samplers": ["masking", "awrs-smc", "asap"],
           "samples": 100, "particles": 5, "seed": 0, "level": "tokens", "length_bound": None, "null_reps": 200,
           "max_prefixes": 20000, "max_seconds": 900.0}
    rd = RunDir.create(root, run_id, "fidelity", cfg, fp, env)
    results = synthetic_results()
    w = rd.writer()
    for r in results:
        for row in fidelity_rows(r):
            w.append(row)
    w.close()
    (rd.path / "fidelity.json").write_text(json.dumps({"results": results}), encoding="utf-8")
    (rd.path / "fidelity.md").write_text("# fidelity\n", encoding="utf-8")
    if curve_csv:
        with open(rd.path / "curve.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            for r in results:
                writer.writerows(r["curve"])
    rd.finish()
    return rd.path


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    path = build_fidelity_report(make_fidelity_run(tmp_path_factory.mktemp("fid")))
    return path, path.read_text(encoding="utf-8")


def _figure_svg(html: str, title: str) -> str:
    m = re.search(r"<h2>" + re.escape(title) + r"</h2>\s*<figure>(.*?)</figure>", html, re.S)
    assert m, f"no figure {title!r}"
    return m.group(1)


def _groups(svg: str, prefix: str) -> dict[str, str]:
    """Scoped SVG group id (f<n>-<prefix>-<j>) -> its content."""
    return {m.group(1): m.group(2) for m in re.finditer(r'<g id="(f\d+-' + prefix + r'-\d+)">(.*?)</g>', svg, re.S)}


def test_written_and_deterministic(report):
    path, html = report
    assert path.name == "report.html" and html.startswith("<!DOCTYPE html>")
    assert render_page(fidelity_report_page(path.parent)).encode("utf-8") == path.read_bytes()


def test_convergence_curve_one_line_per_task(report):
    _, html = report
    lines = _groups(_figure_svg(html, TV_TITLE), "curve")
    expected = [len(pts) for pts in CURVES.values() if pts]
    assert len(lines) == len(expected) == 2
    # one marker per convergence point, in task order, and one polyline through them
    assert [body.count("<use") for body in lines.values()] == expected
    for body, n in zip(lines.values(), expected):
        path = re.search(r'<path d="([^"]*)"', body).group(1)
        assert path.count("L") == n - 1
    theta = _groups(_figure_svg(html, THETA_TITLE), "curve")
    assert [body.count("<use") for body in theta.values()] == expected
    assert "θ(root) = P(L)" in _figure_svg(html, THETA_TITLE)


def test_tables_match_the_rows(report):
    path, html = report
    page = fidelity_report_page(path.parent)
    table = next(s for s in page.sections if isinstance(s, Table) and s.title.startswith("Distance"))
    rows = [json.loads(line) for line in (path.parent / "rows.jsonl").read_text().splitlines() if line.strip()]
    assert len(table.rows) == len(rows) == sum(len(r["samplers"]) or 1 for r in synthetic_results())
    for cells, row in zip(table.rows, rows):
        assert cells[0] == row["task"] and cells[3] == row.get("tv")
    failed = [c for c in table.rows if c[0] == "too_big"]
    assert failed and failed[0][1] == "(budget)" and "over 20000 prefixes" in failed[0][-1]
    # θ(root) / P(L) of the last ASAp point, from the independent synthetic numbers
    asap = next(c for c in table.rows if c[0] == "binary_small" and c[1] == "asap")
    assert asap[12] == pytest.approx(1 + 50 / 100 ** 1.3)
    points = next(s for s in page.sections if isinstance(s, Table) and s.title == "ASAp convergence points")
    assert len(points.rows) == sum(len(p) for p in CURVES.values())
    assert ">∞</td>" in html and 'data-v="Infinity"' in html  # KL with mass outside L


def test_tv_figure_has_a_bar_per_sampler(report):
    _, html = report
    svg = _figure_svg(html, "TV to the exact target per task and sampler")
    # one legend entry per sampler name seen in the rows, plus the null band's
    for name in ("masking (exact LCD)", "masking", "awrs-smc", "asap", "null band p95"):
        assert name in svg


def test_hostile_task_id_is_escaped(report):
    _, html = report
    assert HOSTILE not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1


def test_no_external_urls(report):
    _, html = report
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) <= ALLOWED_URLS
    for attr, value in re.findall(r"\b(src|href)\s*=\s*\"([^\"]*)\"", html):
        assert attr == "href" and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", value), (attr, value)
    assert 'href="curve.csv"' in html and 'href="fidelity.md"' in html


def test_curve_from_fidelity_json_when_no_csv(tmp_path):
    run_dir = make_fidelity_run(tmp_path, "partial", curve_csv=False)
    assert not (run_dir / "curve.csv").exists()
    assert len(read_curve(run_dir, synthetic_results())) == sum(len(p) for p in CURVES.values())
    html = build_fidelity_report(run_dir).read_text(encoding="utf-8")
    assert len(_groups(_figure_svg(html, TV_TITLE), "curve")) == 2


def test_empty_run_renders(tmp_path):
    fp = make_fingerprint("fidelity", {}, {})
    rd = RunDir.create(tmp_path, "empty", "fidelity", {}, fp, {})
    html = build_fidelity_report(rd.path).read_text(encoding="utf-8")
    assert "no results yet" in html
