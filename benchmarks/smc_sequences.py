"""AWRS-SMC on llama.cpp KV sequences: LM time per step before and after one sequence per particle.

Runs awrs-smc (5 particles) with xgrammar on the built-in JSON tasks, max_tokens 256, through the
ordinary runner (rows kept under reports/<run-id>-<mode>), in three modes:
  before   one KV sequence (n_seq 1): switching particles re-evaluates their differing suffixes
  after    two KV sequences per particle, every token evaluated alone (logits a function of the prefix)
  batch    as after, with --lm-batch: the live particles' next tokens in one llama_decode

Per mode it prints, per SMC step (one step = every live particle extended by one token):
  LM ms/step      LM time per step, and "x single" = that over straight single-sequence decoding's LM
                  time per token (measured on the same LM object before the run and after every case,
                  since other load on the machine varies; the mean is used)
  fwd/step        forward passes the sampler asked for (one per live particle)
  net tok/step    tokens llama.cpp evaluated after the prompts (above fwd/step = suffixes re-evaluated)
  copies/step     KV sequence copies (seq_cp of a whole stream: its cost grows with --n-ctx)
  decodes/step    llama_decode calls (prompts included)
  timeouts        cases that hit the generation time limit
and for the batch mode the deviation of batched logits from unbatched ones on the same prefixes
(max |dlogit| and the largest total-variation distance between the softmaxes), over the batched
calls of the first --deviation-calls steps, recomputed exactly on a second LM.

    .venv/bin/python benchmarks/smc_sequences.py [--limit 6] [--modes before,after,batch] [--n-ctx 1024]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import build_config  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.kv_sequences import sequences_for  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402
from harness.runner import run  # noqa: E402

MODES = {"before": (False, False), "after": (True, False), "batch": (True, True)}  # (sequences, batch)


def straight_ms(lm: LlamaCppLM, prompt: list[int], tokens: int = 32) -> float:
    """LM time per token of straight single-sequence decoding (greedy, every token alone)."""
    lm.forget()
    seq = list(prompt)
    lm.logits(seq)
    t0 = time.perf_counter()
    for _ in range(tokens):
        seq.append(int(np.argmax(lm.logits(seq))))
    dt = (time.perf_counter() - t0) / tokens
    lm.forget()
    return 1e3 * dt


class Recorder:
    """Keeps the prefixes and logits of the first `n` batched calls of an LM (for the deviation)."""

    def __init__(self, lm: LlamaCppLM, n: int) -> None:
        self.calls: list[tuple[list[list[int]], list[np.ndarray]]] = []
        inner = lm.logits_many

        def logits_many(prefixes):
            out = inner(prefixes)
            if len(self.calls) < n:
                self.calls.append(([list(p) for p in prefixes], [o.copy() for o in out]))
            return out

        lm.logits_many = logits_many  # type: ignore[method-assign]


def deviation(reference: LlamaCppLM, calls: list[tuple[list[list[int]], list[np.ndarray]]]) -> dict[str, float]:
    """Max |dlogit| and max total variation between batched logits and exact (unbatched) ones."""
    dmax, tv, n = 0.0, 0.0, 0
    for prefixes, batched in calls:
        if len(prefixes) < 2:
            continue
        for prefix, got in zip(prefixes, batched):
            exact = reference.logits(prefix)
            dmax = max(dmax, float(np.max(np.abs(exact - got))))
            p, q = softmax(exact), softmax(got)
            tv = max(tv, 0.5 * float(np.abs(p - q).sum()))
            n += 1
    return {"max_abs_dlogit": dmax, "max_tv": tv, "compared": n}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - np.max(x))
    return e / e.sum()


def run_mode(mode: str, args: argparse.Namespace, prefix: str, probe: list[int]) -> dict[str, Any]:
    sequences, batch = MODES[mode]
    n_seq = sequences_for(["awrs-smc"], args.particles) if sequences else 1
    lm = LlamaCppLM(args.model or str(default_model_path()), n_ctx=args.n_ctx, n_threads=args.lm_threads,
                    n_seq=n_seq, lm_batch=batch)
    recorder = Recorder(lm, args.deviation_calls) if batch else None
    single = [straight_ms(lm, probe)]
    counters = {k: getattr(lm, k) for k in ("forward_tokens", "prompt_tokens", "copies", "decodes")}
    cfg = build_config({}, dict(dataset="builtin", limit=args.limit, engines=["xgrammar"], samplers=["awrs-smc"],
                                particles=args.particles, seeds=[int(s) for s in args.seeds.split(",")],
                                max_tokens=args.max_tokens, n_ctx=args.n_ctx, lm_batch=batch,
                                generation_timeout_s=args.generation_timeout, run_id=f"{prefix}-{mode}",
                                progress=False))
    grew = {}

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        for k in counters:  # the LM's counters without the probes below
            grew[k] = grew.get(k, 0) + getattr(lm, k) - counters[k]
        print(f"  [{mode} {done}/{total}] {row['task_id']}: {row['finish_reason']} lm {row['lm_s']:.1f}s "
              f"steps {row.get('x_smc_steps')}", file=sys.stderr, flush=True)
        single.append(straight_ms(lm, probe, 16))  # the baseline sampled through the run: the load varies
        counters.update({k: getattr(lm, k) for k in counters})

    t0 = time.perf_counter()
    run_dir = run(cfg, lm, progress)
    wall = time.perf_counter() - t0
    net = grew.get("forward_tokens", 0) - grew.get("prompt_tokens", 0)
    df = pd.read_parquet(run_dir / "results.parquet")
    ran = df[df["compile_status"] == "ok"]
    steps = int(ran["x_smc_steps"].sum())
    out = {"mode": mode, "kv seqs": n_seq, "batch": batch, "cases": len(df), "steps": steps,
           "LM ms/step": 1e3 * ran["lm_s"].sum() / steps, "single ms/tok": statistics.mean(single),
           "fwd/step": ran["forward_passes"].sum() / steps, "net tok/step": net / steps,
           "copies/step": grew.get("copies", 0) / steps, "decodes/step": grew.get("decodes", 0) / steps,
           "timeouts": int((df["finish_reason"] == "timeout").sum()), "valid": float(df["valid"].mean()),
           "wall s": wall, "run": str(run_dir), "rows": df}
    out["x single"] = out["LM ms/step"] / out["single ms/tok"]
    if recorder is not None:
        del lm  # room for the reference model
        reference = LlamaCppLM(args.model or str(default_model_path()), n_ctx=args.n_ctx,
                               n_threads=args.lm_threads, n_seq=sequences_for(["awrs-smc"], args.particles))
        out.update(deviation(reference, recorder.calls))
    return out


def same_samples(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Whether two modes drew the same samples (outputs and final log-weights) case by case."""
    key = ["task_id", "seed"]
    m = a.merge(b, on=key, suffixes=("_a", "_b"))
    same = (m["output_text_a"] == m["output_text_b"]) & (m["x_log_weights_a"] == m["x_log_weights_b"])
    done = (m["finish_reason_a"] != "timeout") & (m["finish_reason_b"] != "timeout")
    return f"{int((same & done).sum())} of {int(done.sum())} cases that finished in both"


