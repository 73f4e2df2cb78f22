"""Every manifest.json under a folder checked against the committed docs/manifest.schema.json, each version
once (tests/conftest.py runs it over the worker's temp tree after each test)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema

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
