"""Constraint engines. Adding one: a module with a ConstraintEngine subclass and a line here."""
from ..registry import Registry
from .base import Compiled, CompileError, ConstraintEngine, EngineOptions, Matcher, Unsupported

ENGINES: Registry[ConstraintEngine] = Registry("engine")
ENGINES.register("xgrammar", "harness.engines.xgrammar_engine:XGrammarEngine")
ENGINES.register("llguidance", "harness.engines.llguidance_engine:LLGuidanceEngine")
ENGINES.register("outlines", "harness.engines.outlines_engine:OutlinesEngine")
ENGINES.register("llamacpp", "harness.engines.llamacpp_engine:LlamaCppGrammarEngine")
ENGINES.register("unconstrained", "harness.engines.unconstrained:UnconstrainedEngine")  # baseline: no constraint
# Fault-injection engines for testing the harness itself (never in a default run).
ENGINES.register("faulty-allow-all", "harness.engines.faulty:AllowAllEngine")
ENGINES.register("faulty-segfault", "harness.engines.faulty:SegfaultEngine")
ENGINES.register("faulty-hang", "harness.engines.faulty:HangEngine")
ENGINES.register("faulty-oom", "harness.engines.faulty:OomEngine")

DEFAULT_ENGINES = ["xgrammar", "llguidance", "outlines", "llamacpp"]

__all__ = ["ENGINES", "DEFAULT_ENGINES", "Compiled", "CompileError", "ConstraintEngine",
           "EngineOptions", "Matcher", "Unsupported"]
