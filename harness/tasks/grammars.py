"""The CFG task suite: grammars/<name>/ with a Lark source of truth and its translations.

Files: grammar.lark (start rule `start`), grammar.gbnf (llama.cpp), grammar.ebnf (xgrammar),
grammar.regex (outlines-core, only where the language is regular) and task.json with the
prompt and our positive and negative example strings. An engine whose format is missing
reports "unsupported" for that task.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .loaders import REPO_ROOT, _read_json, read_length_bound, select_tasks
from .task import Example, Task

GRAMMARS_DIR = REPO_ROOT / "grammars"
FORMATS = {"lark": "grammar.lark", "gbnf": "grammar.gbnf", "ebnf": "grammar.ebnf", "regex": "grammar.regex"}


def load_grammar_task(directory: Path) -> Task:
    meta_path = directory / "task.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or "prompt" not in meta:
        raise ConfigError(f"{meta_path}: needs at least 'prompt', 'positives' and 'negatives'")
    grammars = {}
    for fmt, name in FORMATS.items():
        path = directory / name
        if path.exists():
            grammars[fmt] = path.read_text(encoding="utf-8").rstrip("\n") if fmt == "regex" else path.read_text(encoding="utf-8")
    if "lark" not in grammars:
        raise ConfigError(f"{directory}: missing grammar.lark (the source of truth)")
    examples = [Example(s, True) for s in meta.get("positives", [])]
    examples += [Example(s, False) for s in meta.get("negatives", [])]
    for ex in examples:
        if not isinstance(ex.value, str):
            raise ConfigError(f"{meta_path}: examples must be strings, got {ex.value!r}")
    return Task(id=meta.get("id", directory.name), kind="cfg", source="cfg", grammars=grammars, examples=examples,
                prompt=[{"role": "user", "content": meta["prompt"]}], tags=sorted(grammars),
                length_bound=read_length_bound(meta, meta_path))


def load_grammars(directory: str | Path | None = None, subset: str | list[str] | None = None) -> list[Task]:
    """Every grammar task, or those named in `subset` (directory names), in that order."""
    directory = Path(directory) if directory else GRAMMARS_DIR
    if not directory.is_dir():
        raise ConfigError(f"grammar suite directory not found: {directory}")
    tasks = [load_grammar_task(d) for d in sorted(directory.iterdir()) if (d / "task.json").exists()]
    if not tasks:
        raise ConfigError(f"{directory}: no grammar task directories (<name>/task.json)")
    return select_tasks(tasks, subset, "grammar task")
