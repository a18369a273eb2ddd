"""The runner: tasks x engines x samplers x seeds, one result row per case, written at once.

Tasks are the outer loop, so the prompt's KV cache is shared by every engine and sampler
run on the same task. A failure inside one case becomes that case's row; only
configuration errors stop a run.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .compiling import CompileOutcome, compile_task
from .config import REPO_ROOT, RunConfig
from .engines import DEFAULT_ENGINES, ENGINES, ConstraintEngine, EngineOptions, Unsupported
from .environment import environment
from .frontends.cases import frontend_env, frontend_rows, make_frontends
from .errors import ConfigError
from .lm.base import LanguageModel
from .lm.budget import CaseMemoryExceeded, MemoryBudgetLM
from .protocols import Protocol, get_protocol
from .registry import takes
from .reporting.summary import summarize, write_summary
from .results.rundir import RunDir, make_fingerprint, model_identity, task_set_hash, vocabulary_hash
from .samplers import SAMPLERS
from .samplers.base import Generation
from .scoring.jsonschema_check import judge
from .tasks.loaders import load_tasks
from .tasks.task import Task


def resolve_engines(names: list[str]) -> list[str]:
    if names:
        for name in names:
            ENGINES.get(name)  # raises a one-line ConfigError if unknown or not installed
        return names
    found = [n for n in DEFAULT_ENGINES if ENGINES.available(n)]
    missing = [n for n in DEFAULT_ENGINES if n not in found]
    if missing:
        print(f"cdbench: skipping engines that are not installed: {', '.join(missing)}", file=sys.stderr)
    if not found:
        raise ConfigError("no constraint engine is installed (see README: install)")
    return found


def load_lm(cfg: RunConfig) -> LanguageModel:
    if cfg.lm == "transformers":
        if not cfg.model:
            raise ConfigError("--lm transformers needs --model (a model directory or a hub name)")
        from .lm import LMS

        return LMS.create("transformers", cfg.model, device=cfg.lm_device, dtype=cfg.lm_dtype, n_ctx=cfg.n_ctx,
                          n_threads=cfg.lm_threads, offline=cfg.offline)
    from .lm.cpu_check import check_llama_runs
    from .lm.default_model import default_model_path
    from .lm.kv_sequences import sequences_for
    from .lm.llamacpp import LlamaCppLM, check_model_path

    path = cfg.model or str(default_model_path())
    check_model_path(path)
    check_llama_runs(path)  # a build for another CPU is one clear line, not a core dump
    return LlamaCppLM(path, n_ctx=cfg.n_ctx, n_threads=cfg.lm_threads,
                      n_seq=sequences_for(cfg.samplers, cfg.particles), lm_batch=cfg.lm_batch)


def percentiles_us(times_s: list[float]) -> dict[str, float | None]:
    if not times_s:
        return {"mask_mean_us": None, "mask_p50_us": None, "mask_p99_us": None, "mask_max_us": None}
    a = np.asarray(times_s) * 1e6
    return {
        "mask_mean_us": float(a.mean()),
        "mask_p50_us": float(np.percentile(a, 50)),
        "mask_p99_us": float(np.percentile(a, 99)),
        "mask_max_us": float(a.max()),
    }


def score_row(task: Task, text: str, protocol: Protocol | None = None) -> dict[str, Any]:
    quality: dict[str, Any] = {}
    if task.scorer:  # a quality task: is the answer right, beside whether it is valid
        from .scoring.quality import score

        quality = {"correct": score(task.scorer, text, task.reference)}
    if task.kind == "json_schema":
        protocol = protocol or get_protocol("cdbench")
        v = judge(task.schema, text, protocol.force_draft, protocol.strict_formats)
        return {"parses": v.parses, "schema_valid": v.schema_valid, "valid": v.valid,
                "validator": v.draft, "validation_error": v.error, **quality}
    from .scoring.lark_check import lark_accepts

    ok, err = lark_accepts(task.grammars["lark"], text)
    return {"parses": ok, "schema_valid": None, "valid": ok, "validator": "lark-earley", "validation_error": err,
            **quality}


def case_row(task: Task, engine: ConstraintEngine, sampler: Any, seed: int, cfg: RunConfig,
             comp: CompileOutcome, gen: Generation | None, prompt_tokens: int, lm: LanguageModel) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task.id, "source": task.source, "kind": task.kind, "tags": ",".join(task.tags),
        "engine": engine.name, "engine_version": engine.version(),
        "engine_settings": json.dumps(engine.settings(), sort_keys=True),
        "sampler": sampler.name, "sampler_settings": json.dumps(sampler.settings(), sort_keys=True),
        "seed": seed, "max_tokens": cfg.max_tokens, "prompt_tokens": prompt_tokens,
        "protocol": cfg.protocol, "prompt_shots": get_protocol(cfg.protocol).shots_for(task),
        "compile_status": comp.status, "compile_s": comp.seconds, "compile_load_s": comp.load_s,
        "compile_error": comp.message,
        "dc": int(comp.status == "ok"), "method_kind": "engine",
    }
    if gen is None:
        row.update({"output_text": None, "output_tokens": 0, "finish_reason": "not_run", "error": comp.message,
                    "parses": False, "schema_valid": None, "valid": False, "validator": None,
                    "validation_error": "", "ec": 0, "ttft_s": None, "tpot_ms": None, "tgt_s": comp.ready_s,
                    "matcher_s": None,
                    "lm_s": 0.0, "engine_s": 0.0, "mask_s": 0.0, "advance_s": 0.0, "check_s": 0.0, "fork_s": 0.0,
                    "sampler_s": 0.0,
                    "forward_passes": 0, "constraint_evals": 0, "step_evals": [], "step_evals_max": None,
                    "mask_times_us": []})
        row.update(percentiles_us([]))
        return row
    text = lm.tokenizer.decode(gen.tokens).decode("utf-8", errors="replace")
    row.update({"output_text": text, "output_tokens": len(gen.tokens), "finish_reason": gen.finish_reason,
                "error": gen.error})
    row.update(score_row(task, text, get_protocol(cfg.protocol)))
    if gen.no_output:  # every particle died: nothing was produced, whatever the empty string scores
        row.update(parses=False, valid=False, validation_error="no output: every particle died")
    row["ec"] = int(bool(row["valid"]))
    n_out = len(gen.tokens)
    first = gen.first_token_s
    before_first = comp.ready_s + gen.matcher_s  # compile + load + matcher: all waited for before the first token
    row["ttft_s"] = before_first + first if first is not None else None
    row["tpot_ms"] = ((gen.total_s - first) / (n_out - 1) * 1000.0) if first is not None and n_out > 1 else None
    row["tgt_s"] = before_first + gen.total_s
    row["matcher_s"] = gen.matcher_s
    row.update({"lm_s": gen.lm_s, "engine_s": gen.engine_s, "mask_s": gen.mask_s, "advance_s": gen.advance_s,
                "check_s": gen.check_s, "fork_s": gen.fork_s, "sampler_s": gen.sampler_s, "gen_s": gen.total_s, "forward_passes": gen.forward_passes,
                "constraint_evals": gen.constraint_evals, "step_evals": list(gen.step_evals),
                "step_evals_max": max(gen.step_evals) if gen.step_evals else None,
                "mask_times_us": [round(t * 1e6, 2) for t in gen.mask_times]})
    row.update(percentiles_us(gen.mask_times))
    for k, v in gen.extra.items():
        row[f"x_{k}"] = v
    return row


def generate_case(engine: ConstraintEngine, comp: CompileOutcome, sampler: Any, lm: LanguageModel,
                  prompt_ids: list[int], cfg: RunConfig, seed: int) -> Generation | None:
    """One generation; making the matcher is timed (matcher_s, inside TTFT). None if nothing compiled.
    Limits: generation_timeout_s (the sampler stops at the deadline) and memory_gb (resident memory
    growth during the case, checked at the LM seam: harness.lm.budget)."""
    if comp.status != "ok":
        return None
    deadline = time.perf_counter() + cfg.generation_timeout_s
    if cfg.memory_gb:
        lm = MemoryBudgetLM(lm, int(cfg.memory_gb * 2**30))
    t0 = time.perf_counter()
    try:
        matcher = engine.new_matcher(comp.compiled)
        matcher_s = time.perf_counter() - t0
        gen = sampler.generate(lm, matcher, prompt_ids, cfg.max_tokens, seed, deadline)
    except CaseMemoryExceeded as exc:
        return Generation(finish_reason="oom", error=str(exc))
    except Exception as exc:
        return Generation(finish_reason="error", error=f"{type(exc).__name__}: {exc}")
    gen.matcher_s = matcher_s
    return gen


SAMPLER_SETTINGS = ("temperature", "particles", "ess_threshold", "resampling", "variant")


def _accepted(name: str) -> set[str]:
    return takes(SAMPLERS.get(name))


def make_sampler(name: str, cfg: RunConfig) -> Any:
    """Build a sampler from the run settings its constructor takes (temperature, particles, ...) and
    the --sampler-args it takes; what it was built with is in its settings(), so in every row."""
    accepted = _accepted(name)
    options = {k: getattr(cfg, k) for k in SAMPLER_SETTINGS if k in accepted}
    options.update({k: v for k, v in cfg.sampler_args.items() if k in accepted})
    try:
        return SAMPLERS.get(name)(**options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"sampler '{name}': {exc}") from exc


def check_sampler_args(cfg: RunConfig) -> None:
    """A --sampler-args key that none of the run's samplers takes is a mistake, not a no-op."""
    takes = set().union(*(_accepted(name) for name in cfg.samplers)) if cfg.samplers else set()
    unused = sorted(set(cfg.sampler_args) - takes)
    if unused:
        raise ConfigError(f"--sampler-args {', '.join(unused)}: no sampler of this run ({', '.join(cfg.samplers)}) "
                          "takes it")


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@dataclass
class _Setup:
    """What a run needs before its first case: tasks, LM, engines, samplers and the environment."""
    tasks: list[Task]
    protocol: Protocol
    lm: LanguageModel
    engines: list[ConstraintEngine]
    samplers: list[Any]
    env: dict[str, Any]
    model_info: dict[str, Any]
    frontends: list[Any] = field(default_factory=list)  # harness.frontends, after the engines


