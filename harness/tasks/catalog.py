"""`cdbench tasks list`: every task source this installation can read, with its counts."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .loaders import BUILTIN_DIR, iter_jsonl, load_builtin


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


Row = tuple[str, str, int, str]


def catalog(data_dir: Path) -> list[Row]:
    """Rows of (source, part, tasks, note); a missing source is a row that says so."""
    return _shipped_rows() + _data_rows(data_dir)


def _shipped_rows() -> list[Row]:
    """What the repository itself holds: the built-in suite, the grammars, the generated adversarial
    cases and the quality samples."""
    rows: list[Row] = []
    builtin = load_builtin(BUILTIN_DIR)
    n_examples = sum(len(t.examples) for t in builtin)
    rows.append(("builtin", "json_schema", len(builtin), f"{n_examples} labelled instances"))
    from .grammars import GRAMMARS_DIR, load_grammars

    try:
        cfg_tasks = load_grammars(GRAMMARS_DIR)
    except ConfigError as exc:
        rows.append(("cfg", "-", 0, str(exc)))
    else:
        for t in cfg_tasks:
            pos = sum(1 for e in t.examples if e.valid)
            rows.append(("cfg", t.id, 1, f"{pos} positive / {len(t.examples) - pos} negative; formats {','.join(sorted(t.grammars))}"))
        rows.append(("cfg", "TOTAL", len(cfg_tasks), f"{sum(len(t.examples) for t in cfg_tasks)} example strings"))
    from .adversarial import load_adversarial

    adversarial = load_adversarial()
    families = {t.source for t in adversarial}
    rows.append(("adversarial", "replay only", len(adversarial),
                 f"{len(families)} families, {sum(len(t.examples) for t in adversarial)} labelled instances "
                 "(generated: harness/tasks/adversarial.py)"))
    from .loaders import DATASETS

    for name in sorted(n for n in DATASETS.names() if n.startswith("quality-")):
        tasks = DATASETS.get(name)(subset="sample")
        rows.append((name, "sample", len(tasks), "shipped sample (datasets/quality/; --subset full: the HF hub "
                                                 "cache); scored for correctness (docs/quality.md)"))
    return rows


def _data_rows(data_dir: Path) -> list[Row]:
    """What the data directory holds: JSONSchemaBench, MaskBench, the JSON Schema Test Suite."""
    rows: list[Row] = []
    jsb = data_dir / "jsonschemabench" / "schemas"
    if jsb.is_dir():
        total = 0
        for path in sorted(jsb.glob("*.jsonl")):
            n = _count_lines(path)
            total += n
            rows.append(("jsonschemabench", path.stem, n, ""))
        rows.append(("jsonschemabench", "TOTAL", total, str(jsb)))
    else:
        rows.append(("jsonschemabench", "-", 0, f"not found: {jsb}"))
    mb = data_dir / "jsonschemabench" / "maskbench"
    if mb.is_dir():
        total = instances = 0
        for path in sorted(mb.glob("*.jsonl")):
            n = 0
            for _, row in iter_jsonl(path):
                n += 1
                instances += len(row.get("tests") or []) if isinstance(row, dict) else 0
            total += n
            rows.append(("maskbench", path.stem, n, ""))
        rows.append(("maskbench", "TOTAL", total, f"{instances} labelled instances"))
    else:
        rows.append(("maskbench", "-", 0, f"not found: {mb}"))
    suite = data_dir / "json-schema-test-suite"
    if suite.is_dir():
        from .jsts import list_drafts, load_test_suite

        for draft in list_drafts(suite):
            try:
                groups = load_test_suite(suite, draft)
            except ConfigError as exc:
                rows.append(("json-schema-test-suite", draft, 0, str(exc)))
                continue
            tests = sum(len(t.examples) for t in groups)
            rows.append(("json-schema-test-suite", draft, len(groups), f"{tests} tests"))
    else:
        rows.append(("json-schema-test-suite", "-", 0, f"not found: {suite}"))
    return rows


def format_catalog(rows: list[tuple[str, str, int, str]]) -> str:
    width = max(len(f"{s} {p}") for s, p, _, _ in rows)
    return "\n".join(f"{(s + ' ' + p).ljust(width)}  {n:>6}  {note}".rstrip() for s, p, n, note in rows)


def support_matrix(engine_names: list[str]) -> str:
    """Which engine takes which task kind, and which grammar tasks it can run (by format)."""
    from ..engines import ENGINES
    from .grammars import GRAMMARS_DIR, load_grammars

    try:
        grammar_tasks = load_grammars(GRAMMARS_DIR)
    except ConfigError:
        grammar_tasks = []
    header = ["task"] + engine_names
    rows = [["json_schema (any JSON Schema)"]]
    classes = {}
    for name in engine_names:
        try:
            classes[name] = ENGINES.get(name)
        except ConfigError:
            classes[name] = None
    for name in engine_names:
        cls = classes[name]
        rows[0].append("not installed" if cls is None else ("yes" if "json_schema" in cls.kinds else "no"))
    for task in grammar_tasks:
        row = [f"cfg: {task.id}"]
        for name in engine_names:
            cls = classes[name]
            if cls is None:
                row.append("not installed")
            elif "cfg" not in cls.kinds or cls.grammar_format not in task.grammars:
                row.append(f"unsupported (no {cls.grammar_format})")
            else:
                row.append(f"yes ({cls.grammar_format})")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
