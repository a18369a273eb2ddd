"""Markdown table cells from untrusted text (task ids, dataset sources, error messages, file names):
the one escaper every Markdown report uses."""
from __future__ import annotations

from typing import Any


def cell(text: Any) -> str:
    """A table cell: '&' and '<' as entities (no tag can open), pipes escaped, no line breaks."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def row(cells: list[Any]) -> str:
    """One table row, every cell escaped."""
    return "| " + " | ".join(cell(c) for c in cells) + " |"
