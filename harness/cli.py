"""`cdbench` command line. Configuration errors print one line and exit 2."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    from .config import RunConfig
    from .options import add_options

    p.add_argument("--config", help="TOML file with any of the run settings (a [run] table or top-level keys)")
    add_options(p, RunConfig)


_NOT_CONFIG = {"command", "config", "func"}


def cmd_run(args: argparse.Namespace) -> int:
    from .config import build_config, load_config_file
    from .runner import run

    file_values = load_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    if args.resume:
        file_values = {**_resumed_config(args.resume), **file_values}
    cfg = build_config(file_values, flags)
    return _run_with_progress(lambda progress: run(cfg, progress=progress), cfg.progress, "case",
                              lambda r: f"{r['engine']} {r['task_id'][:28]} {r['compile_status']}/{r['finish_reason']}")


def _resumed_config(path: str, kind: str = "run") -> dict[str, Any]:
    """The recorded config of the run to resume, placed where it is (reports dir and run id)."""
    from dataclasses import fields

    from .config import RunConfig
    from .fidelity.config import FidelityConfig
    from .results.rundir import RunDir

    rd = RunDir.open(path)
    if rd.kind != kind:
        raise ConfigError(f"{rd.path}: a {rd.kind} directory; resume it with `cdbench {rd.kind} --resume`")
    known = {f.name for f in fields(RunConfig if kind == "run" else FidelityConfig)}
    values = {k: v for k, v in rd.manifest.config.items() if k in known and v is not None}
    values.update(reports_dir=str(rd.path.parent), run_id=rd.path.name)
    return values


def _run_with_progress(job: Callable[[Callable[..., None]], Path], enabled: bool | None, unit: str,
                       describe: Callable[[dict[str, Any]], str]) -> int:
    """Run a job that reports (done, total, row) per finished item; show a bar, then the summary."""
    bar = None
    started = time.perf_counter()
    if enabled is not False:
        from tqdm import tqdm

        bar = tqdm(total=0, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done - 1
            bar.set_postfix_str(describe(row))
            bar.update(1)

    try:
        run_dir = job(progress)
    finally:
        if bar is not None:
            bar.close()
    print((run_dir / "summary.md").read_text(encoding="utf-8"))
    print(f"wall time {time.perf_counter() - started:.1f} s; results in {run_dir}/")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .options import coerce, flag_values, load_toml
    from .replay.config import ReplayConfig
    from .replay.run import replay

    file_values = load_toml(args.config, ReplayConfig, "replay") if args.config else {}
    flags = coerce(ReplayConfig, flag_values(args, ReplayConfig), "command line")
    cfg = replace(ReplayConfig(), **{**file_values, **flags})
    if cfg.workers < 1 or cfg.timeout_s <= 0 or cfg.memory_gb <= 0:
        raise ConfigError("-j must be >= 1, --timeout > 0 and --memory-gb > 0")
    return _run_with_progress(lambda progress: replay(cfg, progress=progress), cfg.progress, "schema",
                              lambda r: f"{r['engine']} {r['task_id'][:30]} {r['bucket']}")


def cmd_tasks(args: argparse.Namespace) -> int:
    from pathlib import Path as _Path

    from .config import default_data_dir
    from .tasks.catalog import catalog, format_catalog

    if args.matrix:
        from .engines import DEFAULT_ENGINES
        from .tasks.catalog import support_matrix

        print(support_matrix(DEFAULT_ENGINES))
        return 0
    data_dir = _Path(args.data_dir) if args.data_dir else default_data_dir()
    print(format_catalog(catalog(data_dir)))
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .fidelity.config import FidelityConfig
    from .fidelity.run import run_fidelity
    from .options import coerce, flag_values, load_toml

    base = FidelityConfig(**_resumed_config(args.resume, "fidelity")) if args.resume else FidelityConfig()
    file_values = load_toml(args.config, FidelityConfig, "fidelity") if args.config else {}
    flags = coerce(FidelityConfig, flag_values(args, FidelityConfig), "command line")
    cfg = replace(base, **{**file_values, **flags})
    started = time.perf_counter()
    run_dir = run_fidelity(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print((run_dir / "fidelity.md").read_text(encoding="utf-8"))
    print(f"wall time {time.perf_counter() - started:.1f} s; results in {run_dir}/")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from .engines import ENGINES
    from .environment import package_version

    packages = {"xgrammar": "xgrammar", "llguidance": "llguidance", "outlines": "outlines-core", "llamacpp": "llama-cpp-python"}
    for name in ENGINES.names():
        try:
            ENGINES.get(name)
            state = f"installed ({packages.get(name, name)} {package_version(packages.get(name, name))})"
        except ConfigError as exc:
            state = f"NOT AVAILABLE: {exc}"
        print(f"{name:12s} {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdbench", description="Benchmark constrained decoding engines and samplers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="generate with a real model under each engine and score the outputs")
    _add_run_flags(p_run)
    p_run.set_defaults(func=cmd_run)
    p_rep = sub.add_parser("replay", help="model-free replay of labelled instances through every engine (MaskBench-style)")
    from .options import add_options
    from .replay.config import ReplayConfig

    p_rep.add_argument("--config", help="TOML file with any of these settings (a [replay] table or top-level keys)")
    add_options(p_rep, ReplayConfig)
    p_rep.set_defaults(func=cmd_replay)
    p_tasks = sub.add_parser("tasks", help="task sources and their counts")
    p_tasks.add_argument("action", nargs="?", choices=["list"], default="list", help="list: every source with task counts")
    p_tasks.add_argument("--matrix", action="store_true", help="which engine supports which task kind and grammar")
    p_tasks.add_argument("--data-dir", dest="data_dir")
    p_tasks.set_defaults(func=cmd_tasks)
    p_fid = sub.add_parser("fidelity", help="distance of each sampler's distribution from the exact target on small languages")
    from .fidelity.config import FidelityConfig

    p_fid.add_argument("--config", help="TOML file with any of these settings (a [fidelity] table or top-level keys)")
    add_options(p_fid, FidelityConfig)
    p_fid.set_defaults(func=cmd_fidelity)
    from .cli_results import add_commands

    add_commands(sub)
    from . import cli_data; cli_data.add_commands(sub)  # noqa: E702  (cdbench data fetch|list)
    p_eng = sub.add_parser("engines", help="list engines and whether they are installed")
    p_eng.set_defaults(func=cmd_engines)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cdbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cdbench: interrupted" + ("; finished cases are in the run's rows.jsonl (continue with --resume)"
                                        if args.command in ("run", "replay", "fidelity") else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
