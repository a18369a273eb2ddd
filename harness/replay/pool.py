"""A pool of replay workers for one engine, with per-job time limits and replacement.

A worker that dies (signal), overruns its job's time limit (killed) or reports MemoryError
gives that job a bucket (crash, timeout, oom) and is replaced; the run goes on. A job's
result is settled before its warm compile, which runs under a limit of its own: a worker that
dies or overruns there is replaced and only the warm measurement is lost. The same pool runs
the differential oracle's mask jobs (worker.MaskJob), which have no warm compile.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator

from ..errors import ConfigError
from .worker import Job, MaskJob, WorkerSpec, worker_main

_CTX = mp.get_context("spawn")  # a clean interpreter: no inherited threads or engine state


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    job: Any = None
    job_key: Any = None
    deadline: float = 0.0
    started: float = 0.0
    phase: str = ""                 # compile, replay (compile ended), warm (result in, warm compile running)
    cold_s: float | None = None     # the cold compile's time, once the worker has sent it
    result: Any = None              # the result held while the warm compile runs
    wall: float = 0.0               # compile + replay wall time of that result


def classify_exit(exitcode: int | None) -> tuple[str, str]:
    """Bucket for a worker that died: SIGSEGV/SIGBUS = crash, SIGABRT/SIGKILL = oom (abort), as MaskBench."""
    if exitcode is None:
        return "crash", "worker vanished"
    if exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig in (signal.SIGABRT, signal.SIGKILL):
            return "oom", f"worker killed by {sig.name} (out of memory or abort)"
        return "crash", f"worker killed by {sig.name}"
    return "crash", f"worker exited with status {exitcode}"


class EngineStartError(ConfigError):
    """No worker of an engine could start (not installed, bad vocabulary, died at start-up): one line, exit 2."""


class WorkerPool:
    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0) -> None:
        self.spec = spec
        self.size = max(1, workers)
        self.init_timeout_s = init_timeout_s
        self.init_times: list[float] = []
        self.info: dict[str, Any] = {}
        self.replaced = 0
        # One record per replaced worker: which worker (engine/slot, pid), the job it was on,
        # the phase, why it was replaced, and the pid of its replacement (None if that failed).
        self.replacements: list[dict[str, Any]] = []
        self.run_s = 0.0  # wall time spent serving jobs, start-up excluded
        self._workers: list[_Worker] = []
        self._launched: list[tuple[Any, Connection]] = []

    def _launch(self) -> tuple[Any, Connection]:
        parent, child = _CTX.Pipe()
        proc = _CTX.Process(target=worker_main, args=(child, self.spec), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _spawn(self, launched: tuple[Any, Connection] | None = None) -> _Worker:
        proc, parent = launched or self._launch()
        if not parent.poll(self.init_timeout_s):
            proc.kill()
            raise EngineStartError(f"engine '{self.spec.engine}' worker did not start within {self.init_timeout_s:g} s")
        try:
            kind, payload = parent.recv()
        except EOFError:
            proc.join(5)
            raise EngineStartError(f"engine '{self.spec.engine}' worker died while starting ({classify_exit(proc.exitcode)[1]})")
        if kind != "ready":
            proc.join(5)
            raise EngineStartError(f"engine '{self.spec.engine}' could not start: {payload}")
        self.init_times.append(payload["init_s"])
        self.info = {"version": payload["version"], "settings": payload["settings"]}
        return _Worker(proc, parent)

    def launch(self) -> None:
        """Start every worker process at once and return: their start-up (imports, vocabulary,
        tokenizer preprocessing) runs while the caller prepares the jobs."""
        if not self._launched:
            self._launched = [self._launch() for _ in range(self.size)]

    def start(self) -> None:
        """Launch the workers if not yet launched, then wait until each is ready."""
        self.launch()
        launched, self._launched = self._launched, []
        try:
            self._workers = [self._spawn(x) for x in launched]
        except Exception:
            for proc, _ in launched:
                proc.kill()
            raise

    def close(self) -> None:
        for proc, _ in self._launched:  # launched, never waited for
            proc.kill()
        self._launched = []
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            # A worker keeps nothing worth saving; its interpreter's teardown (torch's, for
            # xgrammar) takes about 0.5 s, so it is not waited for.
            w.proc.join(0.05)
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(1)
        self._workers = []

    def _replace(self, w: _Worker, reason: str, key: Any = None) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        idx = self._workers.index(w)
        record = {"worker": f"{self.spec.engine}/{idx}", "pid": w.proc.pid,
                  "job": str(key if key is not None else w.job_key), "phase": w.phase, "reason": reason,
                  "replacement_pid": None}
        self.replacements.append(record)
        self.replaced += 1
        self._workers[idx] = self._spawn()
        record["replacement_pid"] = self._workers[idx].proc.pid

    def run(self, jobs: Iterable[tuple[Any, Job | MaskJob]], timeout_s: float,
            on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        """Run (key, job) pairs; on_result(key, status, payload, wall_s) is called as each ends.

        status is "done" (payload = the worker's result), or "timeout", "crash", "oom", "exception"
        (payload: "error", and "phase" = "compile" or "replay" with "cold_compile_s" once the
        compile has ended). The time limit covers compile and replay; the warm compile after a
        "done" has a limit of its own, and whatever happens to it only sets the result's warm
        fields (warm_compile_s None, warm_note why): the verdict is already settled.
        """
        started = time.perf_counter()
        try:
            self._run(jobs, timeout_s, on_result)
        finally:
            self.run_s += time.perf_counter() - started

    def _run(self, jobs: Iterable[tuple[Any, Job | MaskJob]], timeout_s: float,
             on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        pending: Iterator[tuple[Any, Job | MaskJob]] = iter(jobs)
        exhausted = False
        while True:
            for w in self._workers:
                if w.job is None and not exhausted:
                    try:
                        key, job = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    w.job, w.job_key, w.phase, w.cold_s, w.result = job, key, "compile", None, None
                    w.started = time.perf_counter()
                    w.deadline = w.started + timeout_s
                    w.conn.send(job)
            busy = [w for w in self._workers if w.job is not None]
            if not busy:
                return
            now = time.perf_counter()
            ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - now))
            now = time.perf_counter()
            for w in busy:
                if w.conn in ready:
                    self._receive(w, now, timeout_s, on_result)
                elif now >= w.deadline:
                    w.proc.kill()
                    key = w.job_key  # the row is written first: a replacement that fails to start loses none
                    if w.phase == "warm":
                        self._finish(w, "done", self._warm_lost(w, f"warm compile over its {timeout_s:g} s limit"),
                                     on_result)
                    else:
                        self._finish(w, "timeout", self._failure(w, f"no result within {timeout_s:g} s"), on_result,
                                     now - w.started)
                    self._replace(w, f"timeout: no result within {timeout_s:g} s", key)

    def _receive(self, w: _Worker, now: float, timeout_s: float,
                 on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        """One message from a busy worker: progress, its result, its warm compile, or its death."""
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError):
            w.proc.join(5)
            status, message = classify_exit(w.proc.exitcode)
            key = w.job_key  # the row is written first: a replacement that fails to start loses none
            if w.phase == "warm":
                self._finish(w, "done", self._warm_lost(w, f"warm compile lost: {message}"), on_result)
            else:
                self._finish(w, status, self._failure(w, message), on_result, now - w.started)
            self._replace(w, f"{status}: {message}", key)
            return
        if kind == "compiled":
            w.phase, w.cold_s = "replay", payload
        elif kind == "done" and payload.get("warm_pending"):
            w.phase, w.result, w.wall = "warm", payload, now - w.started
            w.deadline = now + timeout_s  # the warm compile's own limit, outside the replay's
        elif kind == "done":
            self._finish(w, "done", payload, on_result, now - w.started)
        elif kind == "warm":
            self._finish(w, "done", {**w.result, **payload}, on_result)
        else:
            key = w.job_key
            self._finish(w, kind, self._failure(w, payload), on_result, now - w.started)
            if kind == "oom":
                self._replace(w, f"oom: {payload}"[:200], key)

    @staticmethod
    def _failure(w: _Worker, message: str) -> dict[str, Any]:
        return {"error": message, "phase": w.phase, "cold_compile_s": w.cold_s}

    @staticmethod
    def _warm_lost(w: _Worker, note: str) -> dict[str, Any]:
        return {**w.result, "warm_compile_s": None, "warm_note": note}

    @staticmethod
    def _finish(w: _Worker, status: str, payload: dict[str, Any],
                on_result: Callable[[Any, str, dict[str, Any], float], None], wall: float | None = None) -> None:
        key = w.job_key
        wall = w.wall if wall is None else wall
        w.job, w.result = None, None
        on_result(key, status, payload, wall)
