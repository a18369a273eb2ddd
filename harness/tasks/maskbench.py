"""MaskBench (guidance-ai/jsonschemabench): schemas that come with labelled instances.

Layout: <dir>/<Group>.jsonl, one record a line:
{"id", "description", "meta": {"features": [...], ...}, "schema", "tests": [{"description", "valid", "data"}]}.
Unlike the plain JSONSchemaBench subsets, every record carries valid and invalid
instances, so these tasks can score masks against ground truth, not only generations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .loaders import _require_schema, iter_jsonl
from .features import schema_keywords
from .prompts import json_schema_prompt
from .task import Example, Task


def list_groups(directory: str | Path) -> list[str]:
    """Group names (file stems), sorted, so callers can offer or validate a --subset."""
    directory = Path(directory)
    if not directory.is_dir():
        from ..data.sources import fetch_hint

        raise ConfigError(f"MaskBench data not found in {directory} ({fetch_hint('maskbench', directory)})")
    return [p.stem for p in sorted(directory.glob("*.jsonl"))]


def _examples(tests: Any, where: str) -> list[Example]:
    """Turn a record's tests into Examples; a malformed test is an error, not a silent skip."""
    if not isinstance(tests, list):
        raise ConfigError(f"{where}: 'tests' must be a list, got {type(tests).__name__}")
    examples = []
    for i, test in enumerate(tests):
        if not isinstance(test, dict) or "data" not in test or not isinstance(test.get("valid"), bool):
            raise ConfigError(f"{where}: tests[{i}] needs 'data' and a boolean 'valid'")
        examples.append(Example(test["data"], test["valid"], str(test.get("description", ""))))
    return examples


def _task(group: str, row: Any, where: str) -> Task:
    """One record -> one Task; `where` is file:line so every error points at the row."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: record must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("id", "schema", "tests") if k not in row]
    if missing:
        raise ConfigError(f"{where}: record lacks {', '.join(repr(k) for k in missing)}")
    schema = row["schema"]
    if isinstance(schema, str):  # the Hugging Face form stores the schema as a JSON string
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: schema string is not JSON: {exc.msg}") from exc
    _require_schema(schema, where)
    meta = row.get("meta")
    features = meta.get("features") if isinstance(meta, dict) else None
    # The static keyword walk, plus upstream's own feature labels where they name something else.
    tags = schema_keywords(schema) if isinstance(schema, (dict, bool)) else []
    if isinstance(features, list):
        tags = sorted(set(tags) | {str(f) for f in features})
    return Task(
        id=f"{group}/{row['id']}",
        kind="json_schema",
        source=f"maskbench:{group}",
        prompt=json_schema_prompt(schema),
        schema=schema,
        examples=_examples(row["tests"], where),
        tags=tags,
    )


def load_maskbench(directory: str | Path, groups: list[str] | None = None, **_: Any) -> list[Task]:
    """Tasks for the given groups (all groups when None), in file then line order."""
    directory = Path(directory)
    known = list_groups(directory)
    if not known:
        from ..data.sources import fetch_hint

        raise ConfigError(f"{directory}: no <Group>.jsonl files ({fetch_hint('maskbench', directory)})")
    wanted = groups if groups else known
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise ConfigError(f"{directory}: unknown maskbench group '{unknown[0]}' (have: {', '.join(known)})")
    tasks: list[Task] = []
    for group in wanted:
        path = directory / f"{group}.jsonl"
        tasks.extend(_task(group, row, f"{path}:{lineno}") for lineno, row in iter_jsonl(path))
    return tasks
