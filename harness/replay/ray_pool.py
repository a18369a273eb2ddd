"""Replay workers as Ray actors: `cdbench replay --executor ray [--address ADDR]`.

`RayPool` has `WorkerPool`'s interface and verdicts; only where a worker runs differs. Each
worker slot is one actor (1 CPU, and `memory=` the worker's memory limit as a Ray resource)
that runs worker.worker_main in a thread of its own, over queues in place of the pipe: the
engine is built once per actor from the GGUF path (the vocabulary through the node's disk
cache, never through the task arguments), the address-space limit is set in the actor's
process, and every job is served by the same code as a local worker's. A job is one streaming
actor call whose messages ("compiled", "done", "warm", "oom", "exception") come back as the
worker sends them, so the driver keeps the local pool's phases and limits: a job over its time
limit is a `timeout` and its actor is killed (ray.kill) and replaced; an actor that dies is a
`crash` or `oom` and is replaced. Nothing is retried by Ray (max_restarts=0,
max_task_retries=0, max_retries=0): a schema that kills its worker is never run twice.

How an actor died: it writes Python's fatal-signal report (faulthandler) to a file on its node,
which the driver reads after the death, so SIGSEGV / SIGBUS are `crash` and SIGABRT is `oom`
with the local pool's messages (pool.classify_exit). A death without that report (SIGKILL, a
lost node) is `crash` with Ray's reason, unless Ray's memory monitor killed it (`oom`).

The address-space limit: a Ray worker maps Ray's object store and runs Ray's threads before
the engine exists (several GB of address space), so its RLIMIT_AS is the actor's address
space at start plus the worker's memory limit (a local worker's limit counts its bare
interpreter too, a few hundred MB).

Ray starts its workers at niceness 15; an actor puts itself back to 0 where it may (a local
Ray started here runs its workers at 0), so its engine competes for CPU as a local worker does.

Ray is imported only here, and only when --executor ray is asked for. Without --address a
local Ray is started (once per process, `-j` CPUs) and shut down at exit; with --address the
driver joins that cluster and leaves it running.
"""
from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import queue
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

from ..errors import ConfigError
from .pool import EngineStartError, classify_exit
from .worker import Job, MaskJob, WorkerSpec, worker_main

# faulthandler's names for the fatal signals it reports.
_FATAL = {"Segmentation fault": signal.SIGSEGV, "Aborted": signal.SIGABRT, "Bus error": signal.SIGBUS,
          "Floating-point exception": signal.SIGFPE, "Floating point exception": signal.SIGFPE,
          "Illegal instruction": signal.SIGILL}
_LOCAL_OBJECT_STORE = 512 << 20  # jobs and results are small; a small store keeps each actor's address space small
_started_ray = False             # this process started the Ray it uses (and shuts it down at exit)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs the ray package: pip install ray") from None
    return ray


def ensure_ray(address: str | None = None, num_cpus: int = 1, memory_bytes: int | None = None) -> Any:
    """The ray module, connected: to `address` if given, else to a local Ray started here with
    `num_cpus` CPUs (and, with a memory limit, `num_cpus` workers' worth of the memory resource,
    as the local executor runs -j workers under that limit whatever the machine has). A Ray
    already initialised in this process (a test's, a notebook's) is used as it is."""
    global _started_ray
    ray = import_ray()
    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            extra = {"_memory": num_cpus * memory_bytes} if memory_bytes else {}
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=_LOCAL_OBJECT_STORE, _system_config={"worker_niceness": 0}, **quiet, **extra)
            _started_ray = True
            atexit.register(shutdown_ray)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - no cluster there, a version mismatch, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(f"--executor ray: could not connect to {where}: {type(exc).__name__}: {exc}"[:400]) from None
    return ray


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A host:port address must answer before ray.init, which otherwise waits minutes for it."""
    import socket

    if address.startswith("ray://"):
        raise ConfigError("--address: Ray client addresses (ray://) are not supported; give the head's host:port")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--executor ray: no Ray cluster answers at {address} ({exc})") from None


def shutdown_ray() -> None:
    """Shut down the Ray this process started (never a cluster it only joined)."""
    global _started_ray
    if _started_ray:
        _started_ray = False
        import ray

        ray.shutdown()


# -- the actor ----------------------------------------------------------------------------------

class _Conn:
    """worker_main's end of the pipe, in the actor's process: jobs in, messages out."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()

    def send(self, message: Any) -> None:
        self.outbox.put(message)

    def recv(self) -> Any:
        return self.inbox.get()


