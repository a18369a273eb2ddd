"""`cdbench replay`: every engine over every schema's labelled instances, without a model.

Instances are serialised as the data's convention says (compact JSON, non-ASCII kept) and
tokenized with the benchmark tokenizer (the default model's vocabulary, read from its GGUF;
no weights are needed). Each engine runs in worker processes with a per-schema time limit
and an address-space limit. One row per (engine, schema) is appended as it finishes, so an
interrupted replay resumes where it stopped (--resume). With --differential, a post-pass then
recompiles the schemas of the differential oracle's examples in fresh workers and brings back
both engines' masks at each example's first differing step, so the report can say which tokens
one engine allows and the other refuses; whatever happens to it, the replay's results stand.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import REPO_ROOT, default_data_dir
from ..environment import environment
from ..errors import ConfigError
from ..forcing import mask_digest
from ..reporting.markdown import row as md_row
from ..reporting.writer import read_rows, write_json
from ..results.rundir import RunDir, make_fingerprint, task_set_hash, vocabulary_hash
from ..tasks.task import Task
from .config import ReplayConfig
from .pool import WorkerPool
from .stats import BUCKET_PRECEDENCE, differential, engine_summary, markdown, mask_difference, per_group
from .worker import Job, MaskJob, WorkerSpec, check_engine_name


def load_replay_tasks(cfg: ReplayConfig) -> list[Task]:
    data = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    if cfg.source == "maskbench":
        from ..tasks.maskbench import load_maskbench

        tasks = load_maskbench(data / "jsonschemabench" / "maskbench", cfg.groups or None)
    elif cfg.source == "jsts":
        from ..tasks.jsts import load_test_suite

        tasks = load_test_suite(data / "json-schema-test-suite", cfg.draft)
        if cfg.groups:
            from ..tasks.jsts import keyword_of

            tasks = [t for t in tasks if keyword_of(t) in cfg.groups]
    elif cfg.source == "builtin":
        from ..tasks.loaders import load_builtin

        tasks = load_builtin()
    elif cfg.source == "adversarial":
        from ..tasks.adversarial import load_adversarial

        tasks = load_adversarial(cfg.groups or None)
    elif Path(cfg.source).is_dir():
        from ..tasks.maskbench import load_maskbench

        tasks = load_maskbench(cfg.source, cfg.groups or None)
    else:
        raise ConfigError(f"replay source '{cfg.source}' is not maskbench, jsts, builtin, adversarial or a directory")
    tasks = [t for t in tasks if t.examples]
    if cfg.sample_per_group is not None:
        rng = random.Random(cfg.seed)
        by_group: dict[str, list[Task]] = {}
        for t in tasks:
            by_group.setdefault(group_of(t), []).append(t)
        tasks = sorted((t for g in sorted(by_group) for t in
                        (by_group[g] if len(by_group[g]) <= cfg.sample_per_group
                         else rng.sample(by_group[g], cfg.sample_per_group))), key=lambda t: t.id)
    if cfg.sample is not None and cfg.sample < len(tasks):
        rng = random.Random(cfg.seed)
        tasks = sorted(rng.sample(tasks, cfg.sample), key=lambda t: t.id)
    if cfg.limit is not None:
        tasks = tasks[: cfg.limit]
    if not tasks:
        raise ConfigError("replay selection is empty")
    return tasks


def group_of(task: Task) -> str:
    if task.source.startswith("jsts:"):
        return task.tags[0] if task.tags else "?"
    return task.source.split(":", 1)[-1]


# The instance-level buckets and the per-instance count that puts a schema in each.
INSTANCE_COUNT_OF = {"engine_error": "engine_errors", "valid_rejected": "valid_rejected",
                     "invalid_accepted": "invalid_accepted", "policy": "policy_rejected"}


def instance_counts(insts: list[dict[str, Any]]) -> dict[str, int]:
    """Valid instances refused (bugs, policy ones apart), invalid ones accepted, engine errors."""
    out = dict.fromkeys(INSTANCE_COUNT_OF.values(), 0)
    for i in insts:
        if i.get("error"):
            out["engine_errors"] += 1
        elif i["valid"] and not i["accepted"]:
            out["policy_rejected" if i.get("policy") else "valid_rejected"] += 1
        elif not i["valid"] and i["accepted"]:
            out["invalid_accepted"] += 1
    return out


def bucket_of(status: str, payload: dict[str, Any]) -> str:
    if status != "done":
        return {"timeout": "timeout", "oom": "oom", "exception": "engine_error"}.get(status, "crash")
    if payload["compile_status"] == "unsupported":
        return "unsupported"
    if payload["compile_status"] != "ok":
        return "compile_error"
    counts = instance_counts(payload["instances"])
    return next((b for b in BUCKET_PRECEDENCE if counts.get(INSTANCE_COUNT_OF.get(b, ""))), "pass")


def build_row(engine: str, task: Task, status: str, payload: dict[str, Any], wall: float) -> dict[str, Any]:
    """One result row: bucket, instance counts, compile and warm times, rejection details."""
    row = {"engine": engine, "task_id": task.id, "group": group_of(task), "tags": task.tags,
           "status": status, "bucket": bucket_of(status, payload), "wall_s": wall,
           "n_valid": sum(1 for e in task.examples if e.valid),
           "n_invalid": sum(1 for e in task.examples if not e.valid)}
    if status != "done":
        row.update(error=payload.get("error", ""), compile_status=status, phase=payload.get("phase"),
                   cold_compile_s=payload.get("cold_compile_s"))
        return row
    row.update({k: payload.get(k) for k in ("compile_status", "compile_error", "cold_compile_s",
                                            "warm_compile_s", "warm_note", "mask_us", "advance_us")})
    insts = payload.get("instances") or []
    row["instances"] = insts
    row.update(instance_counts(insts))
    policies = sorted({i["policy"] for i in insts if i.get("policy") and not i.get("error")})
    row["policy"] = "policy:" + ",".join(policies) if policies else None
    errors = [i["error"] for i in insts if i.get("error")]
    row["error"] = errors[0] if errors else ""
    row["tokens"] = len(payload.get("mask_us") or [])
    return row


def _encode(tasks: list[Task], tok: Any, differential: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every instance's token ids (and, for --differential, its token texts)."""
    encoded: dict[str, list[tuple[int, list[int], bool]]] = {}
    texts: dict[str, dict[int, list[str]]] = {}
    for task in tasks:
        encoded[task.id] = []
        texts[task.id] = {}
        for i, ex in enumerate(task.examples):
            ids = tok.encode(task.example_text(ex))
            encoded[task.id].append((i, ids, ex.valid))
            if differential:
                texts[task.id][i] = [tok.view.token_bytes[t].decode("utf-8", "replace") for t in ids]
    return encoded, texts


