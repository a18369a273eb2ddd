"""The row types: one per run kind, each field declared once with its type and unit.

A row is one line of a run's rows.jsonl: a case of `cdbench run` (task x engine x sampler x seed),
a schema of `cdbench replay` (schema x engine), a task x sampler of `cdbench fidelity`. Rows stay
plain dicts in memory (pandas, compare and gate read them by key); these declarations are what a
writer must produce and a reader may rely on:
- writing (`RowWriter`) checks every row: no undeclared field, every required field present,
  every value of its declared type. A mismatch is a bug in cdbench and raises RowTypeError;
- reading (`RunDir.rows()`) checks the fields that pair and group rows and the types of the
  declared fields present, and names the file and line of a row that fails.
Units are in the declaration (`unit`) and, for times, in the name too (_s, _ms, _us).
`python -m harness.results.rows` prints the tables of docs/results-format.md.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

KEY = "key"  # a field that pairs or groups rows: required on reading too


class RowTypeError(ValueError):
    """A row does not match its kind's declared type."""


def col(unit: str = "", doc: str = "", optional: bool = False, key: bool = False) -> Any:
    """A declared field. optional: may be absent from a row (present only in some rows)."""
    meta = {"unit": unit, "doc": doc, "optional": optional, KEY: key}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


@dataclass(kw_only=True)
class RunRow:
    """One case of `cdbench run`: a task, an engine, a sampler, a seed."""
    task_id: str = col(doc="task id within its source", key=True)
    source: str = col(doc="dataset and subset the task came from", key=True)
    kind: str = col(doc="json_schema or cfg")
    tags: str = col(doc="feature tags, comma-separated")
    engine: str = col(doc="constraint engine", key=True)
    engine_version: str = col(doc="the engine package's version")
    engine_settings: str = col(doc="the engine's settings, JSON")
    sampler: str = col(doc="sampler", key=True)
    sampler_settings: str = col(doc="the sampler's settings, JSON")
    seed: int = col(doc="sampling seed", key=True)
    max_tokens: int = col("tokens", "generation limit")
    prompt_tokens: int | None = col("tokens", "prompt length after the chat template (None: an endpoint that did not say)")
    protocol: str = col(doc="measurement protocol (cdbench, jsonschemabench)")
    prompt_shots: int = col(doc="few-shot examples in the prompt")
    compile_status: str = col(doc="ok, unsupported, error, timeout, crash, skipped (harness.compiling)")
    compile_s: float | None = col("s", "compile time (None when the compile did not finish)")
    compile_load_s: float | None = col("s", "loading the compiled grammar back in the parent (guarded compiles)")
    compile_error: str = col(doc="the engine's message when the compile failed")
    dc: int | None = col("0/1", "declared coverage: the task compiled (None: skipped by a harness limit)")
    output_text: str | None = col(doc="the generated text (None: nothing generated)")
    output_tokens: int = col("tokens", "generated tokens")
    finish_reason: str = col(doc="eos, max_tokens, forced_stop, dead_end, timeout, oom, crash, error, not_run, skipped")
    error: str = col(doc="what went wrong in generation, if anything")
    parses: bool | None = col(doc="the output parses (JSON, or the grammar for cfg tasks)")
    schema_valid: bool | None = col(doc="the schema itself is valid for its draft (json_schema tasks)")
    valid: bool | None = col(doc="the output satisfies the constraint, by jsonschema or Lark")
    validator: str | None = col(doc="what decided `valid`: the JSON Schema draft or lark-earley")
    validation_error: str = col(doc="the validator's first message")
    ec: int | None = col("0/1", "empirical coverage: compiled and produced a valid output")
    ttft_s: float | None = col("s", "compile + matcher + prompt-independent first token")
    tpot_ms: float | None = col("ms", "time per output token after the first")
    tgt_s: float = col("s", "total generation time including compile")
    matcher_s: float | None = col("s", "making the matcher from the compiled grammar")
    lm_s: float | None = col("s", "time in the language model (forward passes, softmax); None: a frontend")
    engine_s: float | None = col("s", "time in the engine (mask, advance, check, fork); None: a frontend")
    mask_s: float | None = col("s", "time filling token masks")
    advance_s: float | None = col("s", "time advancing the matcher")
    check_s: float | None = col("s", "time checking single tokens (AWRS)")
    fork_s: float | None = col("s", "time forking matchers (SMC)")
    sampler_s: float | None = col("s", "the sampler's own time, neither LM nor engine; None: a frontend")
    gen_s: float | None = col("s", "generation time after the matcher was made", optional=True)
    forward_passes: int | None = col(doc="LM forward passes (None: a frontend)")
    constraint_evals: int | None = col(doc="constraint evaluations (masks and token checks; None: a frontend)")
    step_evals: list = col(doc="constraint evaluations per generation step")
    step_evals_max: int | None = col(doc="the largest of step_evals")
    mask_times_us: list = col("µs", "every mask's time, in order")
    mask_mean_us: float | None = col("µs", "mean of mask_times_us")
    mask_p50_us: float | None = col("µs", "median of mask_times_us")
    mask_p99_us: float | None = col("µs", "99th percentile of mask_times_us")
    mask_max_us: float | None = col("µs", "largest of mask_times_us")
    run_id: str = col(doc="the run's id")
    prefill_s: float | None = col("s", "the prompt's forward pass, once per task, outside every case's clock")
    model_sha256: str | None = col(doc="sha256 of the model file")
    method_kind: str | None = col(doc="engine (also when absent) or frontend: an end-to-end library or server, a black box (harness.frontends)", optional=True)
    http_status: int | None = col(doc="frontends over HTTP: the response status (None: no response)", optional=True)
    correct: bool | None = col(doc="quality tasks: the answer is right (harness.scoring.quality); None: nothing to judge", optional=True)


