"""Suite-wide settings and checks.

Hypothesis runs without a per-example deadline: the suite runs beside heavy media work on 2 cores, and a test
here asserts properties, never how long something took.

Every manifest.json the tests write (in-process or by a `lipsync` subprocess, in a test's tmp_path or a
module's shared folder) is validated against the committed docs/manifest.schema.json: after each test, the
worker's temp tree is searched for manifests that are new or changed since the last look, and one that does
not follow the schema fails the test that wrote it (an error at teardown).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

MANIFEST_SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "manifest.schema.json"


class ManifestWatch:
    """The manifest.json files under `root` not yet validated in their present version (mtime, size)."""

    def __init__(self, root: Path):
        self.root = root
        self.validator = jsonschema.Draft202012Validator(json.loads(MANIFEST_SCHEMA.read_text(encoding="utf-8")))
        self._seen: dict[str, tuple[int, int]] = {}

    def _changed(self) -> Iterator[Path]:
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = [d for d in subfolders if d != ".work"]  # a run's scratch: never a manifest
            if "manifest.json" not in files:
                continue
            path = os.path.join(folder, "manifest.json")
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if self._seen.get(path) != (st.st_mtime_ns, st.st_size):
                self._seen[path] = (st.st_mtime_ns, st.st_size)
                yield Path(path)

    def problems(self) -> list[str]:
        found = []
        for path in self._changed():
            doc = json.loads(path.read_text(encoding="utf-8"))
            found += [
                f"{path}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator.iter_errors(doc)
            ]
        return found


@pytest.fixture(scope="session")
def manifest_watch(tmp_path_factory) -> ManifestWatch:
    return ManifestWatch(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _manifests_follow_the_schema(manifest_watch: ManifestWatch) -> Iterator[None]:
    yield
    problems = manifest_watch.problems()
    assert not problems, "manifest.json not following docs/manifest.schema.json:\n" + "\n".join(problems[:20])
