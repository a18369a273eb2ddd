"""Frontends: the end-to-end paths users call (a library, a server), run beside the engines.

Adding one: a module with a Frontend subclass and a line here. docs/frontends.md says what each
measures and what it cannot.
"""
from ..registry import Registry
from .base import Frontend, FrontendOptions, FrontendResult

FRONTENDS: Registry[Frontend] = Registry("frontend")
FRONTENDS.register("outlines", "harness.frontends.outlines_frontend:OutlinesFrontend")
FRONTENDS.register("llamacpp-response-format", "harness.frontends.llamacpp_frontend:LlamaCppResponseFormat")
FRONTENDS.register("openai", "harness.frontends.openai_frontend:OpenAIFrontend")

__all__ = ["FRONTENDS", "Frontend", "FrontendOptions", "FrontendResult"]