def replay_fingerprint(cfg: ReplayConfig, tasks: list[Task], gguf: str) -> dict[str, Any]:
    """Comparable: the tokenizer file and the schemas with their instances; settings: engines and limits."""
    from ..lm.llamacpp import file_sha256, load_tokenizer_view

    comparable = {"tokenizer_sha256": file_sha256(gguf),
                  "tokenizer": vocabulary_hash(load_tokenizer_view(gguf).view.token_bytes),
                  "task_set": task_set_hash(tasks),
                  "instances": hashlib.sha256(json.dumps([[t.id, [[e.valid, t.example_text(e)] for e in t.examples]]
                                                          for t in sorted(tasks, key=lambda t: t.id)]).encode()).hexdigest()[:16]}
    settings = {k: v for k, v in cfg.__dict__.items()
                if k not in ("reports_dir", "run_id", "resume", "data_dir", "tokenizer", "workers", "executor", "address",
                             "progress")}
    return make_fingerprint("replay", comparable, settings)


def _open_run(cfg: ReplayConfig, tasks: list[Task], gguf: str) -> tuple[RunDir, set[tuple[str, str]]]:
    """The run directory, and the (engine, schema) pairs a resumed replay has already done."""
    run_id = cfg.run_id or "replay-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fingerprint = replay_fingerprint(cfg, tasks, gguf)
    config = {**cfg.__dict__, "run_id": run_id, "tokenizer": gguf}
    path = Path(cfg.reports_dir) / run_id
    if cfg.resume and path.exists():
        rd = RunDir.resume(path, "replay", fingerprint)
        return rd, {(r["engine"], r["task_id"]) for r in rd.rows()}
    return RunDir.create(cfg.reports_dir, run_id, "replay", config, fingerprint), set()


