"""A generic, self-contained HTML page: titled sections of tables, figures, text, key/values and
links, rendered by one Jinja2 template with autoescaping.

Everything the caller passes is text and is escaped, except the SVG of a `Figure` (made by our own
plotting code), which is inserted as markup after a check that it is an SVG document. The page
loads nothing: CSS and the table-sorting script are inline, a Content-Security-Policy forbids any
fetch, and only the sorting script (by its hash) may run. Links must be relative. The output is a
pure function of the input: same page, same bytes (dates are the caller's to pass).
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup

__all__ = ["Table", "Figure", "Text", "KeyValues", "Links", "Page", "Section", "render_page", "format_cell"]

# Clicking a header sorts its table by that column: numerically when every non-empty cell starts
# with a number, else as text; a second click reverses. Empty cells ("", "–", "n/a") sort last.
SORT_JS = """\
(function () {
  "use strict";
  var EMPTY = {"": 1, "\\u2013": 1, "n/a": 1};
  function key(td) {
    var t = (td.getAttribute("data-v") || td.textContent).trim();
    return EMPTY[t] ? null : t;
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return key(r.cells[col]); });
    var numeric = keys.every(function (k) { return k === null || !isNaN(parseFloat(k)); });
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x === null || y === null) { return (x === null) - (y === null) || a - b; }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return (asc ? c : -c) || a - b;
    });
    order.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
})();
"""


@dataclass
class Table:
    """`numeric`: indexes of right-aligned, numerically sorted columns; None = every column whose
    non-empty cells are all numbers (or text starting with one)."""
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    numeric: set[int] | None = None
    kind = "table"

    def numeric_columns(self) -> set[int]:
        if self.numeric is not None:
            return set(self.numeric)
        return {i for i in range(len(self.columns)) if _is_numeric_column([r[i] for r in self.rows if i < len(r)])}


@dataclass
class Figure:
    title: str
    svg: str
    caption: str = ""
    kind = "figure"


@dataclass
class Text:
    title: str
    paragraphs: list[str]
    kind = "text"


@dataclass
class KeyValues:
    title: str
    items: list[tuple[str, str]]
    kind = "keyvalues"


@dataclass
class Links:
    """`items`: (label, href) with href relative to the page (no scheme, no host)."""
    title: str
    items: list[tuple[str, str]]
    kind = "links"


Section = Union[Table, Figure, Text, KeyValues, Links]


@dataclass
class Page:
    title: str
    sections: list[Section] = field(default_factory=list)
    subtitle: str = ""


_NUMBER = re.compile(r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|∞)")
_EMPTY = {"", "–", "n/a"}
SHORT_CELL, LONG_CELL = 32, 60  # characters: never wrapped / wrapped anywhere


def _is_numeric_column(cells: list[Any]) -> bool:
    texts = [format_cell(c) for c in cells]
    filled = [t for t in texts if t.strip() not in _EMPTY]
    return bool(filled) and all(_NUMBER.match(t) for t in filled)


def format_cell(value: Any) -> str:
    """Text of a cell: None and NaN as "–", infinities as "∞", floats to 4 significant digits, the rest
    as str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return ("∞" if value > 0 else "-∞") if math.isinf(value) else f"{value:.4g}"
    return str(value)


def _sort_value(value: Any) -> str | None:
    """The exact number behind a formatted numeric cell, so that sorting does not see rounding."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"  # what the sorting script's parseFloat reads
    return None if isinstance(value, float) and math.isnan(value) else repr(value)


def _cell(value: Any, numeric: bool) -> tuple[str, str | None, str]:
    """(text, exact sort value or None, CSS class): numbers right-aligned, short text kept on one
    line, long text (an output excerpt) allowed to break anywhere."""
    text = format_cell(value)
    css = "num" if numeric else "long" if len(text) > LONG_CELL else "short" if len(text) <= SHORT_CELL else ""
    return text, _sort_value(value), css


_PROLOG = re.compile(r"^\s*(<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*|<!--.*?-->\s*)*", re.S)
_ID_ATTR = re.compile(r'\bid="([^"]+)"')


def safe_svg(svg: str, scope: str) -> Markup:
    """The SVG as markup: prolog, doctype, comments and <metadata> removed; every id prefixed with
    `scope` (with its references) so that several inline figures cannot clash."""
    body = _PROLOG.sub("", svg, count=1)
    if not body.startswith("<svg"):
        raise ValueError("Figure.svg must be an SVG document (starting with <svg or <?xml)")
    body = re.sub(r"<metadata>.*?</metadata>\s*", "", body, flags=re.S)
    for ident in sorted(set(_ID_ATTR.findall(body)), key=len, reverse=True):
        new = scope + ident
        body = body.replace(f'id="{ident}"', f'id="{new}"').replace(f"#{ident})", f"#{new})")
        body = body.replace(f'href="#{ident}"', f'href="#{new}"')
    return Markup(body)


def _check_relative(href: str) -> str:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith(("/", "\\")):
        raise ValueError(f"link {href!r}: only relative links are allowed in a self-contained page")
    return href


def _slug(title: str, index: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]
    return f"s{index}-{words}" if words else f"s{index}"


def _section_context(section: Section, index: int) -> dict[str, Any]:
    ctx: dict[str, Any] = {"kind": section.kind, "title": section.title, "anchor": _slug(section.title, index)}
    if isinstance(section, Table):
        numeric = section.numeric_columns()
        ctx.update(columns=section.columns, note=section.note, numeric=numeric,
                   rows=[[_cell(c, i in numeric) for i, c in enumerate(r)] for r in section.rows])
    elif isinstance(section, Figure):
        ctx.update(svg=safe_svg(section.svg, f"f{index}-"), caption=section.caption)
    elif isinstance(section, Text):
        ctx.update(paragraphs=list(section.paragraphs))
    elif isinstance(section, KeyValues):
        ctx.update(entries=[(str(k), format_cell(v)) for k, v in section.items])
    elif isinstance(section, Links):
        ctx.update(entries=[(str(label), _check_relative(str(href))) for label, href in section.items])
    else:
        raise TypeError(f"unknown section type {type(section).__name__}")
    return ctx


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2", "html.j2"], default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


_ENV = _environment()


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


def render_page(page: Page) -> str:
    """The page as one HTML document (str); deterministic."""
    sections = [_section_context(s, i) for i, s in enumerate(page.sections, 1)]
    return _ENV.get_template("page.html.j2").render(
        title=page.title, subtitle=page.subtitle, sections=sections,
        script=Markup(SORT_JS), script_hash=_script_hash(SORT_JS))