@dataclass(kw_only=True)
class ReplayRow:
    """One schema of `cdbench replay` on one engine: its labelled instances forced token by token."""
    engine: str = col(doc="constraint engine", key=True)
    task_id: str = col(doc="schema id", key=True)
    group: str = col(doc="MaskBench group (Github_easy, Handwritten, ...)", key=True)
    tags: list = col(doc="feature tags")
    status: str = col(doc="the worker's outcome: done, timeout, oom, exception, crash")
    bucket: str = col(doc="the schema's one verdict (harness.replay.run.BUCKETS)")
    wall_s: float = col("s", "the job's wall time in the worker")
    n_valid: int = col(doc="instances labelled valid")
    n_invalid: int = col(doc="instances labelled invalid")
    compile_status: str = col(doc="ok, unsupported, error, or the worker's status when it did not finish")
    compile_error: str | None = col(doc="the engine's message when the compile failed", optional=True)
    cold_compile_s: float | None = col("s", "compile with an empty cache")
    warm_compile_s: float | None = col("s", "the same schema again from the engine's cache", optional=True)
    warm_note: str | None = col(doc="why warm_compile_s is missing, or 'compile cache hit'", optional=True)
    mask_us: list | None = col("µs", "every mask's time", optional=True)
    advance_us: list | None = col("µs", "every advance's time", optional=True)
    instances: list | None = col(doc="per instance: accepted, reject index and token, policy, digests", optional=True)
    engine_errors: int | None = col(doc="instances the engine raised on", optional=True)
    valid_rejected: int | None = col(doc="valid instances the engine refused", optional=True)
    invalid_accepted: int | None = col(doc="invalid instances the engine accepted", optional=True)
    policy_rejected: int | None = col(doc="valid instances refused by a documented engine policy", optional=True)
    policy: str | None = col(doc="the policies that refused instances", optional=True)
    error: str = col(doc="the first error, if any")
    phase: str | None = col(doc="compile or replay: where a job that did not finish stopped", optional=True)
    tokens: int | None = col("tokens", "tokens forced (masks measured)", optional=True)
    token_texts: dict | None = col(doc="per instance, its tokens' text (--differential)", optional=True)


