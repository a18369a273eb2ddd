"""The replay worker: one engine in its own process, replaying one schema per job.

It runs under an address-space limit; the parent kills it at the job's time limit. For each
schema: a cold compile (its time is sent to the parent at once, so a later time-out is known
to be the replay's), then every labelled instance forced through a fresh matcher with the mask
and the advance timed apart. A valid instance the engine refuses is re-serialised in the
engine's declared policy (property order, whitespace) and forced again, untimed: if that
passes, the refusal is the engine's policy, not a bug. An exception inside an engine call is
kept with its instance as an engine error. The result goes to the parent before the warm
compile, which is timed apart: the engine's own compile cache hit for the same schema
(`engine.warm_compile_s`), or not applicable (None) for an engine without a compile cache.
Optionally a digest of every mask is kept for cross-engine diffs. A `MaskJob` (the differential
oracle's post-pass) compiles a schema the same way and returns the masks themselves at chosen
steps, so the parent can say which tokens two engines disagree on without importing an engine.
"""
from __future__ import annotations

import importlib
import json
import resource
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..compiling import compile_in_process
from ..engines.base import EngineOptions
from ..engines.bitmask import new_bitmask
from ..forcing import force
from ..tasks.task import Task

WARM_NA = "not applicable: the engine has no compile cache"


@dataclass
class WorkerSpec:
    engine: str  # a registry name, or "module:Class" for an engine class outside the registry
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
class MaskJob:
    """The masks of one schema at chosen steps: (example index, token ids, steps) per instance.
    Only the ids up to the last step are forced."""
    task: Task
    instances: list[tuple[int, list[int], list[int]]]


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
    policy: str | None = None  # a refused valid instance the engine's own serialisation passes
    error: str = ""            # an exception inside an engine call


def _limit_memory(memory_bytes: int | None) -> None:
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def engine_class(name: str) -> Any:
    """The engine class for a registry name or a "module:Class" path."""
    from ..engines import ENGINES

    if ":" in name:
        module, attr = name.split(":", 1)
        return getattr(importlib.import_module(module), attr)
    return ENGINES.get(name)


def check_engine_name(name: str) -> None:
    """Fail on an unknown engine name without importing the engine (its workers import it)."""
    from ..engines import ENGINES

    if ":" in name:
        engine_class(name)
    elif name not in ENGINES.names():
        ENGINES.get(name)  # raises the registry's "unknown engine" error


def build_engine(spec: WorkerSpec):
    if spec.gguf_path:
        from ..lm.llamacpp import load_tokenizer_view

        view = load_tokenizer_view(spec.gguf_path).view
    else:
        view = spec.view
    return engine_class(spec.engine)(view, EngineOptions(**spec.options))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _compile(engine: Any, task: Task, out: dict[str, Any]) -> Any:
    """Cold compile through the one compile path; fills compile_status / compile_error / cold_compile_s
    (the time spent, failures included) and returns None on failure."""
    t0 = time.perf_counter()
    comp = compile_in_process(engine, task)
    out.update(compile_status=comp.status, compile_error=comp.message[:300], cold_compile_s=time.perf_counter() - t0)
    if comp.status == "oom":
        raise MemoryError(comp.message)  # the worker reports it as its own bucket, not as a compile error
    return comp.compiled if comp.status == "ok" else None


