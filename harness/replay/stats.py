"""Replay statistics in MaskBench's conventions (ANCHORS.md §2.4, §5).

Mask times are pooled over every token of every schema of an engine (token-weighted);
cold compile percentiles are over schemas with compile timeouts counted at the cap; warm ones
over the engine's compile-cache hits (none for an engine without a compile cache); buckets are
counted per schema, and beside them the instance counts (valid rejected, invalid accepted,
policy-refused) that a schema's one bucket would hide. The differential oracle compares mask
digests step by step between engines; for its examples, `mask_difference` tells which tokens one
engine allows there and the other refuses (the masks come from the replay's post-pass).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy as np

from ..reporting.markdown import cell

# One bucket per schema, the first that applies in this order (README, Replay): the worker gave
# no verdict (crash, oom, timeout), an engine call raised (engine_error), the schema did not
# compile (unsupported, compile_error), a valid instance refused even in the engine's own policy
# (valid_rejected), an invalid instance accepted (invalid_accepted), a valid instance refused
# only for the engine's policy (policy), else pass. Every row keeps the instance counts apart.
BUCKET_PRECEDENCE = ["crash", "oom", "timeout", "engine_error", "unsupported", "compile_error",
                     "valid_rejected", "invalid_accepted", "policy", "pass"]
BUCKETS = ["pass", "policy", "compile_error", "unsupported", "timeout", "crash", "oom", "engine_error",
           "valid_rejected", "invalid_accepted"]
# Per-instance counts kept apart from the one bucket per schema (MaskBench reports validation and
# invalidation errors apart): valid instances refused (bugs), invalid ones accepted, valid ones
# refused only for the engine's policy. Shown as "instances (schemas)".
COUNTS = [("valid_rejected", "valid rejected"), ("invalid_accepted", "invalid accepted"),
          ("policy_rejected", "policy-refused")]
MASK_PCTS = [25, 50, 75, 90, 95, 99, 99.9]
COMPILE_PCTS = [50, 75, 90, 95, 99]


def mask_stats(times_us: Iterable[float]) -> dict[str, float | int | None]:
    a = np.fromiter(times_us, dtype=float)
    if a.size == 0:
        return {"tokens": 0}
    out: dict[str, float | int | None] = {"tokens": int(a.size), "mean": float(a.mean())}
    for p, v in zip(MASK_PCTS, np.percentile(a, MASK_PCTS)):
        out[f"p{p:g}"] = float(v)
    out["max"] = float(a.max())
    out["over_1ms"] = float((a > 1000).mean())
    out["over_10ms"] = float((a > 10000).mean())
    return out


def compile_stats(values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {}
    a = np.asarray(values_s) * 1e6
    out = {"n": int(a.size), "mean": float(a.mean())}
    for p, v in zip(COMPILE_PCTS, np.percentile(a, COMPILE_PCTS)):
        out[f"p{p}"] = float(v)
    out["max"] = float(a.max())
    return out


def _cold_compile(row: dict[str, Any], timeout_s: float) -> float | None:
    """A schema's cold compile for the percentiles: a compile that timed out counts at the cap
    (or slow engines look fast); a compile that ended counts with its time, even if the replay
    after it timed out or died; a compile that failed or died does not count."""
    if row["bucket"] == "timeout" and row.get("phase") != "replay":
        return timeout_s
    if row.get("cold_compile_s") is not None and (row.get("compile_status") == "ok" or row.get("phase") == "replay"):
        return row["cold_compile_s"]
    return None


def _add_counts(acc: dict[str, int], row: dict[str, Any]) -> None:
    for key, _ in COUNTS:
        n = row.get(key) or 0
        acc[f"inst_{key}"] = acc.get(f"inst_{key}", 0) + n
        acc[f"schemas_{key}"] = acc.get(f"schemas_{key}", 0) + (1 if n else 0)


def engine_summary(rows: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    buckets = {b: 0 for b in BUCKETS}
    counts: dict[str, int] = {}
    masks: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    warm_notes: Counter[str] = Counter()
    policies: Counter[str] = Counter()
    errors: list[str] = []
    for r in rows:
        buckets[r["bucket"]] = buckets.get(r["bucket"], 0) + 1
        _add_counts(counts, r)
        masks.extend(r.get("mask_us") or [])
        c = _cold_compile(r, timeout_s)
        if c is not None:
            cold.append(c)
        if r.get("warm_compile_s") is not None:
            warm.append(r["warm_compile_s"])
        elif r.get("compile_status") == "ok" and r.get("status") == "done":
            warm_notes[r.get("warm_note") or "not measured"] += 1
        if r.get("policy"):
            policies[r["policy"]] += r.get("policy_rejected") or 0
        if r["bucket"] == "engine_error" and len(errors) < 5:
            first = (str(r.get("error") or "").splitlines() or [""])[0]
            errors.append(f"{r['task_id']}: {first}"[:300])
    return {"schemas": len(rows), "buckets": buckets, "counts": counts, "policies": dict(policies),
            "mask": mask_stats(masks), "compile_cold_us": compile_stats(cold), "compile_warm_us": compile_stats(warm),
            "warm_missing": dict(warm_notes), "engine_errors": errors}


def per_group(rows: list[dict[str, Any]], key: str = "group") -> dict[str, dict[str, int]]:
    """Buckets per group, with the instance counts (and schemas having any) beside them."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {b: 0 for b in BUCKETS})
    for r in rows:
        out[r[key]][r["bucket"]] = out[r[key]].get(r["bucket"], 0) + 1
        _add_counts(out[r[key]], r)
    return dict(out)


