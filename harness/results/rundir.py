"""One run directory for every command (run, replay, fidelity), with a versioned manifest.

    reports/<run id>/
        manifest.json   format_version, kind, run id, resolved config, environment, command line,
                        start and end times, status, fingerprint
        rows.jsonl      one row per case (run), schema (replay) or task x sampler (fidelity),
                        appended and fsynced as each finishes (reporting.writer)
        ...             summaries and reports derived from the rows

The fingerprint says what a result is a result of. Its `comparable` digest covers what must be
equal for two runs to be set side by side (kind, model file, tokenizer vocabulary, the task set:
ids and constraint text, and the measurement protocol); its `digest` adds every other setting that
changes a result (engines and their settings, samplers, limits), so that a resumed run refuses a
changed config. `compare`, `gate` and `leaderboard` pair runs by `comparable` and report the
settings that differ.

Format versions: 1 = runs written before the manifest (config.toml or config.json beside
environment.json); 2 = this layout. Opening a version-1 run says how to upgrade it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError
from ..reporting.writer import ROWS_FILE, RowWriter, read_rows, rewrite_rows

FORMAT_VERSION = 2
KINDS = ("run", "replay", "fidelity")
MANIFEST = "manifest.json"


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def task_set_hash(tasks: Iterable[Any]) -> str:
    """sha256 over the sorted task ids, each with its constraint text (schema or grammars)."""
    h = hashlib.sha256()
    for task_id, text in sorted((t.id, t.schema_text if t.kind == "json_schema" else json.dumps(t.grammars, sort_keys=True))
                                for t in tasks):
        h.update(task_id.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def vocabulary_hash(token_bytes: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for b in token_bytes:
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()[:16]


def model_identity(info: dict[str, Any]) -> str:
    """The model file's sha256; for an in-memory model without a file, a digest of its description."""
    return str(info.get("model_sha256") or "info:" + _digest(info))