def replay_job(engine: Any, job: Job, on_compiled: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Compile and replay one schema. The warm compile is not here: see measure_warm."""
    out: dict[str, Any] = {"compile_status": "ok", "compile_error": "", "warm_pending": False}
    compiled = _compile(engine, job.task, out)
    if compiled is None:
        return out
    if on_compiled is not None:
        on_compiled(out["cold_compile_s"])
    mask_s: list[float] = []
    advance_s: list[float] = []
    loop_start = time.perf_counter()
    results = _force_all(compiled, engine.tokenizer, job, mask_s, advance_s)
    out["loop_s"] = time.perf_counter() - loop_start  # every instance's masks and advances, bookkeeping included
    _policy_retries(engine, compiled, job, results)
    out["mask_us"] = np.round(np.asarray(mask_s) * 1e6, 2).tolist()
    out["advance_us"] = np.round(np.asarray(advance_s) * 1e6, 2).tolist()
    out["instances"] = [r.__dict__ for r in results]
    out["warm_pending"] = True
    return out


def _force_all(compiled: Any, view: Any, job: Job, mask_s: list[float], advance_s: list[float]) -> list[InstanceResult]:
    bitmask = new_bitmask(view.vocab_size)
    results: list[InstanceResult] = []
    for example, ids, valid in job.instances:
        res = InstanceResult(example, valid, False, len(ids))
        results.append(res)
        try:  # an engine's exception is this instance's error, not the worker's
            f = force(compiled.matcher(), ids, view, bitmask, digests=job.digests,
                      mask_times=mask_s, advance_times=advance_s)
        except MemoryError:
            raise
        except Exception as exc:
            res.error = _error_text(exc)
            continue
        res.accepted, res.reject_index, res.reject_token, res.digests = f.accepted, f.reject_index, f.reject_token, f.digests
        res.context = "mask allowed it but advance refused" if f.advance_refused else f.context
    return results


def masks_job(engine: Any, job: MaskJob, on_compiled: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Compile one schema (the replay's cold compile path) and keep each instance's masks at its
    steps, through the one forcing loop: "masks" {example: {step: packed mask bytes}}, "errors"
    {example: why a mask is missing (an engine exception, or a refusal before the step)}."""
    out: dict[str, Any] = {"compile_status": "ok", "compile_error": "", "warm_pending": False,
                           "masks": {}, "errors": {}}
    compiled = _compile(engine, job.task, out)
    if compiled is None:
        return out
    if on_compiled is not None:
        on_compiled(out["cold_compile_s"])
    view = engine.tokenizer
    bitmask = new_bitmask(view.vocab_size)
    for example, ids, steps in job.instances:
        wanted = sorted(set(steps))
        if not wanted:
            continue
        try:
            f = force(compiled.matcher(), ids[:wanted[-1]], view, bitmask, keep_masks_at=wanted)
        except MemoryError:
            raise
        except Exception as exc:
            out["errors"][example] = _error_text(exc)
            continue
        out["masks"][example] = f.masks
        missing = [s for s in wanted if s not in f.masks]
        if missing:
            out["errors"][example] = f"refused at step {f.reject_index}, before step(s) {missing}"
    return out


# -- engine policy: re-serialise a refused valid instance the way the engine emits JSON ------------

def engine_policy(engine: Any) -> tuple[str | None, tuple[str, str]]:
    """(property order, separators) as the engine declares them in settings().

    property_order: "declared" (the schema's order) or "required-first" (llama.cpp's converter);
    an engine that declares none gets no order retry. Whitespace: the engine's own separators,
    else compact, which a flexible engine admits as well.
    """
    s = engine.settings()
    seps = (s.get("item_separator", ","), s.get("key_separator", ":"))
    if isinstance(s.get("separators"), (list, tuple)) and len(s["separators"]) == 2:
        seps = tuple(s["separators"])
    return s.get("property_order"), seps


def policy_text(task: Task, example: Any, order: str | None, seps: tuple[str, str]) -> tuple[str, list[str]]:
    """The example in the engine's policy, and which parts of the policy changed its text."""
    compact, value = task.example_text(example), example.value  # the text that was replayed
    names = []
    if order:
        value = _reorder(value, task.schema, task.schema, order, 0)
        reordered = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        names += ["property_order"] if reordered != compact else []
        compact = reordered
    text = json.dumps(value, ensure_ascii=False, separators=seps)
    names += ["whitespace"] if text != compact else []
    return text, names


def _policy_retries(engine: Any, compiled: Any, job: Job, results: list[InstanceResult]) -> None:
    refused = [r for r in results if r.valid and not r.accepted and not r.error]
    view = engine.tokenizer
    if not refused or job.task.kind != "json_schema" or view.encoder is None:
        return
    order, seps = engine_policy(engine)
    bitmask = new_bitmask(view.vocab_size)
    for res in refused:
        try:
            text, names = policy_text(job.task, job.task.examples[res.example], order, seps)
            if not names:
                continue  # the engine's policy gives the same text: the refusal stands
            ids = list(view.encoder(text.encode("utf-8")))
            if force(compiled.matcher(), ids, view, bitmask).accepted:
                res.policy = "+".join(names)
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - a failed retry leaves the refusal standing
            continue


def _resolve(schema: Any, root: Any, depth: int = 0) -> Any:
    """Follow local "$ref"s ("#/..." JSON pointers); anything else resolves to itself or {}."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < 32:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        node = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        schema, depth = node if node is not None else {}, depth + 1
    return schema


def _shape(schema: Any, root: Any, keys: set[str], depth: int) -> tuple[dict[str, Any], set[str]]:
    """Declared properties (in order) and required names of an object schema; allOf merged,
    the first anyOf/oneOf branch that declares every key of the instance taken."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 16:
        return {}, set()
    props = dict(schema.get("properties") or {})
    required = set(schema.get("required") or [])
    branches = [_shape(s, root, keys, depth + 1) for s in schema.get("allOf") or []]
    for key in ("anyOf", "oneOf"):
        options = [_shape(s, root, keys, depth + 1) for s in schema.get(key) or []]
        branches += [o for o in options if o[0] and keys <= set(o[0])][:1]
    for p, r in branches:
        for name, sub in p.items():
            props.setdefault(name, sub)
        required |= r
    return props, required


def _reorder(value: Any, schema: Any, root: Any, order: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if depth > 64 or not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props, required = _shape(schema, root, set(value), 0)
        keys = [k for k in props if k in value]
        if order == "required-first":
            keys = [k for k in keys if k in required] + [k for k in keys if k not in required]
        keys += [k for k in value if k not in props]
        extra = schema.get("additionalProperties")
        return {k: _reorder(value[k], props.get(k, extra), root, order, depth + 1) for k in keys}
    if isinstance(value, list):
        items, prefix = schema.get("items"), schema.get("prefixItems")
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        return [_reorder(v, prefix[i] if i < len(prefix) else items, root, order, depth + 1)
                for i, v in enumerate(value)]
    return value


# -- warm compile and the worker loop ------------------------------------------------------------

def measure_warm(engine: Any, task: Task) -> dict[str, Any]:
    """The warm compile of a schema the engine has just compiled, as its own compile cache gives it.

    Engines with a compile cache implement `warm_compile_s(task)`: the seconds of the cache hit
    for the same schema. None, or no such method, means no compile cache: warm is None then,
    never a second cold compile.
    """
    warm = getattr(engine, "warm_compile_s", None)
    if warm is None:
        return {"warm_compile_s": None, "warm_note": WARM_NA}
    try:
        seconds = warm(task)
    except BaseException as exc:  # noqa: BLE001 - the verdict is settled; only warm is lost
        return {"warm_compile_s": None, "warm_note": f"warm compile failed: {_error_text(exc)}"}
    if seconds is None:
        return {"warm_compile_s": None, "warm_note": WARM_NA}
    return {"warm_compile_s": seconds, "warm_note": "compile cache hit"}


def worker_main(conn: Any, spec: WorkerSpec) -> None:
    """Entry point of a worker process: build the engine once, then serve jobs until told to stop.

    Per job it sends ("compiled", cold seconds) when the compile ends, then ("done", result) or
    ("oom" | "exception", message), then, after a "done" with warm_pending, ("warm", warm fields).
    A Job is replayed (replay_job); a MaskJob gives masks (masks_job), with no warm compile.
    """
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
        run = masks_job if isinstance(job, MaskJob) else replay_job
        try:
            result = run(engine, job, on_compiled=lambda s: conn.send(("compiled", s)))
        except MemoryError:
            conn.send(("oom", "MemoryError"))
            continue
        except BaseException as exc:  # noqa: BLE001
            conn.send(("exception", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"[:1000]))
            continue
        conn.send(("done", result))
        if result["warm_pending"]:
            conn.send(("warm", measure_warm(engine, job.task)))
