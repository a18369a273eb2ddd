"""Replay workers as Ray actors: `cdbench replay --executor ray [--address ADDR]`.

`RayPool` is a serving.ServingPool like the local WorkerPool, so its limits and verdicts are
the same code; only where a worker runs differs. Each worker slot is one actor (1 CPU, and
`memory=` the worker's memory limit as a Ray resource) that runs worker.worker_main in a thread
of its own, over queues in place of the pipe: the engine is built once per actor from the GGUF
path (the vocabulary through the node's disk cache, never through the task arguments), the
address-space limit is set in the actor's process, and every job is served by the same code as
a local worker's. A job is one streaming actor call whose messages ("compiled", "done",
"warm", "oom", "exception") come back as the worker sends them. A job over its time limit is a
`timeout` and its actor is killed (ray.kill) and replaced; an actor that dies is a `crash` or
`oom` (harness.ray_cluster.death_bucket) and is replaced. Nothing is retried by Ray
(max_restarts=0, max_task_retries=0, max_retries=0): a schema that kills its worker is never
run twice.

The address-space limit: a Ray worker maps Ray's object store and runs Ray's threads before
the engine exists (several GB of address space), so its RLIMIT_AS is the actor's address
space at start plus the worker's memory limit (a local worker's limit counts its bare
interpreter too, a few hundred MB).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterator

from ..ray_cluster import (ActorHome, actor_death_reason, capacity, death_bucket, ensure_ray, import_ray, kill_actor,
                           read_fatal, take_fatal)
from .pool import EngineStartError
from .serving import JobState, ServingPool, WorkerLost
from .worker import Job, MaskJob, WorkerSpec, worker_main


class _Conn:
    """worker_main's end of the pipe, in the actor's process: jobs in, messages out."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()

    def send(self, message: Any) -> None:
        self.outbox.put(message)

    def recv(self) -> Any:
        return self.inbox.get()


class ReplayActor:
    """One replay worker in a Ray actor: worker_main in a thread, its engine built once."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.home = ActorHome()
        self.where = self.home.where
        if spec.memory_bytes:
            spec = replace(spec, memory_bytes=spec.memory_bytes + self.where["address_space_base"])
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
        self.home.leave()


# -- the driver's side ---------------------------------------------------------------------------

@dataclass
class _Slot(JobState):
    actor: Any
    ready_ref: Any = None
    where: dict[str, Any] | None = None
    gen: Any = None


class RayPool(ServingPool):
    """WorkerPool's interface (launch, start, run, close; init_times, info, replaced, run_s) over Ray actors."""

    def __init__(self, spec: WorkerSpec, workers: int = 1, init_timeout_s: float = 300.0,
                 address: str | None = None, local_cpus: int | None = None) -> None:
        super().__init__(spec, workers, init_timeout_s)
        self.address = address
        self.local_cpus = max(1, local_cpus or self.size)
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
            self._reader = ray.remote(num_cpus=0, max_retries=0)(take_fatal)
            self._check_capacity(ray)
        return ray

    def _check_capacity(self, ray: Any) -> None:
        """Fail at once, with the numbers, when the cluster cannot hold this pool's actors."""
        mem = self.spec.memory_bytes
        fits = capacity(ray, mem)
        if fits < self.size:
            need = "1 CPU" + (f" and {mem / (1 << 30):g} GiB of Ray memory" if mem else "")
            raise EngineStartError(f"the Ray cluster fits {fits} replay worker(s) of {need} each; -j asks for "
                                   f"{self.size} (lower -j or --memory-gb, or add nodes)")

    def _launch_one(self) -> _Slot:
        actor = self._actor_cls.remote(self.spec)
        return _Slot(actor=actor, ready_ref=actor.ready.remote())

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
            raise EngineStartError(f"engine '{self.spec.engine}' Ray worker died while starting "
                                   f"({actor_death_reason(exc)})")
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
            self.slots = [self._await_ready(s) for s in launched]
        except Exception:
            for s in launched:
                self._kill(s)
            raise

    def close(self) -> None:
        slots, self.slots = self._launched + self.slots, []
        self._launched = []
        if not slots:
            return
        stops = []
        for s in slots:
            if s.job is None:  # idle or starting: it removes its report file and stops (after ready())
                try:
                    stops.append(s.actor.stop.remote())
                except Exception:  # noqa: BLE001 - a dead actor: killed below all the same
                    pass
        if stops:
            self._ray.wait(stops, num_returns=len(stops), timeout=2.0)
        for s in slots:
            self._kill(s)
            if s.job is not None:
                read_fatal(self._ray, self._reader, s.where)  # a busy actor's report file: removed

    # -- the serving loop's primitives (serving.ServingPool) ----------------------------------------

    def _kill(self, slot: _Slot) -> None:
        kill_actor(self._ray, slot.actor)

    def _replace(self, slot: _Slot, reason: str, key: Any, phase: str, died: bool = False) -> None:
        self._kill(slot)
        if not died:  # killed (time limit, MemoryError): its empty report file is removed
            read_fatal(self._ray, self._reader, slot.where)
        idx = next(i for i, x in enumerate(self.slots) if x is slot)
        where = slot.where or {}
        record = self._record(idx, where.get("pid"), key, phase, reason, node=where.get("node"))
        self.slots[idx] = self._await_ready(self._launch_one())
        record["replacement_pid"] = (self.slots[idx].where or {}).get("pid")

    def _send(self, s: _Slot, job: Job | MaskJob) -> None:
        s.gen = s.actor.run.options(num_returns="streaming").remote(job)

    def _ready(self, busy: list[_Slot], timeout_s: float) -> list[_Slot]:
        ready, _ = self._ray.wait([s.gen for s in busy], num_returns=1, timeout=timeout_s)
        ids = {id(g) for g in ready}
        return [s for s in busy if id(s.gen) in ids]

    def _recv(self, s: _Slot) -> tuple[str, Any]:
        ray = self._ray
        try:
            return ray.get(next(s.gen))
        except (StopIteration, ray.exceptions.RayError) as exc:
            report = "" if isinstance(exc, StopIteration) else read_fatal(ray, self._reader, s.where)
            raise WorkerLost(*death_bucket(ray, exc, report)) from None

    def _job_ended(self, s: _Slot) -> None:
        s.gen = None
