"""Print the harness's own per-token cost during real-model generation.

overhead = wall time of generation - LM time - engine time (mask + advance), per token,
reported as a share of LM time. Target: under 2 %. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/harness_overhead.py [--tasks 8] [--engines xgrammar,llguidance]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.engines import ENGINES  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402
from harness.compiling import compile_task  # noqa: E402
from harness.samplers.masking import MaskingSampler  # noqa: E402
from harness.tasks.loaders import load_builtin  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--engines", default="xgrammar,llguidance")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    lm = LlamaCppLM(args.model or str(default_model_path()))
    sampler = MaskingSampler()
    tasks = load_builtin()[: args.tasks]
    print(f"model {lm.name}, {lm.n_threads} LM threads, {len(tasks)} built-in tasks, max_tokens {args.max_tokens}")
    print(f"{'engine':12s} {'tokens':>7s} {'LM ms/tok':>10s} {'engine ms/tok':>14s} {'harness ms/tok':>15s} {'harness/LM':>11s}")
    for name in args.engines.split(","):
        engine = ENGINES.create(name, lm.tokenizer)
        toks = 0
        lm_s = eng_s = own_s = 0.0
        for task in tasks:
            comp = compile_task(engine, task, 30.0, guard=False)
            if comp.status != "ok":
                continue
            prompt = lm.encode_chat(task.prompt)
            gen = sampler.generate(lm, engine.new_matcher(comp.compiled), prompt, args.max_tokens, seed=0,
                                   deadline=time.perf_counter() + 120)
            steps = gen.forward_passes
            toks += steps
            lm_s += gen.lm_s
            eng_s += gen.engine_s
            own_s += gen.sampler_s
        if not toks:
            print(f"{name:12s} no task compiled")
            continue
        print(f"{name:12s} {toks:7d} {1e3 * lm_s / toks:10.3f} {1e3 * eng_s / toks:14.3f} "
              f"{1e3 * own_s / toks:15.4f} {100 * own_s / lm_s:10.2f}%")


if __name__ == "__main__":
    main()
