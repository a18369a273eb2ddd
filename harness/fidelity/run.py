"""`cdbench fidelity`: how far each sampler's output distribution is from the exact target.

Per task (a small language, bounded by the task's token bound T): the exact walk gives Q,
P(L) and token masking's exact distribution; then every sampler draws through the same
engine, under the same bound, and is scored against Q with TV, KL(q_hat || Q) and the null
band of as many exact draws. AWRS-SMC pools every particle of every run by its raw weight
(the consistent estimator, ALGORITHMS.md 6) and reports Zhat against P(L); ASAp keeps one
trie for the task and reports the TV of its trie-implied next-sample distribution as samples
accumulate (the convergence curve). Results: fidelity.json, fidelity.md and curve.csv.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import REPO_ROOT
from ..engines import ENGINES, EngineOptions
from ..compiling import compile_in_process
from ..engines.base import LengthBound
from ..environment import environment
from ..errors import ConfigError
from ..lm.base import LanguageModel
from ..reporting.writer import write_json
from ..results.rundir import RunDir, make_fingerprint, model_identity, task_set_hash, vocabulary_hash
from ..tasks.loaders import load_tasks
from ..tasks.task import Task
from .exact import BudgetExceeded, ExactTarget, exact_walk
from .config import FidelityConfig
from .estimators import ESTIMATORS, Draw
from .metrics import kl, marginalise, null_band, tv



class _Scorer:
    """TV / KL / null band of a distribution over the target's strings, at token or string level."""

    def __init__(self, target: ExactTarget, decode: Callable[[tuple[int, ...]], str], level: str, reps: int,
                 seed: int) -> None:
        self.target = target
        self.level = level
        self.reps = reps
        self.seed = seed
        self.keys = [decode(s) for s in target.sequences]
        self.q = self._level(target.q)
        # token level: Q's logs straight from the walk, so sequences whose Q underflows still count in KL
        self.log_q = target.log_p - target.log_pl if level == "tokens" else None

    def _level(self, dist: np.ndarray) -> np.ndarray:
        return marginalise(dist, self.keys)[0] if self.level == "strings" else dist

    def score(self, dist: np.ndarray, outside: float, n: int | None) -> dict[str, Any]:
        d = self._level(dist)
        outside = 0.0 if outside < 1e-9 else outside  # rounding in a sum of exact probabilities
        out: dict[str, Any] = {"tv": tv(d, self.q, outside), "kl": kl(d, self.q, outside, self.log_q),
                               "outside_L": outside}
        if n:
            mean, p95 = null_band(self.q, n, self.reps, self.seed)
            out.update({"null_tv_mean": mean, "null_tv_p95": p95, "inside_band": out["tv"] <= p95})
        return out

    def score_exact(self, dist: np.ndarray) -> dict[str, Any]:
        """An exactly computed distribution over L (exact LCD, ASAp's trie-implied one): what it
        misses of 1 is mass that never reaches L (dead ends)."""
        return self.score(dist, float(max(0.0, 1.0 - dist.sum())), None)


def _matcher(engine, compiled, bound: int, lm: LanguageModel):
    return LengthBound(engine.new_matcher(compiled), bound, lm.tokenizer.stops)


