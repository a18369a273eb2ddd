"""A per-case memory limit for `cdbench run`, applied at the LM seam.

Generation runs in the runner's process (the model is loaded once), so a case cannot be given its
own address-space limit the way a replay worker or a guarded compile is. Instead the LM is wrapped
for the case: before every forward pass the wrapper reads the process's resident memory
(/proc/self/statm) and ends the case when it has grown by more than the limit since the case
began. The check is soft (memory allocated between two forward passes is seen at the next one)
and costs a few microseconds per pass. The case's row gets finish_reason "oom".
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident memory now (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class CaseMemoryExceeded(BaseException):
    """Raised through the sampler (not an Exception: samplers turn those into 'error' rows)."""


class MemoryBudgetLM:
    """The case's LM: the wrapped model, with resident-memory growth checked before each pass."""

    def __init__(self, lm: Any, limit_bytes: int) -> None:
        self._lm = lm
        self.limit_bytes = limit_bytes
        self.start_rss = rss_bytes()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lm, name)

    def _check(self) -> None:
        grown = rss_bytes() - self.start_rss
        if grown > self.limit_bytes:
            raise CaseMemoryExceeded(f"resident memory grew by {grown / 2**20:.0f} MiB during the case "
                                     f"(limit {self.limit_bytes / 2**20:.0f} MiB)")

    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        self._check()
        return self._lm.logits(prefix)

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        self._check()
        return self._lm.logprobs(prefix)