def _pool(cfg: ReplayConfig, name: str, gguf: str, workers: int | None = None) -> WorkerPool:
    """The engine's workers: local processes (WorkerPool) or, with executor "ray", Ray actors (RayPool,
    the same interface; imported only then)."""
    options = {"whitespace": cfg.whitespace, "strict": cfg.strict, "threads": cfg.engine_threads,
               "compile_cache": cfg.compile_cache}
    spec = WorkerSpec(engine=name, options=options, gguf_path=gguf,
                      memory_bytes=int(cfg.memory_gb * (1 << 30)) if cfg.memory_gb else None)
    n = cfg.workers if workers is None else workers
    if cfg.executor == "ray":
        from .ray_pool import RayPool

        return RayPool(spec, n, address=cfg.address, local_cpus=cfg.workers)  # type: ignore[return-value]
    if cfg.executor != "local":
        raise ConfigError(f"unknown executor '{cfg.executor}': local or ray")
    if cfg.address:
        raise ConfigError("--address needs --executor ray")
    return WorkerPool(spec, n)


def _run_engine(cfg: ReplayConfig, pool: WorkerPool, todo: list[Task], encoded: dict[str, Any],
                on_result: Callable[[str, str, dict[str, Any], float], None]) -> tuple[list[float], dict[str, Any]]:
    """One engine's pool over its schemas still to do: worker start-up times and engine info."""
    try:
        pool.start()
        jobs = ((t.id, Job(t, encoded[t.id], digests=cfg.differential)) for t in todo)
        pool.run(jobs, cfg.timeout_s, on_result)
    finally:
        pool.close()
    return pool.init_times, {**pool.info, "workers_replaced": pool.replaced, "replaced_workers": pool.replacements,
                             "replay_s": pool.run_s,
                             "schemas": len(todo), "workers": cfg.workers}


