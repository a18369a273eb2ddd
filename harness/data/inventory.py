"""`cdbench data list`: which datasets are in a data directory, what they hold, which commit."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .sources import SOURCES, Source, fetch_hint

_COMMIT = re.compile(r"\b[0-9a-f]{40}\b")


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def contents(source: Source, path: Path) -> str | None:
    """What the dataset directory holds, or None when it holds nothing a loader can read."""
    if source.layout == "copy":
        tests = path / "tests"
        files = [p for p in tests.rglob("*.json") if p.is_file()] if tests.is_dir() else []
        drafts = sorted(p.name for p in tests.iterdir() if p.is_dir()) if tests.is_dir() else []
        return f"{len(drafts)} drafts, {len(files)} test files" if files else None
    files = sorted(path.glob("*.jsonl"))
    if not files:
        return None
    unit = ("subsets", "schemas") if source.layout == "jsb-schemas" else ("groups", "records")
    return f"{len(files)} {unit[0]}, {sum(_count_lines(p) for p in files)} {unit[1]}"


def installed_commit(path: Path, root: Path) -> str:
    """The commit named by PROVENANCE.json in the dataset, else by a PROVENANCE.md at or above it."""
    record = path / "PROVENANCE.json"
    if record.is_file():
        try:
            return f"commit {json.loads(record.read_text(encoding='utf-8'))['commit']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "PROVENANCE.json unreadable"
    for where in [path, *path.parents]:
        md = where / "PROVENANCE.md"
        if md.is_file():
            found = _COMMIT.search(md.read_text(encoding="utf-8", errors="replace"))
            return f"commit {found.group(0)} (from {md.relative_to(root) if md.is_relative_to(root) else md})" \
                if found else f"no commit named in {md}"
        if where == root:
            break
    return "commit unknown (no PROVENANCE.json)"


def inventory(root: Path) -> list[str]:
    lines = []
    width = max(len(n) for n in SOURCES)
    for name, source in SOURCES.items():
        path = root / source.target
        held = contents(source, path) if path.is_dir() else None
        if held is None:
            lines.append(f"{name:{width}}  missing  {path}  ({fetch_hint(name, path)})")
            continue
        commit = installed_commit(path, root)
        if source.commit not in commit:
            commit += f"; cdbench pins {source.commit}"
        lines.append(f"{name:{width}}  present  {path}  {held}  {commit}")
    return lines
