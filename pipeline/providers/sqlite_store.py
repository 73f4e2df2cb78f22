"""The flow's store on SQLite: one file, WAL, synchronous=FULL, every write its own short transaction.

A SIGKILL at any instant leaves the file at the last committed step. `lipsync submit` keeps one of these
beside its output; `run/ledger.py` extends it with the run's job table. Everything a provider sent that
is stored (replies, errors, status words) goes through `redact` first.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .store import CreateRecord, CreateState, RecordingStore, SegmentRef
from .store import create_record as _create_record

SCHEMA_VERSION = 4  # 2: creates.raw_reply, "rejected" renamed "refused"; 3: tables a subclass adds; 4: estimates

CREATES_SCHEMA = """
CREATE TABLE IF NOT EXISTS creates (
    idem_key        TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    job_id          TEXT NOT NULL,
    inputs_key      TEXT NOT NULL,
    segment         INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    state           TEXT NOT NULL,
    handle          TEXT,
    provider_job_id TEXT,
    provider_state  TEXT,
    polls           INTEGER NOT NULL DEFAULT 0,
    final_status    TEXT,
    result_url      TEXT,
    download_path   TEXT,
    download_sha256 TEXT,
    download_size   INTEGER,
    error           TEXT,
    reconcile       TEXT,
    raw_reply       TEXT,
    intent_at       REAL NOT NULL,
    created_at      REAL,
    finished_at     REAL,
    PRIMARY KEY (idem_key, attempt)
);
CREATE INDEX IF NOT EXISTS creates_by_job ON creates (job_id, segment);
"""


class SqliteStore(RecordingStore):
    """A `FlowStore` in one SQLite file. Thread-safe: one connection, one lock, short transactions.
    Subclasses add tables with `schema` (created with the creates table, in the same migration)."""

    schema = ""

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        if not readonly:
            self._migrate()
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Create the schema, or bring a file written by an older version up to this one."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for statement in (CREATES_SCHEMA + self.schema).split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(creates)")}
                if "raw_reply" not in columns:
                    db.execute("ALTER TABLE creates ADD COLUMN raw_reply TEXT")
                db.execute("UPDATE creates SET state=? WHERE state='rejected'", (CreateState.REFUSED,))
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- FlowStore ------------------------------------------------------------------------------

    def latest_create(self, idem_key: str) -> CreateRecord | None:
        rows = self._read("SELECT * FROM creates WHERE idem_key=? ORDER BY attempt DESC LIMIT 1", (idem_key,))
        return create_record(rows[0]) if rows else None

    def live_create_for(self, ref: SegmentRef) -> CreateRecord | None:
        live = tuple(state.value for state in CreateState if state.live)
        rows = self._read(
            "SELECT * FROM creates WHERE job_id=? AND inputs_key=? AND segment=? AND provider=?"
            f" AND state IN ({','.join('?' * len(live))}) ORDER BY intent_at DESC LIMIT 1",
            (ref.job_id, ref.inputs_key, ref.segment, ref.provider, *live),
        )
        return create_record(rows[0]) if rows else None

    def _insert_intent(self, idem_key: str, ref: SegmentRef, now: float) -> int:
        with self._write() as db:
            last = db.execute("SELECT MAX(attempt) FROM creates WHERE idem_key=?", (idem_key,)).fetchone()[0]
            attempt = int(last or 0) + 1
            db.execute(
                "INSERT INTO creates (idem_key, attempt, job_id, inputs_key, segment, provider, state, intent_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (idem_key, attempt, ref.job_id, ref.inputs_key, ref.segment, ref.provider, CreateState.INTENT, now),
            )
        return attempt

    def _count_poll(self, idem_key: str, attempt: int, provider_state: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE creates SET provider_state=?, polls=polls+1 WHERE idem_key=? AND attempt=?",
                (provider_state, idem_key, attempt),
            )

    def _update(self, idem_key: str, attempt: int, **values: Any) -> None:
        columns = ", ".join(f"{name}=?" for name in values)
        with self._write() as db:
            db.execute(
                f"UPDATE creates SET {columns} WHERE idem_key=? AND attempt=?", (*values.values(), idem_key, attempt)
            )


def create_record(row: sqlite3.Row) -> CreateRecord:
    return _create_record(dict(row))
