"""The replay worker: one engine in its own process, replaying one schema per job.

It runs under an address-space limit; the parent kills it at the job's time limit. For each
schema: a cold compile, a warm compile (second compile of the same schema by the same
compiler), then every labelled instance forced through a fresh matcher with the mask and
the advance timed apart. Optionally a digest of every mask is kept for cross-engine diffs.
"""
from __future__ import annotations

import hashlib
import resource
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engines.base import EngineOptions, Unsupported
from ..engines.bitmask import new_bitmask
from ..tasks.task import Task


@dataclass
class WorkerSpec:
    engine: str
    options: dict[str, Any]
    gguf_path: str | None = None
    view: Any = None  # a TokenizerView without encoder, when there is no GGUF behind it
    memory_bytes: int | None = None


@dataclass
class Job:
    task: Task
    instances: list[tuple[int, list[int], bool]]  # (example index, token ids, valid)
    digests: bool = False
    token_texts: bool = True


@dataclass
class InstanceResult:
    example: int
    valid: bool
    accepted: bool
    tokens: int
    reject_index: int | None = None
    reject_token: str | None = None
    context: str = ""
    digests: list[str] = field(default_factory=list)


def _limit_memory(memory_bytes: int | None) -> None:
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def build_engine(spec: WorkerSpec):
    from ..engines import ENGINES

    if spec.gguf_path:
        from ..lm.llamacpp import load_tokenizer_view

        view = load_tokenizer_view(spec.gguf_path).view
    else:
        view = spec.view
    return ENGINES.create(spec.engine, view, EngineOptions(**spec.options))


def replay_job(engine: Any, job: Job) -> dict[str, Any]:
    view = engine.tokenizer
    eos = view.eos_id
    out: dict[str, Any] = {"compile_status": "ok", "compile_error": ""}
    t0 = time.perf_counter()
    try:
        compiled = engine.compile(job.task)
    except Unsupported as exc:
        out.update(compile_status="unsupported", compile_error=str(exc)[:300], cold_compile_s=time.perf_counter() - t0)
        return out
    except MemoryError:
        raise  # the worker reports it as its own bucket, not as a compile error
    except Exception as exc:
        out.update(compile_status="error", compile_error=f"{type(exc).__name__}: {exc}"[:300],
                   cold_compile_s=time.perf_counter() - t0)
        return out
    out["cold_compile_s"] = time.perf_counter() - t0
    bitmask = new_bitmask(view.vocab_size)
    words = memoryview(bitmask)  # reading one word: a Python int, without a numpy scalar
    clock = time.perf_counter
    mask_s: list[float] = []
    advance_s: list[float] = []
    results: list[InstanceResult] = []
    digests = job.digests
    append_mask, append_advance = mask_s.append, advance_s.append
    loop_start = clock()
    for example, ids, valid in job.instances:
        matcher = compiled.matcher()
        fill, advance = matcher.fill_mask, matcher.advance
        res = InstanceResult(example, valid, False, len(ids))
        for i, token in enumerate(ids + [eos]):  # the hot loop: keep it to the timed calls
            a = clock()
            fill(bitmask)
            b = clock()
            append_mask(b - a)
            if digests:
                res.digests.append(hashlib.blake2b(bitmask.tobytes(), digest_size=8).hexdigest())
            if not (words[token >> 5] >> (token & 31)) & 1:
                res.reject_index = i
                res.reject_token = "<EOS>" if token == eos else view.token_bytes[token].decode("utf-8", "replace")
                res.context = view.decode(ids[max(0, i - 8):i]).decode("utf-8", "replace")
                break
            if token == eos:
                res.accepted = True
                break
            c = clock()
            ok = advance(token)
            append_advance(clock() - c)
            if not ok:
                res.reject_index = i
                res.reject_token = view.token_bytes[token].decode("utf-8", "replace")
                res.context = "mask allowed it but advance refused"
                break
        results.append(res)
    out["loop_s"] = clock() - loop_start  # every instance's masks and advances, bookkeeping included
    # The warm compile (same compiler, same schema, second time) comes after the replay, so that
    # the masks run right after the compile that built their grammar, as in a direct loop.
    t1 = time.perf_counter()
    engine.compile(job.task)
    out["warm_compile_s"] = time.perf_counter() - t1
    mask_us = np.round(np.asarray(mask_s) * 1e6, 2).tolist()
    advance_us = np.round(np.asarray(advance_s) * 1e6, 2).tolist()
    out["mask_us"] = mask_us
    out["advance_us"] = advance_us
    out["instances"] = [r.__dict__ for r in results]
    return out


def worker_main(conn: Any, spec: WorkerSpec) -> None:
    """Entry point of a worker process: build the engine once, then serve jobs until told to stop."""
    try:
        _limit_memory(spec.memory_bytes)
        t0 = time.perf_counter()
        engine = build_engine(spec)
        conn.send(("ready", {"init_s": time.perf_counter() - t0, "version": engine.version(),
                             "settings": engine.settings()}))
    except BaseException as exc:  # noqa: BLE001 - the parent must hear about any failure
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"[:500]))
        return
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            conn.send(("done", replay_job(engine, job)))
        except MemoryError:
            conn.send(("oom", "MemoryError"))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("exception", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"[:1000]))
