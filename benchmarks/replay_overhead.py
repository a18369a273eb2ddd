"""Replay harness overhead per token against a minimal direct loop over the same engine and tokens.

The direct loop is what an engine author would write: compile, then per token fill the mask
and advance. The harness loop (harness.replay.worker.replay_job) adds per-step timing, the
mask-bit check and rejection bookkeeping. Both sides are timed from the first matcher to the
end of the last instance: compiles (and freeing compiled grammars) are outside both.
Target: at most 5 % over the direct loop.

    .venv/bin/python benchmarks/replay_overhead.py [--engine llguidance] [--group Github_easy] [--schemas 40]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import default_data_dir  # noqa: E402
from harness.engines import ENGINES  # noqa: E402
from harness.engines.base import Unsupported  # noqa: E402
from harness.engines.bitmask import new_bitmask  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import load_tokenizer_view  # noqa: E402
from harness.replay.worker import Job, replay_job  # noqa: E402
from harness.tasks.maskbench import load_maskbench  # noqa: E402


def direct(compiled, instances, eos, vocab) -> float:
    """Mask + advance for every token, no bookkeeping; returns seconds (compile excluded)."""
    bitmask = new_bitmask(vocab)
    start = time.perf_counter()
    for _, ids, _ in instances:
        m = compiled.matcher()
        for t in ids:
            m.fill_mask(bitmask)
            if not m.advance(t):
                break
        else:
            m.fill_mask(bitmask)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", default="llguidance")
    ap.add_argument("--group", default="Github_easy")
    ap.add_argument("--schemas", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tok = load_tokenizer_view(str(default_model_path()))
    view = tok.view
    engine = ENGINES.create(args.engine, view)
    tasks = load_maskbench(default_data_dir() / "jsonschemabench" / "maskbench", [args.group])[: args.schemas]
    work = []
    for task in tasks:
        try:
            engine.compile(task)
        except (Unsupported, Exception):
            continue
        insts = [(i, tok.encode(task.example_text(e)), e.valid) for i, e in enumerate(task.examples)]
        work.append((task, insts))
    # Both sides get a freshly compiled grammar per schema (engines cache per grammar: a reused
    # one would make later masks cheaper); compiles are excluded from both times.
    best_direct = best_harness = float("inf")
    tokens = 0
    for _ in range(args.repeats):
        d = 0.0
        for task, insts in work:
            d += direct(engine.compile(task), insts, view.eos_id, view.vocab_size)
        h = 0.0
        tokens = 0
        for task, insts in work:
            out = replay_job(engine, Job(task, insts))
            h += out["loop_s"]
            tokens += len(out.get("mask_us") or [])
        best_direct, best_harness = min(best_direct, d), min(best_harness, h)
    print(f"engine {args.engine} {engine.version()}, group {args.group}, {len(work)} schemas, {tokens} masked tokens, "
          f"best of {args.repeats}")
    print(f"direct loop : {best_direct:.3f} s = {1e6 * best_direct / tokens:.1f} µs/token")
    print(f"harness loop: {best_harness:.3f} s = {1e6 * best_harness / tokens:.1f} µs/token")
    print(f"overhead    : {100 * (best_harness / best_direct - 1):+.2f}% (target <= 5%)")


if __name__ == "__main__":
    main()