def differential(rows_by_engine: dict[str, list[dict[str, Any]]], max_examples: int = 5) -> list[dict[str, Any]]:
    """Where two engines' masks differ at the same step of the same instance.

    One entry per engine pair (a, b in name order); its examples are the first differing step of
    the first instances that differ, one per schema (at most max_examples), with both digests there."""
    digests: dict[str, dict[tuple[str, int], list[str]]] = {}
    contexts: dict[tuple[str, int], list[str]] = {}
    for engine, rows in rows_by_engine.items():
        d: dict[tuple[str, int], list[str]] = {}
        for r in rows:
            for inst in r.get("instances") or []:
                if inst.get("digests"):
                    d[r["task_id"], inst["example"]] = inst["digests"]
            for ex, texts in (r.get("token_texts") or {}).items():
                contexts[r["task_id"], int(ex)] = texts
        digests[engine] = d
    out = []
    for a, b in combinations(sorted(digests), 2):
        common = set(digests[a]) & set(digests[b])
        steps = differ_steps = differ_instances = 0
        examples = []
        shown: set[str] = set()
        for key in sorted(common):
            da, db = digests[a][key], digests[b][key]
            n = min(len(da), len(db))
            steps += n
            diffs = [i for i in range(n) if da[i] != db[i]]
            if diffs:
                differ_instances += 1
                differ_steps += len(diffs)
                if len(examples) < max_examples and key[0] not in shown:
                    shown.add(key[0])
                    texts = contexts.get(key, [])
                    i = diffs[0]
                    examples.append({"task": key[0], "example": key[1], "step": i,
                                     "before": "".join(texts[max(0, i - 6):i]),
                                     "next": texts[i] if i < len(texts) else "<EOS>",
                                     "a_digest": da[i], "b_digest": db[i]})
        out.append({"engines": f"{a} vs {b}", "a": a, "b": b, "instances": len(common), "steps": steps,
                    "instances_differing": differ_instances, "steps_differing": differ_steps, "examples": examples})
    return out


def token_text(token_bytes: Sequence[bytes], eos_id: int, token: int) -> str:
    """A token's text as the replay shows it: "<EOS>" for the stop, undecodable bytes as \\xNN."""
    return "<EOS>" if token == eos_id else token_bytes[token].decode("utf-8", "backslashreplace")


