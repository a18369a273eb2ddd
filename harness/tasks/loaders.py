"""Task sources. Each loader reads files in place (never copies data) and turns every
malformed file or row into a one-line ConfigError naming the file, the line and the problem.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError
from ..registry import Registry, takes
from .features import schema_keywords
from .prompts import json_schema_prompt
from .task import Example, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_DIR = REPO_ROOT / "datasets" / "builtin"

JSB_SUBSETS = [
    "Github_trivial", "Github_easy", "Github_medium", "Github_hard", "Github_ultra",
    "Glaiveai2K", "Kubernetes", "Snowplow", "WashingtonPost", "JsonSchemaStore",
]


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def _require_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, (dict, bool)):
        raise ConfigError(f"{where}: schema must be a JSON object or boolean, got {type(schema).__name__}")


def load_schema_file(path: str | Path) -> Task:
    """A single schema file given by the user: it must be JSON and a valid schema."""
    from ..scoring.jsonschema_check import check_schema

    path = Path(path)
    schema = _read_json(path)
    _require_schema(schema, str(path))
    problem = check_schema(schema)
    if problem:
        raise ConfigError(f"{path}: not a valid JSON Schema: {problem}")
    return Task(id=path.stem, kind="json_schema", source="file", prompt=json_schema_prompt(schema), schema=schema,
                tags=schema_keywords(schema))


def read_length_bound(doc: dict[str, Any], path: Path) -> int | None:
    """The optional token bound of a fidelity task (a positive integer)."""
    bound = doc.get("length_bound")
    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 1):
        raise ConfigError(f"{path}: length_bound must be a positive integer, got {bound!r}")
    return bound


def load_fidelity(subset: str | list[str] | None = None) -> list[Task]:
    """Small languages with exact targets (`cdbench fidelity`): the skewed binary toy grammar and a
    bounded arithmetic grammar (grammars/), a tiny JSON schema and an enum choice (datasets/fidelity)."""
    from .grammars import load_grammars

    tasks = load_grammars(subset=["binary_skewed", "arith_small"]) + load_builtin(REPO_ROOT / "datasets" / "fidelity")
    return select_tasks(tasks, subset, "fidelity task")


def select_tasks(tasks: list[Task], subset: str | list[str] | None, what: str) -> list[Task]:
    """The tasks named in `subset` (ids), in that order; all when it is empty; unknown ids are an error."""
    if not subset:
        return tasks
    names = [subset] if isinstance(subset, str) else list(subset)
    by_id = {t.id: t for t in tasks}
    unknown = [n for n in names if n not in by_id]
    if unknown:
        raise ConfigError(f"unknown {what}(s) {', '.join(unknown)} (have: {', '.join(by_id)})")
    return [by_id[n] for n in names]


def load_builtin(directory: str | Path | None = None, subset: str | list[str] | None = None) -> list[Task]:
    """datasets/builtin/*.json: our own schemas, each with a request, valid and invalid instances;
    `subset`: only the tasks of those ids."""
    directory = Path(directory) if directory else BUILTIN_DIR
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ConfigError(f"{directory}: no *.json task files")
    tasks = []
    for path in files:
        doc = _read_json(path)
        for key in ("id", "schema"):
            if key not in doc:
                raise ConfigError(f"{path}: missing '{key}'")
        _require_schema(doc["schema"], str(path))
        examples = [Example(v, True) for v in doc.get("valid", [])]
        examples += [Example(v["data"], False, v.get("why", "")) for v in doc.get("invalid", [])]
        tasks.append(
            Task(
                id=doc["id"],
                kind="json_schema",
                source="builtin",
                prompt=json_schema_prompt(doc["schema"], doc.get("prompt")),
                schema=doc["schema"],
                examples=examples,
                tags=schema_keywords(doc["schema"]),
                length_bound=read_length_bound(doc, path),
            )
        )
    return _only(tasks, subset, directory)


def _only(tasks: list[Task], subset: str | list[str] | None, where: Path) -> list[Task]:
    if not subset:
        return tasks
    wanted = [subset] if isinstance(subset, str) else list(subset)
    missing = sorted(set(wanted) - {t.id for t in tasks})
    if missing:
        raise ConfigError(f"{where}: no task {', '.join(missing)} (have: {', '.join(t.id for t in tasks)})"[:400])
    return [t for t in tasks if t.id in wanted]


def iter_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not UTF-8 (byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ConfigError(f"{path}:{lineno}: not JSON: {getattr(exc, 'msg', 'nested too deeply')}") from exc


def load_jsonschemabench(directory: str | Path, subset: str | list[str] | None = None, **_: Any) -> list[Task]:
    """JSONSchemaBench layout: <dir>/<Subset>.jsonl, lines {"unique_id", "json_schema"}.

    json_schema may be a JSON value or a string holding JSON (the Hugging Face form).
    """
    directory = Path(directory)
    if not directory.is_dir():
        from ..data.sources import fetch_hint

        raise ConfigError(f"JSONSchemaBench data not found in {directory} ({fetch_hint('jsonschemabench', directory)})")
    subsets = [subset] if isinstance(subset, str) else (subset or [])
    if not subsets:
        subsets = [p.stem for p in sorted(directory.glob("*.jsonl"))]
        if not subsets:
            from ..data.sources import fetch_hint

            raise ConfigError(f"{directory}: no <Subset>.jsonl files ({fetch_hint('jsonschemabench', directory)})")
    tasks: list[Task] = []
    for name in subsets:
        path = directory / f"{name}.jsonl"
        if not path.exists():
            known = ", ".join(p.stem for p in sorted(directory.glob("*.jsonl")))
            raise ConfigError(f"{path}: subset '{name}' not found (have: {known})")
        for lineno, row in iter_jsonl(path):
            where = f"{path}:{lineno}"
            if not isinstance(row, dict) or "json_schema" not in row or "unique_id" not in row:
                raise ConfigError(f"{where}: row needs 'unique_id' and 'json_schema'")
            schema = row["json_schema"]
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}: json_schema string is not JSON: {exc.msg}") from exc
            _require_schema(schema, where)
            tasks.append(
                Task(
                    id=f"{name}/{row['unique_id']}",
                    kind="json_schema",
                    source=f"jsonschemabench:{name}",
                    prompt=json_schema_prompt(schema),
                    schema=schema,
                    tags=schema_keywords(schema),
                )
            )
    return tasks


def load_jsonschemabench_data(subset: str | list[str] | None = None, data_dir: str | Path | None = None) -> list[Task]:
    """JSONSchemaBench from the data directory ($CDBENCH_DATA_DIR or ../shared/datasets)."""
    from ..config import default_data_dir

    root = Path(data_dir) if data_dir else default_data_dir()
    return load_jsonschemabench(root / "jsonschemabench" / "schemas", subset)


# Every loader takes subset= and ignores options it has no use for (data_dir, split, ...).
DATASETS: Registry = Registry("dataset")
DATASETS.register("builtin", load_builtin)
DATASETS.register("jsonschemabench", load_jsonschemabench_data)
DATASETS.register("cfg", "harness.tasks.grammars:load_grammars")
DATASETS.register("hub", "harness.tasks.hub:load_hub_dataset")
DATASETS.register("fidelity", load_fidelity)
DATASETS.register("quality-gsm8k", "harness.tasks.quality:load_gsm8k")
DATASETS.register("quality-last-letter", "harness.tasks.quality:load_last_letter")
DATASETS.register("quality-shuffle-objects", "harness.tasks.quality:load_shuffle_objects")
DATASETS.register("quality-bfcl", "harness.tasks.quality:load_bfcl")


def _loader_call(name: str, loader: Any, subset: Any, options: dict[str, Any],
                 dataset_args: dict[str, Any]) -> list[Task]:
    """Call a dataset's loader with the run options it takes (data_dir, split, hub_cache, offline: a
    loader that has no use for one does not declare it) and every --dataset-args key, each of which it
    must take: a key it does not is a one-line error, not an option silently dropped."""
    accepted = takes(loader) - {"subset"}
    unknown = sorted(set(dataset_args) - accepted)
    if unknown:
        raise ConfigError(f"--dataset-args {', '.join(unknown)}: dataset '{name}' takes no such option "
                          f"(it takes: {', '.join(sorted(accepted)) or 'none'})")
    passed = {k: v for k, v in options.items() if k in accepted and v is not None}
    return loader(subset=subset, **passed, **dataset_args)


def load_tasks(dataset: str | None, subset: str | list[str] | None = None, limit: int | None = None,
               schema_files: list[str] | None = None, dataset_args: dict[str, Any] | None = None,
               **options: Any) -> list[Task]:
    """Resolve a dataset name or directory into tasks; a directory is read in the JSB layout.

    `options` (data_dir, split, hub_cache, offline) go to the named dataset's loader when it takes
    them; `dataset_args` (--dataset-args) go to it whole."""
    dataset_args = dataset_args or {}
    if dataset_args and (schema_files or dataset not in DATASETS.names()):
        raise ConfigError("--dataset-args needs a named dataset (--dataset NAME: "
                          f"{', '.join(DATASETS.names())})")
    if schema_files:
        tasks = [load_schema_file(p) for p in schema_files]
    elif dataset in (None, ""):
        tasks = load_builtin()
    elif dataset in DATASETS.names():
        tasks = _loader_call(dataset, DATASETS.get(dataset), subset, options, dataset_args)
    else:
        path = Path(dataset)
        if not path.exists():
            raise ConfigError(
                f"dataset '{dataset}' is neither a known dataset ({', '.join(DATASETS.names())}) nor a directory"
            )
        if path.is_dir() and any(path.glob("*.jsonl")):
            tasks = load_jsonschemabench(path, subset)
        elif path.is_dir():
            tasks = load_builtin(path)
        else:
            raise ConfigError(f"{path}: a dataset must be a directory")
    if limit is not None:
        tasks = tasks[:limit]
    return tasks
