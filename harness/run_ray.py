"""`cdbench run --executor ray`: the case grid over Ray actors, one task per call; the driver alone writes.

Each actor (1 CPU; with --memory-gb, that much of Ray's memory resource) builds its LM once:
from the model path on its own node (runner.load_lm, as a local run does), or, for an LM object
handed to run() (the tests' in-memory LMs), from Ray's object store. It then builds its engines
and samplers as the local run does (runner._setup without the tasks). A call runs one task's
remaining cases through runner.task_rows, the local run's own code, and streams each row back
as it ends; the driver writes the journal. Resume, the limits (compile guard, generation time
limit, per-case memory budget) and the verdicts are therefore the local run's.

Deaths: Ray never retries (max_restarts=0, max_task_retries=0). An actor that dies in a call (a
segfault in an engine, the kernel's OOM killer) or sends nothing for longer than any one case
may take (`stall_limit_s`) is killed and replaced. The case in flight becomes its row: when the
actor died before that engine's compile had ended, compile_status crash/oom/timeout (as the
compile guard says of a compiler that dies); after it, finish_reason crash/oom/timeout. The
task's other cases go back to the queue for another actor; the dead case is never run again.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Iterator

from . import runner
from .compiling import CompileOutcome
from .config import RunConfig
from .errors import ConfigError
from .ray_cluster import ActorHome, capacity, death_bucket, ensure_ray, kill_actor, read_fatal, remove_quietly, take_fatal
from .samplers.base import Generation
from .tasks.task import Task

class RunActor:
    """One run worker: an LM, engines and samplers built once; a task's cases per call.

    While a task runs, the actor keeps a trail file beside its fatal-signal report: one line per
    event of runner.task_rows (compile, compiled, case). Written straight to the kernel, it
    survives the process's death, and the driver reads it then: rows already sent may still be
    in flight, so only the trail says what was running."""

    def __init__(self, cfg: RunConfig, lm: Any = None) -> None:
        self.home = ActorHome()
        self.where = self.home.where
        self.where["trail_path"] = self.where["fatal_path"][: -len(".fatal")] + ".trail"
        cfg = replace(cfg, lm_threads=cfg.lm_threads or 1)  # one CPU per actor, not every core of the node
        self.cfg = cfg
        self.error = ""
        try:
            self.st = runner._setup(cfg, lm, tasks=[])
        except Exception as exc:  # noqa: BLE001 - reported by ready(), one line
            self.error = f"{type(exc).__name__}: {exc}"[:400]

    def ready(self) -> tuple[str, dict[str, Any]]:
        return self.error, self.where

    def run_task(self, task: Task, done: set[tuple], run_id: str) -> Iterator[dict[str, Any]]:
        """The task's remaining cases, a row each as it ends."""
        fd = os.open(self.where["trail_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

        def trace(kind: str, engine: str, *more: Any) -> None:
            detail = _brief(more[0]) if kind == "compiled" else list(more)
            os.write(fd, (json.dumps([kind, engine, detail]) + "\n").encode())

        try:
            yield from runner.task_rows(task, self.cfg, self.st, run_id, done, trace=trace)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self.home.leave()
        remove_quietly(self.where["trail_path"])


def _brief(comp: CompileOutcome) -> dict[str, Any]:
    return {"status": comp.status, "seconds": comp.seconds, "message": comp.message, "load_s": comp.load_s}


def read_trail(text: str) -> tuple[dict[str, dict[str, Any]], list[Any] | None]:
    """A dead actor's trail: the compile outcome of each engine that finished compiling, and the
    last event (what was running when it died; None before the first)."""
    compiled: dict[str, dict[str, Any]] = {}
    last = None
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line cut short by the death
            continue
        if event[0] == "compiled":
            compiled[event[1]] = event[2]
        last = event
    return compiled, last


def stall_limit_s(cfg: RunConfig) -> float:
    """The longest one case may legitimately take before its row: compile (twice under the guard:
    the probe, then the real one), generation, and a minute for the prompt and scoring."""
    return cfg.compile_timeout_s * (2 if cfg.compile_guard else 1) + cfg.generation_timeout_s + 60.0


@dataclass
class _Slot:
    actor: Any
    where: dict[str, Any]
    task: Task | None = None
    gen: Any = None
    deadline: float = 0.0
    progress: int = 0  # rows this call has produced


class _Driver:
    """Tasks to free actors, rows back as they come, deaths and overruns turned into rows."""

    def __init__(self, cfg: RunConfig, st: Any, run_id: str, done: set[tuple], lm_given: bool) -> None:
        self.cfg, self.st, self.run_id, self.done = cfg, st, run_id, done
        self.memory = int(cfg.memory_gb * 2**30) if cfg.memory_gb else None
        self.ray = ensure_ray(cfg.address, cfg.workers, self.memory)
        fits = capacity(self.ray, self.memory)
        if fits < cfg.workers:
            need = "1 CPU" + (f" and {cfg.memory_gb:g} GiB of Ray memory" if self.memory else "")
            raise ConfigError(f"the Ray cluster fits {fits} run worker(s) of {need} each; -j asks for {cfg.workers}")
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
        if self.memory:
            options["memory"] = self.memory
        self.actor_cls = self.ray.remote(**options)(RunActor)
        self.reader = self.ray.remote(num_cpus=0, max_retries=0)(take_fatal)
        self.lm_ref = self.ray.put(st.lm) if lm_given else None
        self.replaced: list[dict[str, Any]] = []
        self.slots: list[_Slot] = []

    def start(self) -> None:
        pending = [self.actor_cls.remote(self.cfg, self.lm_ref) for _ in range(self.cfg.workers)]
        self.slots = [self._ready(a) for a in pending]

    def _ready(self, actor: Any) -> _Slot:
        try:
            error, where = self.ray.get(actor.ready.remote(), timeout=600)
        except Exception as exc:  # noqa: BLE001 - a Ray error or a time-out: one line
            kill_actor(self.ray, actor)
            raise ConfigError(f"--executor ray: a run worker did not start: {type(exc).__name__}: {exc}"[:400]) from None
        if error:
            kill_actor(self.ray, actor)
            raise ConfigError(f"--executor ray: a run worker could not start on Ray node {where.get('node')}: {error}")
        return _Slot(actor, where)

    def close(self) -> None:
        for s in self.slots:
            try:
                if s.task is None:
                    self.ray.get(s.actor.stop.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - gone already
                pass
            kill_actor(self.ray, s.actor)
        self.slots = []

    # -- the loop ---------------------------------------------------------------------------------
    def rows(self) -> Iterator[dict[str, Any]]:
        todo = deque(t for t in self.st.tasks if self._pending(t))
        while True:
            for s in self.slots:
                if s.task is None and todo:
                    self._send(s, todo.popleft())
            busy = [s for s in self.slots if s.task is not None]
            if not busy:
                return
            wait_s = max(0.0, min(s.deadline for s in busy) - time.perf_counter())
            ready, _ = self.ray.wait([s.gen for s in busy], num_returns=1, timeout=wait_s)
            ids = {id(g) for g in ready}
            now = time.perf_counter()
            for s in busy:
                if id(s.gen) in ids:
                    yield from self._receive(s, todo)
                elif now >= s.deadline:
                    kill_actor(self.ray, s.actor)
                    yield from self._lost(s, "timeout", f"no row within {stall_limit_s(self.cfg):g} s", todo)

    def _pending(self, task: Task) -> list[tuple[Any, Any, int]]:
        """The task's cases not yet recorded, in the order task_rows runs them: (engine, sampler,
        seed), then (frontend, None, seed)."""
        from .frontends.cases import SAMPLER

        cases = [(e, smp, seed) for e in self.st.engines for smp in self.st.samplers for seed in self.cfg.seeds
                 if (task.source, task.id, e.name, smp.name, seed) not in self.done]
        return cases + [(f, None, seed) for f in self.st.frontends for seed in self.cfg.seeds
                        if (task.source, task.id, f.name, SAMPLER, seed) not in self.done]

    def _send(self, s: _Slot, task: Task) -> None:
        s.task, s.progress = task, 0
        s.deadline = time.perf_counter() + stall_limit_s(self.cfg)
        done = {c for c in self.done if c[0] == task.source and c[1] == task.id}
        s.gen = s.actor.run_task.options(num_returns="streaming").remote(task, done, self.run_id)

    def _receive(self, s: _Slot, todo: deque) -> Iterator[dict[str, Any]]:
        ray = self.ray
        try:
            row = ray.get(next(s.gen))
        except StopIteration:  # the task's cases are all recorded
            s.task, s.gen = None, None
            return
        except ray.exceptions.RayError as exc:
            status, message = death_bucket(ray, exc, read_fatal(ray, self.reader, s.where))
            yield from self._lost(s, status, message, todo)
            return
        s.deadline = time.perf_counter() + stall_limit_s(self.cfg)
        self.done.add(runner.case_id(row))
        s.progress += 1
        yield row

    def _lost(self, s: _Slot, status: str, message: str, todo: deque) -> Iterator[dict[str, Any]]:
        """The case that was running gets its row; the actor is replaced; the task's other cases
        (rows sent but lost with the actor among them) are queued again."""
        task, progress = s.task, s.progress
        compiled, last = read_trail(read_fatal(self.ray, self.reader, s.where, "trail_path", 1 << 20))
        victim = self._victim(task, last)
        if victim is not None:
            row = self._lost_row(task, *victim, compiled, status, message)
            self.done.add(runner.case_id(row))
            yield row
        idx = next(i for i, x in enumerate(self.slots) if x is s)
        self.replaced.append({"worker": f"run/{idx}", "pid": s.where.get("pid"), "node": s.where.get("node"),
                              "job": task.id, "reason": f"{status}: {message}"[:300]})
        read_fatal(self.ray, self.reader, s.where)  # a killed actor's empty report: removed
        self.slots[idx] = self._ready(self.actor_cls.remote(self.cfg, self.lm_ref))
        if victim is not None or progress:  # what is left of the task runs on another actor
            todo.appendleft(task)
        else:  # nothing to attribute the death to, and no progress: running it again could loop
            print(f"cdbench: a run worker died on task {task.id} outside its engine cases and it is not run again "
                  f"({status}: {message})", file=sys.stderr)

    def _victim(self, task: Task, last: list[Any] | None) -> tuple[Any, Any, int] | None:
        """The case that was running by the trail's last event: the case itself, or, while an engine
        compiled, that engine's first case still to do; before any event, the task's first case."""
        pending = self._pending(task)
        if last is None or last[0] not in ("compile", "compiled", "case"):
            return pending[0] if pending else None
        if last[0] == "case":
            engine, sampler, seed = last[1], *last[2]
            return next((c for c in pending if (c[0].name, _name(c[1]), c[2]) == (engine, sampler, seed)), None)
        return next((c for c in pending if c[0].name == last[1]), None)

    def _lost_row(self, task: Task, engine: Any, sampler: Any, seed: int, compiled: dict[str, dict[str, Any]],
                  status: str, message: str) -> dict[str, Any]:
        fixed = {"run_id": self.run_id, "prefill_s": None, "model_sha256": self.st.model_info.get("model_sha256")}
        if sampler is None:  # a frontend case
            from .frontends.base import FrontendResult
            from .frontends.cases import frontend_row

            lost = FrontendResult(status=status, finish_reason=status, error=message)
            return {**frontend_row(task, engine, seed, self.cfg, lost), **fixed}
        brief = compiled.get(engine.name)
        if brief is None:  # it died compiling: the compiler's outcome, as the compile guard reports one
            comp, gen = CompileOutcome(status, None, f"compiler {status}: {message}"[:500]), None
        else:
            comp = CompileOutcome(brief["status"], brief["seconds"], brief["message"], None, brief["load_s"])
            gen = Generation(finish_reason=status, error=message) if comp.status == "ok" else None
        n_prompt = len(self.st.lm.encode_chat(self.st.protocol.messages(task)))
        return {**runner.case_row(task, engine, sampler, seed, self.cfg, comp, gen, n_prompt, self.st.lm), **fixed}


def _name(sampler: Any) -> str:
    from .frontends.cases import SAMPLER

    return SAMPLER if sampler is None else sampler.name


def ray_rows(cfg: RunConfig, st: Any, run_id: str, done: set[tuple], lm_given: bool,
             report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The run's remaining rows, computed by Ray actors, in the order they end; `report` gets the
    executor's record for the manifest (actors, their nodes, every replacement and why)."""
    driver = _Driver(cfg, st, run_id, done, lm_given)
    try:
        driver.start()
        report.update(executor="ray", workers=cfg.workers, lm_threads_per_worker=cfg.lm_threads or 1,
                      nodes=sorted({s.where.get("node") for s in driver.slots}), replaced_workers=driver.replaced)
        yield from driver.rows()
    finally:
        driver.close()
        if driver.replaced:
            print(f"cdbench: {len(driver.replaced)} Ray run worker(s) replaced: "
                  + "; ".join(f"{r['job']} ({r['reason'][:80]})" for r in driver.replaced[:5]), file=sys.stderr)
