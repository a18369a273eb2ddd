"""How a batch of n particles' tokens costs against n tokens alone, on the installed llama.cpp.

What --lm-batch can gain: n branches of one prompt (one KV sequence each, as awrs-smc uses them)
are extended a token at a time, either all in one llama_decode (LlamaCppLM.logits_many) or one
after the other (logits). Prints, per batch size n, the ms per step of each schedule, the batch's
cost in single-token decodes (1 = a batch as cheap as one token, n = no gain), and the ms of one
token alone. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/lm_batch_scaling.py [--sizes 1,2,3,5] [--steps 24] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402

PROMPT = "Write a JSON object describing a book: title, author, year and a short summary."


def branches(lm: LlamaCppLM, prompt: list[int], n: int) -> list[list[int]]:
    """n prefixes: the prompt and one of its n most likely next tokens each."""
    top = np.argsort(-lm.logits(prompt))[:n]
    return [prompt + [int(t)] for t in top]


def step_times(lm: LlamaCppLM, prompt: list[int], n: int, steps: int, batched: bool) -> list[float]:
    """Seconds per step (every branch extended by its greedy token), from a fresh cache."""
    lm.forget()
    seqs = branches(lm, prompt, n)
    lm.logits_many(seqs) if batched else [lm.logits(s) for s in seqs]  # the branches' first tokens
    out = []
    for _ in range(steps):
        seqs = [s + [int(np.argmax(lm.logits(s)))] for s in seqs]  # held: no evaluation
        t0 = time.perf_counter()
        if batched:
            lm.logits_many(seqs)
        else:
            for s in seqs:
                lm.logits(s)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,2,3,5")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| threads | n | alone ms/step | batch ms/step | batch / one token | alone / one token |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        lm = LlamaCppLM(str(default_model_path()), n_ctx=1024, n_threads=threads, n_seq=2 * max(sizes), lm_batch=True)
        prompt = lm.encode_chat([{"role": "user", "content": PROMPT}])
        one = statistics.median(step_times(lm, prompt, 1, args.steps, batched=False))
        for n in sizes:
            alone = statistics.median(step_times(lm, prompt, n, args.steps, batched=False))
            batch = statistics.median(step_times(lm, prompt, n, args.steps, batched=True))
            print(f"| {threads} | {n} | {1e3 * alone:.1f} | {1e3 * batch:.1f} | {batch / one:.2f} | {alone / one:.2f} |")


if __name__ == "__main__":
    main()
