"""The serving loop every replay executor shares: jobs to free workers, limits, verdicts, replacement.

A pool (local processes in pool.py, Ray actors in ray_pool.py) says only how to send a job,
wait for messages, receive one, kill a worker and replace it; this loop decides everything a
verdict depends on, so the executors cannot drift apart. A worker that dies (signal), overruns
its job's time limit (killed) or reports MemoryError gives that job a bucket (crash, timeout,
oom) and is replaced; the run goes on. A job's result is settled before its warm compile,
which runs under a limit of its own: a worker that dies or overruns there is replaced and only
the warm measurement is lost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .worker import Job, MaskJob, WorkerSpec

OnResult = Callable[[Any, str, dict[str, Any], float], None]


@dataclass(kw_only=True)
class JobState:
    """What the loop knows of one worker's current job."""
    job: Any = None
    job_key: Any = None
    deadline: float = 0.0
    started: float = 0.0
    phase: str = ""                 # compile, replay (compile ended), warm (result in, warm compile running)
    cold_s: float | None = None     # the cold compile's time, once the worker has sent it
    result: Any = None              # the result held while the warm compile runs
    wall: float = 0.0               # compile + replay wall time of that result


class WorkerLost(Exception):
    """A worker died in its job: the bucket (crash, oom, exception) and why, in one line."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ServingPool:
    """The shared part of WorkerPool and RayPool. Subclasses keep `self.slots` (JobState
    subclasses) and implement _send, _ready, _recv, _kill and _replace."""

    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0) -> None:
        self.spec = spec
        self.size = max(1, workers)
        self.init_timeout_s = init_timeout_s
        self.init_times: list[float] = []
        self.info: dict[str, Any] = {}
        self.replaced = 0
        # One record per replaced worker: which worker (engine/slot, pid), the job it was on, the
        # phase, why it was replaced, the pid of its replacement (None if that failed), and (Ray) its node.
        self.replacements: list[dict[str, Any]] = []
        self.run_s = 0.0  # wall time spent serving jobs, start-up excluded
        self.slots: list[Any] = []

    # -- what an executor provides ----------------------------------------------------------------
    def _send(self, slot: Any, job: Job | MaskJob) -> None:
        raise NotImplementedError

    def _ready(self, busy: list[Any], timeout_s: float) -> list[Any]:
        """The busy slots with a message (or a death) to receive, waiting at most timeout_s."""
        raise NotImplementedError

    def _recv(self, slot: Any) -> tuple[str, Any]:
        """The slot's next message; raises WorkerLost when its worker died."""
        raise NotImplementedError

    def _kill(self, slot: Any) -> None:
        raise NotImplementedError

    def _replace(self, slot: Any, reason: str, key: Any, phase: str, died: bool = False) -> None:
        raise NotImplementedError

    def _record(self, idx: int, pid: Any, key: Any, phase: str, reason: str, **more: Any) -> dict[str, Any]:
        record = {"worker": f"{self.spec.engine}/{idx}", "pid": pid, "job": str(key), "phase": phase,
                  "reason": reason, "replacement_pid": None, **more}
        self.replacements.append(record)
        self.replaced += 1
        return record

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, jobs: Iterable[tuple[Any, Job | MaskJob]], timeout_s: float, on_result: OnResult) -> None:
        """Run (key, job) pairs; on_result(key, status, payload, wall_s) is called as each ends.

        status is "done" (payload = the worker's result), or "timeout", "crash", "oom", "exception"
        (payload: "error", and "phase" = "compile" or "replay" with "cold_compile_s" once the
        compile has ended). The time limit covers compile and replay; the warm compile after a
        "done" has a limit of its own, and whatever happens to it only sets the result's warm
        fields (warm_compile_s None, warm_note why): the verdict is already settled.
        """
        started = time.perf_counter()
        try:
            self._serve(iter(jobs), timeout_s, on_result)
        finally:
            self.run_s += time.perf_counter() - started

    def _serve(self, pending: Iterator[tuple[Any, Job | MaskJob]], timeout_s: float, on_result: OnResult) -> None:
        exhausted = False
        while True:
            for s in self.slots:
                if s.job is None and not exhausted:
                    try:
                        key, job = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    s.job, s.job_key, s.phase, s.cold_s, s.result = job, key, "compile", None, None
                    s.started = time.perf_counter()
                    s.deadline = s.started + timeout_s
                    self._send(s, job)
            busy = [s for s in self.slots if s.job is not None]
            if not busy:
                return
            ready = self._ready(busy, max(0.0, min(s.deadline for s in busy) - time.perf_counter()))
            now = time.perf_counter()
            for s in busy:
                if any(r is s for r in ready):
                    self._receive(s, now, timeout_s, on_result)
                elif now >= s.deadline:
                    self._overrun(s, now, timeout_s, on_result)

    def _overrun(self, s: Any, now: float, timeout_s: float, on_result: OnResult) -> None:
        self._kill(s)
        key, phase = s.job_key, s.phase  # the row is written first: a replacement that fails to start loses none
        if phase == "warm":
            self._finish(s, "done", self._warm_lost(s, f"warm compile over its {timeout_s:g} s limit"), on_result)
        else:
            self._finish(s, "timeout", self._failure(s, f"no result within {timeout_s:g} s"), on_result,
                         now - s.started)
        self._replace(s, f"timeout: no result within {timeout_s:g} s", key, phase)

    def _receive(self, s: Any, now: float, timeout_s: float, on_result: OnResult) -> None:
        """One message from a busy worker: progress, its result, its warm compile, or its death."""
        try:
            kind, payload = self._recv(s)
        except WorkerLost as lost:
            key, phase = s.job_key, s.phase  # the row is written first: a replacement that fails to start loses none
            if phase == "warm":
                self._finish(s, "done", self._warm_lost(s, f"warm compile lost: {lost.message}"), on_result)
            else:
                self._finish(s, lost.status, self._failure(s, lost.message), on_result, now - s.started)
            self._replace(s, f"{lost.status}: {lost.message}", key, phase, died=True)
            return
        if kind == "compiled":
            s.phase, s.cold_s = "replay", payload
        elif kind == "done" and payload.get("warm_pending"):
            s.phase, s.result, s.wall = "warm", payload, now - s.started
            s.deadline = now + timeout_s  # the warm compile's own limit, outside the replay's
        elif kind == "done":
            self._finish(s, "done", payload, on_result, now - s.started)
        elif kind == "warm":
            self._finish(s, "done", {**s.result, **payload}, on_result)
        else:
            key, phase = s.job_key, s.phase
            self._finish(s, kind, self._failure(s, payload), on_result, now - s.started)
            if kind == "oom":
                self._replace(s, f"oom: {payload}"[:200], key, phase)

    @staticmethod
    def _failure(s: Any, message: str) -> dict[str, Any]:
        return {"error": message, "phase": s.phase, "cold_compile_s": s.cold_s}

    @staticmethod
    def _warm_lost(s: Any, note: str) -> dict[str, Any]:
        return {**s.result, "warm_compile_s": None, "warm_note": note}

    def _finish(self, s: Any, status: str, payload: dict[str, Any], on_result: OnResult,
                wall: float | None = None) -> None:
        key = s.job_key
        wall = s.wall if wall is None else wall
        s.job, s.result, s.phase = None, None, ""
        self._job_ended(s)
        on_result(key, status, payload, wall)

    def _job_ended(self, s: Any) -> None:
        """Executor-specific clean-up of a finished job's handle (Ray: its stream)."""
