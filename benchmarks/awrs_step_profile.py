"""Where an AWRS step's own time goes, on real steps of the default model.

Records real steps first: AWRS runs over built-in JSON tasks with xgrammar, and at each step the
logits and the engine's full mask are kept (the mask only so the replay can answer checks without
the engine). Then replays every recorded step through the sampler's own code, with checks answered
from the mask (~0.1 us each, so engine time is out of the figures), and prints per step:

  tables    max, exp and block sums over the vocabulary (visiting.logit_tables), by part
  walk      both passes of the paper step (visiting order, rejections, kept mass), by the
            step's number of constraint checks
  sampler   tables + walk: the sampler's own time, as benchmarks/awrs_vs_masking.py counts it
            (there it also holds the seams' own bookkeeping)

Times are CPU time of this thread (time.thread_time), the best of --repeats passes over all steps,
so other tenants of the machine move them less. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/awrs_step_profile.py [--tasks 8] [--steps 200] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import RunConfig  # noqa: E402
from harness.engines.bitmask import from_bool, new_bitmask, to_bool  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402
from harness.runner import run  # noqa: E402
from harness.samplers import awrs, smc, step_kernels  # noqa: E402
from harness.samplers.masked_rest import StepOracle  # noqa: E402
from harness.samplers.visiting import StepTables, logit_tables  # noqa: E402


def record(lm: LlamaCppLM, tasks: int, steps: int, max_tokens: int, out: Path) -> list[tuple[np.ndarray, bytes]]:
    """(logits, allowed-mask bytes) of the first `steps` AWRS steps over `tasks` built-in tasks."""
    vocab, kept = lm.tokenizer.vocab_size, []
    step = smc.AWRSSMCSampler._step

    def recording(self, tables: StepTables, matcher, rng):
        if len(kept) < steps:
            mask = new_bitmask(vocab)
            matcher.inner.fill_mask(mask)  # the untimed engine matcher under the seam
            kept.append((np.array(tables._logits, dtype=np.float32), to_bool(mask, vocab).tobytes()))
        return step(self, tables, matcher, rng)

    smc.AWRSSMCSampler._step = recording
    try:
        run(RunConfig(dataset="builtin", limit=tasks, engines=["xgrammar"], samplers=["awrs"], seeds=[0],
                      temperature=1.0, max_tokens=max_tokens, progress=False, reports_dir=str(out),
                      run_id=time.strftime("awrs-profile-%Y%m%d-%H%M%S")), lm)
    finally:
        smc.AWRSSMCSampler._step = step
    return kept


def tables_parts(x: np.ndarray, buffers: step_kernels.ExpBuffers) -> list[float]:
    t0 = time.thread_time()
    shift = float(np.max(x))
    t1 = time.thread_time()
    step_kernels.exp_shifted(x, np.float32(shift), buffers.p)
    t2 = time.thread_time()
    step_kernels.sums_of_blocks(buffers.p, buffers.sums)
    t3 = time.thread_time()
    StepTables(buffers.p, buffers.sums, logits=x, shift=shift)
    return [t1 - t0, t2 - t1, t3 - t2, time.thread_time() - t3]


class RecordedMask:
    """The engine as recorded: checks read one entry, the full mask is a copy (engine time out)."""

    def __init__(self, allowed: np.ndarray) -> None:
        self.allowed, self.packed = allowed, from_bool(allowed)
        self.checks = self.masks = 0

    def check(self, t: int) -> bool:
        self.checks += 1
        return bool(self.allowed[t])

    def fill_mask(self, bitmask: np.ndarray) -> None:
        self.masks += 1
        bitmask[:] = self.packed


def replay(steps: list[tuple[np.ndarray, bytes]], repeats: int, mask_after: int | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per step: tables parts (s), tables (s), walk (s), tokens visited; best repeat by total time.
    With mask_after, a step finishes from the recorded mask after that many checks (masked_rest)."""
    best = None
    engines = [RecordedMask(np.frombuffer(allowed, dtype=bool)) for _, allowed in steps]
    buffers = step_kernels.ExpBuffers(len(steps[0][0]))
    for rep in range(repeats):
        parts = np.zeros((len(steps), 4))
        tables_s, walk_s, checks = np.zeros(len(steps)), np.zeros(len(steps)), np.zeros(len(steps), int)
        for i, (x, allowed) in enumerate(steps):
            parts[i] = tables_parts(x, buffers)
            rng = np.random.default_rng(1000 * rep + i)
            t0 = time.thread_time()
            tables = logit_tables(x, buffers)
            t1 = time.thread_time()
            check = allowed.__getitem__ if mask_after is None else StepOracle(engines[i], tables, rng, mask_after)
            result = awrs.paper_walk(tables, check, awrs.visitor(tables, rng))
            t2 = time.thread_time()
            tables_s[i], walk_s[i], checks[i] = t1 - t0, t2 - t1, result.evaluations
        if best is None or tables_s.sum() + walk_s.sum() < best[1].sum() + best[2].sum():
            best = (parts, tables_s, walk_s, checks)
    if mask_after is not None:
        print(f"mask_after {mask_after}: per step {sum(e.checks for e in engines) / repeats / len(steps):.1f} engine "
              f"checks and {sum(e.masks for e in engines) / repeats / len(steps):.3f} full masks")
    return best


def report(parts: np.ndarray, tables_s: np.ndarray, walk_s: np.ndarray, checks: np.ndarray) -> None:
    ms = 1e3
    print(f"\n{len(checks)} steps, {checks.mean():.1f} tokens visited per step (median {np.median(checks):.0f}, "
          f"max {checks.max()})\n")
    print("| part | ms per step |\n|---|---:|")
    for name, col in zip(["max", "exp (compiled)", "block sums (compiled)", "tables' Python"], parts.T):
        print(f"| tables: {name} | {ms * col.mean():.3f} |")
    print(f"| tables (logit_tables) | {ms * tables_s.mean():.3f} |")
    print(f"| walk: both passes | {ms * walk_s.mean():.3f} |")
    print(f"| **sampler (tables + walk)** | **{ms * (tables_s.mean() + walk_s.mean()):.3f}** |")
    print("\n| tokens visited in the step | steps | walk ms per step | us per token visited | share of all walk time |")
    print("|---|---:|---:|---:|---:|")
    for lo, hi in [(1, 2), (3, 10), (11, 100), (101, 1000), (1001, 10**9)]:
        sel = (checks >= lo) & (checks <= hi)
        if sel.any():
            label = f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"
            print(f"| {label} | {sel.sum()} | {ms * walk_s[sel].mean():.3f} | "
                  f"{1e6 * walk_s[sel].sum() / checks[sel].sum():.2f} | {walk_s[sel].sum() / walk_s.sum():.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mask-after", default="never",
                    help="comma-separated settings of the sampler's mask_after to replay (never, or N: a step "
                         "finishes from the mask after N checks)")
    ap.add_argument("--reports", default="/tmp/cdbench-awrs-profile", help="where the recording run's rows go")
    args = ap.parse_args()
    lm = LlamaCppLM(str(default_model_path()))
    steps = record(lm, args.tasks, args.steps, args.max_tokens, Path(args.reports))
    print(f"model {lm.name}, vocabulary {lm.tokenizer.vocab_size}, {len(steps)} recorded steps")
    for setting in args.mask_after.split(","):
        print(f"\n### mask_after {setting}")
        report(*replay(steps, args.repeats, None if setting == "never" else int(setting)))


if __name__ == "__main__":
    main()
