"""JSON Schema Test Suite (json-schema-org/JSON-Schema-Test-Suite): one task per test group.

Layout: <suite>/tests/<draft>/<keyword>.json (+ optional/**/*.json), each file a list of
groups {"description", "schema", "tests": [{"description", "data", "valid"}]}.
The suite exercises one keyword per file, so tasks are tagged with that keyword and
results can be reported per keyword, as the JSONSchemaBench paper does.
Only the top-level files and optional/** are read: they are what the suite calls its
required and optional tests (v1's format/ and proposals/ directories are not loaded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from .loaders import _read_json, _require_schema
from .features import schema_keywords
from .prompts import json_schema_prompt
from .task import Example, Task

REMOTE_PREFIX = "http://localhost:1234/"  # where the suite's remotes/ are meant to be served


def _tests_dir(directory: str | Path) -> Path:
    """Accept either the suite root or its tests/ directory."""
    directory = Path(directory)
    if not directory.is_dir():
        from ..data.sources import fetch_hint

        raise ConfigError(f"JSON Schema Test Suite data not found in {directory} ({fetch_hint('jsts', directory)})")
    return directory / "tests" if (directory / "tests").is_dir() else directory


def list_drafts(directory: str | Path) -> list[str]:
    """Dialect directories (draft4 ... draft2020-12, v1), sorted by name."""
    return sorted(p.name for p in _tests_dir(directory).iterdir() if p.is_dir())


def keyword_of(task: Task) -> str:
    """The keyword file a task came from, read from its id (<draft>/[optional/...]<keyword>/<index>)."""
    return task.id.split("/")[-2]


def _uses_remote_ref(node: Any) -> bool:
    """True if a $ref/$dynamicRef points at the suite's remote server, which needs remotes/ to resolve."""
    if isinstance(node, dict):
        return any(
            (k in ("$ref", "$dynamicRef") and isinstance(v, str) and v.startswith(REMOTE_PREFIX))
            or _uses_remote_ref(v)
            for k, v in node.items()
        )
    if isinstance(node, list):
        return any(_uses_remote_ref(v) for v in node)
    return False


def _group_task(draft: str, rel: str, index: int, group: Any, where: str) -> Task:
    """One group -> one Task; `where` names file and group so an error points at it."""
    if not isinstance(group, dict) or "schema" not in group or not isinstance(group.get("tests"), list):
        raise ConfigError(f"{where}: group needs 'schema' and a list 'tests'")
    schema = group["schema"]
    _require_schema(schema, where)  # boolean schemas are legitimate here and kept
    examples = []
    for i, test in enumerate(group["tests"]):
        if not isinstance(test, dict) or "data" not in test or not isinstance(test.get("valid"), bool):
            raise ConfigError(f"{where}: tests[{i}] needs 'data' and a boolean 'valid'")
        examples.append(Example(test["data"], test["valid"], str(test.get("description", ""))))
    keyword = rel.rsplit("/", 1)[-1]
    tags = [keyword]
    if rel.startswith("optional/"):
        tags.append("optional")
    if _uses_remote_ref(schema):
        tags.append("remote-ref")
    return Task(
        id=f"{draft}/{rel}/{index}",
        kind="json_schema",
        source=f"jsts:{draft}",
        prompt=json_schema_prompt(schema),
        schema=schema,
        examples=examples,
        tags=tags + [k for k in schema_keywords(schema) if k not in tags],  # keyword file first: reports group by it
    )


def _files(draft_dir: Path, include_optional: bool) -> Iterator[Path]:
    yield from sorted(draft_dir.glob("*.json"))
    if include_optional:
        yield from sorted((draft_dir / "optional").rglob("*.json"))


def load_test_suite(directory: str | Path, draft: str = "draft2020-12", include_optional: bool = False,
                    **_: Any) -> list[Task]:
    """Tasks for one draft; ids are <draft>/<keyword>/<index> (optional: <draft>/optional/<path>/<index>)."""
    tests_dir = _tests_dir(directory)
    known = list_drafts(tests_dir)
    if draft not in known:
        raise ConfigError(f"{tests_dir}: unknown draft '{draft}' (have: {', '.join(known)})")
    draft_dir = tests_dir / draft
    tasks: list[Task] = []
    for path in _files(draft_dir, include_optional):
        groups = _read_json(path)
        if not isinstance(groups, list):
            raise ConfigError(f"{path}: must be a list of test groups, got {type(groups).__name__}")
        rel = path.relative_to(draft_dir).with_suffix("").as_posix()
        tasks.extend(_group_task(draft, rel, i, g, f"{path}: group {i}") for i, g in enumerate(groups))
    if not tasks:
        raise ConfigError(f"{draft_dir}: no test groups found")
    return tasks
