"""The HTML report of a run, without a browser: a synthetic run directory (with hostile dataset
text) becomes one self-contained, deterministic report.html whose numbers check out."""
from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from harness.analysis.stats import wilson_interval
from harness.report import plots
from harness.report.page import Figure, KeyValues, Links, Page, Table, Text, render_page
from harness.report.run_report import build_run_report, run_report_page

HOSTILE = "</script><script>alert(1)</script>"
BOLD = "<b>x</b>"
PWN = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\">"
ALLOWED_URLS = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def _row(i: int, task: str, source: str, engine: str, status: str, valid: bool, rng: random.Random) -> dict:
    compiled = status == "ok"
    masks = [round(rng.lognormvariate(5.0, 0.8), 2) for _ in range(rng.randint(3, 12))] if compiled else []
    return {
        "task_id": task, "source": source, "kind": "json_schema",
        "tags": "properties,type" + (",pattern" if i % 2 else ",enum"),
        "engine": engine, "engine_version": "1.0", "engine_settings": json.dumps({"strict": True}),
        "sampler": "masking", "sampler_settings": json.dumps({"sampler": "masking", "temperature": 0.0}),
        "seed": 0, "compile_status": status, "compile_s": rng.uniform(0.001, 0.05),
        "compile_error": "" if compiled else "CompileError: unsupported <keyword>",
        "dc": int(compiled), "ec": int(compiled and valid), "valid": compiled and valid,
        "output_text": (PWN if i == 3 else f'{{"a": {i}}} {HOSTILE} {BOLD}') if compiled else None,
        "validation_error": "" if valid or not compiled else f"'a' is not of type 'string' {BOLD}",
        "finish_reason": ("eos" if i % 3 else "max_tokens") if compiled else "not_run",
        "ttft_s": rng.uniform(0.01, 0.3) if compiled else None, "tpot_ms": rng.uniform(15, 40) if compiled else None,
        "tgt_s": rng.uniform(0.2, 5.0), "mask_times_us": masks, "lm_s": rng.uniform(0.1, 1.0),
        "engine_s": rng.uniform(0.001, 0.05), "output_tokens": len(masks),
    }


def synthetic_rows() -> list[dict]:
    rng = random.Random(7)
    sources = [f"synthetic:{HOSTILE}", f"synthetic:{BOLD}", "synthetic:plain"]
    plan = {"alpha": ["ok", "ok", "ok", "ok", "error", "ok", "ok", "ok", "skipped"],
            "beta": ["ok", "ok", "timeout", "ok", "ok", "ok", "ok", "ok", "skipped"]}
    rows = []
    for engine, statuses in plan.items():
        for i, status in enumerate(statuses):
            valid = (i + len(engine)) % 3 != 0
            row = _row(i, f"t{i:02d}", sources[i % 3], engine, status, valid, rng)
            if status == "skipped":
                row.update(finish_reason="skipped", dc=0, ec=0)
            rows.append(row)
    return rows


def make_synthetic_run(root: Path) -> Path:
    """A run directory as `cdbench run` leaves it (rows.jsonl, environment.json, config.toml)."""
    run_dir = root / "synthetic-run"
    run_dir.mkdir(parents=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in synthetic_rows()]
    lines.insert(5, "")  # a blank line: row ids are line numbers, not row indexes
    (run_dir / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {"python": "3.11.7", "cpu_model": f"Test CPU {BOLD}", "cpu_count": 2, "cdbench_commit": "abc123",
           "packages": {"numpy": "2.0"}, "started": "2030-01-02T03:04:05",
           "model": {"model": "tiny.gguf", "model_sha256": "f" * 64, "lm_threads": 2},
           "engines": {"alpha": {"version": "1.0", "settings": {"strict": True, "note": HOSTILE}},
                       "beta": {"version": "2.0", "settings": {"strict": False}}}}
    (run_dir / "environment.json").write_text(json.dumps(env), encoding="utf-8")
    (run_dir / "config.toml").write_text('[run]\nrun_id = "synthetic-run"\ndataset = "synthetic"\n'
                                         'seeds = [0]\nmax_tokens = 64\n', encoding="utf-8")
    (run_dir / "summary.md").write_text("# summary\n", encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("report"))
    path = build_run_report(run_dir)
    return path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page(report) -> Page:
    return run_report_page(report[0].parent)


def test_report_written_and_deterministic(report, page):
    path, html = report
    assert path.name == "report.html" and path.exists()
    assert html.startswith("<!DOCTYPE html>")
    assert render_page(page).encode("utf-8") == path.read_bytes()  # built twice, byte-identical


def test_no_external_urls(report):
    _, html = report
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) <= ALLOWED_URLS
    for attr, value in re.findall(r"\b(src|href)\s*=\s*\"([^\"]*)\"", html):
        assert attr == "href" and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", value), (attr, value)
    assert "<link" not in html and "@import" not in html and "url(http" not in html


def test_hostile_text_is_escaped(report):
    _, html = report
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert HOSTILE not in html and BOLD not in html and "<img" not in html
    assert html.count("<script") == 1  # our sorting script only


def test_script_allowed_by_csp_hash(report):
    import base64
    import hashlib

    _, html = report
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_headline_wilson_intervals(report, page):
    _, html = report
    table = next(s for s in page.sections if isinstance(s, Table) and "coverage" in s.title)
    rows = [r for r in synthetic_rows() if r["compile_status"] != "skipped"]
    for cells in table.rows:
        mine = [r for r in rows if f"{r['engine']}/{r['sampler']}" == cells[0]]
        compiled = [r for r in mine if r["dc"] == 1]
        expected = {3: (len(compiled), len(mine)), 4: (sum(r["ec"] for r in mine), len(mine)),
                    5: (sum(r["ec"] for r in compiled), len(compiled))}
        assert cells[1] == len(mine) and cells[2] == 1
        for col, (k, n) in expected.items():
            lo, hi = _wilson(k, n)
            text = f"{k / n:.3f} ({lo:.3f}–{hi:.3f})"
            assert cells[col] == text
            assert f">{text}</td>" in html