def _address_space() -> int:
    """This process's address space in bytes (VmSize), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _normal_priority() -> int:
    """Run at niceness 0, as a local worker does: Ray starts its workers at niceness 15 (its
    `worker_niceness`), which on a busy node gives the engine less CPU than anything else there
    and lengthens every time measured. Lowering it needs the privilege to (CAP_SYS_NICE, or
    root); without it the niceness stays and is reported (pool.info["niceness"])."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        return 0


class ReplayActor:
    """One replay worker in a Ray actor: worker_main in a thread, its engine built once."""

    def __init__(self, spec: WorkerSpec) -> None:
        import ray

        ctx = ray.get_runtime_context()
        reports = report_dir()
        _sweep(reports)
        self.where = {"node_id": ctx.get_node_id(), "node": ray.util.get_node_ip_address(), "pid": os.getpid(),
                      "fatal_path": os.path.join(reports, f"{os.getpid()}-{ctx.get_actor_id()}.fatal")}
        self._fatal = open(self.where["fatal_path"], "w")
        faulthandler.enable(file=self._fatal, all_threads=False)
        self.where["niceness"] = _normal_priority()
        base = _address_space()
        self.where["address_space_base"] = base
        if spec.memory_bytes:
            spec = replace(spec, memory_bytes=spec.memory_bytes + base)
        self.conn = _Conn()
        threading.Thread(target=worker_main, args=(self.conn, spec), name="cdbench-worker", daemon=True).start()

    def ready(self) -> tuple[str, Any, dict[str, Any]]:
        """worker_main's first message (("ready", info) or ("init_error", why)) and where this actor runs."""
        kind, payload = self.conn.outbox.get()
        return kind, payload, self.where

    def run(self, job: Job | MaskJob) -> Iterator[tuple[str, Any]]:
        """One job: worker_main's messages as it sends them, up to the job's last one."""
        self.conn.inbox.put(job)
        while True:
            kind, payload = self.conn.outbox.get()
            yield kind, payload
            if kind == "compiled" or (kind == "done" and payload.get("warm_pending")):
                continue
            return

    def stop(self) -> None:
        self.conn.inbox.put(None)
        faulthandler.disable()
        self._fatal.close()
        _remove(self.where["fatal_path"])


def report_dir() -> str:
    """Where actors on this node leave their fatal-signal reports."""
    path = os.path.join(tempfile.gettempdir(), "cdbench-ray")
    os.makedirs(path, exist_ok=True)
    return path


