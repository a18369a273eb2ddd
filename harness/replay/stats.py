"""Replay statistics in MaskBench's conventions (ANCHORS.md §2.4, §5).

Mask times are pooled over every token of every schema of an engine (token-weighted);
compile percentiles are over schemas with timeouts counted at the cap; buckets are counted
per schema. The differential oracle compares mask digests step by step between engines.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any, Iterable

import numpy as np

BUCKETS = ["pass", "compile_error", "unsupported", "timeout", "crash", "oom", "valid_rejected", "invalid_accepted"]
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
    out = {"mean": float(a.mean())}
    for p, v in zip(COMPILE_PCTS, np.percentile(a, COMPILE_PCTS)):
        out[f"p{p}"] = float(v)
    out["max"] = float(a.max())
    return out


def engine_summary(rows: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    buckets = {b: 0 for b in BUCKETS}
    masks: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    for r in rows:
        buckets[r["bucket"]] = buckets.get(r["bucket"], 0) + 1
        masks.extend(r.get("mask_us") or [])
        if r["bucket"] == "timeout":
            cold.append(timeout_s)  # counted at the cap, or slow engines look fast
        elif r.get("cold_compile_s") is not None and r.get("compile_status") == "ok":
            cold.append(r["cold_compile_s"])
            if r.get("warm_compile_s") is not None:
                warm.append(r["warm_compile_s"])
    return {"schemas": len(rows), "buckets": buckets, "mask": mask_stats(masks),
            "compile_cold_us": compile_stats(cold), "compile_warm_us": compile_stats(warm)}


def per_group(rows: list[dict[str, Any]], key: str = "group") -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {b: 0 for b in BUCKETS})
    for r in rows:
        out[r[key]][r["bucket"]] += 1
    return dict(out)


def differential(rows_by_engine: dict[str, list[dict[str, Any]]], max_examples: int = 5) -> list[dict[str, Any]]:
    """Where two engines' masks differ at the same step of the same instance."""
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
        for key in sorted(common):
            da, db = digests[a][key], digests[b][key]
            n = min(len(da), len(db))
            steps += n
            diffs = [i for i in range(n) if da[i] != db[i]]
            if diffs:
                differ_instances += 1
                differ_steps += len(diffs)
                if len(examples) < max_examples:
                    texts = contexts.get(key, [])
                    i = diffs[0]
                    examples.append({"task": key[0], "example": key[1], "step": i,
                                     "before": "".join(texts[max(0, i - 6):i]), "next": texts[i] if i < len(texts) else "<EOS>"})
        out.append({"engines": f"{a} vs {b}", "instances": len(common), "steps": steps,
                    "instances_differing": differ_instances, "steps_differing": differ_steps, "examples": examples})
    return out


def fmt_us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def markdown(summary: dict[str, dict[str, Any]], groups: dict[str, dict[str, dict[str, int]]],
             diff: list[dict[str, Any]], init_s: dict[str, list[float]]) -> str:
    engines = list(summary)
    lines = ["## Buckets per engine (schemas)", "", "| engine | schemas | " + " | ".join(BUCKETS) + " |",
             "|---|---:|" + "---:|" * len(BUCKETS)]
    for e in engines:
        b = summary[e]["buckets"]
        lines.append(f"| {e} | {summary[e]['schemas']} | " + " | ".join(str(b.get(x, 0)) for x in BUCKETS) + " |")
    lines += ["", "## Mask time per token, µs (pooled over all tokens)", "",
              "| engine | tokens | mean | p25 | p50 | p75 | p90 | p95 | p99 | p99.9 | max | >1 ms | >10 ms |",
              "|---|---:|" + "---:|" * 11]
    for e in engines:
        m = summary[e]["mask"]
        if not m.get("tokens"):
            lines.append(f"| {e} | 0 |" + " – |" * 11)
            continue
        cells = [fmt_us(m[k]) for k in ["mean", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9", "max"]]
        lines.append(f"| {e} | {m['tokens']:,} | " + " | ".join(cells) +
                     f" | {100 * m['over_1ms']:.2f}% | {100 * m['over_10ms']:.3f}% |")
    lines += ["", "## Compile time per schema, µs (cold: timeouts at the cap; warm: second compile)", "",
              "| engine | kind | mean | p50 | p75 | p90 | p95 | p99 | max |", "|---|---|" + "---:|" * 7]
    for e in engines:
        for kind in ("cold", "warm"):
            c = summary[e][f"compile_{kind}_us"]
            if c:
                lines.append(f"| {e} | {kind} | " + " | ".join(fmt_us(c.get(k)) for k in
                                                               ["mean", "p50", "p75", "p90", "p95", "p99", "max"]) + " |")
    lines += ["", "## One-time tokenizer preprocessing per engine worker, s", "",
              "| engine | workers started | mean s | max s |", "|---|---:|---:|---:|"]
    for e in engines:
        t = init_s.get(e) or []
        if t:
            lines.append(f"| {e} | {len(t)} | {np.mean(t):.2f} | {np.max(t):.2f} |")
    if groups:
        all_groups = sorted({g for e in groups for g in groups[e]})
        lines += ["", "## Pass per group (passing schemas / schemas)", "",
                  "| group | " + " | ".join(engines) + " |", "|---|" + "---:|" * len(engines)]
        for g in all_groups:
            cells = []
            for e in engines:
                b = groups[e].get(g)
                cells.append(f"{b['pass']}/{sum(b.values())}" if b else "–")
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines += ["", "## Buckets per group", "", "| group | engine | " + " | ".join(BUCKETS) + " |",
                  "|---|---|" + "---:|" * len(BUCKETS)]
        for g in sorted({g for e in groups for g in groups[e]}):
            for e in engines:
                b = groups[e].get(g)
                if b:
                    lines.append(f"| {g} | {e} | " + " | ".join(str(b[x]) for x in BUCKETS) + " |")
    if diff:
        lines += ["", "## Differential oracle (mask digests compared step by step)", "",
                  "| engines | instances | steps | instances differing | steps differing |", "|---|---:|---:|---:|---:|"]
        for d in diff:
            lines.append(f"| {d['engines']} | {d['instances']} | {d['steps']} | {d['instances_differing']} | {d['steps_differing']} |")
        for d in diff:
            for ex in d["examples"]:
                lines.append(f"- {d['engines']}: {ex['task']} instance {ex['example']} step {ex['step']}: "
                             f"after `{ex['before']!r}` next `{ex['next']!r}`")
    return "\n".join(lines) + "\n"