def run_task(task: Task, cfg: FidelityConfig, lm: LanguageModel, engine, log: Callable[[str], None]) -> dict[str, Any]:
    bound = cfg.length_bound or task.length_bound
    res: dict[str, Any] = {"task": task.id, "kind": task.kind, "length_bound": bound, "engine": engine.name,
                           "level": cfg.level, "samplers": [], "curve": []}
    if not bound:
        res.update(status="error", message=f"task {task.id} has no length_bound; pass --length-bound")
        return res
    comp = compile_in_process(engine, task)  # the run's compile path and status vocabulary
    if comp.status != "ok":
        res.update(status=comp.status, message=comp.message[:300])
        return res
    compiled = comp.compiled
    prompt = lm.encode_chat(task.prompt)
    lm.logits(prompt)

    def walk_progress(n: int, s: float) -> None:
        log(f"  exact walk: {n} prefixes, {s:.0f} s")

    try:
        target = exact_walk(lm, _matcher(engine, compiled, bound, lm), prompt, bound, cfg.max_prefixes,
                            cfg.max_seconds, walk_progress)
    except BudgetExceeded as exc:
        res.update(status="budget", message=str(exc))
        log(f"  {task.id}: {exc}")
        return res
    if not target.sequences:  # nothing to compare a sampler with: a row that says so, not a crash
        res.update(status="empty", message=f"no string of the language within {bound} tokens has probability "
                   "above zero under this model")
        log(f"  {task.id}: {res['message']}")
        return res
    decode = lambda s: lm.tokenizer.decode(list(s)).decode("utf-8", "replace")  # noqa: E731
    scorer = _Scorer(target, decode, cfg.level, cfg.null_reps, cfg.seed)
    index = target.index()
    q_strings = marginalise(target.q, scorer.keys)
    top = np.argsort(-q_strings[0])[:5]
    res.update(status="ok", sequences=len(target.sequences), strings=len(q_strings[1]), p_of_l=math.exp(target.log_pl),
               log_p_of_l=target.log_pl, walk_prefixes=target.prefixes, walk_lm_calls=target.prefixes,
               walk_evaluations=target.prefixes * lm.tokenizer.vocab_size, walk_s=target.seconds,
               lcd_dead_end_mass=float(1.0 - target.lcd.sum()),
               top_strings=[(q_strings[1][i], float(q_strings[0][i])) for i in top])
    log(f"  exact: {len(target.sequences)} token sequences, {res['strings']} strings, P(L) = {res['p_of_l']:.4g}, "
        f"{target.prefixes} prefixes in {target.seconds:.1f} s")
    lcd = scorer.score_exact(target.lcd)
    res["samplers"].append({"sampler": "masking (exact LCD)", "samples": None, **lcd, "seconds": 0.0})
    draw = Draw(task.id, cfg, lm, engine, compiled, bound, prompt, target, index, scorer, res["curve"])
    for name in cfg.samplers:
        t0, draw.lm_s = time.perf_counter(), 0.0
        row = {"sampler": name, **ESTIMATORS[name](draw), "seconds": time.perf_counter() - t0, "lm_s": draw.lm_s}
        res["samplers"].append(row)
        log(f"  {name}: TV {row['tv']:.4f} (null band p95 {row.get('null_tv_p95', float('nan')):.4f}) "
            f"in {row['seconds']:.1f} s")
    return res


def _f(v: Any, d: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{d}f}"
    return str(v)


def _mass(v: float) -> str:
    """A probability mass, legible when tiny but not zero (masking's dead-end mass, say)."""
    return f"{v:.1e}" if 0 < v < 1e-3 else f"{v:.3f}"


