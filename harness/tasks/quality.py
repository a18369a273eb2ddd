"""Quality tasks: does the constraint change whether the answer is right? (cdbench issue 14)

JSONSchemaBench's three quality tasks, GSM8K, Last Letter and Shuffle Objects, with the
prompts, few-shot turns and output schemas JSB adopted (shipped as data in
datasets/quality/<set>/prompt.json and schema.json; their source is in PROVENANCE.md there),
and BFCL `simple` function calls judged by BFCL's AST rules (quality_bfcl.py).

`--subset sample` (the default) reads the small samples shipped in datasets/quality;
`--subset full` reads the whole test set from the Hugging Face hub cache (downloading it first
when the machine is online; `--offline` or HF_HUB_OFFLINE=1: cache only). `--dataset-args
prompt=FILE` replaces a JSB set's shipped prompt.json with another in the same format (for
instance the wording of the JSB paper's Figure 7; PROVENANCE.md says where the two differ).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from .quality_bfcl import bfcl_task
from .task import Task

QUALITY_DIR = Path(__file__).resolve().parents[2] / "datasets" / "quality"


@dataclass(frozen=True)
class HubSource:
    """Where the full test set lives on the hub, and how to read it into sample-format items."""
    repo: str
    patterns: tuple[str, ...]
    read: Callable[[Path], list[dict[str, Any]]]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the quality items: {exc}") from exc


def _parquet_rows(root: Path, split: str = "test") -> list[dict[str, Any]]:
    import pandas as pd

    files = sorted(p for p in root.rglob("*.parquet") if p.name.startswith(f"{split}-"))
    if not files:
        raise ConfigError(f"{root}: no {split}-*.parquet files")
    return [r for f in files for r in pd.read_parquet(f).to_dict("records")]


def _bbh_rows(root: Path) -> list[dict[str, Any]]:
    path = next(root.rglob("tracking_shuffled_objects_five_objects.json"), None)
    if path is None:
        raise ConfigError(f"{root}: no tracking_shuffled_objects_five_objects.json")
    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    return examples[2:]  # the first two are the few-shot pool of JSB's prompt (dottxt's notebook)


def _bfcl_rows(root: Path) -> list[dict[str, Any]]:
    questions = next((p for p in root.rglob("BFCL_v3_simple.json") if "possible_answer" not in p.parts), None)
    if questions is None:
        raise ConfigError(f"{root}: no BFCL_v3_simple.json")
    answers = {a["id"]: a["ground_truth"] for a in _jsonl(root / "possible_answer" / "BFCL_v3_simple.json")}
    return [{**q, "ground_truth": answers[q["id"]]} for q in _jsonl(questions)]


HUB = {
    "gsm8k": HubSource("openai/gsm8k", ("main/test-*",), _parquet_rows),
    "last-letter": HubSource("ChilleD/LastLetterConcat", ("data/test-*", "test-*", "*/test-*"), _parquet_rows),
    "shuffle-objects": HubSource("openeval/BIG-Bench-Hard", ("tracking_shuffled_objects_five_objects.json",), _bbh_rows),
    "bfcl": HubSource("gorilla-llm/Berkeley-Function-Calling-Leaderboard",
                      ("BFCL_v3_simple.json", "possible_answer/BFCL_v3_simple.json"), _bfcl_rows),
}


def hub_items(name: str, hub_cache: str | None, offline: bool | None) -> list[dict[str, Any]]:
    from .hub import offline_mode

    source = HUB[name]
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(source.repo, repo_type="dataset", cache_dir=hub_cache,
                                 local_files_only=offline_mode(offline), allow_patterns=list(source.patterns))
    except Exception as exc:  # offline with nothing cached, no network, no huggingface_hub
        raise ConfigError(f"quality set {name}: hub dataset {source.repo} not available: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return source.read(Path(root))


def prompt_messages(spec: dict[str, Any], question: str) -> list[dict[str, str]]:
    """System turn, the few-shot user/assistant turns, then the question in the set's template."""
    messages = [{"role": "system", "content": spec["system"]}]
    for shot in spec["shots"]:
        messages += [{"role": "user", "content": shot["user"]}, {"role": "assistant", "content": shot["assistant"]}]
    messages.append({"role": "user", "content": spec["user_template"].format(question=question)})
    return messages


