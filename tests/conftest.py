"""Suite-wide settings and checks.

Hypothesis runs without a per-example deadline: the suite runs beside heavy media work on 2 cores, and a test
here asserts properties, never how long something took.

Every manifest.json the tests write (in-process or by a `lipsync` subprocess, in a test's tmp_path or a
module's shared folder) is validated against the committed docs/manifest.schema.json: after each test, the
worker's temp tree is searched for manifests that are new or changed since the last look, and one that does
not follow the schema fails the test that wrote it (an error at teardown).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings
from manifest_check import ManifestWatch

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session")
def manifest_watch(tmp_path_factory) -> ManifestWatch:
    return ManifestWatch(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _manifests_follow_the_schema(manifest_watch: ManifestWatch) -> Iterator[None]:
    yield
    problems = manifest_watch.problems()
    assert not problems, "manifest.json not following docs/manifest.schema.json:\n" + "\n".join(problems[:20])
