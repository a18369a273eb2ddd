"""One compile path for run, replay and fidelity, with one status vocabulary.

Statuses: `ok`, `unsupported` (the engine says it cannot express the constraint), `error` (the
engine raised), `timeout` (over the limit), `crash` (the compiling process died by a signal),
`oom` (it ran out of memory).

Every engine is timed the same way. With the guard (the default in `run`), the compile runs in
a forked child that is killed at the time limit, and `seconds` is the compile as the child timed
it, for every engine. Making the result usable in this process is `load_s`: loading the
engine's serialised result, or, for an engine that cannot serialise (llguidance), compiling
again here. Without the guard (replay's workers already run under limits; fidelity's tiny
grammars), `seconds` is the in-process compile and `load_s` is 0. A user waits for both before
the first token, so TTFT counts both, and the matcher's creation (`matcher_s`) too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .engines import ConstraintEngine, Unsupported
from .isolation import run_forked
from .tasks.task import Task

STATUSES = ("ok", "unsupported", "error", "timeout", "crash", "oom")


@dataclass
class CompileOutcome:
    status: str                    # one of STATUSES (or "skipped": a harness limit, nothing compiled)
    seconds: float | None          # the compile itself (the child's own timing under the guard)
    message: str = ""
    compiled: Any = None
    load_s: float | None = None    # making the result usable in this process (load, or compile again)

    @property
    def ready_s(self) -> float:
        """Everything before a matcher can be made: compile + load."""
        return (self.seconds or 0.0) + (self.load_s or 0.0)


def _timed_compile(engine: ConstraintEngine, task: Task) -> tuple[float, bytes | None]:
    start = time.perf_counter()
    compiled = engine.compile(task)
    seconds = time.perf_counter() - start
    return seconds, engine.export(compiled)


def compile_in_process(engine: ConstraintEngine, task: Task, timeout_s: float | None = None) -> CompileOutcome:
    start = time.perf_counter()
    try:
        compiled = engine.compile(task)
    except Unsupported as exc:
        return CompileOutcome("unsupported", None, str(exc)[:500])
    except MemoryError as exc:
        return CompileOutcome("oom", None, f"MemoryError: {exc}"[:500])
    except Exception as exc:  # CompileError and anything an engine raises
        return CompileOutcome("error", None, f"{type(exc).__name__}: {exc}"[:500])
    seconds = time.perf_counter() - start
    if timeout_s is not None and seconds > timeout_s:
        return CompileOutcome("timeout", seconds, f"compile took {seconds:.1f} s > {timeout_s:g} s")
    return CompileOutcome("ok", seconds, "", compiled, 0.0)


def _make_usable(engine: ConstraintEngine, task: Task, seconds: float, data: bytes | None) -> CompileOutcome:
    """The child's result in this process: loaded when serialised, else compiled again; timed as load_s."""
    start = time.perf_counter()
    try:
        compiled = engine.load(data) if data is not None else engine.compile(task)
    except Exception as exc:
        return CompileOutcome("error", seconds, f"making the compiled result usable here failed: {exc}"[:500])
    return CompileOutcome("ok", seconds, "", compiled, time.perf_counter() - start)


def compile_task(engine: ConstraintEngine, task: Task, timeout_s: float, guard: bool = True) -> CompileOutcome:
    """Compile a task; with the guard, in a forked child killed at the time limit."""
    if not guard:
        return compile_in_process(engine, task, timeout_s)
    probe = run_forked(lambda: _timed_compile(engine, task), timeout_s)
    if probe.status == "timeout":
        return CompileOutcome("timeout", timeout_s, probe.message)
    if probe.status == "Unsupported":
        return CompileOutcome("unsupported", None, probe.message)
    if probe.status in ("crash", "oom"):
        return CompileOutcome(probe.status, None, f"compiler {probe.status}: {probe.message}")
    if probe.status != "ok":
        return CompileOutcome("error", None, f"{probe.status}: {probe.message}")
    seconds, data = probe.value
    return _make_usable(engine, task, seconds, data)
