"""The datasets cdbench can fetch, each pinned to one commit of its public repository.

sha256 is the checksum of the archive GitHub serves for that commit; None means it has not
been pinned here yet: fetch then records the checksum it computed instead of checking one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL_BASE = "https://codeload.github.com"
URL_TEMPLATE = "{base}/{owner}/{repo}/tar.gz/{commit}"
LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "COPYING")

JSB_REPO = ("guidance-ai", "jsonschemabench")
JSB_COMMIT = "ba103c73756198dd9b149ddc7db7867da7a077f6"  # jsonschemabench/PROVENANCE.md
JSB_SHA256: str | None = None                              # not computed yet (no network where this was written)
JSB_LICENCE = ("MIT (declared on the Hugging Face dataset card epfl-dlab/JSONSchemaBench; the GitHub "
               "repository has no LICENSE file; individual schemas keep their upstream terms)")
JSB_SUBSETS = ("Github_trivial", "Github_easy", "Github_medium", "Github_hard", "Github_ultra",
               "Glaiveai2K", "Kubernetes", "Snowplow", "WashingtonPost", "JsonSchemaStore")


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    owner: str
    repo: str
    commit: str
    sha256: str | None
    members: tuple[str, ...]   # archive subpaths (below the archive's top directory); each must match a file
    target: str                # directory under the data root
    layout: str                # jsb-schemas | maskbench | copy (see layout.py)
    licence: str
    suffix: str = ".json"      # only files with this suffix are taken (plus a licence file)

    def url(self, base: str | None = None) -> str:
        return URL_TEMPLATE.format(base=(base or DEFAULT_URL_BASE).rstrip("/"), owner=self.owner,
                                   repo=self.repo, commit=self.commit)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("jsonschemabench", "JSONSchemaBench", *JSB_REPO, JSB_COMMIT, JSB_SHA256,
           tuple(f"data/{s}/" for s in JSB_SUBSETS), "jsonschemabench/schemas", "jsb-schemas", JSB_LICENCE),
    Source("maskbench", "MaskBench", *JSB_REPO, JSB_COMMIT, JSB_SHA256,
           ("maskbench/data/",), "jsonschemabench/maskbench", "maskbench", JSB_LICENCE),
    Source("jsts", "JSON Schema Test Suite", "json-schema-org", "JSON-Schema-Test-Suite",
           "44401e0c046704b476ec9d2e2fccdaee618f259d", None,  # json-schema-test-suite/PROVENANCE.md
           ("tests/", "remotes/", "annotations/", "output-tests/", "test-schema.json", "output-test-schema.json"),
           "json-schema-test-suite", "copy", "MIT (Copyright (c) 2012 Julian Berman)"),
)}


def fetch_hint(name: str, directory: str | Path) -> str:
    """'fetch it: cdbench data fetch NAME' (+ --dest ROOT when the data root is not the default one)."""
    from ..config import default_data_dir

    command = f"cdbench data fetch {name}"
    directory, parts = Path(directory), Path(SOURCES[name].target).parts
    if directory.parts[-len(parts):] == parts:
        root = directory.parents[len(parts) - 1]
        if root.resolve() != default_data_dir().resolve():
            command += f" --dest {root}"
    return f"fetch it: {command}"
