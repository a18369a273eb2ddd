"""The unconstrained baseline: every token allowed at every step, so the model decodes freely.

A quality run sets it beside a constraint engine: same model, prompt, sampler, seed and
limits, so the accuracy difference is the constraint's alone (JSONSchemaBench's "LM only").
Its compile always succeeds and takes no time; its outputs are validated against the task's
schema like any engine's, so `valid` is the unconstrained model's own compliance.
Registered as `unconstrained`, never in the default engine list.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tasks.task import Task
from .base import ConstraintEngine


class FreeMatcher:
    """Allows everything, accepts everywhere (EOS included): a no-op constraint."""

    def fill_mask(self, bitmask: np.ndarray) -> None:
        bitmask[:] = -1

    def check(self, token: int) -> bool:
        return True

    def advance(self, token: int) -> bool:
        return True

    def rollback(self, n: int) -> None:
        pass

    def fork(self) -> "FreeMatcher":
        return FreeMatcher()

    def is_accepting(self) -> bool:
        return True


class FreeCompiled:
    def matcher(self) -> FreeMatcher:
        return FreeMatcher()


class UnconstrainedEngine(ConstraintEngine):
    name = "unconstrained"
    kinds = frozenset({"json_schema", "cfg"})

    def version(self) -> str:
        return "none"

    def settings(self) -> dict[str, Any]:
        return {"constraint": "none"}

    def compile(self, task: Task) -> FreeCompiled:
        return FreeCompiled()  # any task kind and grammar format: nothing is compiled

    def export(self, compiled: FreeCompiled) -> bytes:
        return b""  # a guarded compile loads this instead of compiling again

    def load(self, data: bytes) -> FreeCompiled:
        return FreeCompiled()