def show(results: list[dict[str, Any]]) -> None:
    cols = ["mode", "kv seqs", "batch", "cases", "steps", "LM ms/step", "single ms/tok", "x single", "fwd/step",
            "net tok/step", "copies/step", "decodes/step", "timeouts", "valid", "wall s"]
    fmt = {"LM ms/step": "{:.1f}", "single ms/tok": "{:.1f}", "x single": "{:.2f}", "fwd/step": "{:.2f}",
           "net tok/step": "{:.2f}", "copies/step": "{:.2f}", "decodes/step": "{:.2f}", "valid": "{:.2f}",
           "wall s": "{:.0f}"}
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    by = {r["mode"]: r for r in results}
    if "batch" in by:
        b = by["batch"]
        print(f"\nbatched vs unbatched logits on the same prefixes ({b['compared']} logit vectors): "
              f"max |dlogit| {b['max_abs_dlogit']:.3g}, max total variation {b['max_tv']:.3g}")
    for x, y in (("before", "after"), ("after", "batch")):
        if x in by and y in by:
            print(f"same samples, {x} vs {y}: {same_samples(by[x]['rows'], by[y]['rows'])}")
    print("rows: " + ", ".join(r["run"] for r in results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="before,after,batch")
    ap.add_argument("--limit", type=int, default=6, help="first N built-in JSON tasks (35 in all)")
    ap.add_argument("--particles", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context of each KV sequence")
    ap.add_argument("--lm-threads", type=int, default=None)
    ap.add_argument("--generation-timeout", type=float, default=60.0)
    ap.add_argument("--deviation-calls", type=int, default=40, help="batched calls compared with exact logits")
    ap.add_argument("--run-id", default=None, help="prefix of the run directories under reports/")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        sys.exit(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    prefix = args.run_id or time.strftime("smc-sequences-%Y%m%d-%H%M%S")
    probe_lm = LlamaCppLM(args.model or str(default_model_path()), n_ctx=256)
    probe = probe_lm.encode_chat([{"role": "user", "content": "Give a JSON object for a book: title, author, year."}])
    del probe_lm
    print(f"awrs-smc, {args.particles} particles, xgrammar, built-in JSON tasks (first {args.limit}), "
          f"max_tokens {args.max_tokens}, n_ctx {args.n_ctx} per sequence, seeds {args.seeds}, "
          f"generation limit {args.generation_timeout:.0f} s")
    show([run_mode(mode, args, prefix, probe) for mode in modes])


if __name__ == "__main__":
    main()