def format_report(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(f"## {r['task']} ({r['kind']}, |w| <= {r['length_bound']} tokens, engine {r['engine']}, "
                     f"{r['level']} level)\n")
        if r.get("status") != "ok":
            lines.append(f"{r.get('status')}: {r.get('message')}\n")
            continue
        lines.append(f"Exact target: {r['sequences']} token sequences spelling {r['strings']} strings; "
                     f"P(L) = {r['p_of_l']:.5g}; walk: {r['walk_prefixes']} viable prefixes (LM calls), "
                     f"{r['walk_evaluations']:,} constraint evaluations, {r['walk_s']:.1f} s. "
                     f"Most likely under Q: " + ", ".join(f"{s!r} {p:.3f}" for s, p in r["top_strings"]) + "\n")
        lines.append("| sampler | samples | TV | KL(q̂‖Q) | null TV mean | null TV p95 | inside band | outside L | "
                     "extra | time s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in r["samplers"]:
            extra = ""
            if "zhat_mean" in s:
                extra = f"Ẑ {s['zhat_mean']:.4g} ± {2 * (s['zhat_se'] or 0):.2g} (Ẑ/P(L) {s['zhat_over_p_of_l']:.3f})"
            if "trie_tv" in s:
                extra = f"trie TV {s['trie_tv']:.4f}, θ(root) {s['theta_root']:.4g}"
            lines.append(f"| {s['sampler']} | {_f(s['samples'])} | {_f(s['tv'])} | {_f(s['kl'])} | "
                         f"{_f(s.get('null_tv_mean'))} | {_f(s.get('null_tv_p95'))} | {_f(s.get('inside_band'))} | "
                         f"{_mass(s['outside_L'])} | {extra} | {_f(s['seconds'], 1)} |")
        if r["curve"]:
            lines.append("\nASAp convergence (TV of the trie-implied next-sample distribution to Q):\n")
            lines.append("| samples | trie TV | θ(root) | distinct outputs | trie nodes |")
            lines.append("|---|---|---|---|---|")
            for p in r["curve"]:
                lines.append(f"| {p['samples']} | {p['trie_tv']:.4f} | {p['theta_root']:.5g} | {p['distinct']} | "
                             f"{p['trie_nodes']} |")
        lines.append("")
    return "\n".join(lines)


def _check(cfg: FidelityConfig) -> None:
    if cfg.level not in ("tokens", "strings"):
        raise ConfigError(f"level must be 'tokens' or 'strings', got {cfg.level!r}")
    for name in cfg.samplers:
        if name not in ESTIMATORS:
            raise ConfigError(f"fidelity: unknown sampler '{name}' (have: {', '.join(ESTIMATORS)})")
    if cfg.samples < 1 or cfg.particles < 1:
        raise ConfigError("samples and particles must be >= 1")


def _finished(rd: RunDir) -> list[dict[str, Any]]:
    """A resumed fidelity run's finished tasks: in fidelity.json and with all their rows. Any other
    task's rows (the task in flight when the run died) are dropped; that task runs again whole."""
    path = rd.path / "fidelity.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))["results"] if path.exists() else []
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot resume from it: {exc}") from exc
    rows = rd.rows()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    done = [res for res in kept if len(by_task.get(res["task"], [])) == len(fidelity_rows(res))]
    names = {res["task"] for res in done}
    if len(rows) != sum(len(by_task[t]) for t in names):
        rd.rewrite_rows([r for r in rows if r["task"] in names])
    return done


def _open_run(cfg: FidelityConfig, lm: LanguageModel, tasks: list[Task], engine: Any) -> tuple[RunDir, list]:
    model_info = lm.info()
    env = environment(REPO_ROOT)
    env.update({"model": model_info, "engine": {"name": engine.name, "version": engine.version(),
                                               "settings": engine.settings()}})
    fingerprint = fidelity_fingerprint(cfg, lm, model_info, tasks, engine)
    if cfg.resume:
        rd = RunDir.resume(cfg.resume, "fidelity", fingerprint)
        done = _finished(rd)
        rd.update_environment(**env, resumed=rd.manifest.environment.get("resumed", []) + [len(done)])
        return rd, done
    run_id = cfg.run_id or _dt.datetime.now().strftime("fidelity-%Y%m%d-%H%M%S")
    return RunDir.create(cfg.reports_dir, run_id, "fidelity", asdict(cfg), fingerprint, env), []


def run_fidelity(cfg: FidelityConfig, lm: LanguageModel | None = None,
                 log: Callable[[str], None] = print) -> Path:
    _check(cfg)
    tasks = load_tasks(cfg.dataset, cfg.tasks or None)
    if lm is None:
        from ..config import RunConfig
        from ..runner import load_lm

        lm = load_lm(RunConfig(model=cfg.model))
    engine = ENGINES.create(cfg.engine, lm.tokenizer, EngineOptions())
    rd, results = _open_run(cfg, lm, tasks, engine)
    finished = {r["task"] for r in results}
    writer = rd.writer()
    try:
        for task in tasks:
            if task.id in finished:
                continue
            log(f"{task.id}:")
            results.append(run_task(task, cfg, lm, engine, log))
            for row in fidelity_rows(results[-1]):
                writer.append(row)
            write_json(rd.path / "fidelity.json", {"results": results})  # details (curves, top strings), kept after each task
    finally:
        writer.close()
    _write_reports(rd.path, results)
    rd.finish()
    return rd.path


def _write_reports(run_dir: Path, results: list[dict[str, Any]]) -> None:
    (run_dir / "fidelity.md").write_text(format_report(results), encoding="utf-8")
    with open(run_dir / "curve.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["task", "samples", "trie_tv", "theta_root", "distinct", "trie_nodes", "seconds"])
        w.writeheader()
        for r in results:
            w.writerows(r["curve"])


def fidelity_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task x sampler (a task that could not be walked: one row with its status)."""
    head = {k: result.get(k) for k in ("task", "kind", "engine", "level", "length_bound", "status", "message",
                                       "p_of_l", "sequences", "strings")}
    if result.get("status") != "ok":
        return [{**head, "sampler": None}]
    return [{**head, **{k: v for k, v in s.items() if not isinstance(v, (list, dict))}} for s in result["samplers"]]


def fidelity_fingerprint(cfg: FidelityConfig, lm: LanguageModel, info: dict[str, Any], tasks: list[Any],
                         engine: Any) -> dict[str, Any]:
    comparable = {"model": model_identity(info), "tokenizer": vocabulary_hash(lm.tokenizer.token_bytes),
                  "task_set": task_set_hash(tasks), "level": cfg.level, "length_bound": cfg.length_bound}
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in comparable and k not in ("reports_dir", "run_id", "model", "resume")}
    settings["engine"] = {"name": engine.name, "version": engine.version(), **engine.settings()}
    return make_fingerprint("fidelity", comparable, settings)
