"""The hub loader, offline, against a small dataset written in the hub cache's on-disk layout."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.tasks.hub import HUB_REPO, load_hub


def fake_hub_cache(tmp_path, revision="0123456789abcdef0123456789abcdef01234567"):
    """<cache>/datasets--org--name/{refs/main, snapshots/<rev>/<Subset>/<split>-00000-of-00001.parquet}."""
    repo_dir = tmp_path / "hub" / ("datasets--" + HUB_REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snap = repo_dir / "snapshots" / revision / "Github_easy"
    snap.mkdir(parents=True)
    schemas = {"test": [("o1", {"type": "object", "properties": {"a": {"type": "integer"}}}),
                        ("o2", {"type": "array", "items": {"enum": ["x"]}, "maxItems": 2})],
               "train": [("o3", {"type": "string", "pattern": "^a+$"})]}
    for split, rows in schemas.items():
        pd.DataFrame({"json_schema": [json.dumps(s) for _, s in rows], "unique_id": [u for u, _ in rows]}).to_parquet(
            snap / f"{split}-00000-of-00001.parquet", index=False)
    return tmp_path / "hub"


def test_offline_load_of_each_split(tmp_path):
    cache = fake_hub_cache(tmp_path)
    test = load_hub("Github_easy", "test", cache_dir=cache, offline=True)
    assert [t.id for t in test] == ["Github_easy/o1", "Github_easy/o2"]
    assert test[1].schema["maxItems"] == 2 and "maxItems" in test[1].tags and test[0].source == "hub:Github_easy:test"
    train = load_hub("Github_easy", "train", cache_dir=cache, offline=True)
    assert [t.schema for t in train] == [{"type": "string", "pattern": "^a+$"}]


def test_offline_without_cache_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not available"):
        load_hub("Github_easy", "test", cache_dir=tmp_path / "empty", offline=True)
    with pytest.raises(ConfigError, match="split"):
        load_hub("Github_easy", "dev", cache_dir=tmp_path, offline=True)
    cache = fake_hub_cache(tmp_path)
    with pytest.raises(ConfigError, match="no val files"):
        load_hub("Github_easy", "val", cache_dir=cache, offline=True)


def test_cli_run_reads_the_hub_cache(tmp_path, capsys):
    """`cdbench run --dataset hub --offline` reaches the engines with the cached tasks (a bad
    engine name stops it right after loading, which is all this test needs)."""
    from harness.cli import main

    cache = fake_hub_cache(tmp_path)
    code = main(["run", "--no-progress", "--dataset", "hub", "--subset", "Github_easy", "--split", "train",
                 "--hub-cache", str(cache), "--offline", "--engines", "nosuchengine"])
    assert code == 2 and "unknown engine 'nosuchengine'" in capsys.readouterr().err
    code = main(["run", "--no-progress", "--dataset", "hub", "--subset", "Github_easy", "--split", "val",
                 "--hub-cache", str(cache), "--offline"])
    assert code == 2 and "no val files" in capsys.readouterr().err
