"""`cdbench replay`'s settings, declared once (harness.options): flag, TOML key ([replay] table),
type, help and default. A light module: the command line is built without importing the replay."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import address_option, executor_option, option


@dataclass
class ReplayConfig:
    source: str = option("maskbench", "maskbench, jsts, builtin, adversarial (ADVERSARIAL.md's engine failures; "
                         "--groups = families), or a directory of MaskBench JSONL files")
    groups: list[str] = option([], "comma-separated groups (MaskBench file stems, JSTS keyword files, adversarial "
                               "families)")
    draft: str = option("draft2020-12", "JSON Schema Test Suite draft directory")
    limit: int | None = option(None, "first N schemas only")
    sample: int | None = option(None, "a seeded random sample of N schemas")
    sample_per_group: int | None = option(None, "a seeded random sample of at most N schemas from each group")
    seed: int = option(0, "seed for --sample and --sample-per-group")
    engines: list[str] = option(["llguidance", "xgrammar"], "comma-separated engines")
    workers: int = option(1, "worker processes (or Ray actors) per engine", flag="-j")
    timeout_s: float = option(60.0, "per-schema time limit, s", flag="--timeout")
    memory_gb: float = option(8.0, "per-worker address-space limit, GiB")
    tokenizer: str | None = option(None, "GGUF whose vocabulary to use (default: the default model's)")
    whitespace: str = option("compact", "JSON whitespace the engines allow", choices=("compact", "flexible"))
    strict: bool = option(True, "xgrammar strict_mode")
    engine_threads: int = option(1, "engine compile threads")
    compile_cache: str = option("cold", "cold: empty the engine's compile cache before every schema; shared: keep it "
                                "across schemas, as a server and MaskBench's runner do (xgrammar; order-dependent)",
                                choices=("cold", "shared"))
    differential: bool = option(False, "compare masks across engines step by step, and show the tokens one allows "
                                "and the other refuses at the first difference")
    reports_dir: str = option("reports", "where run directories go")
    run_id: str | None = option(None, "the run directory's name (default: replay-<date>-<time>)")
    resume: bool = option(False, "continue the interrupted replay --run-id: finished schemas are kept")
    data_dir: str | None = option(None, "root of the datasets (default: $CDBENCH_DATA_DIR, else ../shared/datasets "
                                  "when present, else the user cache that `cdbench data fetch` fills)")
    executor: str = executor_option("worker processes on this machine, -j per engine")
    address: str | None = address_option()
    progress: bool = option(True, "a progress bar on stderr")
