"""Run configuration: built-in defaults < TOML file < command-line flags.

Every run writes the resolved config beside its results, so a run can be repeated.
"""
from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def user_cache_data_dir() -> Path:
    """$XDG_CACHE_HOME/cdbench/data (an absolute XDG_CACHE_HOME only), else ~/.cache/cdbench/data."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cdbench" / "data"


def data_dir_choice() -> tuple[Path, str]:
    """The datasets' root and why it was chosen: CDBENCH_DATA_DIR, else ../shared/datasets beside the
    repository when it exists, else the user cache directory (where `cdbench data fetch` puts them)."""
    env = os.environ.get("CDBENCH_DATA_DIR")
    if env:
        return Path(env), "$CDBENCH_DATA_DIR"
    shared = REPO_ROOT.parent / "shared" / "datasets"
    if shared.is_dir():
        return shared, "../shared/datasets beside the repository"
    return user_cache_data_dir(), "user cache directory"


def default_data_dir() -> Path:
    """CDBENCH_DATA_DIR, else ../shared/datasets when it exists, else the user cache directory."""
    return data_dir_choice()[0]


@dataclass
class RunConfig:
    protocol: str = "cdbench"         # cdbench | jsonschemabench (prompt, validator and limits: harness/protocols)
    dataset: str = "builtin"          # builtin, cfg, jsonschemabench, hub, or a directory
    subset: list[str] = field(default_factory=list)
    limit: int | None = None
    schema_files: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)  # empty = every installed engine
    samplers: list[str] = field(default_factory=lambda: ["masking"])
    seeds: list[int] = field(default_factory=lambda: [0])
    temperature: float = 0.0           # masking only; AWRS samples at temperature 1
    particles: int = 5                 # awrs-smc
    ess_threshold: float = 0.5         # awrs-smc: resample when ESS < threshold * particles
    resampling: str = "multinomial"    # awrs-smc: multinomial | stratified
    variant: str = "paper"             # awrs: paper (two-pass) | recursive
    max_tokens: int = 256
    model: str | None = None           # GGUF path; None = the default Gemma 3 270M
    n_ctx: int = 4096
    lm_threads: int | None = None      # None = all cores
    whitespace: str = "compact"
    strict: bool = True
    engine_threads: int = 1
    compile_timeout_s: float = 5.0     # JSONSchemaBench uses 10 s: --compile-timeout 10
    compile_guard: bool = True         # compile once in a forked child first (hang/crash guard)
    generation_timeout_s: float = 60.0
    memory_gb: float | None = None     # per-case limit on resident-memory growth during generation (harness.lm.budget)
    reports_dir: str = "reports"
    run_id: str | None = None
    data_dir: str | None = None
    split: str = "test"                # hub dataset split (train / val / test)
    hub_cache: str | None = None       # Hugging Face cache directory (default: the library's)
    offline: bool | None = None        # hub: read the cache only (default: HF_HUB_OFFLINE / CDBENCH_OFFLINE)
    bootstrap_seed: int = 0
    bootstrap_resamples: int = 1000    # JSONSchemaBench's protocol: 100
    progress: bool = True
    resume: str | None = None          # a run directory to continue (its cases already recorded are kept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LIST_FIELDS = {"subset", "schema_files", "engines", "samplers", "seeds"}


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in _LIST_FIELDS:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{name}' must be a list or comma-separated string")
        if name == "seeds":
            try:
                value = [int(v) for v in value]
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: 'seeds' must be integers") from exc
    return value


def _type_ok(hint: Any, value: Any) -> bool:
    """value matches a RunConfig annotation (str, int, float, bool, list[...], X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(a, value) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(args[0], v) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_types(values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(RunConfig)
    for name, value in values.items():
        if name in hints and not _type_ok(hints[name], value):
            raise ConfigError(f"{where}: '{name}' must be {_hint_text(hints[name])}, got {value!r:.60}")


def _hint_text(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from exc
    table = raw.get("run", raw)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [run] must be a table, got {type(table).__name__}")
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    values = {k: _coerce(k, v, str(path)) for k, v in table.items()}
    _check_types(values, str(path))
    return values


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> RunConfig:
    flags = {k: _coerce(k, v, "command line") for k, v in flag_values.items() if v is not None}
    _check_types(flags, "command line")
    values = {**file_values, **flags}
    from .protocols import get_protocol

    # A protocol's limits (JSONSchemaBench: compile 10 s, max_tokens 2048) apply unless set explicitly.
    for key, value in get_protocol(values.get("protocol", "cdbench")).settings.items():
        values.setdefault(key, value)
    cfg = RunConfig(**values)
    if cfg.max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {cfg.max_tokens}")
    if cfg.whitespace not in ("compact", "flexible"):
        raise ConfigError(f"whitespace must be 'compact' or 'flexible', got {cfg.whitespace!r}")
    if cfg.temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {cfg.temperature}")
    if cfg.memory_gb is not None and cfg.memory_gb <= 0:
        raise ConfigError(f"memory_gb must be > 0, got {cfg.memory_gb}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit must be >= 1, got {cfg.limit}")
    return cfg
