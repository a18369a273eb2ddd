"""Options declared once (harness.options): flags, TOML keys, types and help defaults all come from
the config dataclasses, so they cannot drift apart."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from harness.cli import main
from harness.config import RunConfig
from harness.errors import ConfigError
from harness.fidelity.config import FidelityConfig
from harness.replay.config import ReplayConfig
from harness.options import add_options


def _parser(cls):
    p = argparse.ArgumentParser(prog="x")
    add_options(p, cls)
    return p


@pytest.mark.parametrize("cls", [RunConfig, FidelityConfig, ReplayConfig])
def test_every_field_is_a_flag_whose_help_states_the_declared_default(cls):
    p = _parser(cls)
    by_dest = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            assert f.name not in by_dest
            continue
        action = by_dest[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert action.default is None  # only given flags override a TOML file
        if default not in (None, [], {}) and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"(default: {shown})" in action.help, (f.name, action.help)


def test_flags_parse_into_the_declared_types():
    args = _parser(RunConfig).parse_args(["--seed", "1,2", "--no-strict", "--max-tokens", "12", "--schema", "a.json",
                                          "--schema", "b.json", "--sampler-args", "trie_budget_mb=1.5",
                                          "--sampler-args", "flaw=none"])
    from harness.config import build_config
    from harness.options import flag_values

    cfg = build_config({}, flag_values(args, RunConfig))
    assert cfg.seeds == [1, 2] and cfg.strict is False and cfg.max_tokens == 12
    assert cfg.schema_files == ["a.json", "b.json"] and cfg.sampler_args == {"trie_budget_mb": 1.5, "flaw": "none"}


def test_fidelity_reads_a_toml_file_and_refuses_a_wrong_type(tmp_path, capsys):
    bad = tmp_path / "f.toml"
    bad.write_text('[fidelity]\nsamples = "many"\n')
    assert main(["fidelity", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f.toml" in err[0] and "'samples' must be int" in err[0]


def test_sampler_args_reach_the_sampler_and_its_recorded_settings(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_runner import byte_lm, write_dataset

    from harness.reporting.writer import read_rows
    from harness.runner import run

    cfg = RunConfig(dataset=str(write_dataset(tmp_path)), engines=["llguidance"], samplers=["asap", "masking"],
                    max_tokens=6, limit=1, reports_dir=str(tmp_path / "r"), run_id="sa", progress=False,
                    compile_guard=False, sampler_args={"trie_budget_mb": 7.0})
    rows = {r["sampler"]: r for r in read_rows(run(cfg, lm=byte_lm()))}
    assert json.loads(rows["asap"]["sampler_settings"])["trie_budget_mb"] == 7.0
    assert "trie_budget_mb" not in json.loads(rows["masking"]["sampler_settings"])
    code = main(["run", "--dataset", str(tmp_path / "data"), "--engines", "llguidance", "--sampler-args", "nope=1",
                 "--reports-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--sampler-args nope: no sampler of this run (masking) takes it" in err[0]


def test_replay_reads_a_toml_file_and_flags_override_it(tmp_path, capsys):
    cfg_file = tmp_path / "r.toml"
    cfg_file.write_text('[replay]\nengines = "llguidance"\ntimeout_s = "soon"\n')
    assert main(["replay", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r.toml" in err[0] and "'timeout_s' must be float" in err[0]
    cfg_file.write_text('[replay]\nsource = "nowhere"\nengines = "llguidance"\n')
    assert main(["replay", "--config", str(cfg_file), "--source", "also-nowhere"]) == 2
    err = capsys.readouterr().err
    assert "also-nowhere" in err and "'nowhere'" not in err


def test_dataset_args_reach_the_loader_and_an_unknown_key_is_refused(tmp_path):
    """--dataset-args goes straight to the dataset's loader (lm-evaluation-harness's --model_args
    idea); a key the loader does not take is one line, exit 2, never silently dropped."""
    import json

    from harness.tasks.loaders import load_tasks

    (tmp_path / "one.json").write_text(json.dumps({"id": "mine", "schema": {"type": "integer"},
                                                   "valid": [1], "invalid": [{"data": "x"}]}))
    tasks = load_tasks("builtin", dataset_args={"directory": str(tmp_path)})
    assert [t.id for t in tasks] == ["mine"]
    with pytest.raises(ConfigError, match="--dataset-args foo: dataset 'builtin' takes no such option"):
        load_tasks("builtin", dataset_args={"foo": "1"})
    with pytest.raises(ConfigError, match="no task nope"):
        load_tasks("builtin", subset=["nope"])
    assert main(["run", "--dataset", "cfg", "--dataset-args", "foo=1", "--no-progress"]) == 2
