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


@pytest.fixture
def loaded(browser, tmp_path):
    """The synthetic report opened from file://, with every request, console error, page error and
    dialog recorded."""
    url = build_run_report(make_synthetic_run(tmp_path)).resolve().as_uri()
    seen = {"requests": [], "errors": [], "dialogs": []}
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(url, wait_until="load")
    yield page, url, seen
    page.close()


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
