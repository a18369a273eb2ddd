"""`cdbench data fetch|list` against archives served from 127.0.0.1 (no network): the installed
layout loads with the real loaders, checksums are recorded or enforced, and a bad download or a
hostile archive leaves nothing behind."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import config
from harness.cli import main
from harness.data import sources
from harness.data.layout import maskbench_group, strip_whitespace
from harness.errors import ConfigError
from harness.tasks.jsts import load_test_suite
from harness.tasks.loaders import load_tasks
from harness.tasks.maskbench import load_maskbench

JSB, JSTS = sources.SOURCES["jsonschemabench"], sources.SOURCES["jsts"]


def _tar(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar.gz of `files` (path -> bytes); `links` adds symlinks (path -> link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _pretty(doc) -> bytes:
    return json.dumps(doc, indent=2).encode()


def jsb_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """The guidance-ai/jsonschemabench layout: data/<Subset>/*.json, maskbench/data/*.json, a LICENSE."""
    top = f"jsonschemabench-{JSB.commit}/"
    files = {f"{top}data/{s}/{s.lower()}_1.json": _pretty({"type": "object", "title": s})
             for s in sources.JSB_SUBSETS}
    files[f"{top}data/Github_easy/o2.json"] = _pretty({"type": "string", "maxLength": 3})
    files[f"{top}data/README.md"] = b"not data\n"
    record = {"description": "d", "meta": {"features": ["type"]}, "schema": {"type": "integer"},
              "tests": [{"description": "ok", "valid": True, "data": 1},
                        {"description": "no", "valid": False, "data": "x"}]}
    for stem in ("Handwritten---a", "Handwritten---b", "BFCL_java_0", "BFCL_java_1"):
        files[f"{top}maskbench/data/{stem}.json"] = _pretty(record)
    files[f"{top}LICENSE"] = b"MIT License (test copy)\n"
    files.update({top + k: v for k, v in (extra or {}).items()})
    return _tar(files)


def jsts_archive() -> bytes:
    top = f"JSON-Schema-Test-Suite-{JSTS.commit}/"
    group = [{"description": "g", "schema": {"type": "integer"},
              "tests": [{"description": "i", "data": 1, "valid": True},
                        {"description": "s", "data": "a", "valid": False}]}]
    files = {f"{top}{p}": _pretty(group) for p in (
        "tests/draft2020-12/type.json", "tests/draft2020-12/minimum.json", "tests/draft2020-12/optional/format/email.json",
        "tests/draft7/type.json", "remotes/integer.json", "annotations/tests/core.json",
        "output-tests/draft2020-12/content/type.json", "test-schema.json", "output-test-schema.json")}
    files[f"{top}bin/jsonschema_suite"] = b"#!/bin/sh\n"
    files[f"{top}LICENSE"] = b"Copyright (c) 2012 Julian Berman\n"
    return _tar(files, links={f"{top}tests/latest": "draft2020-12"})


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, str]] = {}
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, mode = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Length", str(len(body) + (4096 if mode == "short" else 0)))
        self.end_headers()
        self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """serve(source, bytes, mode) publishes an archive where `--url-base base` will ask for it."""
    _Handler.routes, _Handler.hits = {}, {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}/mirror"

    def serve(source, body: bytes, mode: str = "ok") -> str:
        _Handler.routes[source.url(base)[len(f"http://127.0.0.1:{httpd.server_port}"):]] = (body, mode)
        return base

    serve.hits = _Handler.hits
    yield serve
    httpd.shutdown()
    httpd.server_close()


def fetch(capsys, dest: Path, *args: str) -> tuple[int, str, str]:
    code = main(["data", "fetch", *args, "--dest", str(dest), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".cdbench*")] if root.exists() else []


def test_fetch_jsonschemabench_loads_with_the_real_loader(tmp_path, server, capsys):
    body = jsb_archive()
    base = server(JSB, body)
    code, out, err = fetch(capsys, tmp_path / "data", "jsonschemabench", "--url-base", base)
    assert code == 0, err
    sha = hashlib.sha256(body).hexdigest()
    assert f"checksum not pinned in cdbench; recorded {sha}" in out
    tasks = load_tasks("jsonschemabench", data_dir=tmp_path / "data")
    assert len(tasks) == 11 and {t.source for t in tasks} == {f"jsonschemabench:{s}" for s in sources.JSB_SUBSETS}
    assert "Github_easy/o2" in {t.id for t in tasks}
    target = tmp_path / "data" / "jsonschemabench" / "schemas"
    prov = json.loads((target / "PROVENANCE.json").read_text())
    assert prov["sha256"] == sha and prov["sha256_status"].startswith("not pinned")
    assert prov["commit"] == JSB.commit and prov["source_url"] == JSB.url(base)
    assert prov["licence"].startswith("MIT") and prov["licence_file"] == "LICENSE" and prov["fetched"]
    assert (target / "LICENSE").read_bytes() == b"MIT License (test copy)\n"
    assert (target / "Github_easy.jsonl").read_text().splitlines()[1] == \
        '{"unique_id":"o2","json_schema":{"type":"string","maxLength":3}}'
    assert _leftovers(tmp_path) == []


def test_fetch_all_downloads_each_archive_once(tmp_path, server, capsys):
    base = server(JSB, jsb_archive())
    server(JSTS, jsts_archive())
    code, out, err = fetch(capsys, tmp_path, "all", "--url-base", base)
    assert code == 0, err
    assert sorted(server.hits.values()) == [1, 1]  # jsonschemabench and maskbench share one archive
    tasks = load_maskbench(tmp_path / "jsonschemabench" / "maskbench")
    assert sorted(t.id for t in tasks) == ["BFCL_java/BFCL_java_0", "BFCL_java/BFCL_java_1",
                                           "Handwritten/Handwritten---a", "Handwritten/Handwritten---b"]
    assert all(len(t.examples) == 2 for t in tasks)
    suite = tmp_path / "json-schema-test-suite"
    assert len(load_test_suite(suite)) == 2 and len(load_test_suite(suite, include_optional=True)) == 3
    assert not (suite / "tests" / "latest").exists() and not (suite / "bin").exists()  # no symlink, no scripts
    assert (suite / "LICENSE").exists() and (suite / "remotes" / "integer.json").exists()
    assert _leftovers(tmp_path) == []


def test_pinned_checksum_verified_and_mismatch_installs_nothing(tmp_path, server, capsys, monkeypatch):
    body = jsts_archive()
    base = server(JSTS, body)
    good = dataclasses.replace(JSTS, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(sources.SOURCES, "jsts", good)
    code, out, err = fetch(capsys, tmp_path / "ok", "jsts", "--url-base", base)
    assert code == 0 and "verified (pinned in cdbench)" in out
    monkeypatch.setitem(sources.SOURCES, "jsts", dataclasses.replace(JSTS, sha256="0" * 64))
    code, out, err = fetch(capsys, tmp_path / "bad", "jsts", "--url-base", base)
    assert code == 2 and len(err.splitlines()) == 1 and "checksum mismatch" in err and good.sha256 in err
    assert not (tmp_path / "bad").exists()
    code, out, err = fetch(capsys, tmp_path / "ok", "jsts", "--url-base", base, "--force", "--sha256", "1" * 64)
    assert code == 2 and "checksum mismatch" in err
    assert load_test_suite(tmp_path / "ok" / "json-schema-test-suite")  # the installed copy is untouched
    assert _leftovers(tmp_path) == []


def test_interrupted_download_installs_nothing(tmp_path, server, capsys):
    base = server(JSB, jsb_archive(), mode="short")  # Content-Length larger than the body, then close
    dest = tmp_path / "data"
    code, out, err = fetch(capsys, dest, "maskbench", "--url-base", base)
    assert code == 2 and len(err.splitlines()) == 1 and "interrupted" in err
    assert not dest.exists()  # not even the directories it would have made
    assert list(tmp_path.iterdir()) == []


def test_archive_with_parent_member_is_refused(tmp_path, server, capsys):
    base = server(JSB, jsb_archive(extra={"../evil.json": b"{}"}))
    code, out, err = fetch(capsys, tmp_path / "data", "jsonschemabench", "--url-base", base)
    assert code == 2 and len(err.splitlines()) == 1 and "leaves the archive" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "evil.json").exists()


def test_archive_of_another_repository_is_refused(tmp_path, server, capsys):
    base = server(JSB, _tar({"other-repo/README.md": b"hi", "other-repo/data/x.json": b"{}"}))
    code, out, err = fetch(capsys, tmp_path, "jsonschemabench", "--url-base", base)
    assert code == 2 and "not the expected guidance-ai/jsonschemabench snapshot" in err
    assert list(tmp_path.iterdir()) == []


def test_present_dataset_is_kept_unless_forced(tmp_path, server, capsys):
    base = server(JSB, jsb_archive())
    assert fetch(capsys, tmp_path, "maskbench", "--url-base", base)[0] == 0
    code, out, _ = fetch(capsys, tmp_path, "maskbench", "--url-base", base)
    assert code == 0 and "already present" in out and sum(server.hits.values()) == 1
    code, out, _ = fetch(capsys, tmp_path, "maskbench", "--url-base", base, "--force")
    assert code == 0 and "installed" in out and len(load_maskbench(tmp_path / "jsonschemabench" / "maskbench")) == 4


def test_data_list_present_and_missing(tmp_path, server, capsys):
    base = server(JSB, jsb_archive())
    fetch(capsys, tmp_path, "jsonschemabench", "--url-base", base)
    assert main(["data", "list", "--dest", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "present" in lines["jsonschemabench"] and "10 subsets, 11 schemas" in lines["jsonschemabench"]
    assert f"commit {JSB.commit}" in lines["jsonschemabench"]
    assert "missing" in lines["maskbench"] and f"cdbench data fetch maskbench --dest {tmp_path}" in lines["maskbench"]
    assert "missing" in lines["jsts"]


def test_default_data_dir_falls_back_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("CDBENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "clone" / "cdbench")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert config.default_data_dir() == tmp_path / "cache" / "cdbench" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.default_data_dir() == tmp_path / "home" / ".cache" / "cdbench" / "data"
    (tmp_path / "clone" / "shared" / "datasets").mkdir(parents=True)
    assert config.default_data_dir() == tmp_path / "clone" / "shared" / "datasets"
    monkeypatch.setenv("CDBENCH_DATA_DIR", str(tmp_path / "env"))
    assert config.default_data_dir() == tmp_path / "env"


def test_missing_dataset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.delenv("CDBENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "clone" / "cdbench")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = config.default_data_dir()
    cases = [(lambda: load_tasks("jsonschemabench"), "JSONSchemaBench", "jsonschemabench"),
             (lambda: load_maskbench(root / "jsonschemabench" / "maskbench"), "MaskBench", "maskbench"),
             (lambda: load_test_suite(root / "json-schema-test-suite"), "JSON Schema Test Suite", "jsts")]
    for load, title, name in cases:
        with pytest.raises(ConfigError) as info:
            load()
        msg = str(info.value)
        assert msg.startswith(f"{title} data not found in {root}") and "\n" not in msg
        assert msg.endswith(f"(fetch it: cdbench data fetch {name})")
    with pytest.raises(ConfigError, match=rf"fetch it: cdbench data fetch maskbench --dest {tmp_path / 'x'}\)"):
        load_maskbench(tmp_path / "x" / "jsonschemabench" / "maskbench")


def test_strip_whitespace_keeps_tokens_exactly():
    text = '{\n  "a b" : [1.50, 2e3,\n 3],\t"q\\" x": "t\\\\", "a b": {} }\n'
    assert strip_whitespace(text) == '{"a b":[1.50,2e3,3],"q\\" x":"t\\\\","a b":{}}'
    with pytest.raises(ValueError):
        strip_whitespace('{"a": "unterminated}')
    assert [maskbench_group(s) for s in ("Handwritten---allIt4", "BFCL_parallel_multiple_12", "Odd")] == \
        ["Handwritten", "BFCL_parallel_multiple", "Odd"]
