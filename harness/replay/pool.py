"""A pool of local replay worker processes for one engine (the default executor).

The limits, verdicts and replacements are serving.ServingPool's; this module says how a local
worker starts, receives a job, reports and dies. The same pool runs the differential oracle's
mask jobs (worker.MaskJob), which have no warm compile.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import ConfigError
from .serving import JobState, ServingPool, WorkerLost
from .worker import Job, MaskJob, WorkerSpec, worker_main

_CTX = mp.get_context("spawn")  # a clean interpreter: no inherited threads or engine state


@dataclass
class _Worker(JobState):
    proc: Any
    conn: Connection


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


class WorkerPool(ServingPool):
    """Replay workers as local processes (spawned: a clean interpreter each)."""

    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0) -> None:
        super().__init__(spec, workers, init_timeout_s)
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
        return _Worker(proc=proc, conn=parent)

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
            self.slots = [self._spawn(x) for x in launched]
        except Exception:
            for proc, _ in launched:
                proc.kill()
            raise

    def close(self) -> None:
        for proc, _ in self._launched:  # launched, never waited for
            proc.kill()
        self._launched = []
        for w in self.slots:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self.slots:
            # A worker keeps nothing worth saving; its interpreter's teardown (torch's, for
            # xgrammar) takes about 0.5 s, so it is not waited for.
            w.proc.join(0.05)
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(1)
        self.slots = []

    def _replace(self, w: _Worker, reason: str, key: Any, phase: str, died: bool = False) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        idx = next(i for i, x in enumerate(self.slots) if x is w)
        record = self._record(idx, w.proc.pid, key, phase, reason)
        self.slots[idx] = self._spawn()
        record["replacement_pid"] = self.slots[idx].proc.pid

    # -- the serving loop's primitives (serving.ServingPool) ----------------------------------------
    def _send(self, w: _Worker, job: Job | MaskJob) -> None:
        w.conn.send(job)

    def _ready(self, busy: list[_Worker], timeout_s: float) -> list[_Worker]:
        ready = wait([w.conn for w in busy], timeout=timeout_s)
        return [w for w in busy if w.conn in ready]

    def _recv(self, w: _Worker) -> tuple[str, Any]:
        try:
            return w.conn.recv()
        except (EOFError, OSError):
            w.proc.join(5)
            raise WorkerLost(*classify_exit(w.proc.exitcode))

    def _kill(self, w: _Worker) -> None:
        w.proc.kill()