def mask_difference(mask_a: bytes, mask_b: bytes, token_bytes: Sequence[bytes], eos_id: int,
                    limit: int = 8, lengths: np.ndarray | None = None) -> dict[str, Any]:
    """Tokens one packed mask allows and the other refuses, both ways.

    a_only / b_only: {"count": n, "tokens": [[id, text], ...]} with at most `limit` tokens, chosen
    deterministically: EOS first, then the shortest tokens (in bytes), lowest id first.
    a_allowed / b_allowed: how many tokens each mask allows. `lengths` (every token's byte
    length) may be given to save recomputing it for every example.
    """
    n = len(token_bytes)
    bits = []
    for mask in (mask_a, mask_b):
        raw = np.frombuffer(mask, dtype=np.uint8)
        if raw.size * 8 < n:
            raw = np.concatenate([raw, np.zeros((n + 7) // 8 - raw.size, dtype=np.uint8)])
        bits.append(np.unpackbits(raw, bitorder="little")[:n].astype(bool))
    a, b = bits
    if lengths is None:
        lengths = np.fromiter((len(t) for t in token_bytes), dtype=np.int64, count=n)
    out: dict[str, Any] = {"a_allowed": int(a.sum()), "b_allowed": int(b.sum())}
    for side, only in (("a_only", a & ~b), ("b_only", b & ~a)):
        ids = np.flatnonzero(only)
        order = np.lexsort((ids, lengths[ids], ids != eos_id))[:limit]  # last key is the primary one
        out[side] = {"count": int(ids.size),
                     "tokens": [[int(t), token_text(token_bytes, eos_id, int(t))] for t in ids[order]]}
    return out


def fmt_us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _count_cells(c: dict[str, int]) -> str:
    return " | ".join(f"{c.get(f'inst_{k}', 0)} ({c.get(f'schemas_{k}', 0)})" for k, _ in COUNTS)


_COUNT_HEAD = " | ".join(f"{label}: inst. (schemas)" for _, label in COUNTS)


def _buckets_md(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Buckets per engine (schemas) and instance counts", "",
             "One bucket per schema, the first that applies: " + ", ".join(BUCKET_PRECEDENCE) + ". "
             "The counts beside them are kept "
             "apart whatever the bucket: valid instances refused (engine bugs), invalid instances accepted, "
             "valid instances refused only for the engine's declared policy.", "",
             "| engine | schemas | " + " | ".join(BUCKETS) + " | " + _COUNT_HEAD + " |",
             "|---|---:|" + "---:|" * (len(BUCKETS) + len(COUNTS))]
    for e, s in summary.items():
        b = s["buckets"]
        lines.append(f"| {e} | {s['schemas']} | " + " | ".join(str(b.get(x, 0)) for x in BUCKETS) +
                     f" | {_count_cells(s.get('counts', {}))} |")
    for e, s in summary.items():
        if s.get("policies"):
            lines.append(f"- {e}: policy refusals " + ", ".join(f"`{p}` {n}" for p, n in sorted(s["policies"].items())))
        for err in s.get("engine_errors") or []:
            lines.append(f"- {e}: engine_error {err}")
    return lines


def _mask_md(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Mask time per token, µs (pooled over all tokens)", "",
             "| engine | tokens | mean | p25 | p50 | p75 | p90 | p95 | p99 | p99.9 | max | >1 ms | >10 ms |",
             "|---|---:|" + "---:|" * 11]
    for e, s in summary.items():
        m = s["mask"]
        if not m.get("tokens"):
            lines.append(f"| {e} | 0 |" + " – |" * 11)
            continue
        cells = [fmt_us(m[k]) for k in ["mean", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9", "max"]]
        lines.append(f"| {e} | {m['tokens']:,} | " + " | ".join(cells) +
                     f" | {100 * m['over_1ms']:.2f}% | {100 * m['over_10ms']:.3f}% |")
    return lines


def _compile_md(summary: dict[str, dict[str, Any]]) -> list[str]:
    keys = ["mean", "p50", "p75", "p90", "p95", "p99", "max"]
    lines = ["", "## Compile time per schema, µs", "",
             "cold: every compiled schema, compile timeouts at the cap (a replay that timed out after its "
             "compile counts with its compile time); warm: the same schema again through the engine's own "
             "compile cache, timed after the verdict; n/a where the engine has no compile cache.", "",
             "| engine | kind | schemas | mean | p50 | p75 | p90 | p95 | p99 | max |", "|---|---|" + "---:|" * 8]
    for e, s in summary.items():
        for kind in ("cold", "warm"):
            c = s[f"compile_{kind}_us"]
            if c:
                lines.append(f"| {e} | {kind} | {c.get('n', '')} | " + " | ".join(fmt_us(c.get(k)) for k in keys) + " |")
        for note, n in sorted((s.get("warm_missing") or {}).items()):
            lines.append(f"| {e} | warm | {n} | {note} |" + " |" * 6)
    return lines


def _groups_md(engines: list[str], groups: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    all_groups = sorted({g for e in groups for g in groups[e]})
    lines = ["", "## Pass per group (passing schemas / schemas; vr, ia: valid instances rejected, "
             "invalid instances accepted, when any)", "",
             "| group | " + " | ".join(engines) + " |", "|---|" + "---:|" * len(engines)]
    for g in all_groups:
        cells = []
        for e in engines:
            b = groups.get(e, {}).get(g)
            vr, ia = (b.get("inst_valid_rejected", 0), b.get("inst_invalid_accepted", 0)) if b else (0, 0)
            extra = f" (vr {vr}, ia {ia})" if vr or ia else ""
            cells.append(f"{b['pass']}/{sum(b[x] for x in BUCKETS)}{extra}" if b else "–")
        lines.append(f"| {cell(g)} | " + " | ".join(cells) + " |")
    lines += ["", "## Buckets per group", "", "| group | engine | " + " | ".join(BUCKETS) + " | " + _COUNT_HEAD + " |",
              "|---|---|" + "---:|" * (len(BUCKETS) + len(COUNTS))]
    for g in all_groups:
        for e in engines:
            b = groups.get(e, {}).get(g)
            if b:
                lines.append(f"| {cell(g)} | {e} | " + " | ".join(str(b.get(x, 0)) for x in BUCKETS) +
                             f" | {_count_cells(b)} |")
    return lines


def _code(text: Any) -> str:
    """Untrusted text as a markdown code span: its repr, with backticks escaped as \\x60."""
    return "`" + repr(text).replace("`", "\\x60") + "`"


def _side_md(engine: str, other: str, side: dict[str, Any]) -> str:
    line = f"{engine} allows {side['count']} that {other} refuses"
    if side["tokens"]:
        line += ": " + ", ".join(f"{_code(text)} ({tid})" for tid, text in side["tokens"])
        if side["count"] > len(side["tokens"]):
            line += f", … {side['count'] - len(side['tokens'])} more"
    return line


def _diff_md(diff: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Differential oracle (mask digests compared step by step)", "",
             "| engines | instances | steps | instances differing | steps differing |", "|---|---:|---:|---:|---:|"]
    for d in diff:
        lines.append(f"| {d['engines']} | {d['instances']} | {d['steps']} | {d['instances_differing']} | {d['steps_differing']} |")
    if any(d["examples"] for d in diff):
        lines += ["", "First differing step of the first instances that differ; under each, the tokens one engine "
                  "allows there and the other refuses (token text as a Python repr, then its id).", ""]
    for d in diff:
        a, b = d.get("a"), d.get("b")
        for ex in d["examples"]:
            lines.append(f"- {d['engines']}: {ex['task']} instance {ex['example']} step {ex['step']}: "
                         f"after {_code(ex['before'])} next {_code(ex['next'])}")
            if ex.get("detail_error"):
                lines.append(f"  - masks not compared: {_code(ex['detail_error'])}")
            elif "a_only" in ex:
                lines.append(f"  - {_side_md(a, b, ex['a_only'])}; {_side_md(b, a, ex['b_only'])}")
            if ex.get("detail_note"):
                lines.append(f"  - note: {_code(ex['detail_note'])}")
    return lines


def markdown(summary: dict[str, dict[str, Any]], groups: dict[str, dict[str, dict[str, int]]],
             diff: list[dict[str, Any]], init_s: dict[str, list[float]]) -> str:
    engines = list(summary)
    lines = _buckets_md(summary) + _mask_md(summary) + _compile_md(summary)
    lines += ["", "## One-time tokenizer preprocessing per engine worker, s", "",
              "| engine | workers started | mean s | max s |", "|---|---:|---:|---:|"]
    for e in engines:
        t = init_s.get(e) or []
        if t:
            lines.append(f"| {e} | {len(t)} | {np.mean(t):.2f} | {np.max(t):.2f} |")
    if groups:
        lines += _groups_md(engines, groups)
    if diff:
        lines += _diff_md(diff)
    return "\n".join(lines) + "\n"
