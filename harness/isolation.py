"""Run a function in a forked child with a time limit, to learn whether it hangs or crashes.

Used as a compile guard: the child compiles and reports only a status, and the parent
compiles for real (and times that) only if the child succeeded. A hang or a segfault in
an engine's compiler so becomes a status row instead of the end of the run.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class GuardOutcome:
    status: str  # "ok", "timeout", "crash", "oom", or the name of a raised exception class
    message: str = ""
    value: object = None


def run_forked(fn: Callable[[], object], timeout_s: float, memory_bytes: int | None = None) -> GuardOutcome:
    """fn's return value must be picklable; an exception in fn is reported, not raised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            faulthandler.disable()  # a crash here is the parent's to report, not a traceback dump
            if memory_bytes:
                resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
            try:
                result = GuardOutcome("ok", "", fn())
            except MemoryError as exc:
                result = GuardOutcome("oom", str(exc)[:300])
            except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
                result = GuardOutcome(type(exc).__name__, str(exc)[:500])
            try:
                payload = pickle.dumps(result)
            except Exception:
                payload = pickle.dumps(GuardOutcome(result.status, result.message))
            with os.fdopen(write_fd, "wb") as fh:
                fh.write(payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    timed_out = False
    with os.fdopen(read_fd, "rb", buffering=0) as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fh], [], [], left)
            if not ready:
                continue
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return GuardOutcome("timeout", f"no result within {timeout_s:g} s")
    _, status = os.waitpid(pid, 0)
    if chunks:
        try:
            return pickle.loads(b"".join(chunks))
        except Exception as exc:
            return GuardOutcome("crash", f"unreadable result from child: {exc}")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        kind = "oom" if sig in (signal.SIGABRT, signal.SIGKILL) and memory_bytes else "crash"
        return GuardOutcome(kind, f"killed by signal {signal.Signals(sig).name}")
    return GuardOutcome("crash", f"child exited with status {os.WEXITSTATUS(status)} and no result")
