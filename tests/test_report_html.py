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
    "curves": (lambda: plots.curves({"a": ([1, 2, 5], [0.5, 0.2, 0.1]), "b": ([1, 10], [0.3, 0.01])}, "x", "y", "t",
                                    logy=True, reference=(0.05, "ref")),
               lambda: plots.curves({"a": ([1], [None])}, "x", "y", "t")),
    "bars_with_marks": (lambda: plots.bars_with_marks(["t1", "t2"], {"a": [0.2, None], "b": [0.4, 0.1]},
                                                      {"a": [0.3, None], "b": [0.3, 0.2]}, "TV", "t", "null p95"),
                        lambda: plots.bars_with_marks(["t1"], {"a": [None]}, None, "TV", "t")),
    "step_ecdf": (lambda: plots.step_ecdf({"awrs": [0, 1, 1, 2, 40, 3], "masking": [262144.0] * 4}),
                  lambda: plots.step_ecdf({"awrs": []})),
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


# ---------------------------------------------------------------- one statistic path (the metric registry)

def _q(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (numpy's default), from the statistics module."""
    import statistics

    if q == 50:
        return statistics.median(values)
    n = 1000 if q % 1 else 100
    return statistics.quantiles(values, n=n, method="inclusive")[round(q * n / 100) - 1]


def test_headline_latency_matches_independent_statistics(page):
    table = next(s for s in page.sections if isinstance(s, Table) and s.title == "Headline: latency")
    rows = [r for r in synthetic_rows() if r["compile_status"] != "skipped"]
    assert len(table.rows) == 2
    for cells in table.rows:
        ok = [r for r in rows if f"{r['engine']}/{r['sampler']}" == cells[0] and r["compile_status"] == "ok"]
        compile_ms = [r["compile_s"] * 1000 for r in ok]
        masks = [t for r in ok for t in r["mask_times_us"]]
        expected = [_q(compile_ms, 50), _q(compile_ms, 99), _q([r["ttft_s"] * 1000 for r in ok], 50),
                    _q([r["tpot_ms"] for r in ok], 50), _q([r["tpot_ms"] for r in ok], 99),
                    _q(masks, 50), _q(masks, 99), _q(masks, 99.9),
                    1000 * sum(r["lm_s"] for r in ok) / sum(r["output_tokens"] for r in ok),
                    1000 * sum(r["engine_s"] for r in ok) / sum(r["output_tokens"] for r in ok)]
        assert cells[1:] == pytest.approx(expected, rel=1e-9)


def test_registry_helpers():
    from harness.results.metrics import METRICS, per_token_ms, proportion_counts

    rows = [{"compile_status": "ok", "dc": 1, "valid": True, "lm_s": 1.0, "output_tokens": 4},
            {"compile_status": "ok", "dc": 1, "valid": False, "lm_s": 0.5, "output_tokens": 1},
            {"compile_status": "error", "dc": 0, "valid": False, "lm_s": 9.0, "output_tokens": 9},
            {"compile_status": "skipped", "finish_reason": "skipped", "dc": 0, "valid": False, "lm_s": 9.0,
             "output_tokens": 9}]
    assert proportion_counts(METRICS["compliance"], rows) == (1, 2)
    assert proportion_counts(METRICS["declared_coverage"], rows) == (2, 3)
    assert per_token_ms(rows, "lm_s") == pytest.approx(1000 * 1.5 / 5)
    assert per_token_ms(rows[2:], "lm_s") is None


# ---------------------------------------------------------------- evaluations per step (AWRS)

AWRS_EVALS = [[1, 1, 3, 1, 12], [2, 1, 1, 40, 1, 1, 5], [0, 1, 7]]
VOCAB = 262144


def _evals_run(root: Path) -> Path:
    run_dir = root / "evals-run"
    run_dir.mkdir()
    rng = random.Random(3)
    rows = []
    for i, evals in enumerate(AWRS_EVALS):
        for sampler, steps in (("awrs", evals), ("masking", [VOCAB] * (len(evals) + 1))):
            r = _row(i, f"t{i}", "synthetic:plain", "llguidance", "ok", True, rng)
            r.update(sampler=sampler, step_evals=steps, constraint_evals=sum(steps))
            rows.append(r)
    skipped = _row(9, "t9", "synthetic:plain", "llguidance", "skipped", True, rng)
    skipped.update(sampler="awrs", finish_reason="skipped", step_evals=[10 ** 6])  # a skipped case is in no figure
    rows.append(skipped)
    (run_dir / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return run_dir


def test_step_evals_section(tmp_path):
    run_dir = _evals_run(tmp_path)
    page = run_report_page(run_dir)
    table = next(s for s in page.sections if isinstance(s, Table) and s.title == "Constraint evaluations per step")
    pooled = {"llguidance/awrs": [x for e in AWRS_EVALS for x in e],
              "llguidance/masking": [VOCAB] * sum(len(e) + 1 for e in AWRS_EVALS)}
    assert [c[0] for c in table.rows] == list(pooled)
    for cells in table.rows:
        v = pooled[cells[0]]
        assert cells[1:4] == [len(AWRS_EVALS), len(v), pytest.approx(sum(v) / len(v))]
        assert cells[4:8] == pytest.approx([_q(v, 50), _q(v, 90), _q(v, 99), max(v)])
        assert cells[8] == pytest.approx(v.count(0) / len(v)) and cells[9] == sum(v)
    html = build_run_report(run_dir).read_text(encoding="utf-8")
    svg = re.search(r"<h2>Constraint evaluations per step: distribution</h2>\s*<figure>(.*?)</figure>", html, re.S)
    assert svg and len(re.findall(r'<g id="f\d+-ecdf-\d+">', svg.group(1))) == 2
    awrs = pooled["llguidance/awrs"]
    mean, p99 = sum(awrs) / len(awrs), _q(awrs, 99)
    assert f"llguidance/awrs: mean {mean:.3g}, p99 {p99:.3g}, n={len(awrs)} steps" in svg.group(1)
    assert "llguidance/masking: mean 262,144, p99 262,144" in svg.group(1)


def test_no_step_evals_no_section(report):
    assert "Constraint evaluations per step" not in report[1]


# ---------------------------------------------------------------- compare.html: per-case A-vs-B scatter

def _cmp_row(task: str, engine: str, scale: float, ok: bool = True, masks: bool = True) -> dict:
    from harness.results.rows import blank

    i = int(task[1:])
    return blank("run") | {"task_id": task, "source": "synthetic", "seed": 0, "engine": engine, "sampler": "masking",
            "compile_status": "ok" if ok else "error", "dc": int(ok), "valid": ok, "ec": int(ok),
            "finish_reason": "eos" if ok else "not_run", "compile_s": 0.001 * (i + 1) * scale,
            "ttft_s": 0.01 * (i + 2) * scale if ok else None, "tpot_ms": 5.0 + i if ok and i % 4 else None,
            "mask_times_us": [10.0 * scale * (i + 1), 30.0 * scale] if ok and masks else [],
            "lm_s": 0.1, "engine_s": 0.01, "output_tokens": 2}


def _cmp_rows(tasks: range, scale: float, failed: set[str], no_masks: set[str]) -> list[dict]:
    return [_cmp_row(f"t{i}", e, scale * (1.3 if e == "beta" else 1.0), f"t{i}" not in failed,
                     f"t{i}" not in no_masks) for e in ("alpha", "beta") for i in tasks]


def test_compare_scatter_points_are_the_paired_cases(tmp_path):
    from harness.analysis.compare import Options, compare
    from harness.analysis.compare_report import html, write_outputs
    from harness.results.rundir import RunDir
    from test_compare_gate import _run

    base_rows = _cmp_rows(range(0, 12), 1.0, failed={"t3"}, no_masks={"t6"})
    new_rows = _cmp_rows(range(2, 14), 1.6, failed={"t9"}, no_masks={"t7"})
    comp = compare(RunDir.open(_run(tmp_path, "base", base_rows)), RunDir.open(_run(tmp_path, "new", new_rows)),
                   Options(n_resamples=50))

    def value(metric: str, r: dict) -> float | None:  # the case value, independently of the registry
        if r["compile_status"] != "ok":
            return None
        return {"compile": r["compile_s"] * 1000, "ttft": r["ttft_s"] * 1000, "tpot": r["tpot_ms"],
                "mask": sum(r["mask_times_us"]) / len(r["mask_times_us"]) if r["mask_times_us"] else None}[metric]

    expected: dict[str, set] = {}  # metric -> {(engine, BASE value, NEW value)} over the paired cases
    for metric in ("compile", "ttft", "tpot", "mask"):
        new_by = {(r["engine"], r["task_id"]): r for r in new_rows}
        expected[metric] = {(r["engine"], value(metric, r), value(metric, new_by[(r["engine"], r["task_id"])]))
                            for r in base_rows if (r["engine"], r["task_id"]) in new_by}
        expected[metric] = {p for p in expected[metric] if p[1] is not None and p[2] is not None}
    assert set(comp.pairs) == set(expected)
    for metric, pts in expected.items():
        got = sorted((g.split("/")[0], round(b, 9), round(n, 9)) for g, ps in comp.pairs[metric].items() for b, n in ps)
        assert got == sorted((e, round(b, 9), round(n, 9)) for e, b, n in pts), metric

    page = html(comp)
    for metric, unit in (("compile", "ms"), ("ttft", "ms"), ("tpot", "ms"), ("mask", "us")):
        m = re.search(rf"<h2>Per case: {metric} \({unit}\)</h2>\s*<figure>(.*?)</figure>", page, re.S)
        assert m, metric
        groups = re.findall(r'<g id="f\d+-cases-\d+">(.*?)</g>', m.group(1), re.S)
        assert len(groups) == 2  # alpha and beta, one colour each
        assert sum(g.count("<use") for g in groups) == len(expected[metric])
        assert f"within ×{comp.factor:g}" in m.group(1)
    write_outputs(comp, tmp_path / "cmp")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {k: sum(map(len, v.values())) for k, v in data["pairs"].items()} == {k: len(v) for k, v in expected.items()}
