"""Print LM throughput of the installed llama.cpp build: what a portable build costs.

Runs the default model the way cdbench does (LlamaCppLM: the prompt as one batch, every later
token alone) and prints prompt tokens/s and single-token decode tokens/s, the median of
--repeats runs, with the CPU and the build's compiled-in features. Run it once in each venv
(portable and native) on an otherwise idle machine:

    .venv/bin/python benchmarks/lm_throughput.py [--prompt 128] [--decode 128] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.environment import cpu_model, cpu_simd_flags, llama_cpp_build  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402


def one_pass(lm: LlamaCppLM, prompt: list[int], decode: int) -> tuple[float, float]:
    lm._anchor = 0  # a new prompt each pass: evaluated as one batch
    lm._evaluated = []
    t0 = time.perf_counter()
    lm.logits(prompt)
    t1 = time.perf_counter()
    seq = list(prompt)
    for _ in range(decode):
        seq.append(int(np.argmax(lm.logits(seq))))
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), decode / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens (one batch)")
    ap.add_argument("--decode", type=int, default=128, help="tokens decoded one at a time")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="LM threads (default: all cores)")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    lm = LlamaCppLM(args.model or str(default_model_path()), n_ctx=args.prompt + args.decode + 8,
                    n_threads=args.threads)
    text = "Write a JSON object describing a book with a title, an author and a year. " * 40
    prompt = lm.encode(text)[: args.prompt]
    build = llama_cpp_build() or {}
    print(f"CPU: {cpu_model()}; SIMD flags: {' '.join(cpu_simd_flags())}")
    print(f"llama.cpp build features: {' '.join(build.get('features', []))}")
    print(f"model {lm.name}, {lm.n_threads} threads, prompt {len(prompt)} tokens, decode {args.decode} tokens")
    one_pass(lm, prompt, 8)  # warm-up: page the weights in
    runs = [one_pass(lm, prompt, args.decode) for _ in range(args.repeats)]
    pp = statistics.median(r[0] for r in runs)
    tg = statistics.median(r[1] for r in runs)
    print(f"prompt: {pp:8.1f} tokens/s   decode: {tg:7.1f} tokens/s ({1000 / tg:.2f} ms/token)   "
          f"median of {args.repeats}")


if __name__ == "__main__":
    main()