def _setup(cfg: RunConfig, lm: LanguageModel | None, tasks: list[Task] | None = None) -> _Setup:
    """Everything a run needs; `tasks` given (a Ray actor: the driver sends them) skips loading them."""
    if tasks is None:
        tasks = load_tasks(cfg.dataset, cfg.subset or None, cfg.limit, cfg.schema_files or None, cfg.dataset_args,
                           data_dir=cfg.data_dir, split=cfg.split, hub_cache=cfg.hub_cache, offline=cfg.offline)
        if not tasks:
            raise ConfigError(f"dataset '{cfg.dataset}' gave no tasks")
    protocol = get_protocol(cfg.protocol)
    engine_names = resolve_engines(cfg.engines)
    for name in cfg.samplers:
        SAMPLERS.get(name)
    check_sampler_args(cfg)
    lm = lm or load_lm(cfg)
    options = EngineOptions(whitespace=cfg.whitespace, strict=cfg.strict, threads=cfg.engine_threads)
    engines: list[ConstraintEngine] = []
    engine_init: dict[str, float] = {}
    for name in engine_names:
        t0 = time.perf_counter()
        try:
            engines.append(ENGINES.create(name, lm.tokenizer, options))
        except Unsupported as exc:
            raise ConfigError(f"engine '{name}' cannot run with model {lm.name}: {exc}") from exc
        engine_init[name] = time.perf_counter() - t0
    samplers = [make_sampler(name, cfg) for name in cfg.samplers]
    model_info = lm.info()
    env = environment(REPO_ROOT)
    env.update({"model": model_info, "engine_init_s": engine_init,
                "engines": {e.name: {"version": e.version(), "settings": e.settings()} for e in engines},
                "samplers": {s.name: s.settings() for s in samplers}, "tasks": len(tasks)})
    frontends = make_frontends(cfg, lm)
    env["frontends"] = frontend_env(frontends)
    return _Setup(tasks, protocol, lm, engines, samplers, env, model_info, frontends)