def replay(cfg: ReplayConfig, progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> Path:
    for name in cfg.engines:
        check_engine_name(name)  # an unknown engine fails here, before any work
    tasks = load_replay_tasks(cfg)
    from ..lm.default_model import default_model_path
    from ..lm.llamacpp import check_model_path, load_tokenizer_view

    gguf = cfg.tokenizer or str(default_model_path())
    check_model_path(gguf)
    all_pools = {name: _pool(cfg, name, gguf) for name in cfg.engines}
    next(iter(all_pools.values())).launch()  # the first engine's workers start up while we fingerprint and tokenize
    try:
        rd, done = _open_run(cfg, tasks, gguf)
        run_dir = rd.path
        todo = {name: [t for t in tasks if (name, t.id) not in done] for name in cfg.engines}
        tok = load_tokenizer_view(gguf)
        t0 = time.perf_counter()
        encoded, texts = _encode(tasks, tok, cfg.differential)
        env = environment(REPO_ROOT)
        env.update({"tokenizer": gguf, "vocab_size": tok.view.vocab_size, "tasks": len(tasks),
                    "tokenize_s": time.perf_counter() - t0})
        pools = {name: pool for name, pool in all_pools.items() if todo[name]}
        init_s, engines_info = _run_pools(cfg, pools, todo, tasks, encoded, texts, len(done), rd, progress)
    finally:
        for pool in all_pools.values():
            pool.close()
    env.update({"engines": engines_info, "engine_init_s": init_s})
    rd.update_environment(**env)
    detail = (lambda diff: mask_detail(cfg, gguf, tok.view, tasks, encoded, diff)) if cfg.differential else None
    write_replay_report(run_dir, cfg, init_s, detail)
    rd.finish()
    return run_dir


def _run_pools(cfg: ReplayConfig, pools: dict[str, WorkerPool], todo: dict[str, list[Task]], tasks: list[Task],
               encoded: dict[str, Any], texts: dict[str, Any], n_done: int, rd: RunDir,
               progress: Callable[[int, int, dict[str, Any]], None] | None) -> tuple[dict, dict]:
    """Each engine's pool in turn; every result becomes a row appended to the journal at once."""
    writer = rd.writer()
    by_id = {t.id: t for t in tasks}
    total = len(tasks) * len(cfg.engines)
    count = [n_done]
    init_s: dict[str, list[float]] = {}
    engines_info: dict[str, Any] = {}
    try:
        for name, pool in pools.items():
            def on_result(key: str, status: str, payload: dict[str, Any], wall: float, name: str = name) -> None:
                row = build_row(name, by_id[key], status, payload, wall)
                if status == "done" and cfg.differential:
                    row["token_texts"] = texts[key]
                writer.append(row)
                count[0] += 1
                if progress:
                    progress(count[0], total, row)

            init_s[name], engines_info[name] = _run_engine(cfg, pool, todo[name], encoded, on_result)
    finally:
        writer.close()
    return init_s, engines_info


# -- the differential oracle's post-pass: the masks behind its examples' digests ---------------------

def mask_detail(cfg: ReplayConfig, gguf: str, view: Any, tasks: list[Task], encoded: dict[str, Any],
                diff: list[dict[str, Any]], limit: int = 8) -> None:
    """Fill each example of `diff` (differential()) with the tokens one engine allows at its step
    and the other refuses: a_only / b_only {"count", "tokens": [[id, text], ...]} (see
    stats.mask_difference). The masks come from fresh workers, one per engine, all started at
    once: the schema compiled as in the replay and the instance's first `step` tokens forced. An
    example whose masks could not be had (worker crash, time-out, compile failure, engine
    exception) gets `detail_error` instead; one whose mask no longer matches the replay's digest
    gets a `detail_note`. Never raises for an engine's failure."""
    wanted: dict[str, dict[str, dict[int, set[int]]]] = {}  # engine -> task -> example -> steps
    for pair in diff:
        for ex in pair["examples"]:
            for engine in (pair["a"], pair["b"]):
                wanted.setdefault(engine, {}).setdefault(ex["task"], {}).setdefault(ex["example"], set()).add(ex["step"])
    masks: dict[str, dict[tuple[str, int, int], bytes]] = {e: {} for e in wanted}
    errors: dict[str, dict[tuple[str, int], str]] = {e: {} for e in wanted}  # engine -> (task, example) -> why
    try:
        _collect_masks(cfg, gguf, tasks, encoded, wanted, masks, errors)
    except Exception as exc:  # noqa: BLE001 - the post-pass never costs the replay its results
        for engine in wanted:
            for task_id, examples in wanted[engine].items():
                for example in examples:
                    errors[engine].setdefault((task_id, example), f"post-pass failed: {type(exc).__name__}: {exc}"[:300])
    lengths = np.fromiter((len(t) for t in view.token_bytes), dtype=np.int64, count=view.vocab_size)
    for pair in diff:
        a, b = pair["a"], pair["b"]
        for ex in pair["examples"]:
            key = (ex["task"], ex["example"], ex["step"])
            ma, mb = masks[a].get(key), masks[b].get(key)
            if ma is None or mb is None:
                why = [f"{e}: {errors[e].get(key[:2], 'no mask came back')}" for e, m in ((a, ma), (b, mb)) if m is None]
                ex["detail_error"] = "; ".join(why)[:600]
                continue
            ex.update(mask_difference(ma, mb, view.token_bytes, view.eos_id, limit, lengths))
            changed = [e for e, m, d in ((a, ma, ex.get("a_digest")), (b, mb, ex.get("b_digest")))
                       if d and mask_digest(m) != d]
            if changed:
                ex["detail_note"] = (f"the post-pass mask of {', '.join(changed)} differs from the replay's "
                                     "(its digest): the engine is not deterministic here")


def _collect_masks(cfg: ReplayConfig, gguf: str, tasks: list[Task], encoded: dict[str, Any],
                   wanted: dict[str, dict[str, dict[int, set[int]]]], masks: dict[str, dict[tuple[str, int, int], bytes]],
                   errors: dict[str, dict[tuple[str, int], str]]) -> None:
    """One worker per engine, started together; each engine's schemas as mask jobs in turn."""
    by_id = {t.id: t for t in tasks}
    pools = {engine: _pool(cfg, engine, gguf, workers=1) for engine in wanted}
    try:
        for pool in pools.values():
            pool.launch()
        for engine, pool in pools.items():
            def on_result(task_id: str, status: str, payload: dict[str, Any], wall: float, engine: str = engine) -> None:
                if status != "done":
                    why = f"{status}: {payload.get('error', '')}"
                elif payload.get("compile_status") != "ok":
                    why = f"compile {payload.get('compile_status')}: {payload.get('compile_error', '')}"
                else:
                    for example, by_step in payload["masks"].items():
                        for step, mask in by_step.items():
                            masks[engine][task_id, int(example), int(step)] = mask
                    for example, message in payload["errors"].items():
                        errors[engine][task_id, int(example)] = message
                    return
                for example in wanted[engine][task_id]:
                    errors[engine][task_id, example] = why[:300]

            ids = {task_id: {i: tokens for i, tokens, _ in encoded[task_id]} for task_id in wanted[engine]}
            jobs = ((task_id, MaskJob(by_id[task_id], [(i, ids[task_id][i], sorted(steps))
                                                       for i, steps in sorted(examples.items())]))
                    for task_id, examples in sorted(wanted[engine].items()))
            try:
                pool.start()
                pool.run(jobs, cfg.timeout_s, on_result)
            except Exception as exc:  # noqa: BLE001 - no worker (start-up, replacement): this engine's examples say so
                for task_id, examples in wanted[engine].items():
                    for example in examples:
                        errors[engine].setdefault((task_id, example), f"{type(exc).__name__}: {exc}"[:300])
            finally:
                pool.close()
    finally:
        for pool in pools.values():
            pool.close()


def replaced_workers(run_dir: Path) -> list[dict[str, Any]]:
    """Every worker replaced in the run, named (engine/slot, pid, job, reason), from the manifest."""
    try:
        engines = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["environment"]["engines"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [{"engine": name, **r} for name, info in sorted(engines.items()) if isinstance(info, dict)
            for r in info.get("replaced_workers") or []]


def replaced_markdown(replaced: list[dict[str, Any]]) -> str:
    if not replaced:
        return "\n## Workers replaced\n\nnone\n"
    lines = ["", "## Workers replaced", "", "| engine | worker | pid | job | phase | reason | replacement pid |",
             "|---|---|---:|---|---|---|---:|"]
    lines += [md_row([r["engine"], r["worker"], r["pid"], r["job"], r["phase"], r["reason"], r["replacement_pid"]])
              for r in replaced]
    return "\n".join(lines) + "\n"


def write_replay_report(run_dir: Path, cfg: ReplayConfig, init_s: dict[str, list[float]],
                        detail: Callable[[list[dict[str, Any]]], None] | None = None) -> str:
    """summary.md and summary.json from the journal's rows (and results.parquet / .csv). With
    --differential, `detail` (the post-pass, mask_detail) adds to the differential's examples; if
    it raises, the examples say so and the report is written all the same."""
    rows = read_rows(run_dir)
    by_engine: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_engine.setdefault(r["engine"], []).append(r)
    summary = {e: engine_summary(rs, cfg.timeout_s) for e, rs in by_engine.items()}
    groups = {e: per_group(rs) for e, rs in by_engine.items()}
    diff = differential(by_engine) if cfg.differential else []
    if detail is not None and any(d["examples"] for d in diff):
        try:
            detail(diff)
        except Exception as exc:  # noqa: BLE001 - the replay's results stand without the detail
            for d in diff:
                for ex in d["examples"]:
                    if "a_only" not in ex:
                        ex.setdefault("detail_error", f"post-pass failed: {type(exc).__name__}: {exc}"[:300])
    text = f"# cdbench replay {run_dir.name}\n\nsource {cfg.source}, {len(rows)} rows; " \
           f"time limit {cfg.timeout_s:g} s, memory limit {cfg.memory_gb:g} GiB, {cfg.workers} worker(s), " \
           f"engine threads {cfg.engine_threads}, compile cache {cfg.compile_cache}\n\n" + markdown(summary, groups, diff, init_s)
    replaced = replaced_workers(run_dir)
    text += replaced_markdown(replaced)
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    write_json(run_dir / "summary.json", {"engines": summary, "groups": groups, "differential": diff,
                                          "replaced_workers": replaced})
    try:
        import pandas as pd

        flat = pd.DataFrame([{k: v for k, v in r.items() if k not in ("instances", "token_texts")} for r in rows])
        flat.to_parquet(run_dir / "results.parquet", index=False)
        flat.drop(columns=["mask_us", "advance_us"], errors="ignore").to_csv(run_dir / "results.csv", index=False)
    except Exception as exc:
        (run_dir / "results.error").write_text(f"{type(exc).__name__}: {exc}\n")
    return text