def make_fingerprint(kind: str, comparable: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """comparable: what two runs must share to be compared; settings: everything else that changes a result."""
    comparable = {"kind": kind, **comparable}
    return {"comparable": comparable, "settings": settings, "comparable_digest": _digest(comparable),
            "digest": _digest({"comparable": comparable, "settings": settings})}


def fingerprint_differences(a: dict[str, Any], b: dict[str, Any], part: str = "comparable") -> list[str]:
    """The keys of one fingerprint part that differ, as 'key: A -> B' lines."""
    pa, pb = a.get(part, {}), b.get(part, {})
    return [f"{k}: {pa.get(k)!r} -> {pb.get(k)!r}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]


@dataclass
class Manifest:
    kind: str
    run_id: str
    config: dict[str, Any]
    fingerprint: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    started: str = ""
    ended: str | None = None
    status: str = "running"          # running | complete (a run that died stays "running")
    format_version: int = FORMAT_VERSION


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    """A run's directory and manifest: create (new), resume (same fingerprint) or open (read)."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @classmethod
    def create(cls, reports_dir: str | Path, run_id: str, kind: str, config: dict[str, Any],
               fingerprint: dict[str, Any], environment: dict[str, Any] | None = None) -> "RunDir":
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}")
        path = Path(reports_dir) / run_id
        if (path / MANIFEST).exists() or (path / ROWS_FILE).exists():
            raise ConfigError(f"{path}: a run with this id already exists (pick another --run-id, or --resume it)")
        path.mkdir(parents=True, exist_ok=True)
        rd = cls(path, Manifest(kind=kind, run_id=run_id, config=config, fingerprint=fingerprint,
                                environment=environment or {}, command=list(sys.argv), started=_now()))
        rd.save()
        return rd

    @classmethod
    def resume(cls, path: str | Path, kind: str, fingerprint: dict[str, Any]) -> "RunDir":
        rd = cls.open(path)
        if rd.kind != kind:
            raise ConfigError(f"{rd.path}: cannot resume a {rd.kind} as a {kind}")
        if rd.manifest.fingerprint.get("digest") != fingerprint.get("digest"):
            diffs = (fingerprint_differences(rd.manifest.fingerprint, fingerprint)
                     + fingerprint_differences(rd.manifest.fingerprint, fingerprint, "settings"))
            raise ConfigError(f"{rd.path}: cannot resume: the config differs from the run's ({'; '.join(diffs[:4])})")
        rd.manifest.status, rd.manifest.ended = "running", None
        rd.save()
        return rd

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.exists():
            if any((path / f).exists() for f in (ROWS_FILE, "fidelity.json", "config.toml", "config.json")):
                raise ConfigError(f"{path}: written by an older cdbench (results format 1, no {MANIFEST}); "
                                  f"convert it with: cdbench upgrade {path}")
            raise ConfigError(f"{path}: not a cdbench run directory (no {MANIFEST})")
        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{mpath}: not a valid manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{mpath}: not a valid manifest: a JSON {type(data).__name__}, not an object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 2:
            raise ConfigError(f"{mpath}: not a valid manifest: format_version {version!r:.40}")
        if version > FORMAT_VERSION:
            raise ConfigError(f"{mpath}: results format {version!r} is newer than this cdbench reads "
                              f"({FORMAT_VERSION}); upgrade cdbench")
        try:
            manifest = Manifest(**data)
        except TypeError as exc:
            raise ConfigError(f"{mpath}: not a valid manifest: {exc}") from exc
        problem = _manifest_problem(manifest)
        if problem:
            raise ConfigError(f"{mpath}: not a valid manifest: {problem}")
        return cls(path, manifest)

    def save(self) -> None:
        _write_atomic(self.path / MANIFEST, json.dumps(asdict(self.manifest), indent=2, ensure_ascii=False,
                                                       default=str) + "\n")

    def update_environment(self, **items: Any) -> None:
        self.manifest.environment.update(items)
        self.save()

    def finish(self) -> None:
        self.manifest.status, self.manifest.ended = "complete", _now()
        self.save()

    def writer(self) -> RowWriter:
        return RowWriter(self.path, self.kind)

    def rows(self) -> list[dict[str, Any]]:
        return read_rows(self.path, self.kind)

    def rewrite_rows(self, rows: list[dict[str, Any]]) -> None:
        """Replace the journal (a resumed run dropping cases it will run again)."""
        rewrite_rows(self.path, rows)


def _manifest_problem(m: Manifest) -> str:
    """What is wrong with a parsed manifest's fields ('' if nothing)."""
    if m.kind not in KINDS:
        return f"kind {m.kind!r:.40} is not one of {', '.join(KINDS)}"
    for name, typ in (("run_id", str), ("config", dict), ("fingerprint", dict), ("environment", dict),
                      ("command", list)):
        if not isinstance(getattr(m, name), typ):
            return f"{name} must be a JSON {'object' if typ is dict else typ.__name__}"
    return ""


def upgrade(path: str | Path) -> RunDir:
    """Write a manifest for a results-format-1 run (config.toml / config.json / fidelity.json beside
    environment.json). The task set of such a run is known only by its task ids (the constraint
    text was not recorded), so its fingerprint matches other upgraded runs, not new ones."""
    import tomllib

    path = Path(path)
    if (path / MANIFEST).exists():
        raise ConfigError(f"{path}: already has a {MANIFEST}")
    env = json.loads((path / "environment.json").read_text(encoding="utf-8")) if (path / "environment.json").exists() else {}
    if (path / "config.toml").exists():
        kind, config = "run", tomllib.loads((path / "config.toml").read_text(encoding="utf-8")).get("run", {})
    elif (path / "config.json").exists():
        kind, config = "replay", json.loads((path / "config.json").read_text(encoding="utf-8"))
    elif (path / "fidelity.json").exists():
        kind, config = "fidelity", env.get("config", {})
    else:
        raise ConfigError(f"{path}: not a cdbench run directory of any format")
    rows = read_rows(path)
    ids = sorted({str(r.get("task_id") or r.get("task")) for r in rows})
    model = next((r.get("model_sha256") for r in rows if r.get("model_sha256")), None) or env.get("model", {}).get("model_sha256")
    comparable = {"model": model, "tokenizer": env.get("tokenizer") and Path(str(env["tokenizer"])).name,
                  "task_set": "ids:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
                  "protocol": config.get("protocol"), "upgraded_from": 1}
    settings = {k: v for k, v in config.items() if k not in ("run_id", "reports_dir", "progress", "resume")}
    rd = RunDir(path, Manifest(kind=kind, run_id=path.name, config=config,
                               fingerprint=make_fingerprint(kind, comparable, settings), environment=env,
                               command=[], started=str(env.get("started") or ""), status="complete"))
    rd.save()
    return rd
