"""Compare a cdbench replay with MaskBench's own runner, schema by schema.

The peer file (../shared/reference/peer/maskbench_runner_gemma.csv) gives, per engine and schema,
MaskBench's verdict, its time to first mask (compile + first mask) and its summed mask time.
This prints, per engine: verdict agreement (ours mapped to MaskBench's pass / compile_error /
validation_error), every disagreement with both sides' reasons, and where the time goes:
our cold compile + first mask and our summed masks against theirs, over the schemas both
finished, with the schemas that differ most.

    .venv/bin/python benchmarks/peer_compare.py reports/<replay-run-id> [--peer PATH]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "reference" / "peer" / "maskbench_runner_gemma.csv"
AS_PEER = {"pass": "pass", "compile_error": "compile_error", "unsupported": "compile_error",
           "valid_rejected": "validation_error", "invalid_accepted": "validation_error",
           "policy": "validation_error"}


def load_ours(run_dir: Path) -> dict[tuple[str, str], dict]:
    rows = {}
    with open(run_dir / "rows.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows[(r["engine"], r["task_id"].split("/", 1)[1])] = r
    return rows


def load_peer(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {(r["engine"], r["schema_id"]): r for r in csv.DictReader(fh)}


def report_engine(engine: str, ours: dict, peer: dict) -> None:
    keys = sorted(k for k in peer if k[0] == engine and k in ours)
    missing = sum(1 for k in peer if k[0] == engine and k not in ours)
    agree = Counter()
    diffs = []
    for k in keys:
        o, p = ours[k], peer[k]
        mine = AS_PEER.get(o["bucket"], o["bucket"])
        agree[(mine, p["verdict"])] += 1
        if mine != p["verdict"]:
            diffs.append((k[1], o["bucket"], p["verdict"], (p["validation_error"] or "")[:90]))
    print(f"\n## {engine}: {len(keys)} schemas in both ({missing} of the peer's not in this run)\n")
    print("| cdbench (as MaskBench counts) | MaskBench | schemas |\n|---|---|---:|")
    for (mine, theirs), n in sorted(agree.items()):
        print(f"| {mine} | {theirs} | {n} |")
    if diffs:
        print("\nDisagreements (schema, cdbench bucket, MaskBench verdict, MaskBench's message):")
        for d in diffs:
            print(f"- {d[0]}: {d[1]} / {d[2]} {d[3]}")
    timing(engine, keys, ours, peer)


def timing(engine: str, keys: list, ours: dict, peer: dict) -> None:
    both = [k for k in keys if ours[k]["bucket"] in ("pass", "policy", "valid_rejected", "invalid_accepted")
            and peer[k]["verdict"] == "pass" and ours[k].get("mask_us")]
    o_first = sum(ours[k]["cold_compile_s"] * 1e6 + ours[k]["mask_us"][0] for k in both)
    p_first = sum(float(peer[k]["ttfm_us"]) for k in both)
    o_masks = sum(sum(ours[k]["mask_us"]) for k in both)
    p_masks = sum(float(peer[k]["masks_us"]) for k in both)
    print(f"\nTime over the {len(both)} schemas both sides finished and passed (s): compile + first mask "
          f"{o_first / 1e6:.2f} cdbench vs {p_first / 1e6:.2f} MaskBench ({o_first / max(p_first, 1):.2f}x); "
          f"summed masks {o_masks / 1e6:.2f} vs {p_masks / 1e6:.2f} ({o_masks / max(p_masks, 1):.2f}x)")
    worst = sorted(both, key=lambda k: -(ours[k]["cold_compile_s"] * 1e6 + sum(ours[k]["mask_us"])
                                        - float(peer[k]["ttfm_us"]) - float(peer[k]["masks_us"])))[:5]
    for k in worst:
        o, p = ours[k], peer[k]
        print(f"  {k[1]}: compile {o['cold_compile_s'] * 1e3:.1f} ms + masks {sum(o['mask_us']) / 1e3:.1f} ms "
              f"vs ttfm {float(p['ttfm_us']) / 1e3:.1f} ms + masks {float(p['masks_us']) / 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--peer", type=Path, default=PEER)
    args = ap.parse_args()
    if not args.peer.exists():
        sys.exit(f"peer file not found: {args.peer}")
    ours, peer = load_ours(args.run_dir), load_peer(args.peer)
    for engine in sorted({k[0] for k in peer}):
        report_engine(engine, ours, peer)


if __name__ == "__main__":
    main()
