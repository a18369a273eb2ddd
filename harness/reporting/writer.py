"""Results on disk: one JSON line per finished case, flushed and fsynced at once.

A run that dies loses at most the case in flight; `finalize` turns the lines into
results.parquet, results.csv and summary.md. Each line is written with its newline in one
write, so a kill can only leave a last line without its newline (a torn tail): the reader
drops it, and a writer reopening the file (a resumed run) cuts it off before appending.
Any other line that does not parse is damage, and reading stops with its file and line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ROWS_FILE = "rows.jsonl"


class RowWriter:
    """Appends rows to rows.jsonl; with a kind, each row is checked against its declared row type
    (harness.results.rows) before it is written."""

    def __init__(self, run_dir: Path, kind: str | None = None) -> None:
        self.run_dir = run_dir
        self.kind = kind
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ROWS_FILE
        drop_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self.count = 0

    def append(self, row: dict[str, Any]) -> None:
        if self.kind:
            from ..results.rows import check

            check(self.kind, row)
        self._fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        self._fh.close()


def rewrite_rows(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the journal with these rows, atomically (a kill leaves the old journal or the new)."""
    path = run_dir / ROWS_FILE
    tmp = path.with_name(ROWS_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(row, "") if the line is a JSON object, else (None, what is wrong with it)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at byte {exc.start}"
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at column {exc.colno}"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    return row, ""


def _last_newline(fh: Any, size: int) -> int:
    """Offset just past the file's last newline (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        fh.seek(start)
        cut = fh.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def drop_torn_tail(path: Path) -> None:
    """Before appending to an existing journal: a last line without its newline is cut off if it
    does not parse (a row torn by a killed run), or given its newline if it does, so that a new
    row is never glued onto it (which would make a corrupt line in the middle)."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_start = _last_newline(fh, size)
        if tail_start == size:
            return
        fh.seek(tail_start)
        tail = fh.read()
        if tail.strip() and _parse_line(tail)[0] is not None:
            fh.write(b"\n")
        else:
            fh.truncate(tail_start)


def read_rows(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Every row of a run's journal. A last line without its newline that does not parse is a
    row torn by a killed run and is dropped; any other line that is not a JSON object, or (with a
    kind) not a row of that kind's declared type, raises ConfigError naming the file and line."""
    from ..results.rows import problems

    path = run_dir / ROWS_FILE
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            row, problem = _parse_line(raw)
            if row is None:
                if not raw.endswith(b"\n"):
                    break  # only the last line can lack its newline: the torn tail of a killed run
                raise ConfigError(f"{path}:{lineno}: corrupt journal line: {problem}")
            found = problems(kind, row, writing=False) if kind else []
            if found:
                raise ConfigError(f"{path}:{lineno}: not a {kind} row: {'; '.join(found[:3])}")
            rows.append(row)
    return rows


def write_json(path: Path, data: Any) -> None:
    """Written whole or not at all: a kill leaves the previous file (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def toml_dumps(data: dict[str, Any]) -> str:
    """Enough TOML for a resolved config: scalars, lists of scalars, one level of tables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines, tables = [], []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"
