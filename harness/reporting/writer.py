"""Results on disk: one JSON line per finished case, flushed and fsynced at once.

A run that dies loses at most the case in flight; `finalize` turns the lines into
results.parquet, results.csv and summary.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROWS_FILE = "rows.jsonl"


class RowWriter:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ROWS_FILE
        self._fh = self.path.open("a", encoding="utf-8")
        self.count = 0

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        self._fh.close()


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / ROWS_FILE
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a killed run
    return rows


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


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