def _sweep(directory: str, min_age_s: float = 600.0) -> None:
    """Remove reports nobody read (an actor killed while starting, a driver that died): those of
    processes that no longer run, older than `min_age_s` (a fresh one may be about to be read)."""
    now = time.time()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            pid = int(name.split("-", 1)[0])
            if now - os.path.getmtime(path) < min_age_s:
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(path)
        except (ValueError, OSError):
            continue


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _take_fatal(path: str) -> str:
    """The fatal-signal report a dead actor left (removed once read), "" if none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(4096)
    except OSError:
        return ""
    _remove(path)
    return text


def fatal_signal(report: str) -> int | None:
    """The signal named in a faulthandler report ("Fatal Python error: Segmentation fault ...")."""
    first = report.strip().splitlines()[0] if report.strip() else ""
    return next((int(sig) for name, sig in _FATAL.items() if name in first), None)


# -- the driver's side ---------------------------------------------------------------------------

@dataclass
class _Slot:
    actor: Any
    ready_ref: Any = None
    where: dict[str, Any] | None = None
    gen: Any = None
    job: Any = None
    job_key: Any = None
    deadline: float = 0.0
    started: float = 0.0
    phase: str = ""
    cold_s: float | None = None
    result: Any = None
    wall: float = 0.0


class RayPool:
    """WorkerPool's interface (launch, start, run, close; init_times, info, replaced, run_s) over Ray actors."""

    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0,
                 address: str | None = None, local_cpus: int | None = None) -> None:
        self.spec = spec
        self.size = max(1, workers)
        self.init_timeout_s = init_timeout_s
        self.address = address
        self.local_cpus = max(1, local_cpus or self.size)
        self.init_times: list[float] = []
        self.info: dict[str, Any] = {}
        self.replaced = 0
        # One record per replaced worker, as WorkerPool's: which worker (engine/slot, pid), the job it
        # was on, the phase, why it was replaced, the pid of its replacement (None if that failed);
        # and here the node it ran on.
        self.replacements: list[dict[str, Any]] = []
        self.run_s = 0.0
        self._slots: list[_Slot] = []
        self._launched: list[_Slot] = []
        self._ray = import_ray()  # fails here, with its one line, when ray is not installed
        self._actor_cls: Any = None
        self._reader: Any = None

    # -- start-up ---------------------------------------------------------------------------------

    def _connect(self) -> Any:
        ray = ensure_ray(self.address, self.local_cpus, self.spec.memory_bytes)
        if self._actor_cls is None:
            options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
            if self.spec.memory_bytes:
                options["memory"] = self.spec.memory_bytes
            self._actor_cls = ray.remote(**options)(ReplayActor)
            self._reader = ray.remote(num_cpus=0, max_retries=0)(_take_fatal)
            self._check_capacity(ray)
        return ray

    def _check_capacity(self, ray: Any) -> None:
        """Fail at once, with the numbers, when the cluster cannot hold this pool's actors."""
        mem = self.spec.memory_bytes
        fits = 0
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            n = int(res.get("CPU", 0))
            if mem:
                n = min(n, int(res.get("memory", 0) // mem))
            fits += n
        if fits < self.size:
            need = "1 CPU" + (f" and {mem / (1 << 30):g} GiB of Ray memory" if mem else "")
            raise EngineStartError(f"the Ray cluster fits {fits} replay worker(s) of {need} each; -j asks for "
                                   f"{self.size} (lower -j or --memory-gb, or add nodes)")

    def _launch_one(self) -> _Slot:
        actor = self._actor_cls.remote(self.spec)
        return _Slot(actor, ready_ref=actor.ready.remote())

    def launch(self) -> None:
        """Create every actor at once and return: their start-up runs while the caller prepares the jobs."""
        if not self._launched:
            self._connect()
            self._launched = [self._launch_one() for _ in range(self.size)]

    def _await_ready(self, slot: _Slot) -> _Slot:
        ray = self._ray
        try:
            kind, payload, where = ray.get(slot.ready_ref, timeout=self.init_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._kill(slot)
            raise EngineStartError(f"engine '{self.spec.engine}' Ray worker did not start within "
                                   f"{self.init_timeout_s:g} s (is the cluster busy, or short of CPUs or memory?)")
        except ray.exceptions.RayError as exc:
            self._kill(slot)
            raise EngineStartError(f"engine '{self.spec.engine}' Ray worker died while starting ({_reason(exc)})")
        slot.ready_ref, slot.where = None, where
        if kind != "ready":  # on a cluster: often the GGUF missing on that node, or cdbench not installed there
            self._kill(slot)
            raise EngineStartError(f"engine '{self.spec.engine}' could not start on Ray node {where.get('node')}: {payload}")
        self.init_times.append(payload["init_s"])
        self.info = {"version": payload["version"], "settings": payload["settings"], "executor": "ray",
                     "niceness": where.get("niceness")}
        return slot

    def start(self) -> None:
        """Launch the actors if not yet launched, then wait until each is ready."""
        self.launch()
        launched, self._launched = self._launched, []
        try:
            self._slots = [self._await_ready(s) for s in launched]
        except Exception:
            for s in launched:
                self._kill(s)
            raise

    def close(self) -> None:
        slots, self._slots = self._launched + self._slots, []
        self._launched = []
        if not slots:
            return
        ray = self._ray
        stops = []
        for s in slots:
            if s.job is None:  # idle or starting: it removes its report file and stops (after ready())
                try:
                    stops.append(s.actor.stop.remote())
                except Exception:  # noqa: BLE001 - a dead actor: killed below all the same
                    pass
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=2.0)
        for s in slots:
            self._kill(s)
            if s.job is not None:
                self._fatal_report(s)  # a busy actor's report file: removed

    def _kill(self, slot: _Slot) -> None:
        try:
            self._ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _fatal_report(self, slot: _Slot) -> str:
        """Read (and remove) the report a dead or killed actor left on its node."""
        where = slot.where
        if not where:
            return ""
        ray = self._ray
        try:
            if where["node_id"] == ray.get_runtime_context().get_node_id():
                return _take_fatal(where["fatal_path"])
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            ref = self._reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(where["node_id"], soft=False)
                                       ).remote(where["fatal_path"])
            return ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 - node gone, or no worker there: no report
            return ""

    def _replace(self, slot: _Slot, reason: str, key: Any, phase: str, report_read: bool = False) -> None:
        self._kill(slot)
        if not report_read:  # killed (time limit, MemoryError): its empty report file is removed
            self._fatal_report(slot)
        idx = self._slots.index(slot)
        where = slot.where or {}
        record = {"worker": f"{self.spec.engine}/{idx}", "pid": where.get("pid"), "job": str(key), "phase": phase,
                  "reason": reason, "replacement_pid": None, "node": where.get("node")}
        self.replacements.append(record)
        self.replaced += 1
        self._slots[idx] = self._await_ready(self._launch_one())
        record["replacement_pid"] = (self._slots[idx].where or {}).get("pid")

    # -- jobs -------------------------------------------------------------------------------------

    def run(self, jobs: Iterable[tuple[Any, Job | MaskJob]], timeout_s: float,
            on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        """As WorkerPool.run: on_result(key, status, payload, wall_s) in this process as each job ends."""
        started = time.perf_counter()
        try:
            self._run(jobs, timeout_s, on_result)
        finally:
            self.run_s += time.perf_counter() - started

    def _run(self, jobs: Iterable[tuple[Any, Job | MaskJob]], timeout_s: float,
             on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        ray = self._ray
        pending: Iterator[tuple[Any, Job | MaskJob]] = iter(jobs)
        exhausted = False
        while True:
            for s in self._slots:
                if s.job is None and not exhausted:
                    try:
                        key, job = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    s.job, s.job_key, s.phase, s.cold_s, s.result = job, key, "compile", None, None
                    s.started = time.perf_counter()
                    s.deadline = s.started + timeout_s
                    s.gen = s.actor.run.options(num_returns="streaming").remote(job)
            busy = [s for s in self._slots if s.job is not None]
            if not busy:
                return
            now = time.perf_counter()
            ready, _ = ray.wait([s.gen for s in busy], num_returns=1,
                                timeout=max(0.0, min(s.deadline for s in busy) - now))
            ready_ids = {id(g) for g in ready}
            now = time.perf_counter()
            for s in busy:
                if id(s.gen) in ready_ids:
                    self._receive(s, now, timeout_s, on_result)
                elif now >= s.deadline:
                    self._kill(s)
                    key, phase = s.job_key, s.phase  # the row is written first: a replacement that fails to start loses none
                    if s.phase == "warm":
                        self._finish(s, "done", self._warm_lost(s, f"warm compile over its {timeout_s:g} s limit"),
                                     on_result)
                    else:
                        self._finish(s, "timeout", self._failure(s, f"no result within {timeout_s:g} s"), on_result,
                                     now - s.started)
                    self._replace(s, f"timeout: no result within {timeout_s:g} s", key, phase)

    def _receive(self, s: _Slot, now: float, timeout_s: float,
                 on_result: Callable[[Any, str, dict[str, Any], float], None]) -> None:
        """One message of a busy actor's job: progress, its result, its warm compile, or its death."""
        ray = self._ray
        try:
            kind, payload = ray.get(next(s.gen))
        except (StopIteration, ray.exceptions.RayError) as exc:
            status, message = self._death(s, exc)
            key, phase = s.job_key, s.phase  # the row is written first: a replacement that fails to start loses none
            if s.phase == "warm":
                self._finish(s, "done", self._warm_lost(s, f"warm compile lost: {message}"), on_result)
            else:
                self._finish(s, status, self._failure(s, message), on_result, now - s.started)
            self._replace(s, f"{status}: {message}", key, phase, report_read=True)
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

    def _death(self, s: _Slot, exc: BaseException) -> tuple[str, str]:
        """Bucket and message for an actor that died in a job: its fatal signal if it left a report."""
        ray = self._ray
        if isinstance(exc, StopIteration):
            return classify_exit(None)
        sig = fatal_signal(self._fatal_report(s))
        if sig is not None:
            return classify_exit(-sig)
        reason = _reason(exc)
        if isinstance(exc, ray.exceptions.OutOfMemoryError) or "memory monitor" in str(exc).lower():
            return "oom", f"worker killed by Ray's memory monitor (out of memory): {reason}"[:300]
        if isinstance(exc, ray.exceptions.RayTaskError):
            return "exception", f"Ray task error: {reason}"[:300]
        return "crash", f"Ray worker died: {reason}"[:300]

    @staticmethod
    def _failure(s: _Slot, message: str) -> dict[str, Any]:
        return {"error": message, "phase": s.phase, "cold_compile_s": s.cold_s}

    @staticmethod
    def _warm_lost(s: _Slot, note: str) -> dict[str, Any]:
        return {**s.result, "warm_compile_s": None, "warm_note": note}

    @staticmethod
    def _finish(s: _Slot, status: str, payload: dict[str, Any],
                on_result: Callable[[Any, str, dict[str, Any], float], None], wall: float | None = None) -> None:
        key = s.job_key
        wall = s.wall if wall is None else wall
        s.job, s.result, s.gen, s.phase = None, None, None, ""
        on_result(key, status, payload, wall)


def _reason(exc: BaseException) -> str:
    """Ray's reason for an actor's death, in one line (its "exit detail" when it gives one)."""
    text = str(exc)
    marker = "Worker exit detail:"
    if marker in text:
        text = text.split(marker, 1)[1]
    elif "The actor is dead because" in text:
        text = text[text.index("The actor is dead because"):]
    return " ".join(text.split())[:200] or type(exc).__name__