@dataclass(kw_only=True)
class FidelityRow:
    """One task x sampler of `cdbench fidelity`, scored against the exact target distribution."""
    task: str = col(doc="task id", key=True)
    kind: str = col(doc="json_schema or cfg")
    engine: str = col(doc="constraint engine", key=True)
    level: str = col(doc="tokens or strings: what the distributions are over")
    length_bound: int | None = col("tokens", "the length bound that makes the target finite")
    status: str = col(doc="ok, or why the task could not be walked (a compile status, budget, empty, error)")
    message: str | None = col(doc="the reason, when status is not ok")
    p_of_l: float | None = col("probability", "P(L): the LM's mass on the constrained language", optional=True)
    sequences: int | None = col(doc="token sequences in the target", optional=True)
    strings: int | None = col(doc="distinct strings in the target", optional=True)
    sampler: str | None = col(doc="sampler (None when the task could not be walked)", key=True)
    samples: int | None = col(doc="samples drawn", optional=True)
    tv: float | None = col("probability", "total variation distance to the target", optional=True)
    kl: float | None = col("nats", "KL(target || sampler)", optional=True)
    outside_L: float | None = col("probability", "sampler mass outside the language", optional=True)
    null_tv_mean: float | None = col("probability", "mean TV of exact samples of this size", optional=True)
    null_tv_p95: float | None = col("probability", "95th percentile of that null TV", optional=True)
    inside_band: bool | None = col(doc="tv <= null_tv_p95", optional=True)
    runs: int | None = col(doc="SMC runs", optional=True)
    particles: int | None = col(doc="SMC particles per run", optional=True)
    zhat_mean: float | None = col("probability", "mean SMC estimate of P(L)", optional=True)
    zhat_se: float | None = col("probability", "its standard error", optional=True)
    zhat_over_p_of_l: float | None = col(doc="zhat_mean / P(L)", optional=True)
    evals_per_step: float | None = col(doc="constraint evaluations per step", optional=True)
    trie_tv: float | None = col("probability", "ASAp: TV of the trie-implied distribution after the last sample",
                                optional=True)
    theta_root: float | None = col("probability", "ASAp: the trie root's estimated P(L)", optional=True)
    trie_nodes: int | None = col(doc="ASAp: nodes in the trie", optional=True)
    seconds: float | None = col("s", "the sampler's wall time", optional=True)
    lm_s: float | None = col("s", "of which in the language model", optional=True)


ROW_TYPES: dict[str, type] = {"run": RunRow, "replay": ReplayRow, "fidelity": FidelityRow}
EXTRA_PREFIX = {"run": "x_"}  # sampler-specific extras (x_log_zhat, ...), declared by their sampler


def fields(kind: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ROW_TYPES[kind])}


def _types(kind: str) -> dict[str, Any]:
    return typing.get_type_hints(ROW_TYPES[kind])


def _accepts(hint: Any, value: Any) -> bool:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in args:
        if t is type(None):
            if value is None:
                return True
        elif t is float:
            if isinstance(value, (int, float)):
                return True
        elif isinstance(value, t):
            return True
    return False


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " | ".join("None" if a is type(None) else a.__name__ for a in args)


def problems(kind: str, row: dict[str, Any], writing: bool = True) -> list[str]:
    """What is wrong with a row of this kind (empty: nothing). Reading is lenient about missing
    non-key fields and unknown fields (rows written by other versions of the same format)."""
    declared, hints = fields(kind), _types(kind)
    out = []
    extra = EXTRA_PREFIX.get(kind)
    for name in row:
        if name not in declared and writing and not (extra and name.startswith(extra)):
            out.append(f"undeclared field {name!r}")
    for name, f in declared.items():
        if name not in row:
            if f.metadata[KEY] or (writing and not f.metadata["optional"]):
                out.append(f"missing field {name!r}")
        elif not _accepts(hints[name], row[name]):
            out.append(f"{name!r} is {type(row[name]).__name__}, declared {_type_name(hints[name])}")
    return out


def check(kind: str, row: dict[str, Any]) -> None:
    """Raise RowTypeError when a row about to be written does not match its declared type."""
    found = problems(kind, row)
    if found:
        raise RowTypeError(f"{kind} row {row.get('task_id') or row.get('task')!r}: " + "; ".join(found)
                           + " (synthetic rows in tests: start from harness.results.rows.blank(kind))")


def _neutral(hint: Any) -> Any:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if type(None) in args:
        return None
    return args[0]()  # "", 0, 0.0, False, [], {}


def blank(kind: str, **values: Any) -> dict[str, Any]:
    """A row of this kind with every required field at a neutral value (None where allowed, else
    empty or zero), updated with `values`: the start of a synthetic row in a test."""
    hints = _types(kind)
    row = {name: _neutral(hints[name]) for name, f in fields(kind).items() if not f.metadata["optional"]}
    row.update(values)
    return row


def unit(kind: str, name: str) -> str:
    return fields(kind)[name].metadata["unit"]


def markdown_tables() -> str:
    """The declared fields of every row type as markdown (docs/results-format.md)."""
    out = []
    for kind, cls in ROW_TYPES.items():
        hints = _types(kind)
        out += [f"## `{kind}` rows ({cls.__name__})", "", cls.__doc__ or "", "",
                "| field | type | unit | key | optional | meaning |", "|---|---|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            m = f.metadata
            out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {m['unit']} | {'yes' if m[KEY] else ''} "
                       f"| {'yes' if m['optional'] else ''} | {m['doc']} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_tables())
