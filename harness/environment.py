"""What a result depends on beyond the config: versions, machine, model hash, git commit."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = [
    "xgrammar", "llguidance", "outlines-core", "outlines", "llama-cpp-python", "torch",
    "jsonschema", "lark", "numpy", "numba", "pandas", "pyarrow", "transformers",
]


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """Every flag the CPU reports (x86 'flags', Arm 'Features'), sorted; [] where unknown."""
    return sorted((_cpuinfo("flags", "Features") or "").split())


SIMD_FLAG = re.compile(r"^(avx\w*|amx\w*|fma|f16c|bmi2|sse4_2|neon|sve\w*)$")


def cpu_simd_flags() -> list[str]:
    """The CPU's vector-instruction flags (avx2, avx512*, amx_* ...)."""
    return [f for f in cpu_flags() if SIMD_FLAG.match(f)]


def compiled_features(system_info: str) -> list[str]:
    """The features llama.cpp's system-info line sets to 1 (AVX2, AVX512, AMX_INT8 ...), sorted."""
    return sorted({m.group(1) for m in re.finditer(r"(\w+)\s*=\s*1\b", system_info)})


def llama_cpp_build() -> dict[str, Any] | None:
    """What the installed llama.cpp was compiled to use: its system-info line and the features set to 1.

    ggml reports compile-time features here, so two runs from different builds (portable AVX2 vs
    native AVX-512) are told apart even on the same CPU.
    """
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - not installed, or an older binding
        return None
    return {"system_info": info, "features": compiled_features(info)}


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(repo: Path) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_simd_flags": cpu_simd_flags(),
        "llama_cpp_build": llama_cpp_build(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "packages": {p: package_version(p) for p in PACKAGES},
        "cdbench_commit": git_commit(repo),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "CDBENCH_DATA_DIR") if k in os.environ},
    }
