"""The outlines differential: the `outlines` library (frontend) against cdbench's outlines-core
engine, task by task, from one run that has both (issue 14).

    cdbench run --dataset builtin --engines outlines --frontends outlines --compile-timeout 120 \
        --generation-timeout 600 --max-tokens 128 --run-id <id>
    .venv/bin/python benchmarks/outlines_differential.py reports/<id> [--markdown FILE]

Both are greedy over the same prompt tokens and the same whitespace pattern, so where both
compiled they should write the same text. Each task gets one verdict:
  same            identical text (the token counts are shown beside it);
  prefix          one text is a prefix of the other: the shorter side stopped early (its finish
                  reason says why: a time limit, max_tokens counted on other tokens);
  differs         the first differing character, with both sides' next characters (escaped);
  only engine / only library / neither
                  one side or both did not compile (their statuses and errors, shortened).
Task ids and texts are dataset text: shown through repr(), never raw.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.reporting.markdown import row as md_row  # noqa: E402
from harness.results.rundir import RunDir  # noqa: E402


def compiled(row: dict[str, Any] | None) -> bool:
    """The engine compiled the schema, or the library built its Generator (the same compile_status column)."""
    return row is not None and row.get("compile_status") == "ok"


def why_not(row: dict[str, Any] | None) -> str:
    if row is None:
        return "no row"
    status, error = row.get("compile_status") or "?", row.get("compile_error") or ""
    return f"{status}: {error[:90]!r}" if error else str(status)


def verdict(engine: dict[str, Any] | None, library: dict[str, Any] | None) -> tuple[str, str]:
    """(kind, detail) for one task."""
    if not compiled(engine) or not compiled(library):
        kind = ("neither" if not compiled(engine) and not compiled(library)
                else "only library" if compiled(library) else "only engine")
        return kind, f"engine {why_not(engine) if not compiled(engine) else 'ok'}; " \
                     f"library {why_not(library) if not compiled(library) else 'ok'}"
    a, b = engine.get("output_text") or "", library.get("output_text") or ""
    tokens = f"tokens {engine.get('output_tokens')} / {library.get('output_tokens')}"
    if a == b:
        return "same", tokens
    if a.startswith(b) or b.startswith(a):
        short, row = ("library", library) if len(b) < len(a) else ("engine", engine)
        return "prefix", f"{short} shorter ({min(len(a), len(b))} of {max(len(a), len(b))} chars, " \
                         f"finish {row.get('finish_reason')}); {tokens}"
    i = next(k for k in range(min(len(a), len(b))) if a[k] != b[k])
    return "differs", f"at char {i}: engine {a[i:i + 24]!r} / library {b[i:i + 24]!r}; {tokens}"


def pair_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task id -> {"engine": row, "frontend": row}, outlines rows only."""
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("engine") == "outlines":
            pairs.setdefault(r["task_id"], {})[r.get("method_kind") or "engine"] = r
    return pairs


def timing_line(name: str, rows: list[dict[str, Any]]) -> str:
    def p50(key: str) -> str:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return f"{median(vals):.3g}" if vals else "-"
    valid = sum(1 for r in rows if r.get("valid"))
    return f"| {name} | {len(rows)} | {sum(compiled(r) for r in rows)} | {valid} | {p50('compile_s')} | " \
           f"{p50('x_setup_s')} | {p50('ttft_s')} | {p50('tpot_ms')} |"


def report(run_dir: Path) -> str:
    pairs = pair_rows(RunDir.open(run_dir).rows())
    verdicts = {task: verdict(p.get("engine"), p.get("frontend")) for task, p in sorted(pairs.items())}
    lines = [f"# outlines differential: {run_dir.name}", "",
             "| side | tasks | compiled | compliant | compile p50 s | Generator p50 s | TTFT p50 s | TPOT p50 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             timing_line("outlines-core engine", [p["engine"] for p in pairs.values() if "engine" in p]),
             timing_line("outlines library", [p["frontend"] for p in pairs.values() if "frontend" in p]), "",
             "Verdicts: " + ", ".join(f"{k} {n}" for k, n in Counter(k for k, _ in verdicts.values()).most_common()),
             "", "| task | verdict | detail |", "|---|---|---|"]
    lines += [md_row([repr(task), kind, detail]) for task, (kind, detail) in verdicts.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    text = report(args.run_dir)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
