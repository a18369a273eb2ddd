"""The commands that use results: compare, gate, report, leaderboard, export."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import ConfigError


def _cross(spec: str | None) -> tuple[str, str, str] | None:
    if not spec:
        return None
    field, _, pair = spec.partition("=")
    a, _, b = pair.partition(":")
    if field not in ("engine", "sampler") or not a or not b:
        raise ConfigError(f"--cross {spec!r}: expected engine=A:B or sampler=A:B")
    return field, a, b


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import Options, compare
    from .analysis.compare_report import markdown, write_outputs
    from .results.rundir import RunDir

    base = RunDir.open(args.base)
    new = RunDir.open(args.new) if args.new else base
    if args.new is None and not args.cross:
        raise ConfigError("compare needs NEW, or --cross engine=A:B to compare two configurations of BASE")
    if args.factor <= 1 or args.delta <= 0 or not 0 < args.alpha < 1:
        raise ConfigError("--factor must be > 1, --delta > 0 and --alpha in (0, 1)")
    o = Options(factor=args.factor, delta=args.delta, alpha=args.alpha, seed=args.seed,
                allow_mismatch=args.allow_mismatch, cross=_cross(args.cross))
    comp = compare(base, new, o)
    out = Path(args.out) if args.out else new.path / ("compare-" + (base.run_id if new is not base else "cross"))
    write_outputs(comp, out)
    print(markdown(comp))
    print(f"compare.md, compare.json, compare.html in {out}/")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from .analysis.gate import NOT_COMPARABLE, NotComparable, load_gate_toml, parse_bound, parse_change, run_gate
    from .analysis.gate_report import markdown, write_outputs
    from .results.rundir import RunDir

    current = RunDir.open(args.current)
    baseline = RunDir.open(args.baseline) if args.baseline else None
    kind = current.kind
    thresholds = load_gate_toml(args.config, kind) if args.config else []
    thresholds += [parse_change(s, kind) for s in args.threshold or []]
    thresholds += [parse_bound(s, "min", kind) for s in args.min or []]
    thresholds += [parse_bound(s, "max", kind) for s in args.max or []]
    if not thresholds:
        raise ConfigError("gate: no thresholds (give --threshold, --min, --max or --config gate.toml)")
    try:
        res = run_gate(current, baseline, thresholds, alpha=args.alpha, no_stats=args.no_stats, seed=args.seed)
    except NotComparable as exc:
        print(f"cdbench gate: not comparable: {exc}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::error title=cdbench gate::not comparable: {exc}")
        return NOT_COMPARABLE
    write_outputs(res, Path(args.out) if args.out else current.path / "gate", args.junit)
    print(markdown(res))
    return res.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from .results.rundir import RunDir

    rd = RunDir.open(args.run)
    if rd.kind == "fidelity":
        from .report.fidelity_report import build_fidelity_report

        print(build_fidelity_report(rd.path))
        return 0
    if rd.kind != "run":
        raise ConfigError(f"{rd.path}: report covers `cdbench run` and `cdbench fidelity` results; this is a "
                          f"{rd.kind} (its summary.md has the tables; compare and leaderboard take replays)")
    from .report.run_report import build_run_report

    print(build_run_report(rd.path))
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from .results.rundir import upgrade

    rd = upgrade(args.run)
    print(f"{rd.path}: manifest.json written ({rd.kind}, results format 2, fingerprint {rd.manifest.fingerprint['digest']})")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import glob

    from .analysis.leaderboard import build_leaderboards
    from .analysis.leaderboard_render import leaderboard_markdown, update_readme, write_leaderboards

    paths = [Path(p) for p in args.runs] + [Path(p) for p in sorted(glob.glob(args.glob or "")) if Path(p).is_dir()]
    if not paths:
        raise ConfigError("leaderboard: give run directories or --glob 'reports/*'")
    if args.task_set not in ("intersection", "union"):
        raise ConfigError("--task-set must be intersection or union")
    boards = build_leaderboards(paths, task_set=args.task_set, alpha=args.alpha)
    out = Path(args.out)
    for p in write_leaderboards(boards, out):
        print(p)
    if args.update_readme:
        update_readme(Path(args.update_readme), leaderboard_markdown(boards))
        print(f"{args.update_readme}: leaderboard table rewritten between the cdbench markers")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .analysis.export_github import export_run, write_export
    from .results.rundir import RunDir

    rd = RunDir.open(args.run)
    export = export_run(rd)
    smaller, bigger = write_export(export, Path(args.out) if args.out else rd.path / "export")
    print(f"{smaller}: {len(export.smaller)} statistics, lower is better (tool: customSmallerIsBetter)")
    print(f"{bigger}: {len(export.bigger)} statistics, higher is better (tool: customBiggerIsBetter)")
    shown = ", ".join(export.skipped[:8]) + (", ..." if len(export.skipped) > 8 else "")
    print(f"skipped {len(export.skipped)} statistics with no value" + (f": {shown}" if shown else ""))
    for path, entries in ((smaller, export.smaller), (bigger, export.bigger)):
        if not entries:
            print(f"note: {path} is empty; github-action-benchmark refuses a file with no entries")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from .analysis.quality import markdown, quality_report, write_quality

    accs, diffs = quality_report(args.run, args.baseline, args.seed)
    out = Path(args.out) if args.out else Path(args.run)
    write_quality(out, accs, diffs)
    print(markdown(accs, diffs))
    print(f"quality.md and quality.json in {out}/")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two runs (or two configurations of one run) with statistics")
    p.add_argument("base", help="BASE run directory")
    p.add_argument("new", nargs="?", help="NEW run directory (omit with --cross)")
    p.add_argument("--cross", help="engine=A:B or sampler=A:B: compare two configurations inside BASE")
    p.add_argument("--factor", type=float, default=1.10, help="latency ratio that counts as a change (default 1.10)")
    p.add_argument("--delta", type=float, default=0.02, help="proportion difference that counts (default 0.02)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Benjamini-Hochberg")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--allow-mismatch", dest="allow_mismatch", action="store_true",
                   help="compare even when the fingerprints (model, tokenizer, tasks, protocol) differ")
    p.add_argument("--out", help="output directory (default NEW/compare-<BASE id>)")
    p.set_defaults(func=cmd_compare)
    g = sub.add_parser("gate", help="regression gate: exit 0 passed, 1 failed, 2 usage error, 3 not comparable")
    g.add_argument("current", help="CURRENT run directory")
    g.add_argument("--baseline", help="BASE run directory (needed for change thresholds)")
    g.add_argument("--threshold", action="append", help="NAME:+20%% (latency) or NAME:-0.02 (proportion); repeatable")
    g.add_argument("--min", action="append", help="NAME=VALUE lower bound, no baseline needed; repeatable")
    g.add_argument("--max", action="append", help="NAME=VALUE upper bound; repeatable")
    g.add_argument("--config", help="gate.toml with [thresholds], [min], [max] tables")
    g.add_argument("--alpha", type=float, default=0.05)
    g.add_argument("--no-stats", dest="no_stats", action="store_true", help="fail on the threshold alone")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--junit", help="write JUnit XML here")
    g.add_argument("--out", help="output directory for gate.json and gate.md (default CURRENT/gate)")
    g.set_defaults(func=cmd_gate)
    r = sub.add_parser("report", help="one self-contained report.html for a run")
    r.add_argument("run", help="run directory")
    r.set_defaults(func=cmd_report)
    lb = sub.add_parser("leaderboard", help="rank runs that share a fingerprint: leaderboard.md/csv/json/html")
    lb.add_argument("runs", nargs="*", help="run directories")
    lb.add_argument("--glob", help="a glob of run directories, e.g. 'reports/*'")
    lb.add_argument("--task-set", dest="task_set", default="intersection", help="intersection (default) or union")
    lb.add_argument("--alpha", type=float, default=0.05, help="significance level for tie groups")
    lb.add_argument("--out", default="reports/leaderboard", help="output directory (default reports/leaderboard)")
    lb.add_argument("--update-readme", dest="update_readme",
                    help="rewrite the table between <!-- cdbench:leaderboard begin/end --> in this file")
    lb.set_defaults(func=cmd_leaderboard)
    q = sub.add_parser("quality", help="accuracy on quality tasks (quality-* datasets), constrained vs unconstrained")
    q.add_argument("run", help="run directory")
    q.add_argument("--baseline", default="unconstrained", help="engine the others are compared with (default unconstrained)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--out", help="output directory for quality.md and quality.json (default RUN)")
    q.set_defaults(func=cmd_quality)
    u = sub.add_parser("upgrade", help="write the manifest of a run made by an older cdbench (results format 1)")
    u.add_argument("run", help="run directory")
    u.set_defaults(func=cmd_upgrade)
    ex = sub.add_parser("export", help="write a run's statistics in another tool's format")
    ex_sub = ex.add_subparsers(dest="format", required=True)
    gb = ex_sub.add_parser("github-benchmark", help="benchmark-smaller.json and benchmark-bigger.json for "
                           "benchmark-action/github-action-benchmark (customSmallerIsBetter / customBiggerIsBetter)")
    gb.add_argument("run", help="run directory (a run or a replay)")
    gb.add_argument("--out", help="output directory (default RUN/export)")
    gb.set_defaults(func=cmd_export)
