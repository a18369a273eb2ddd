"""Language models: llama.cpp over any GGUF, and small in-memory LMs for exact tests."""
from ..registry import Registry
from .base import LanguageModel, TokenizerView

LMS: Registry[LanguageModel] = Registry("model")
LMS.register("llamacpp", "harness.lm.llamacpp:LlamaCppLM")
LMS.register("tabular", "harness.lm.tabular:TabularLM")
LMS.register("transformers", "harness.lm.transformers_lm:TransformersLM")

__all__ = ["LMS", "LanguageModel", "TokenizerView"]
