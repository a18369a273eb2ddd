"""`cdbench data fetch`: download a pinned archive, check it, lay it out, install it atomically.

A dataset is built in a temporary directory beside its final place and renamed into place only
when complete, with PROVENANCE.json and the archive's licence file inside; any failure removes
the temporary files and leaves the destination as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .archive import Extracted, members
from .download import FetchError, download
from .layout import LAYOUTS, Laid
from .sources import SOURCES, Source


@dataclass
class Archive:
    url: str
    path: Path
    sha256: str
    how: str   # how the checksum was established: pinned in cdbench | given with --sha256 | not pinned


def _check(url: str, sha: str, expected: str | None, given: bool) -> str:
    if expected is None:
        return "not pinned (computed at fetch)"
    if sha != expected.lower():
        raise FetchError(f"checksum mismatch for {url}: expected sha256 {expected.lower()}, got {sha}; "
                         "nothing installed")
    return "given with --sha256" if given else "pinned in cdbench"


def get_archive(source: Source, root: Path, url_base: str | None, sha256: str | None, progress: bool,
                say: Callable[[str], None]) -> Archive:
    url = source.url(url_base)
    path, sha, _ = download(url, root, f"{source.owner}/{source.repo}@{source.commit[:12]}", progress)
    try:
        how = _check(url, sha, sha256 or source.sha256, sha256 is not None)
    except FetchError:
        path.unlink(missing_ok=True)
        raise
    if how.startswith("not pinned"):
        say(f"{source.owner}/{source.repo}@{source.commit[:12]}: checksum not pinned in cdbench; recorded {sha}")
    else:
        say(f"{source.owner}/{source.repo}@{source.commit[:12]}: sha256 {sha} verified ({how})")
    return Archive(url, path, sha, how)


def provenance(source: Source, archive: Archive, ext: Extracted, laid: Laid) -> dict:
    return {
        "dataset": source.name, "title": source.title,
        "repository": f"https://github.com/{source.owner}/{source.repo}",
        "source_url": archive.url, "commit": source.commit,
        "sha256": archive.sha256, "sha256_status": archive.how,
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "licence": source.licence, "licence_file": ext.licence,
        "members": list(source.members), "layout": source.layout,
        "files": laid.files, "records": laid.records,
        "skipped": laid.skipped, "skipped_links": ext.skipped_links,
    }


def _replace(new: Path, target: Path) -> None:
    """Rename `new` into place; an existing target (--force) is swapped out, then deleted."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def install(source: Source, archive: Archive, root: Path) -> tuple[Path, dict]:
    """Build the dataset in a temporary directory beside its target, then rename it into place."""
    target = root / source.target
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".cdbench-{source.name}-", dir=target.parent))
    try:
        out, ext = build / source.name, Extracted()
        laid = LAYOUTS[source.layout](members(archive.path, source, ext), out)
        if ext.licence:
            (out / ext.licence).write_bytes(ext.licence_text)
        record = provenance(source, archive, ext, laid)
        (out / "PROVENANCE.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _replace(out, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target, record


def _describe(record: dict) -> str:
    counts = f"{record['records']} records from {record['files']} files" if record["records"] is not None \
        else f"{record['files']} files"
    skipped = f"; skipped {len(record['skipped'])} unreadable files" if record["skipped"] else ""
    return counts + skipped


def _new_dirs(root: Path, sources: list[Source]) -> list[Path]:
    """Directories a fetch would create (root and the targets' parents), deepest first."""
    dirs = {root} | {d for s in sources for d in (root / s.target).parents if d.is_relative_to(root)}
    return sorted((d for d in dirs if not d.exists()), key=lambda d: len(d.parts), reverse=True)


def _remove_if_empty(dirs: list[Path]) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass  # not empty (something was installed) or already gone


def fetch(names: list[str], root: Path, url_base: str | None = None, sha256: str | None = None,
          force: bool = False, progress: bool = True, say: Callable[[str], None] = print) -> int:
    """Fetch each named dataset into `root`; one download per distinct archive. Returns 0."""
    todo = []
    for name in names:
        target = root / SOURCES[name].target
        if target.exists() and not force:
            say(f"{name}: already present in {target} (--force replaces it)")
        else:
            todo.append(SOURCES[name])
    archives: dict[str, Archive] = {}
    new_dirs = _new_dirs(root, todo)
    try:
        for source in todo:
            root.mkdir(parents=True, exist_ok=True)
            key = source.url(url_base)
            if key not in archives:
                archives[key] = get_archive(source, root, url_base, sha256, progress, say)
            target, record = install(source, archives[key], root)
            say(f"{source.name}: installed in {target} ({_describe(record)})")
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise FetchError(f"cannot install into {root}: {exc.strerror or exc}{where}") from exc
    finally:
        for archive in archives.values():
            archive.path.unlink(missing_ok=True)
        _remove_if_empty(new_dirs)
    return 0
