"""Upstream files -> the layout the loaders read (harness/tasks/loaders.py, maskbench.py, jsts.py).

jsb-schemas: data/<Subset>/<id>.json -> <Subset>.jsonl, lines {"unique_id": <id>, "json_schema": <schema>}
maskbench:   maskbench/data/<Group>---<id>.json and <Group>_<n>.json -> <Group>.jsonl,
             lines {"id": <file stem>, ...the file's own keys}
copy:        files kept at their paths (the JSON Schema Test Suite)

Each file becomes one line by removing whitespace outside string literals (no re-serialisation:
key order, number literals and duplicate keys stay as upstream wrote them), files in name order:
the transformation ../shared/datasets/jsonschemabench/PROVENANCE.md describes. manifest.csv
records every upstream file's git blob sha1, so a copy can be checked file by file.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .sources import JSB_SUBSETS

_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^" \t\r\n]+', re.S)  # string literals | other runs
MANIFEST_FIELDS = ["part", "subset", "id", "upstream_path", "upstream_git_blob_sha1", "upstream_bytes"]
Files = Iterable[tuple[str, bytes]]


@dataclass
class Laid:
    files: int = 0                                    # upstream files taken
    records: int | None = None                        # lines written (jsonl layouts)
    skipped: list[str] = field(default_factory=list)  # upstream files that are not JSON (or not records)


def strip_whitespace(text: str) -> str:
    """JSON text without whitespace outside string literals (one line, same tokens).

    An unterminated string literal is an error (its quote would otherwise be dropped)."""
    compact = "".join(_TOKENS.findall(text))
    if compact.count('"') != text.count('"'):
        raise ValueError("unterminated string literal")
    return compact


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def maskbench_group(stem: str) -> str:
    """Handwritten---allIt4 -> Handwritten; BFCL_java_12 -> BFCL_java; anything else is its own group."""
    if "---" in stem:
        return stem.split("---", 1)[0]
    m = re.fullmatch(r"(.+)_\d+", stem)
    return m.group(1) if m else stem


def _jsb_line(stem: str, text: str) -> str | None:
    compact = strip_whitespace(text)
    json.loads(compact)  # raises for a file that is not JSON
    return f'{{"unique_id":{json.dumps(stem)},"json_schema":{compact}}}'


def _maskbench_line(stem: str, text: str) -> str | None:
    compact = strip_whitespace(text)
    doc = json.loads(compact)
    if not isinstance(doc, dict) or "schema" not in doc or "tests" not in doc:
        return None
    return compact if "id" in doc else f'{{"id":{json.dumps(stem)},{compact[1:]}'


def _to_lines(files: Files, group_of: Callable[[str], str | None], make_line, part: str, laid: Laid) -> dict:
    """group -> [(file name, line, manifest row)]; a file that gives no line is recorded as skipped."""
    groups: dict[str, list] = defaultdict(list)
    for rel, data in files:
        group = group_of(rel)
        if group is None:
            continue
        laid.files += 1
        stem = rel.rsplit("/", 1)[-1][: -len(".json")]
        try:
            line = make_line(stem, data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            line = None
        if line is None:
            laid.skipped.append(rel)
            continue
        groups[group].append((rel, line, [part, group, stem, rel, git_blob_sha1(data), len(data)]))
    return groups


def _write(groups: dict, out: Path, laid: Laid) -> Laid:
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda r: r[0])
        with open(out / f"{group}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for _, line, _ in rows)
        manifest += [row for _, _, row in rows]
    with open(out / "manifest.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        writer.writerows(manifest)
    laid.records = len(manifest)
    return laid


def _direct_child(rel: str, parent: str) -> str | None:
    """The file name when `rel` is parent/<name>, else None."""
    head, _, name = rel.rpartition("/")
    return name if head == parent else None


def lay_jsb_schemas(files: Files, out: Path) -> Laid:
    def subset(rel: str) -> str | None:
        parts = rel.split("/")
        return parts[1] if len(parts) == 3 and parts[0] == "data" and parts[1] in JSB_SUBSETS else None

    laid = Laid()
    return _write(_to_lines(files, subset, _jsb_line, "schemas", laid), out, laid)


def lay_maskbench(files: Files, out: Path) -> Laid:
    def group(rel: str) -> str | None:
        name = _direct_child(rel, "maskbench/data")
        return maskbench_group(name[: -len(".json")]) if name else None

    laid = Laid()
    return _write(_to_lines(files, group, _maskbench_line, "maskbench", laid), out, laid)


def lay_copy(files: Files, out: Path) -> Laid:
    laid = Laid()
    for rel, data in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        laid.files += 1
    out.mkdir(parents=True, exist_ok=True)
    return laid


LAYOUTS = {"jsb-schemas": lay_jsb_schemas, "maskbench": lay_maskbench, "copy": lay_copy}
