"""`cdbench fidelity`'s settings, declared once (harness.options): a light module, so that the
command line can be built without importing engines or samplers."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import option


@dataclass
class FidelityConfig:
    """`cdbench fidelity` settings: each declared once (flag, TOML key [fidelity], help, default)."""
    dataset: str = option("fidelity", "fidelity, or any dataset whose tasks carry a length_bound")
    tasks: list[str] = option([], "comma-separated task ids (default: every task of the dataset)")
    engine: str = option("xgrammar", "the engine for the exact walk and every sampler")
    samplers: list[str] = option(["masking", "awrs-smc", "asap"], "comma-separated fidelity estimators "
                                 "(harness/fidelity/estimators.py: masking, awrs-smc, asap, gcd)")
    samples: int = option(200, "samples per sampler (AWRS-SMC runs samples/particles times)")
    particles: int = option(5, "AWRS-SMC particles")
    ess_threshold: float = option(0.5, "AWRS-SMC resampling threshold (fraction of particles)")
    seed: int = option(0, "first seed")
    level: str = option("tokens", "compare token sequences or strings", choices=("tokens", "strings"))
    length_bound: int | None = option(None, "token bound T for every task (default: each task's own)")
    max_prefixes: int = option(20000, "exact-walk budget: viable prefixes")
    max_seconds: float = option(900.0, "exact-walk budget: seconds")
    null_reps: int = option(200, "repetitions for the null band")
    model: str | None = option(None, "GGUF model path (default: Gemma 3 270M)")
    reports_dir: str = option("reports", "where run directories go")
    run_id: str | None = option(None, "the run directory's name (default: fidelity-<date>-<time>)")
    resume: str | None = option(None, "continue an interrupted fidelity run: finished tasks are kept, the task "
                                "in flight runs again whole; a changed config is refused", metavar="RUN_DIR")
