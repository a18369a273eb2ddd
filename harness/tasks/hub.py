"""JSONSchemaBench from the Hugging Face hub (`epfl-dlab/JSONSchemaBench`), with its splits.

The hub stores one parquet file per subset and split (columns `json_schema` as a string and
`unique_id`). `huggingface_hub.snapshot_download` fetches them into its cache when the
machine is online; offline (HF_HUB_OFFLINE=1, CDBENCH_OFFLINE=1 or offline=True) it only
reads the cache, so the same code runs with no network once the data is cached.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .features import schema_keywords
from .prompts import json_schema_prompt
from .task import Task

HUB_REPO = "epfl-dlab/JSONSchemaBench"
SPLITS = ("train", "val", "test")


def offline_mode(flag: bool | None = None) -> bool:
    """--offline when given, else HF_HUB_OFFLINE / CDBENCH_OFFLINE: whether Hugging Face files may only
    come from the local cache (datasets and transformers models alike)."""
    if flag is not None:
        return flag
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "CDBENCH_OFFLINE"))


def snapshot(repo_id: str = HUB_REPO, cache_dir: str | Path | None = None, offline: bool | None = None,
             revision: str | None = None, subset: str | None = None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ConfigError(f"the hub loader needs huggingface_hub: {exc}") from exc
    patterns = [f"{subset}/*", f"data/{subset}/*", f"**/{subset}/*"] if subset else None
    try:
        path = snapshot_download(repo_id, repo_type="dataset", cache_dir=cache_dir, revision=revision,
                                 local_files_only=offline_mode(offline), allow_patterns=patterns)
    except Exception as exc:  # offline with nothing cached, no network, unknown repo
        where = f" in cache {cache_dir}" if cache_dir else ""
        raise ConfigError(f"hub dataset {repo_id} not available{where}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return Path(path)


def split_files(root: Path, subset: str, split: str) -> list[Path]:
    files = sorted(p for p in root.rglob("*.parquet") if p.parent.name == subset and p.name.startswith(f"{split}-"))
    if not files:
        files = sorted(p for p in root.rglob(f"{split}*.parquet") if subset in p.parts)
    return files


def load_hub(subset: str | list[str] | None, split: str = "test", cache_dir: str | Path | None = None,
             offline: bool | None = None, repo_id: str = HUB_REPO, revision: str | None = None, **_: Any) -> list[Task]:
    import pandas as pd

    if split not in SPLITS:
        raise ConfigError(f"hub split must be one of {', '.join(SPLITS)}, got '{split}'")
    subsets = [subset] if isinstance(subset, str) else list(subset or [])
    if not subsets:
        raise ConfigError("the hub loader needs --subset (e.g. Github_easy)")
    tasks: list[Task] = []
    for name in subsets:
        root = snapshot(repo_id, cache_dir, offline, revision, name)
        files = split_files(root, name, split)
        if not files:
            raise ConfigError(f"hub dataset {repo_id}: no {split} files for subset '{name}' under {root}")
        for path in files:
            frame = pd.read_parquet(path)
            if not {"json_schema", "unique_id"} <= set(frame.columns):
                raise ConfigError(f"{path}: needs columns json_schema and unique_id, has {list(frame.columns)}")
            for i, row in enumerate(frame.itertuples(index=False)):
                raw = row.json_schema
                try:
                    schema = json.loads(raw) if isinstance(raw, str) else raw
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}: row {i}: json_schema is not JSON: {exc.msg}") from exc
                tasks.append(Task(id=f"{name}/{row.unique_id}", kind="json_schema", source=f"hub:{name}:{split}",
                                  prompt=json_schema_prompt(schema), schema=schema, tags=schema_keywords(schema)))
    return tasks


def load_hub_dataset(subset: str | list[str] | None = None, split: str = "test", hub_cache: str | None = None,
                     offline: bool | None = None) -> list[Task]:
    """The dataset-registry entry: run settings' names for the hub options."""
    return load_hub(subset, split, hub_cache, offline)