def gsm8k_reference(answer: str) -> int:
    """GSM8K's final number: after '#### ', thousands separators dropped."""
    return int(answer.split("#### ")[1].replace(",", ""))


# name -> (question field, reference from an item, scorer)
JSB_SETS: dict[str, tuple[str, Callable[[dict[str, Any]], Any], str]] = {
    "gsm8k": ("question", lambda it: gsm8k_reference(it["answer"]), "gsm8k"),
    "last-letter": ("question", lambda it: it["answer"], "last_letter"),
    "shuffle-objects": ("input", lambda it: it["target"][1], "shuffle_objects"),
}


def _set_dir(name: str) -> Path:
    return QUALITY_DIR / name


def _prompt_problem(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return "not a JSON object with system, shots and user_template"
    if not isinstance(spec.get("system"), str):
        return "system is not a string"
    shots = spec.get("shots")
    if not isinstance(shots, list) or not all(isinstance(s, dict) and isinstance(s.get("user"), str)
                                              and isinstance(s.get("assistant"), str) for s in shots):
        return "shots is not a list of {user, assistant} strings"
    template = spec.get("user_template")
    if not isinstance(template, str) or "{question}" not in template:
        return "user_template is not a string containing {question}"
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        return f"user_template has a stray brace field ({exc!r}); write literal braces as {{{{ }}}}"
    return None


def read_prompt(path: Path) -> tuple[dict[str, Any], str]:
    """A prompt file in the shipped format ({"system": str, "shots": [{"user", "assistant"}], "user_template":
    str with {question}}) and the first 12 hex digits of its content's sha256. Anything else is one
    ConfigError naming the file."""
    try:
        data = path.read_bytes()
        spec = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the prompt: {exc}") from exc
    problem = _prompt_problem(spec)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return spec, hashlib.sha256(data).hexdigest()[:12]


def jsb_tasks(name: str, items: Iterable[dict[str, Any]], source: str, spec: dict[str, Any]) -> list[Task]:
    field, reference, scorer = JSB_SETS[name]
    schema = json.loads((_set_dir(name) / "schema.json").read_text(encoding="utf-8"))
    tasks = []
    for i, item in enumerate(items):
        try:
            question, ref = item[field], reference(item)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"quality set {name}: item {i}: no usable '{field}' or reference ({exc})") from exc
        tasks.append(Task(id=f"{name}/{i}", kind="json_schema", source=source, prompt=prompt_messages(spec, question),
                          schema=schema, tags=["quality", name], reference=ref, scorer=scorer))
    return tasks


def load_quality(name: str, subset: str | list[str] | None = None, hub_cache: str | None = None,
                 offline: bool | None = None, prompt: str | None = None) -> list[Task]:
    which = subset[0] if isinstance(subset, list) and len(subset) == 1 else (subset or "sample")
    if which not in ("sample", "full"):
        raise ConfigError(f"quality-{name}: --subset must be 'sample' (shipped, default) or 'full' (hub), got {subset!r}")
    if name == "bfcl" and prompt:
        raise ConfigError("quality-bfcl: --dataset-args prompt=... is for the JSB sets (BFCL's prompt is built per function)")
    prompt_file = Path(prompt) if prompt else _set_dir(name) / "prompt.json"
    spec, digest = (None, "") if name == "bfcl" else read_prompt(prompt_file)
    items = _jsonl(_set_dir(name) / "sample.jsonl") if which == "sample" else hub_items(name, hub_cache, offline)
    source = f"quality-{name}:{which}"
    if prompt:  # the rows' source names the replacement prompt and its content
        source += f":prompt={Path(prompt).name}@{digest}"
    if spec is None:
        return [bfcl_task(item, source) for item in items]
    return jsb_tasks(name, items, source, spec)


def loader(name: str) -> Callable[..., list[Task]]:
    """The DATASETS entry for one set."""
    def load(subset: str | list[str] | None = None, hub_cache: str | None = None,
             offline: bool | None = None, prompt: str | None = None) -> list[Task]:
        return load_quality(name, subset, hub_cache, offline, prompt)
    load.__doc__ = f"quality-{name}: {name} quality tasks (datasets/quality/{name})"
    return load


load_gsm8k = loader("gsm8k")
load_last_letter = loader("last-letter")
load_shuffle_objects = loader("shuffle-objects")
load_bfcl = loader("bfcl")
