"""Stream one archive over HTTP(S) into a temporary file, hashing it on the way (urllib only)."""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError

CHUNK = 1 << 20


class FetchError(ConfigError):
    """A download or install that failed; nothing was installed."""


class Meter:
    """A progress line on stderr: rewritten in place on a terminal, start and end lines otherwise."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0
        if enabled and not self.tty:
            print(f"{label}: downloading ({_mib(total) if total else 'size unknown'})", file=sys.stderr, flush=True)

    def update(self, done: int, final: bool = False) -> None:
        if not self.tty or (not final and time.monotonic() - self.last < 0.2):
            return
        self.last = time.monotonic()
        of = f" / {_mib(self.total)} ({100 * done // self.total}%)" if self.total else ""
        print(f"\r{self.label}: {_mib(done)}{of}", end="\n" if final else "", file=sys.stderr, flush=True)

    def abort(self) -> None:
        if self.tty and self.last:
            print(file=sys.stderr, flush=True)  # end the progress line before the error line

    def done(self, size: int) -> None:
        if self.tty:
            self.update(size, final=True)
        elif self.enabled:
            print(f"{self.label}: downloaded {_mib(size)}", file=sys.stderr, flush=True)


def _mib(n: int | None) -> str:
    return f"{(n or 0) / 2**20:.1f} MiB"


def _open(url: str):
    request = urllib.request.Request(url, headers={"User-Agent": "cdbench-data-fetch"})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; nothing installed") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download {url}: {reason}; nothing installed") from exc


def _copy(resp: BinaryIO, out: BinaryIO, url: str, meter: Meter) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := resp.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            meter.update(size)
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"download of {url} interrupted after {size} bytes: {exc!r}; nothing installed") from exc
    return digest.hexdigest(), size


def download(url: str, directory: Path, label: str, progress: bool = True) -> tuple[Path, str, int]:
    """Download `url` into a temporary file in `directory`: (path, sha256, size).

    A body shorter than its Content-Length (a connection closed early) is an error, and the
    temporary file is removed whatever goes wrong."""
    fd, tmp = tempfile.mkstemp(prefix=".cdbench-download-", suffix=".tar.gz", dir=directory)
    meter = None
    try:
        with os.fdopen(fd, "wb") as out, _open(url) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            meter = Meter(label, expected, progress)
            sha, size = _copy(resp, out, url, meter)
            meter.done(size)
        if expected is not None and size != expected:
            raise FetchError(f"download of {url} interrupted: got {size} of {expected} bytes; nothing installed")
    except BaseException:
        if meter is not None:
            meter.abort()
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), sha, size
