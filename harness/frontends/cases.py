"""Frontend cases of one task: one row per (frontend, seed), after the task's engine cases.

A frontend row is a RunRow scored like any other (score_row: jsonschema or Lark), with
`method_kind` = "frontend", `engine` = the frontend's name and `sampler` = "frontend". What a black
box cannot tell is None or empty, never a made-up zero: compile and matcher times, LM / engine /
sampler time splits, forward passes, constraint evaluations, mask times. A frontend's TTFT runs
from the request to the first streamed text, so, unlike an engine's, it includes the prompt's
prefill (engine rows carry that as prefill_s).
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

from ..errors import ConfigError
from ..protocols import get_protocol
from ..tasks.task import Task
from . import FRONTENDS
from .base import Frontend, FrontendOptions, FrontendResult, one_line

SAMPLER = "frontend"
# A frontend's status as the row's compile_status (the constraint was taken, refused, or the call failed).
_COMPILE_STATUS = {"ok": "ok", "unsupported": "unsupported", "timeout": "timeout"}


def options_from(cfg: Any) -> FrontendOptions:
    """The run settings frontends read."""
    return FrontendOptions(**{k: getattr(cfg, k) for k in FrontendOptions.__dataclass_fields__})


def make_frontends(cfg: Any, lm: Any) -> list[Frontend]:
    """The run's frontends, built once (unknown or uninstalled: a one-line ConfigError)."""
    if len(set(cfg.frontends)) != len(cfg.frontends):
        raise ConfigError(f"--frontends {','.join(cfg.frontends)}: a frontend is named twice")
    if cfg.frontends and cfg.request_timeout_s <= 0:
        raise ConfigError(f"--request-timeout must be > 0, got {cfg.request_timeout_s}")
    options = options_from(cfg)
    return [FRONTENDS.get(name)(lm, options) for name in cfg.frontends]


def frontend_env(frontends: list[Frontend]) -> dict[str, Any]:
    """Versions and settings of the run's frontends, for the manifest's environment."""
    return {f.name: {"version": f.version(), "settings": f.settings()} for f in frontends}


def frontend_rows(task: Task, cfg: Any, st: Any, run_id: str, done: set[tuple],
                  trace: Any = None) -> Iterator[dict[str, Any]]:
    """Every frontend case of one task still to do (resume skips the recorded ones), a row each;
    `trace` as runner.task_rows's (a Ray actor's trail)."""
    todo = [(f, seed) for f in getattr(st, "frontends", []) for seed in cfg.seeds
            if (task.source, task.id, f.name, SAMPLER, seed) not in done]
    if not todo:
        return
    messages = st.protocol.messages(task)
    n_prompt = len(st.lm.encode_chat(messages))
    n_ctx = getattr(st.lm, "n_ctx", 1 << 30)
    skip = (f"skipped: prompt of {n_prompt} tokens + max_tokens {cfg.max_tokens} exceeds n_ctx {n_ctx}"
            if n_prompt + cfg.max_tokens > n_ctx else "")
    fixed = {"run_id": run_id, "prefill_s": None, "model_sha256": st.model_info.get("model_sha256")}
    for frontend, seed in todo:
        if trace:
            trace("case", frontend.name, SAMPLER, seed)
        result = FrontendResult(status="skipped", error=skip) if skip else run_case(frontend, task, messages, cfg, seed)
        yield {**frontend_row(task, frontend, seed, cfg, result), **fixed}


def run_case(frontend: Frontend, task: Task, messages: list[dict[str, str]], cfg: Any, seed: int) -> FrontendResult:
    """One call, its failures kept as the result's status."""
    why = frontend.supports(task)
    if why:
        return FrontendResult(status="unsupported", error=why)
    try:
        return frontend.generate(task, messages, cfg.max_tokens, seed, time.perf_counter() + cfg.generation_timeout_s)
    except Exception as exc:  # noqa: BLE001 - a frontend's bug is this case's row, not the run's end
        return FrontendResult(status="error", finish_reason="error", error=one_line(exc))


def _score(task: Task, cfg: Any, res: FrontendResult) -> dict[str, Any]:
    from ..runner import score_row

    if res.text is None:
        return {"parses": False, "schema_valid": None, "valid": False, "validator": None, "validation_error": ""}
    return score_row(task, res.text, get_protocol(cfg.protocol))


def frontend_row(task: Task, frontend: Frontend, seed: int, cfg: Any, res: FrontendResult) -> dict[str, Any]:
    """The RunRow of one frontend case."""
    ran = res.status == "ok"
    row: dict[str, Any] = {
        "task_id": task.id, "source": task.source, "kind": task.kind, "tags": ",".join(task.tags),
        "method_kind": "frontend", "engine": frontend.name, "engine_version": frontend.version(),
        "engine_settings": json.dumps(frontend.settings(), sort_keys=True, default=str),
        "sampler": SAMPLER, "sampler_settings": json.dumps({"sampler": SAMPLER, "temperature": cfg.temperature,
                                                            "decoding": "the frontend's own"}, sort_keys=True),
        "seed": seed, "max_tokens": cfg.max_tokens, "prompt_tokens": res.prompt_tokens, "protocol": cfg.protocol,
        "prompt_shots": get_protocol(cfg.protocol).shots_for(task),
        "compile_status": _COMPILE_STATUS.get(res.status, "skipped" if res.status == "skipped" else "error"),
        "compile_s": None, "compile_load_s": None, "compile_error": "" if ran else res.error,
        "dc": int(ran), "http_status": res.http_status,
        "output_text": res.text, "output_tokens": res.output_tokens,
        "finish_reason": res.finish_reason if ran else _failed_finish(res), "error": res.error,
        "ttft_s": res.ttft_s, "tpot_ms": res.tpot_ms, "tgt_s": res.total_s or 0.0, "gen_s": res.total_s,
        "matcher_s": None, "lm_s": None, "engine_s": None, "mask_s": None, "advance_s": None, "check_s": None,
        "fork_s": None, "sampler_s": None, "forward_passes": None, "constraint_evals": None, "step_evals": [],
        "step_evals_max": None, "mask_times_us": [], "mask_mean_us": None, "mask_p50_us": None,
        "mask_p99_us": None, "mask_max_us": None,
    }
    row.update(_score(task, cfg, res))
    row["ec"] = int(bool(row["valid"]))
    if res.status == "skipped":  # a harness limit, as for engines: in no metric
        row.update({"finish_reason": "skipped", "dc": None, "ec": None, "parses": None, "valid": None})
    extra = {"setup_s": res.setup_s, "token_count": res.token_count or None, "status": res.status, **res.extra}
    row.update({f"x_{k}": v for k, v in extra.items() if v is not None})
    return row


def _failed_finish(res: FrontendResult) -> str:
    """The finish of a case that did not run to an answer: not_run when nothing was asked."""
    return "not_run" if res.status in ("unsupported", "skipped") else res.finish_reason or "not_run"
