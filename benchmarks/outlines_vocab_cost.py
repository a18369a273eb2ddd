"""What the vocabulary costs outlines-core's index: one schema's `outlines_core.Index` built over
(1) cdbench's outlines engine vocabulary (every token's exact bytes), (2) the same without the
token byte strings that are not valid UTF-8 (byte-fallback tokens, pieces of multi-byte
characters), and (3) the `outlines` library's own vocabulary for the same Llama (decoded strings,
U+FFFD for partial bytes, one id per distinct string). Explains why the library's Generator builds
faster than the engine compiles (docs/frontends.md, the differential).

    .venv/bin/python benchmarks/outlines_vocab_cost.py [--task hotel_reservation] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vocabularies(lm):
    """name -> (outlines_core.Vocabulary, entries, token ids covered)."""
    import outlines
    import outlines_core
    from outlines.backends.outlines_core import OutlinesCoreBackend

    from harness.engines.outlines_engine import byte_vocabulary
    from harness.frontends.local import llama_of

    tok = lm.tokenizer
    by_bytes = byte_vocabulary(tok)
    utf8 = {b: ids for b, ids in by_bytes.items() if _is_utf8(b)}
    lib = outlines.from_llamacpp(llama_of(lm)).tokenizer
    lib_vocab = OutlinesCoreBackend.create_outlines_core_vocabulary(
        lib.vocabulary, lib.eos_token_id, lib.eos_token, lib.convert_token_to_string)
    return {
        "engine (exact bytes)": (outlines_core.Vocabulary(tok.eos_id, by_bytes), len(by_bytes),
                                 sum(map(len, by_bytes.values()))),
        "engine without non-UTF-8 tokens": (outlines_core.Vocabulary(tok.eos_id, utf8), len(utf8),
                                            sum(map(len, utf8.values()))),
        "outlines library": (lib_vocab, len(lib_vocab), len(set(lib.vocabulary.values()))),
    }


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="hotel_reservation", help="a built-in task id")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    from harness.config import RunConfig
    from harness.environment import package_version
    from harness.runner import load_lm
    from harness.tasks.loaders import load_tasks

    task = next((t for t in load_tasks("builtin") if t.id.split("/")[-1] == args.task), None)
    if task is None:
        print(f"no built-in task {args.task!r}", file=sys.stderr)
        return 2
    lm = load_lm(RunConfig(lm_threads=1))
    regex = build_regex_from_schema(task.schema_text, "")
    print(f"task {task.id!r}, outlines-core {package_version('outlines-core')}, outlines {package_version('outlines')}")
    print("| vocabulary | entries | token ids | Index build s (each repeat) |\n|---|---:|---:|---|")
    for name, (vocab, entries, ids) in vocabularies(lm).items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            outlines_core.Index(regex, vocab)
            times.append(time.perf_counter() - t0)
        print(f"| {name} | {entries:,} | {ids:,} | {', '.join(f'{s:.2f}' for s in times)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
