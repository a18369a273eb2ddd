"""Read chosen members of a repository archive (`<repo>-<commit>/...`) without trusting it.

Every member name is checked before anything else happens to it: an absolute path or a `..`
component refuses the whole archive. Only regular files are read (their bytes, never through
tarfile's extract), so symlinks, hard links and devices are never created; skipped ones are reported.
"""
from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from .download import FetchError
from .sources import LICENCE_FILES, Source


@dataclass
class Extracted:
    licence: str | None = None                         # the licence file's name, when the archive has one
    licence_text: bytes = b""
    skipped_links: list[str] = field(default_factory=list)


def _relative(name: str, prefix: list[str]) -> str | None:
    """The member's path below the archive's top directory; None for the top directory itself."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts:
        raise FetchError(f"archive member {name!r} is absolute or leaves the archive; refused, nothing installed")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        return None
    if not prefix:
        prefix.append(parts[0])
    elif parts[0] != prefix[0]:
        raise FetchError(f"archive has more than one top directory ({prefix[0]}/, {parts[0]}/): "
                         "not a repository archive; refused, nothing installed")
    return "/".join(parts[1:]) or None


def _member_of(rel: str, source: Source) -> str | None:
    """The source member (subpath) that covers `rel`, if any, for files with the source's suffix."""
    if not rel.endswith(source.suffix):
        return None
    return next((m for m in source.members if rel == m or (m.endswith("/") and rel.startswith(m))), None)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    src = tar.extractfile(member)
    assert src is not None  # a regular file always has a body
    with src:
        return src.read()


def members(archive: Path, source: Source, result: Extracted) -> Iterator[tuple[str, bytes]]:
    """(path below the top directory, bytes) of each wanted regular file, in archive order.

    A top-level licence file goes into `result`; a member subpath that matched nothing is an error."""
    prefix: list[str] = []
    matched: set[str] = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                rel = _relative(info.name, prefix)
                covering = _member_of(rel, source) if rel else None
                if rel is None or (covering is None and rel not in LICENCE_FILES):
                    continue
                if not info.isfile():
                    result.skipped_links.append(rel)
                elif covering is None:
                    result.licence, result.licence_text = rel, _read(tar, info)
                else:
                    matched.add(covering)
                    yield rel, _read(tar, info)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise FetchError(f"the {source.owner}/{source.repo} archive is not a readable tar.gz ({exc}); "
                         "nothing installed") from exc
    missing = [m for m in source.members if m not in matched]
    if missing:
        raise FetchError(f"archive has no {source.suffix} files under {', '.join(missing)}: not the expected "
                         f"{source.owner}/{source.repo} snapshot; nothing installed")
