"""Replay throughput with -j 2 against -j 1 on the same schemas. Target: at least 1.8x.

    .venv/bin/python benchmarks/replay_parallel.py [--engine llguidance] [--group Github_medium] [--sample 60]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.replay.run import ReplayConfig, replay  # noqa: E402
from harness.reporting.writer import read_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", default="llguidance")
    ap.add_argument("--group", default="Github_medium")
    ap.add_argument("--sample", type=int, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdbench-par-"))
    walls: dict[int, float] = {}
    served: dict[int, float] = {}
    try:
        for j in (1, 2):
            cfg = ReplayConfig(source="maskbench", groups=[args.group], sample=args.sample, seed=0,
                               engines=[args.engine], workers=j, reports_dir=str(tmp), run_id=f"j{j}")
            start = time.perf_counter()
            run_dir = replay(cfg)
            walls[j] = time.perf_counter() - start
            rows = read_rows(run_dir)
            tokens = sum(r.get("tokens") or 0 for r in rows)
            served[j] = json.loads((run_dir / "manifest.json").read_text())["environment"]["engines"][args.engine]["replay_s"]
            print(f"-j {j}: {len(rows)} schemas, {tokens} tokens; replay {served[j]:.1f} s "
                  f"({len(rows) / served[j]:.1f} schemas/s); whole command {walls[j]:.1f} s (start-up included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"speed-up -j 2 / -j 1: {served[1] / served[2]:.2f}x replay throughput (target >= 1.8x), "
          f"{walls[1] / walls[2]:.2f}x whole command")


if __name__ == "__main__":
    main()