def case_id(row: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a case within a run: its task (source and id), engine, sampler and seed."""
    return (row["source"], row["task_id"], row["engine"], row["sampler"], row["seed"])


def _incomplete_stateful(rows: list[dict[str, Any]], stateful: set[str], seeds: list[int]) -> set[tuple]:
    """(source, task, engine, sampler) groups of a stateful sampler (ASAp's trie) with some seeds
    recorded but not all: their trie cannot be rebuilt from rows, so the group is run again whole."""
    seen: dict[tuple, set[int]] = {}
    for r in rows:
        if r["sampler"] in stateful:
            seen.setdefault(case_id(r)[:4], set()).add(r["seed"])
    return {g for g, have in seen.items() if have != set(seeds)}


def _open_run(cfg: RunConfig, st: _Setup) -> tuple[RunDir, set[tuple]]:
    """A new run directory, or (--resume) the existing one with the cases it already holds."""
    fingerprint = run_fingerprint(cfg, st)
    if cfg.resume:
        rd = RunDir.resume(cfg.resume, "run", fingerprint)
        rows = rd.rows()
        rerun = _incomplete_stateful(rows, {s.name for s in st.samplers if getattr(s, "stateful", False)}, cfg.seeds)
        if rerun:
            rows = [r for r in rows if case_id(r)[:4] not in rerun]
            rd.rewrite_rows(rows)
        rd.update_environment(**st.env, resumed=rd.manifest.environment.get("resumed", []) + [len(rows)])
        return rd, {case_id(r) for r in rows}
    run_id = cfg.run_id or new_run_id()
    resolved = {**cfg.to_dict(), "run_id": run_id, "engines": [e.name for e in st.engines]}
    return RunDir.create(cfg.reports_dir, run_id, "run", resolved, fingerprint, st.env), set()


def run(cfg: RunConfig, lm: LanguageModel | None = None,
        progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> Path:
    st = _setup(cfg, lm)
    rd, done = _open_run(cfg, st)
    writer = rd.writer()
    per_task = (len(st.engines) * len(st.samplers) + len(st.frontends)) * len(cfg.seeds)
    counter = _Progress(len(st.tasks) * per_task, len(done), progress)
    executor: dict[str, Any] = {"executor": cfg.executor}
    if cfg.executor == "ray":
        from .run_ray import ray_rows

        rows = ray_rows(cfg, st, rd.run_id, done, lm is not None, executor)
    else:
        rows = (row for task in st.tasks for row in task_rows(task, cfg, st, rd.run_id, done))
    try:
        for row in rows:
            writer.append(row)
            counter.step(row)
    finally:
        rows.close()
        writer.close()
        rd.update_environment(executor=executor)
    summary = summarize(rd.path, bootstrap_seed=cfg.bootstrap_seed, n_resamples=cfg.bootstrap_resamples)
    write_summary(rd.path, summary, rd.manifest.environment, cfg.bootstrap_resamples)
    rd.finish()
    return rd.path


@dataclass
class _Progress:
    total: int
    done: int
    report: Callable[[int, int, dict[str, Any]], None] | None

    def step(self, row: dict[str, Any]) -> None:
        self.done += 1
        if self.report:
            self.report(self.done, self.total, row)


def task_rows(task: Task, cfg: RunConfig, st: _Setup, run_id: str, done: set[tuple],
              trace: Callable[..., None] | None = None) -> Iterator[dict[str, Any]]:
    """Every case of one task still to do, a row each as it ends: the prompt once, then each
    engine's compile and cases. The same code runs in the driver (local) and in a Ray actor,
    where `trace` leaves a trail ("compile", engine), ("compiled", engine, outcome), ("case", engine,
    sampler, seed) that tells, after a worker's death, whether the compiler or which case died."""
    trace = trace or (lambda *event: None)
    todo = {e.name: [(s, seed) for s in st.samplers for seed in cfg.seeds
                     if (task.source, task.id, e.name, s.name, seed) not in done] for e in st.engines}
    if not any(todo.values()):
        yield from frontend_rows(task, cfg, st, run_id, done, trace)  # a resume can leave only these
        return
    prompt_ids = st.lm.encode_chat(st.protocol.messages(task))
    n_ctx = getattr(st.lm, "n_ctx", 1 << 30)
    too_long = len(prompt_ids) + cfg.max_tokens > n_ctx
    # A harness limit, not an engine's outcome: every engine's case is recorded as skipped
    # (nothing compiled or generated, dc and ec empty) and the summary leaves it out.
    skip_reason = (f"skipped: prompt of {len(prompt_ids)} tokens + max_tokens {cfg.max_tokens} "
                   f"exceeds n_ctx {n_ctx}") if too_long else ""
    prefill_s = None
    if not too_long:
        # The prompt is evaluated once per task, before any case's clock starts, so
        # no engine's TTFT or LM time carries the prefill for the others.
        t0 = time.perf_counter()
        st.lm.logits(prompt_ids)
        prefill_s = time.perf_counter() - t0
    fixed = {"run_id": run_id, "prefill_s": prefill_s, "model_sha256": st.model_info.get("model_sha256")}
    for engine in st.engines:
        if not todo[engine.name]:
            continue
        trace("compile", engine.name)
        comp = (CompileOutcome("skipped", None, skip_reason) if too_long
                else compile_task(engine, task, cfg.compile_timeout_s, cfg.compile_guard))
        trace("compiled", engine.name, comp)
        # Stateful samplers (ASAp's trie) start afresh for every task and engine.
        fresh = {s.name: make_sampler(s.name, cfg) if getattr(s, "stateful", False) else s for s in st.samplers}
        for sampler_proto, seed in todo[engine.name]:
            sampler = fresh[sampler_proto.name]
            trace("case", engine.name, sampler.name, seed)
            gen = generate_case(engine, comp, sampler, st.lm, prompt_ids, cfg, seed)
            row = case_row(task, engine, sampler, seed, cfg, comp, gen, len(prompt_ids), st.lm)
            if too_long:
                row.update({"finish_reason": "skipped", "dc": None, "ec": None, "parses": None, "valid": None})
            row.update(fixed)
            yield row
    yield from frontend_rows(task, cfg, st, run_id, done, trace)


# Run settings that are not part of what a result is a result of: where it goes and how it is shown.
_NOT_SETTINGS = {"run_id", "reports_dir", "progress", "data_dir", "hub_cache", "offline", "model", "resume",
                 "executor", "address", "workers"}


def run_fingerprint(cfg: RunConfig, st: _Setup) -> dict[str, Any]:
    """Comparable: the model, its vocabulary, the tasks and the protocol (prompt, validator, limits);
    settings: engines and frontends (versions and settings), samplers and every other config value."""
    lm = st.lm
    comparable = {"model": model_identity(lm.info()), "tokenizer": vocabulary_hash(lm.tokenizer.token_bytes),
                  "task_set": task_set_hash(st.tasks), "protocol": cfg.protocol, "max_tokens": cfg.max_tokens,
                  "temperature": cfg.temperature}
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_SETTINGS and k not in comparable}
    settings["engines"] = {e.name: {"version": e.version(), **e.settings()} for e in st.engines}
    settings["samplers"] = {s.name: s.settings() for s in st.samplers}
    if st.frontends:
        settings["frontends"] = {f.name: {"version": f.version(), **f.settings()} for f in st.frontends}
    return make_fingerprint("run", comparable, settings)
