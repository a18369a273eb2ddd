"""Token masking versus AWRS on the real model: constraint evaluations, time split, compliance.

Both samplers run single-sequence at temperature 1 over the same tasks and the same seeds, for
every engine: built-in JSON-schema tasks and CFG tasks, through the ordinary runner (so the rows
are the same rows `cdbench run` writes, kept under reports/<run-id>-json and -cfg).

Per engine and sampler it prints, per step (one step = one LM call = one token or the stop):
  evals/step      constraint evaluations (ALGORITHMS.md 3.6): |V| for masking (EOS is inside V),
                  every single-token check for AWRS (both passes; repeats of x counted)
  x fewer         masking's evaluations per step divided by this sampler's (target >= 1000)
  wall, LM, engine, sampler  ms per step (engine = mask or check + advance; sampler = the
                  sampler's own time: softmax, draws, bookkeeping), each also as AWRS vs masking;
                  so is wall - LM (engine + sampler): the two methods sample different tokens,
                  so their LM time per step differs by a few % from the sequences alone
  compliance      valid outputs among those that ended by the model's stop token (target 100 %),
                  and among all cases (truncation at max_tokens counts as invalid)

Run on an otherwise idle machine:

    .venv/bin/python benchmarks/awrs_vs_masking.py [--json-tasks 20] [--cfg-tasks 5] [--seeds 0,1] \
        [--mask-after never,32]

`--mask-after` runs AWRS once per setting of the sampler's mask_after (a step that has made N
single-token checks finishes from the engine's full mask: same law, masks/step counts them, and
each counts |V| evaluations); its rows are labelled `awrs mask_after=N`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import RunConfig  # noqa: E402
from harness.lm.default_model import default_model_path  # noqa: E402
from harness.lm.llamacpp import LlamaCppLM  # noqa: E402
from harness.runner import run  # noqa: E402

CFG_TASKS = ["arithmetic", "json_generic", "sql_select", "smiles", "regex_date"]


def method_label(row: pd.Series) -> str:
    """masking, awrs, or awrs mask_after=N (the sampler's setting, from the row)."""
    after = json.loads(row["sampler_settings"]).get("mask_after", "never")
    return row["sampler"] if row["sampler"] != "awrs" or after == "never" else f"awrs mask_after={after}"


def per_step_table(df: pd.DataFrame, vocab: int) -> pd.DataFrame:
    out = []
    df = df.assign(sampler=df.apply(method_label, axis=1))
    ran = df[df["compile_status"] == "ok"]
    for (engine, sampler), g in ran.groupby(["engine", "sampler"], sort=False):
        steps = g["forward_passes"].sum()
        eos = g[g["finish_reason"] == "eos"]
        out.append({
            "engine": engine, "sampler": sampler, "cases": len(df[(df.engine == engine) & (df.sampler == sampler)]),
            "ran": len(g), "steps": int(steps),
            "evals/step": g["constraint_evals"].sum() / steps,
            "masks/step": g["mask_times_us"].map(len).sum() / steps,
            "wall ms": 1e3 * g["gen_s"].sum() / steps, "LM ms": 1e3 * g["lm_s"].sum() / steps,
            "engine ms": 1e3 * g["engine_s"].sum() / steps, "sampler ms": 1e3 * g["sampler_s"].sum() / steps,
            "eos": len(eos), "max_tokens": int((g["finish_reason"] == "max_tokens").sum()),
            "dead/err/timeout": int(g["finish_reason"].isin(["dead_end", "error", "timeout"]).sum()),
            "valid|eos": eos["valid"].mean() if len(eos) else float("nan"),
            "valid": g["valid"].mean(),
        })
    t = pd.DataFrame(out)
    if t.empty:
        return t
    t["x fewer"] = vocab / t["evals/step"]
    return t


def show(title: str, t: pd.DataFrame) -> None:
    print(f"\n## {title}\n")
    if t.empty:
        print("(no case ran)")
        return
    cols = ["engine", "sampler", "ran", "steps", "evals/step", "masks/step", "x fewer", "wall ms", "LM ms", "engine ms",
            "sampler ms", "eos", "max_tokens", "dead/err/timeout", "valid|eos", "valid"]
    fmt = {"evals/step": "{:.1f}", "masks/step": "{:.3f}", "x fewer": "{:.0f}", "wall ms": "{:.2f}", "LM ms": "{:.2f}",
           "engine ms": "{:.3f}", "sampler ms": "{:.3f}", "valid|eos": "{:.3f}", "valid": "{:.3f}"}
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for _, r in t.iterrows():
        print("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    t = t.assign(**{"wall - LM ms": t["engine ms"] + t["sampler ms"]})
    for col in ("engine ms", "wall ms", "wall - LM ms", "sampler ms"):
        print(f"\n{col}/step, AWRS vs masking:")
        for engine, g in t.groupby("engine", sort=False):
            m = g[g.sampler == "masking"][col]
            for label, a in g[g.sampler.str.startswith("awrs")].groupby("sampler", sort=False)[col]:
                if len(m):
                    verdict = "at or below" if a.iloc[0] <= m.iloc[0] else "ABOVE"
                    print(f"  {engine:11s} {label:24s} {a.iloc[0]:.3f} vs {m.iloc[0]:.3f}  "
                          f"({m.iloc[0] / a.iloc[0]:.2f}x, {verdict})")


def run_settings(lm: LlamaCppLM, prefix: str, part: str, settings: list[str], common: dict, progress,
                 **task_args) -> list[Path]:
    """One run per mask_after setting: masking and AWRS in the first, AWRS alone in the others."""
    dirs = []
    for i, after in enumerate(settings):
        samplers = ["masking", "awrs"] if i == 0 else ["awrs"]
        extra = {} if after == "never" else {"sampler_args": {"mask_after": int(after)}}
        suffix = "" if after == "never" else f"-m{after}"
        dirs.append(run(RunConfig(run_id=f"{prefix}-{part}{suffix}", **{**common, "samplers": samplers},
                                  **task_args, **extra), lm, progress))
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-tasks", type=int, default=20)
    ap.add_argument("--cfg-tasks", type=int, default=5)
    ap.add_argument("--engines", default="xgrammar,llguidance,outlines,llamacpp")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--compile-timeout", type=float, default=5.0)
    ap.add_argument("--run-id", default=None, help="prefix of the two run directories under reports/")
    ap.add_argument("--model", default=None)
    ap.add_argument("--mask-after", default="never",
                    help="comma-separated AWRS settings of mask_after (never, or N checks before a step finishes "
                         "from the engine's mask); masking runs once, AWRS once per setting")
    ap.add_argument("--json-run", nargs="*", default=None,
                    help="report these finished run directories instead of running the JSON part")
    ap.add_argument("--cfg-run", nargs="*", default=None,
                    help="report these finished run directories instead of running the CFG part")
    args = ap.parse_args()
    lm = LlamaCppLM(args.model or str(default_model_path()))
    prefix = args.run_id or time.strftime("awrs-vs-masking-%Y%m%d-%H%M%S")
    common = dict(engines=args.engines.split(","), samplers=["masking", "awrs"],
                  seeds=[int(s) for s in args.seeds.split(",")], temperature=1.0, max_tokens=args.max_tokens,
                  compile_timeout_s=args.compile_timeout, progress=False)
    print(f"model {lm.name} ({lm.tokenizer.vocab_size} tokens, stops {sorted(lm.tokenizer.stops)}), "
          f"{lm.n_threads} LM threads, seeds {common['seeds']}, max_tokens {args.max_tokens}, temperature 1")

    def progress(done: int, total: int, row: dict) -> None:
        print(f"  [{done}/{total}] {row['task_id']} {row['engine']} {row['sampler']} seed {row['seed']}: "
              f"{row['compile_status']} {row['finish_reason']} valid={row['valid']} evals={row['constraint_evals']}",
              file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    settings = args.mask_after.split(",")
    json_dirs = [Path(d) for d in args.json_run] if args.json_run else \
        run_settings(lm, prefix, "json", settings, common, progress, dataset="builtin", limit=args.json_tasks)
    cfg_dirs = [Path(d) for d in args.cfg_run] if args.cfg_run else \
        run_settings(lm, prefix, "cfg", settings, common, progress, dataset="cfg", subset=CFG_TASKS[: args.cfg_tasks])
    vocab = lm.tokenizer.vocab_size
    frames = {"JSON schema (built-in)": pd.concat(pd.read_parquet(d / "results.parquet") for d in json_dirs),
              "CFG": pd.concat(pd.read_parquet(d / "results.parquet") for d in cfg_dirs)}
    for title, df in frames.items():
        show(f"{title}: {df.task_id.nunique()} tasks", per_step_table(df, vocab))
    show("all tasks", per_step_table(pd.concat(frames.values()), vocab))
    print(f"\nrows: {', '.join(map(str, json_dirs + cfg_dirs))}; wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
