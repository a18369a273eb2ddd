"""Deliberately broken engines, for testing the harness's own verdicts and isolation.

They wrap llguidance (so they compile real constraints) and then misbehave in one way each:
allow every token, segfault, hang, or allocate without bound. They are registered under
names starting with "faulty-" and are never part of a default run.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np

from ..tasks.task import Task
from .llguidance_engine import LLGuidanceEngine, LLGuidanceMatcher


class _AllowAllMatcher(LLGuidanceMatcher):
    def fill_mask(self, bitmask: np.ndarray) -> None:
        bitmask[:] = -1

    def check(self, token: int) -> bool:
        return True

    def advance(self, token: int) -> bool:
        super().advance(token)
        return True

    def is_accepting(self) -> bool:
        return True


class AllowAllEngine(LLGuidanceEngine):
    """Over-permissive: every token allowed at every step (a replay must say invalid_accepted)."""

    name = "faulty-allow-all"

    def _compile(self, task: Task):
        compiled = super()._compile(task)
        fresh = compiled.matcher
        compiled.matcher = lambda: _AllowAllMatcher(fresh()._m, self.tokenizer.eos_id)
        return compiled


class SegfaultEngine(LLGuidanceEngine):
    name = "faulty-segfault"

    def _compile(self, task: Task):
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class HangEngine(LLGuidanceEngine):
    name = "faulty-hang"

    def _compile(self, task: Task):
        while True:
            time.sleep(1)


class OomEngine(LLGuidanceEngine):
    name = "faulty-oom"

    def _compile(self, task: Task):
        hoard = []
        while True:  # reserve address space 256 MiB at a time, as a runaway compiler would
            hoard.append(np.empty(256 << 20, dtype=np.uint8))
