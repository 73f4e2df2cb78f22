"""Suite-wide settings and checks.

Hypothesis runs without a per-example deadline: the suite runs beside heavy media work on 2 cores, and a test
here asserts properties, never how long something took.

Every manifest.json the tests write (in-process or by a `lipsync` subprocess, in a test's tmp_path or a
module's shared folder) is validated against the committed docs/manifest.schema.json: after each test, the
worker's temp tree is searched for manifests that are new or changed since the last look, and one that does
not follow the schema fails the test that wrote it (an error at teardown).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

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


# --- a real PostgreSQL server (pgserver's wheel carries its binaries), for the shared-ledger and cluster tests ---


@pytest.fixture(scope="session")
def pg_server():
    """One server per test process, started on first use (initdb + start take a few seconds). Its folder is
    outside pytest's private tmp: as root, pgserver runs PostgreSQL as its own user, who must reach it."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="lipsync-pg-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the session's server, as a password-free URL (the server trusts local sockets)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    socket_dir = pg_server.get_uri().rsplit("host=", 1)[1]
    return f"postgresql://postgres@/{name}?host={socket_dir}"
