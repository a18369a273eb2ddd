"""`cdbench data fetch|list`: the public datasets from pinned repository archives (docs/data.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import ConfigError

_DEST_HELP = ("data directory (default: $CDBENCH_DATA_DIR, else ../shared/datasets beside the repository "
              "when it exists, else $XDG_CACHE_HOME/cdbench/data or ~/.cache/cdbench/data)")


def _root(args: argparse.Namespace) -> tuple[Path, str]:
    from .config import data_dir_choice

    return (Path(args.dest).expanduser(), "--dest") if args.dest else data_dir_choice()


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data.fetch import fetch
    from .data.sources import SOURCES

    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    if args.sha256 and len(names) > 1:
        raise ConfigError("--sha256 checks one archive: name one dataset, not all")
    if args.sha256 and (len(args.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.sha256)):
        raise ConfigError(f"--sha256 must be 64 hex digits, got {args.sha256!r}")
    root, _ = _root(args)
    return fetch(names, root, url_base=args.url_base, sha256=args.sha256, force=args.force, progress=args.progress)


def cmd_data_list(args: argparse.Namespace) -> int:
    from .data.inventory import inventory

    root, origin = _root(args)
    print(f"data directory: {root} ({origin})")
    for line in inventory(root):
        print(line)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .data.sources import SOURCES

    p = sub.add_parser("data", help="fetch the public datasets (JSONSchemaBench, MaskBench, JSON Schema Test "
                       "Suite) from pinned GitHub archives, or list what is installed")
    dsub = p.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download, verify and install a dataset (docs/data.md)")
    f.add_argument("dataset", choices=[*SOURCES, "all"])
    f.add_argument("--dest", "--data-dir", dest="dest", help=_DEST_HELP)
    f.add_argument("--url-base", dest="url_base", help="download from URL/<owner>/<repo>/tar.gz/<commit> instead "
                   "of https://codeload.github.com (a mirror, or a local server in tests)")
    f.add_argument("--sha256", help="the archive's expected sha256 (one dataset; overrides cdbench's pin)")
    f.add_argument("--force", action="store_true", help="replace a dataset that is already present")
    f.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line on stderr")
    f.set_defaults(func=cmd_data_fetch)
    ls = dsub.add_parser("list", help="each dataset: present or missing, where, what it holds, its commit")
    ls.add_argument("--dest", "--data-dir", dest="dest", help=_DEST_HELP)
    ls.set_defaults(func=cmd_data_list)
