"""MaskBench's runner, measured on this machine: a stand-in written from its published behaviour.

../shared/reference/peer/ holds MaskBench's own runner measured on another machine (a Xeon), so
its wall times cannot be set beside a cdbench replay run here. This script does what that
runner does for xgrammar and llguidance, in one process on this machine:
- the tokenizer is a Hugging Face tokenizer (the runner's input), built from the default
  model's GGUF; instances are serialised with json.dumps (", " and ": " separators, as the
  runner does) and tokenized by it;
- xgrammar: one GrammarCompiler(max_threads=1) with its default cache, kept for the whole run;
  compile_json_schema(any_whitespace=False, strict_mode=True) (MaskBench's "xgr");
- llguidance: an LLMatcher per schema from grammar_from_json_schema with default options;
- schemas in a seeded shuffled order (the runner shuffles); ttfm_us = the compile; per token,
  the mask and the accept step are timed together, as the runner times them; an instance stops
  at its first refused token.
It prints the whole command's wall time and writes a CSV with the peer file's columns, so
`benchmarks/peer_compare.py RUN_DIR --peer OUT.csv` compares a replay with it schema by schema.

Building the Hugging Face tokenizer needs the `gguf` package (not a cdbench dependency):
    pip install --target /tmp/ggpkg gguf
    PYTHONPATH=/tmp/ggpkg .venv/bin/python benchmarks/peer_runner_standin.py --make-tokenizer /tmp/gemma-tok
then, per engine:
    .venv/bin/python benchmarks/peer_runner_standin.py --engine xgrammar --hf-tokenizer /tmp/gemma-tok \\
        --groups Github_trivial,Handwritten --out /tmp/standin-xgrammar.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

STARTED = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "jsonschemabench" / "maskbench"
FIELDS = ["engine", "schema_id", "verdict", "validation_error", "ttfm_us", "masks_us", "num_tokens", "num_tests"]


def make_tokenizer(out: str) -> None:
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO))
    from harness.lm.default_model import default_model_path

    gguf = Path(default_model_path())
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    print(f"Hugging Face tokenizer written to {out}")


class XGrammarSide:
    def __init__(self, tok) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        self.bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def compile(self, schema: dict):
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def step(self, m, token: int) -> bool:
        m.fill_next_token_bitmask(self.bitmask)
        return bool(m.accept_token(token))


class LLGuidanceSide:
    def __init__(self, tok) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.llg = llguidance
        self.tok = llguidance.hf.from_tokenizer(tok, n_vocab=len(tok))
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, self.tok.vocab_size)

    def compile(self, schema: dict):
        m = self.llg.LLMatcher(self.tok, self.llg.LLMatcher.grammar_from_json_schema(json.dumps(schema)), log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def matcher(self, compiled):
        return compiled.deep_copy()

    def step(self, m, token: int) -> bool:
        self.llg.numpy.fill_next_token_bitmask(m, self.bitmask, 0)
        return bool((int(self.bitmask[0, token // 32]) >> (token % 32)) & 1) and bool(m.consume_token(token))


def one_schema(side, tok, row: dict) -> dict:
    out = {"schema_id": row["id"], "ttfm_us": 0, "masks_us": 0, "num_tokens": 0, "num_tests": len(row["tests"]),
           "verdict": "pass", "validation_error": ""}
    t0 = time.monotonic()
    try:
        compiled = side.compile(row["schema"])
    except Exception as exc:  # noqa: BLE001 - the runner files every compile exception alike
        out.update(verdict="compile_error", validation_error=repr(exc)[:200])
        return out
    out["ttfm_us"] = int((time.monotonic() - t0) * 1e6)
    for i, test in enumerate(row["tests"]):
        m = side.matcher(compiled)
        ids = tok.encode(json.dumps(test["data"], indent=None, ensure_ascii=False), add_special_tokens=False)
        accepted = True
        for t in ids:
            t1 = time.monotonic()
            ok = side.step(m, t)
            out["masks_us"] += int((time.monotonic() - t1) * 1e6)
            out["num_tokens"] += 1
            if not ok:
                accepted = False
                break
        if accepted != test["valid"]:
            out.update(verdict="validation_error",
                       validation_error=f"test #{i}: should {'accept' if test['valid'] else 'reject'} but didn't")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-tokenizer", metavar="DIR", help="build the Hugging Face tokenizer from the GGUF and stop")
    ap.add_argument("--engine", choices=["xgrammar", "llguidance"])
    ap.add_argument("--hf-tokenizer", metavar="DIR")
    ap.add_argument("--groups", default="Github_trivial,Handwritten")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.make_tokenizer:
        return make_tokenizer(args.make_tokenizer)
    if not (args.engine and args.hf_tokenizer and args.out):
        ap.error("--engine, --hf-tokenizer and --out are needed")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.hf_tokenizer)
    side = (XGrammarSide if args.engine == "xgrammar" else LLGuidanceSide)(tok)
    init_s = time.monotonic() - STARTED
    rows = [json.loads(line) for g in args.groups.split(",") for line in open(DATA / f"{g}.jsonl", encoding="utf-8")]
    rows = [r for r in rows if r["tests"]]
    random.Random(args.seed).shuffle(rows)
    results = [{"engine": args.engine, **one_schema(side, tok, r)} for r in rows]
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(results)
    print(f"{args.engine}: {len(rows)} schemas; start-up {init_s:.1f} s; compile {sum(r['ttfm_us'] for r in results) / 1e6:.1f} s; "
          f"masks {sum(r['masks_us'] for r in results) / 1e6:.1f} s; wall {time.monotonic() - STARTED:.1f} s")


if __name__ == "__main__":
    main()
