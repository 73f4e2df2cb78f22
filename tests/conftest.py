"""Suite-wide settings. Hypothesis runs without a per-example deadline: the suite runs beside heavy media
work on 2 cores, and a test here asserts properties, never how long something took."""

from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


# --- a real PostgreSQL server (pgserver's wheel carries its binaries), for the shared-ledger and cluster tests ---

import shutil  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


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