def test_row_ids_are_line_numbers(report, page):
    invalid = next(s for s in page.sections if isinstance(s, Table) and s.title == "Invalid outputs")
    lines = (report[0].parent / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    assert invalid.rows
    for cells in invalid.rows:
        row = json.loads(lines[cells[0] - 1])
        assert (row["task_id"], f"{row['engine']}/{row['sampler']}") == (cells[1], cells[2])
        assert row["dc"] == 1 and row["ec"] == 0


def test_sections_present(report):
    _, html = report
    for title in ("Provenance", "Headline: latency", "Compile status counts", "Finish reason counts",
                  "Compliance per source", "Compliance per feature tag", "Invalid outputs", "Slowest cases by TTFT",
                  "Mask time: percentile ladder", "Files of this run"):
        assert f">{title}</h2>" in html
    assert 'href="rows.jsonl"' in html and 'href="summary.md"' in html
    assert html.count("<svg") >= 8


SAMPLES = {"a": [1.0, 2.0, 3.5, 10.0, 40.0], "b": [2.0, 2.5, 8.0, 20.0, 90.0]}
PLOTS = {
    "rate_bars": (lambda: plots.rate_bars(["dc", "ec"], {"a": [(9, 10), (5, 10)], "b": [(10, 10), (0, 0)]}),
                  lambda: plots.rate_bars([], {})),
    "stacked_counts": (lambda: plots.stacked_counts(["a", "b"], ["ok", "error"], {"a": {"ok": 3}, "b": {"error": 1}}, "t"),
                       lambda: plots.stacked_counts([], ["ok"], {}, "t")),
    "fraction_slower": (lambda: plots.fraction_slower(SAMPLES, "ms", "t"), lambda: plots.fraction_slower({}, "ms", "t")),
    "percentile_ladder": (lambda: plots.percentile_ladder(SAMPLES, "µs"), lambda: plots.percentile_ladder({"a": []}, "µs")),
    "box_plots": (lambda: plots.box_plots(SAMPLES, "ms", "t"), lambda: plots.box_plots({}, "ms", "t")),
    "forest": (lambda: plots.forest(["x", "y"], [1.1, 0.7], [0.9, 0.5], [1.3, 0.9], 1.25, "t"),
               lambda: plots.forest([], [], [], [], 1.25, "t")),
    "scatter_ab": (lambda: plots.scatter_ab([1, 2, 3], [1.5, 2, 9], "ms", "t", ("A", "B")),
                   lambda: plots.scatter_ab([], [], "ms", "t", ("A", "B"))),
    "pareto": (lambda: plots.pareto([("a", 100.0, 0.7), ("b", 300.0, 0.9), ("c", 400.0, 0.8)], "x", "y", "t"),
               lambda: plots.pareto([], "x", "y", "t")),
    "heatmap": (lambda: plots.heatmap(["r1", "r2"], ["c1", "c2"], [[0.5, None], [1.0, 0.25]], "t", "{:.2f}"),
                lambda: plots.heatmap([], [], [], "t", "{:.2f}")),
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plots_return_svg(name):
    normal, empty = PLOTS[name]
    svg = normal()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "</svg>" in svg
    assert "<metadata>" not in svg and "matplotlib.org" not in svg
    assert svg == normal()  # deterministic
    blank = empty()
    assert "<svg" in blank and "no data" in blank


def test_heatmap_shows_missing_as_na():
    assert "n/a" in plots.heatmap(["r"], ["c1", "c2"], [[0.5, None]], "t", "{:.2f}")


def test_wilson_helper_matches_formula():
    for k, n in ((0, 5), (3, 7), (24, 25), (10, 10)):
        assert wilson_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-9)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_page_escapes_everything_but_svg():
    svg = plots.rate_bars(["g"], {"s": [(1, 2)]})
    page = Page(HOSTILE, [Text(BOLD, [HOSTILE]), KeyValues("kv", [(BOLD, HOSTILE)]),
                          Table("t", ["c", BOLD], [[HOSTILE, 1.5], ["x", None]], note=BOLD),
                          Figure("f", svg, HOSTILE), Links("l", [(BOLD, "rows.jsonl")])])
    html = render_page(page)
    assert HOSTILE not in html and BOLD not in html
    assert html.count("<svg") == 1 and '<td class="num" data-v="1.5">1.5</td>' in html
    assert render_page(page) == html


@pytest.mark.parametrize("href", ["https://example.com/x", "//example.com/x", "/etc/passwd", "javascript:alert(1)"])
def test_links_must_be_relative(href):
    with pytest.raises(ValueError):
        render_page(Page("p", [Links("l", [("x", href)])]))


def test_figure_must_be_svg():
    with pytest.raises(ValueError):
        render_page(Page("p", [Figure("f", "<script>alert(1)</script>", "")]))


def test_figure_ids_scoped_per_figure():
    svg = plots.scatter_ab([1, 2], [2, 3], "ms", "t", ("A", "B"))
    html = render_page(Page("p", [Figure("a", svg, ""), Figure("b", svg, "")]))
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_empty_run_renders(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    html = build_run_report(run_dir).read_text(encoding="utf-8")
    assert "no scored rows" in html
