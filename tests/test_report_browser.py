"""The run report in a real browser (Debian's Chromium, driven by Playwright): it loads nothing but
itself, runs without errors, draws every figure, sorts tables on a header click, and shows hostile
dataset text as text without executing it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's)",
                allow_module_level=True)

from harness.report.run_report import build_run_report  # noqa: E402
from test_report_html import HOSTILE, make_synthetic_run  # noqa: E402

SHOT_COPY = Path("/tmp/cdbench-report.png")
SORT_TABLE = "Slowest cases by total time"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, path: Path):
    """A page opened from file://, with every request, console error, page error and dialog recorded."""
    url = path.resolve().as_uri()
    seen = {"requests": [], "errors": [], "dialogs": []}
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(url, wait_until="load")
    return page, url, seen


@pytest.fixture
def loaded(browser, tmp_path):
    """The synthetic run report opened from file://."""
    page, url, seen = _open(browser, build_run_report(make_synthetic_run(tmp_path)))
    yield page, url, seen
    page.close()


def _svg_boxes(page) -> list[list[float]]:
    return page.evaluate("Array.from(document.querySelectorAll('svg'), s => {"
                         " const r = s.getBoundingClientRect(); return [r.width, r.height]; })")


def _check_numeric_sort(page, title: str, column: str) -> None:
    """Clicking `column` of table `title` sorts its numbers ascending (empty cells last), again descending."""
    table = page.locator(f"section:has(h2:text-is('{title}')) table")
    headers = [t.strip(" \u00a0\u2195\u25b2\u25bc") for t in table.locator("thead th").all_inner_texts()]
    col = headers.index(column)
    header = table.locator("thead th").nth(col)

    def values() -> list[float | None]:
        cells = _column(table, col)
        return [None if c in ("", "–", "n/a") else float(c.split()[0].replace(",", "").replace("∞", "inf"))
                for c in cells]

    before = values()
    filled = [v for v in before if v is not None]
    assert len(filled) >= 3 and filled != sorted(filled), filled  # the click has something to do
    header.click()
    after = values()
    assert after == sorted(filled) + [None] * (len(before) - len(filled))
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert values()[: len(filled)] == sorted(filled, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"


def _finish(page, url: str, seen: dict, shot: Path, min_svgs: int) -> None:
    boxes = _svg_boxes(page)
    assert len(boxes) >= min_svgs and all(w > 0 and h > 0 for w, h in boxes), boxes
    page.screenshot(path=str(shot), full_page=True)
    assert seen["requests"] == [url], seen["requests"]
    assert seen["errors"] == [] and seen["dialogs"] == []


def _column(table, index: int) -> list[str]:
    return [t.strip() for t in table.locator(f"tbody tr td:nth-child({index + 1})").all_inner_texts()]


def _check_sorting(page) -> None:
    table = page.locator(f"section:has(h2:text-is('{SORT_TABLE}')) table")
    headers = [t.strip(" \u00a0\u2195\u25b2\u25bc") for t in table.locator("thead th").all_inner_texts()]
    col = headers.index("total time ms")
    before_ids, before_t = _column(table, 0), [float(v) for v in _column(table, col)]
    assert len(before_ids) >= 3 and before_t == sorted(before_t, reverse=True)
    header = table.locator("thead th").nth(col)
    header.click()
    after_ids, after_t = _column(table, 0), [float(v) for v in _column(table, col)]
    assert after_t == sorted(before_t)
    assert after_ids == [i for _, i in sorted(zip(before_t, before_ids))] and after_ids != before_ids
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _column(table, 0) == before_ids and header.get_attribute("aria-sort") == "descending"


def test_report_in_chromium(loaded, tmp_path):
    page, url, seen = loaded
    boxes = page.evaluate("Array.from(document.querySelectorAll('svg'), s => {"
                          " const r = s.getBoundingClientRect(); return [r.width, r.height]; })")
    assert len(boxes) >= 8 and all(w > 0 and h > 0 for w, h in boxes), boxes
    _check_sorting(page)
    assert HOSTILE in page.locator("body").inner_text()
    assert page.get_by_text(HOSTILE).count() >= 1
    assert page.evaluate("window.__pwned === undefined")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    shutil.copyfile(tmp_path / "report.png", SHOT_COPY)
    assert seen["requests"] == [url], seen["requests"]
    assert seen["errors"] == [] and seen["dialogs"] == []


def test_fidelity_report_in_chromium(browser, tmp_path):
    from harness.report.fidelity_report import build_fidelity_report
    from test_report_fidelity import make_fidelity_run

    page, url, seen = _open(browser, build_fidelity_report(make_fidelity_run(tmp_path)))
    try:
        assert page.get_by_text(HOSTILE).count() >= 1 and page.evaluate("window.__pwned === undefined")
        # the convergence figure: one drawn line per task with ASAp points
        lines = page.locator("section:has(h2:text-is('ASAp convergence: TV of the trie-implied distribution')) "
                             "g[id$='-curve-0'], section:has(h2:text-is('ASAp convergence: TV of the "
                             "trie-implied distribution')) g[id$='-curve-1']")
        assert lines.count() == 2 and all(b["width"] > 0 for b in (lines.nth(i).bounding_box() for i in range(2)))
        _check_numeric_sort(page, "ASAp convergence points", "trie TV")
        _check_numeric_sort(page, "Distance to the exact target: task × sampler", "KL(q̂‖Q) nats")
        _finish(page, url, seen, Path("/tmp/cdbench-fidelity-report.png"), 3)
    finally:
        page.close()


def test_compare_html_in_chromium(browser, tmp_path):
    from harness.analysis.compare import Options, compare
    from harness.analysis.compare_report import write_outputs
    from harness.results.rundir import RunDir
    from test_compare_gate import _run
    from test_report_html import _cmp_rows

    base = RunDir.open(_run(tmp_path, "base", _cmp_rows(range(0, 12), 1.0, {"t3"}, {"t6"})))
    new = RunDir.open(_run(tmp_path, "new", _cmp_rows(range(2, 14), 1.6, {"t9"}, {"t7"})))
    paths = write_outputs(compare(base, new, Options(n_resamples=50)), tmp_path / "cmp")
    page, url, seen = _open(browser, paths[2])
    try:
        assert page.locator("h2", has_text="Per case:").count() == 4
        assert page.locator("g[id*='-cases-']").count() == 8  # 4 scatters x 2 engines
        _check_numeric_sort(page, "Checks", "base")
        _finish(page, url, seen, Path("/tmp/cdbench-compare.png"), 5)
    finally:
        page.close()
