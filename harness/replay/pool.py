"""A pool of replay workers for one engine, with per-job time limits and replacement.

A worker that dies (signal), overruns its job's time limit (killed) or reports MemoryError
gives that job a bucket (crash, timeout, oom) and is replaced; the run goes on.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator

from .worker import Job, WorkerSpec, worker_main

_CTX = mp.get_context("spawn")  # a clean interpreter: no inherited threads or engine state


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    job: Any = None
    job_key: Any = None
    deadline: float = 0.0
    started: float = 0.0


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


class WorkerPool:
    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0) -> None:
        self.spec = spec
        self.size = max(1, workers)
        self.init_timeout_s = init_timeout_s
        self.init_times: list[float] = []
        self.info: dict[str, Any] = {}
        self.replaced = 0
        self.run_s = 0.0  # wall time spent serving jobs, start-up excluded
        self._workers: list[_Worker] = []

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
            raise RuntimeError(f"engine '{self.spec.engine}' worker did not start within {self.init_timeout_s:g} s")
        try:
            kind, payload = parent.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(f"engine '{self.spec.engine}' worker died while starting ({classify_exit(proc.exitcode)[1]})")
        if kind != "ready":
            proc.join(5)
            raise RuntimeError(f"engine '{self.spec.engine}' could not start: {payload}")
        self.init_times.append(payload["init_s"])
        self.info = {"version": payload["version"], "settings": payload["settings"]}
        return _Worker(proc, parent)

    def start(self) -> None:
        """Start every worker at once (their start-up runs in parallel), then wait for each."""
        launched = [self._launch() for _ in range(self.size)]
        self._workers = [self._spawn(x) for x in launched]

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            w.proc.join(2)
            if w.proc.is_alive():
                w.proc.kill()
        self._workers = []

    def _replace(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        idx = self._workers.index(w)
        self._workers[idx] = self._spawn()
        self.replaced += 1

    def run(self, jobs: Iterable[tuple[Any, Job]], timeout_s: float,
            on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        """Run (key, job) pairs; on_result(key, status, payload, wall_s) is called as each ends.

        status is "done" (payload = the worker's result), or "timeout", "crash", "oom", "exception".
        """
        started = time.perf_counter()
        try:
            self._run(jobs, timeout_s, on_result)
        finally:
            self.run_s += time.perf_counter() - started

    def _run(self, jobs: Iterable[tuple[Any, Job]], timeout_s: float,
             on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        pending: Iterator[tuple[Any, Job]] = iter(jobs)
        exhausted = False
        while True:
            for w in self._workers:
                if w.job is None and not exhausted:
                    try:
                        key, job = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    w.job, w.job_key = job, key
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
                wall = now - w.started
                if w.conn in ready:
                    try:
                        kind, payload = w.conn.recv()
                    except (EOFError, OSError):
                        w.proc.join(5)
                        status, message = classify_exit(w.proc.exitcode)
                        key = w.job_key
                        w.job = None
                        self._replace(w)
                        on_result(key, status, {"error": message}, wall)
                        continue
                    key = w.job_key
                    w.job = None
                    if kind == "done":
                        on_result(key, "done", payload, wall)
                    else:
                        on_result(key, kind, {"error": payload}, wall)
                        if kind == "oom":
                            self._replace(w)
                elif now >= w.deadline:
                    key = w.job_key
                    w.job = None
                    w.proc.kill()
                    self._replace(w)
                    on_result(key, "timeout", {"error": f"no result within {timeout_s:g} s"}, wall)
