"""The run ledger on PostgreSQL, for runs that several processes (cluster workers, two `lipsync run`s) share.

Same records and semantics as the SQLite ledger (`ledger.py`): the flow's creates (the intent committed
before a create leaves, the provider's id the moment it is known), where each job stands, stage times,
secret fingerprints. Every table carries the run's name, so one database holds many runs.

What SQLite gets from the run directory's flock, PostgreSQL gives with leases: `lease(name)` takes a
session-level advisory lock (keyed by a hash of the run and the name) on a connection of this process's
own. Only one session holds a key; a process that dies, however it dies, loses its session and so its
leases, at once and without an expiry to guess. The flow takes one per segment key, the runner one per job.

The connection is re-opened when the server drops it, and the interrupted statement run again: every
write is idempotent (an intent carries a token, so a commit whose answer was lost is found, not
inserted twice). The password never appears in a config: libpq reads it from PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from ..errors import ConfigError, LedgerError
from ..pricing import Estimate
from ..providers.store import CreateRecord, CreateState, RecordingStore, SegmentRef, create_record
from ..secrets import REGISTRY, Fingerprint
from .ledger import JobCost, JobRow, SegmentEstimate, Stage, StageTime, estimate_rows
from .reviews import Decision, Review, Take

log = logging.getLogger("lipsync.run")

SCHEMA_VERSION = 1
RECONNECT_ATTEMPTS = 8  # about 40 s of a database restarting or a network blip
LEASE_POLL_S = 0.5
LEASE_CHECK_S = 2.0  # how often the leases' connection is checked (and re-opened, its leases taken again)
_MIGRATION_LOCK = 0x6C697073796E63  # "lipsync": one migration at a time across every process

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lipsync_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lipsync_creates (
    run             TEXT NOT NULL,
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
    download_size   BIGINT,
    error           TEXT,
    reconcile       TEXT,
    raw_reply       TEXT,
    intent_at       DOUBLE PRECISION NOT NULL,
    created_at      DOUBLE PRECISION,
    finished_at     DOUBLE PRECISION,
    intent_token    TEXT NOT NULL UNIQUE,
    PRIMARY KEY (run, idem_key, attempt)
);
CREATE INDEX IF NOT EXISTS lipsync_creates_by_job ON lipsync_creates (run, job_id, segment);
CREATE TABLE IF NOT EXISTS lipsync_jobs (
    run          TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    provider     TEXT NOT NULL,
    inputs_key   TEXT NOT NULL,
    stage        TEXT NOT NULL,
    detail       TEXT,
    exit_code    INTEGER,
    error        TEXT,
    final_path   TEXT,
    final_sha256 TEXT,
    started_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    finished_at  DOUBLE PRECISION,
    PRIMARY KEY (run, job_id)
);
CREATE TABLE IF NOT EXISTS lipsync_secrets (
    run     TEXT NOT NULL,
    length  INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    PRIMARY KEY (run, length, sha256)
);
CREATE TABLE IF NOT EXISTS lipsync_estimates (
    run             TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    inputs_key      TEXT NOT NULL,
    segment         INTEGER NOT NULL,
    seconds         DOUBLE PRECISION NOT NULL,
    tts_characters  INTEGER NOT NULL,
    currency        TEXT,
    amount          TEXT,
    reason          TEXT NOT NULL,
    PRIMARY KEY (run, job_id, inputs_key, segment)
);
CREATE TABLE IF NOT EXISTS lipsync_reviews (
    run        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    decision   TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    decided_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run, job_id)
);
CREATE TABLE IF NOT EXISTS lipsync_takes (
    run        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    take       INTEGER NOT NULL,
    answers    DOUBLE PRECISION NOT NULL,
    note       TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run, job_id, take)
);
CREATE TABLE IF NOT EXISTS lipsync_stage_times (
    run         TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    PRIMARY KEY (run, job_id, stage)
);
"""

T = TypeVar("T")


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def shown_url(url: str) -> str:
    """`url` fit to print: any password taken out (ours never hold one; a mistyped config might)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def password_in_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.password is not None or "password=" in parts.query


def lease_key(run: str, name: str) -> int:
    """The advisory lock key of a lease: 64 bits of a hash (a collision only makes two leases wait on each other)."""
    return int.from_bytes(hashlib.sha256(f"{run}\0{name}".encode()).digest()[:8], "big", signed=True)


def refuse_password(url: str) -> None:
    if password_in_url(url):
        raise ConfigError(
            f"{shown_url(url)}: a password in the ledger URL would land in configs and logs; "
            "set PGPASSWORD (or use ~/.pgpass) instead"
        )


def migrate(db: psycopg.Connection[dict[str, Any]], url: str) -> None:
    """Create the ledger's tables (one process at a time) and refuse a schema newer than this lipsync's."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute(_SCHEMA)  # psycopg sends it as one simple query: several statements are fine here
        row = db.execute("SELECT max(version) AS v FROM lipsync_schema").fetchone()
        version = row["v"] if row else None
        if version is None:
            db.execute("INSERT INTO lipsync_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger at {shown_url(url)} has schema {version}, newer than this lipsync's "
                f"{SCHEMA_VERSION}; upgrade lipsync"
            )


def check_version(db: psycopg.Connection[dict[str, Any]], url: str) -> None:
    try:
        row = db.execute("SELECT max(version) AS v FROM lipsync_schema").fetchone()
    except psycopg.errors.UndefinedTable:
        raise LedgerError(f"the database at {shown_url(url)} holds no lipsync ledger") from None
    if row is None or row["v"] is None or row["v"] > SCHEMA_VERSION:
        raise LedgerError(f"the ledger at {shown_url(url)} has a schema this lipsync cannot read")


class _Connection:
    """One connection, re-opened when the server drops it; `call` runs a whole unit of work again after a
    reconnect (each unit is idempotent). Thread-safe: one unit at a time."""

    def __init__(self, url: str, *, readonly: bool, purpose: str):
        self.url = url
        self.readonly = readonly
        self.purpose = purpose
        self._db: psycopg.Connection[dict[str, Any]] | None = None
        self._opened = False  # a connection was open before: a new one is a reconnect
        self.lock = threading.RLock()
        self.on_reconnect: Callable[[psycopg.Connection[dict[str, Any]]], None] | None = None

    def _open(self) -> psycopg.Connection[dict[str, Any]]:
        REGISTRY.add(os.environ.get("PGPASSWORD"))  # never printed, whatever a driver message quotes
        options = "-c default_transaction_read_only=on" if self.readonly else ""
        return psycopg.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            application_name=f"lipsync {self.purpose}",
            connect_timeout=10,
            options=options,
        )

    def call(self, work: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        with self.lock:
            for attempt in range(RECONNECT_ATTEMPTS):
                try:
                    if self._db is None:
                        self._db = self._open()
                        if self._opened and self.on_reconnect is not None:
                            self.on_reconnect(self._db)
                        self._opened = True
                    return work(self._db)
                except psycopg.OperationalError as err:
                    if self._db is not None and not (self._db.closed or self._db.broken):
                        raise  # a statement's error on a healthy connection is not a dropped connection
                    self.drop()
                    log.warning("ledger %s: connection lost (%s); reconnecting", shown_url(self.url), _first_line(err))
                    time.sleep(min(10.0, 0.25 * 2**attempt))
            raise LedgerError(f"the ledger at {shown_url(self.url)} cannot be reached; run again to resume")

    def drop(self) -> None:
        if self._db is not None:
            with suppress(psycopg.Error):
                self._db.close()
        self._db = None


class PgLedger(RecordingStore):
    """The ledger of run `run` in the PostgreSQL database at `url`: a `FlowStore` with leases, and the run's
    job table (the same methods as `ledger.Ledger`)."""

    def __init__(self, url: str, run: str, *, readonly: bool = False):
        refuse_password(url)
        self.url = url
        self.run = run
        self._db = _Connection(url, readonly=readonly, purpose="ledger")
        self._lease_db = _Connection(url, readonly=False, purpose="leases")
        self._lease_db.on_reconnect = self._retake_leases
        self._held: set[int] = set()
        self._closed = threading.Event()
        try:
            if not readonly:
                self._db.call(self._migrate)
            else:
                self._db.call(self._check_version)
        except psycopg.Error as err:
            raise LedgerError(f"the ledger at {shown_url(url)}: {_first_line(err)}") from None
        threading.Thread(target=self._keep_leases, name="lipsync-leases", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with self._db.lock:
            self._db.drop()
        with self._lease_db.lock:
            self._lease_db.drop()

    def __enter__(self) -> PgLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self, db: psycopg.Connection[dict[str, Any]]) -> None:
        migrate(db, self.url)

    def _check_version(self, db: psycopg.Connection[dict[str, Any]]) -> None:
        check_version(db, self.url)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self._db.call(lambda db: db.execute(sql, args).fetchall())

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._db.call(lambda db: db.execute(sql, args))

    # --- leases ------------------------------------------------------------------------------------

    @contextmanager
    def lease(self, name: str, sleep: Callable[[float], None]) -> Iterator[None]:
        key = lease_key(self.run, name)
        waited = False
        while not self._try_lease(key):
            if not waited:
                log.info("%s: held by another process sharing the ledger; waiting for it", name.split("/", 1)[0])
                waited = True
            sleep(LEASE_POLL_S)
        try:
            yield
        finally:
            self._release(key)

    def held_elsewhere(self, name: str) -> bool:
        """Does another process hold this lease now? (Takes and gives it back at once if free.)"""
        key = lease_key(self.run, name)
        if not self._try_lease(key):
            return True
        self._release(key)
        return False

    def _try_lease(self, key: int) -> bool:
        with self._lease_db.lock:  # a key is held once per process: advisory locks nest within a session
            if key in self._held:
                return False
            row = self._lease_db.call(
                lambda db: db.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()
            )
            if row and row["got"]:
                self._held.add(key)
                return True
            return False

    def _release(self, key: int) -> None:
        with self._lease_db.lock:
            self._held.discard(key)
            with suppress(LedgerError):  # the session is gone, and its locks with it
                self._lease_db.call(lambda db: db.execute("SELECT pg_advisory_unlock(%s)", (key,)))

    def _keep_leases(self) -> None:
        """A dropped connection loses its session's leases: notice within LEASE_CHECK_S and take them again."""
        while not self._closed.wait(LEASE_CHECK_S):
            with self._lease_db.lock:
                if not self._held or self._closed.is_set():
                    continue
                try:
                    self._lease_db.call(lambda db: db.execute("SELECT 1"))
                except LedgerError as err:
                    log.warning("%s", err.render())

    def _retake_leases(self, db: psycopg.Connection[dict[str, Any]]) -> None:
        """After a dropped connection: the session's locks went with it. Take them again; one another process
        took meanwhile is logged (the records still keep it paid once: that process reads our intent)."""
        for key in sorted(self._held):
            row = db.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()
            if not (row and row["got"]):
                log.warning("ledger: a lease was taken by another process while the connection was down")

    # --- FlowStore ---------------------------------------------------------------------------------

    def latest_create(self, idem_key: str) -> CreateRecord | None:
        rows = self._rows(
            "SELECT * FROM lipsync_creates WHERE run=%s AND idem_key=%s ORDER BY attempt DESC LIMIT 1",
            (self.run, idem_key),
        )
        return create_record(rows[0]) if rows else None

    def live_create_for(self, ref: SegmentRef) -> CreateRecord | None:
        live = [state.value for state in CreateState if state.live]
        rows = self._rows(
            "SELECT * FROM lipsync_creates WHERE run=%s AND job_id=%s AND inputs_key=%s AND segment=%s"
            " AND provider=%s AND state = ANY(%s) ORDER BY intent_at DESC LIMIT 1",
            (self.run, ref.job_id, ref.inputs_key, ref.segment, ref.provider, live),
        )
        return create_record(rows[0]) if rows else None

    def _insert_intent(self, idem_key: str, ref: SegmentRef, now: float) -> int:
        token = uuid.uuid4().hex

        def insert(db: psycopg.Connection[dict[str, Any]]) -> int:
            with db.transaction():
                done = db.execute("SELECT attempt FROM lipsync_creates WHERE intent_token=%s", (token,)).fetchone()
                if done:  # committed before the connection dropped
                    return int(done["attempt"])
                # the key's lease is held, so no other writer adds an attempt of this key meanwhile
                row = db.execute(
                    "SELECT coalesce(max(attempt), 0) + 1 AS next FROM lipsync_creates WHERE run=%s AND idem_key=%s",
                    (self.run, idem_key),
                ).fetchone()
                attempt = int(row["next"]) if row else 1
                db.execute(
                    "INSERT INTO lipsync_creates (run, idem_key, attempt, job_id, inputs_key, segment, provider,"
                    " state, intent_at, intent_token) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        self.run,
                        idem_key,
                        attempt,
                        ref.job_id,
                        ref.inputs_key,
                        ref.segment,
                        ref.provider,
                        CreateState.INTENT.value,
                        now,
                        token,
                    ),
                )
                return attempt

        return self._db.call(insert)

    def _update(self, idem_key: str, attempt: int, **values: Any) -> None:
        columns = ", ".join(f"{name}=%s" for name in values)
        args = tuple(v.value if isinstance(v, CreateState) else v for v in values.values())
        self._exec(
            f"UPDATE lipsync_creates SET {columns} WHERE run=%s AND idem_key=%s AND attempt=%s",
            (*args, self.run, idem_key, attempt),
        )

    def _count_poll(self, idem_key: str, attempt: int, provider_state: str) -> None:
        self._exec(
            "UPDATE lipsync_creates SET provider_state=%s, polls=polls+1 WHERE run=%s AND idem_key=%s AND attempt=%s",
            (provider_state, self.run, idem_key, attempt),
        )

    # --- the run's jobs (as ledger.Ledger) ---------------------------------------------------------

    def record_secrets(self, prints: list[Fingerprint]) -> None:
        for p in prints:
            self._exec(
                "INSERT INTO lipsync_secrets (run, length, sha256) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (self.run, p.length, p.sha256),
            )

    def secret_fingerprints(self) -> list[Fingerprint]:
        rows = self._rows("SELECT length, sha256 FROM lipsync_secrets WHERE run=%s", (self.run,))
        return [Fingerprint(int(r["length"]), str(r["sha256"])) for r in rows]

    def start_job(self, job_id: str, provider: str, inputs_key: str) -> JobRow:
        now = time.time()

        def start(db: psycopg.Connection[dict[str, Any]]) -> None:
            with db.transaction():
                row = db.execute(
                    "SELECT inputs_key FROM lipsync_jobs WHERE run=%s AND job_id=%s FOR UPDATE", (self.run, job_id)
                ).fetchone()
                if row is None or row["inputs_key"] != inputs_key:
                    db.execute("DELETE FROM lipsync_stage_times WHERE run=%s AND job_id=%s", (self.run, job_id))
                    db.execute(
                        "INSERT INTO lipsync_jobs (run, job_id, provider, inputs_key, stage, started_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run, job_id) DO UPDATE SET"
                        " provider=excluded.provider, inputs_key=excluded.inputs_key, stage=excluded.stage,"
                        " detail=NULL, exit_code=NULL, error=NULL, final_path=NULL, final_sha256=NULL,"
                        " started_at=excluded.started_at, updated_at=excluded.updated_at, finished_at=NULL",
                        (self.run, job_id, provider, inputs_key, Stage.PENDING.value, now, now),
                    )

        self._db.call(start)
        return self.job(job_id)

    def set_stage(self, job_id: str, stage: Stage, detail: str | None = None) -> None:
        now = time.time()

        def move(db: psycopg.Connection[dict[str, Any]]) -> None:
            with db.transaction():
                db.execute(
                    "UPDATE lipsync_stage_times SET finished_at=%s WHERE run=%s AND job_id=%s AND finished_at IS NULL",
                    (now, self.run, job_id),
                )
                if not stage.finished and stage is not Stage.INTERRUPTED:
                    db.execute(
                        "INSERT INTO lipsync_stage_times (run, job_id, stage, started_at) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (run, job_id, stage) DO UPDATE SET started_at=excluded.started_at,"
                        " finished_at=NULL",
                        (self.run, job_id, stage.value, now),
                    )
                db.execute(
                    "UPDATE lipsync_jobs SET stage=%s, detail=%s, updated_at=%s, exit_code=NULL, error=NULL,"
                    " finished_at=NULL WHERE run=%s AND job_id=%s",
                    (stage.value, detail, now, self.run, job_id),
                )

        self._db.call(move)

    def finish_job(
        self,
        job_id: str,
        stage: Stage,
        *,
        exit_code: int,
        error: str | None = None,
        final_path: str | None = None,
        final_sha256: str | None = None,
    ) -> None:
        now = time.time()

        def finish(db: psycopg.Connection[dict[str, Any]]) -> None:
            with db.transaction():
                db.execute(
                    "UPDATE lipsync_stage_times SET finished_at=%s WHERE run=%s AND job_id=%s AND finished_at IS NULL",
                    (now, self.run, job_id),
                )
                db.execute(
                    "UPDATE lipsync_jobs SET stage=%s, exit_code=%s, error=%s, final_path=%s, final_sha256=%s,"
                    " updated_at=%s, finished_at=%s WHERE run=%s AND job_id=%s",
                    (stage.value, exit_code, error, final_path, final_sha256, now, now, self.run, job_id),
                )

        self._db.call(finish)

    def job(self, job_id: str) -> JobRow:
        rows = self._rows("SELECT * FROM lipsync_jobs WHERE run=%s AND job_id=%s", (self.run, job_id))
        if not rows:
            raise KeyError(job_id)
        return _job_row(rows[0])

    def jobs(self) -> list[JobRow]:
        rows = self._rows("SELECT * FROM lipsync_jobs WHERE run=%s ORDER BY started_at, job_id", (self.run,))
        return [_job_row(r) for r in rows]

    def stage_times(self, job_id: str) -> list[StageTime]:
        rows = self._rows(
            "SELECT job_id, stage, started_at, finished_at FROM lipsync_stage_times WHERE run=%s AND job_id=%s"
            " ORDER BY started_at",
            (self.run, job_id),
        )
        return [StageTime(**r) for r in rows]

    def record_estimate(self, job_id: str, inputs_key: str, estimate: Estimate) -> None:
        rows = estimate_rows(job_id, inputs_key, estimate)

        def replace(db: psycopg.Connection[dict[str, Any]]) -> None:
            with db.transaction():
                db.execute(
                    "DELETE FROM lipsync_estimates WHERE run=%s AND job_id=%s AND inputs_key=%s",
                    (self.run, job_id, inputs_key),
                )
                for row in rows:
                    db.execute(
                        "INSERT INTO lipsync_estimates (run, job_id, inputs_key, segment, seconds, tts_characters,"
                        " currency, amount, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (self.run, *row),
                    )

        self._db.call(replace)

    def cost(self, job_id: str) -> JobCost:
        rows = self._rows(
            "SELECT e.* FROM lipsync_estimates e JOIN lipsync_jobs j ON e.run = j.run AND e.job_id = j.job_id"
            " AND e.inputs_key = j.inputs_key WHERE e.run=%s AND e.job_id=%s ORDER BY e.segment",
            (self.run, job_id),
        )
        live = [c for c in self.creates(job_id, current=True) if c.state.live]
        return JobCost(tuple(SegmentEstimate.from_row(r) for r in rows), tuple(live))

    def creates(self, job_id: str | None = None, *, current: bool = False) -> list[CreateRecord]:
        if job_id is None:
            rows = self._rows("SELECT * FROM lipsync_creates WHERE run=%s ORDER BY intent_at", (self.run,))
        elif current:
            rows = self._rows(
                "SELECT c.* FROM lipsync_creates c JOIN lipsync_jobs j ON c.run = j.run AND c.job_id = j.job_id"
                " AND c.inputs_key = j.inputs_key WHERE c.run=%s AND c.job_id=%s ORDER BY c.segment, c.attempt",
                (self.run, job_id),
            )
        else:
            rows = self._rows(
                "SELECT * FROM lipsync_creates WHERE run=%s AND job_id=%s ORDER BY segment, attempt", (self.run, job_id)
            )
        return [create_record(r) for r in rows]

    def running(self) -> bool:
        """Is a process working on one of this run's jobs now (holding its lease)?"""
        return any(self.held_elsewhere(f"job/{row.job_id}") for row in self.jobs() if not row.stage.finished)


class PgReviewTables:
    """The review tables (`run/reviews.py`) of run `run` in the PostgreSQL ledger at `url`."""

    def __init__(self, url: str, run: str, *, readonly: bool):
        refuse_password(url)
        self.url = url
        self.run = run
        self._db = _Connection(url, readonly=readonly, purpose="reviews")
        self._call(lambda db: (check_version if readonly else migrate)(db, url))

    def _call(self, work: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        try:
            return self._db.call(work)
        except psycopg.Error as err:
            raise LedgerError(f"the ledger at {shown_url(self.url)}: {_first_line(err)}") from None

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        def read(db: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
            try:
                return db.execute(sql, (self.run,)).fetchall()
            except psycopg.errors.UndefinedTable:  # read-only, a ledger no run of this version has opened yet
                return []

        return self._call(read)

    def reviews(self) -> list[Review]:
        rows = self._rows("SELECT * FROM lipsync_reviews WHERE run=%s")
        return [Review(r["job_id"], Decision(r["decision"]), r["note"], r["decided_at"]) for r in rows]

    def takes(self) -> list[Take]:
        rows = self._rows("SELECT * FROM lipsync_takes WHERE run=%s ORDER BY take")
        return [Take(r["job_id"], r["take"], r["answers"], r["note"], r["started_at"]) for r in rows]

    def add_take(self, take: Take, started_at: float) -> None:
        args = (self.run, take.job_id, take.take, take.answers, take.note, started_at)
        self._call(
            lambda db: db.execute(
                "INSERT INTO lipsync_takes VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", args
            )
        )

    def clear_rejection(self, job_id: str, decided_at: float) -> bool:
        sql = "DELETE FROM lipsync_reviews WHERE run=%s AND job_id=%s AND decision=%s AND decided_at=%s"
        args = (self.run, job_id, Decision.REJECTED.value, decided_at)
        return self._call(lambda db: db.execute(sql, args).rowcount) > 0

    def put_review(self, review: Review) -> None:
        sql = (
            "INSERT INTO lipsync_reviews VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run, job_id) DO UPDATE "
            "SET decision=EXCLUDED.decision, note=EXCLUDED.note, decided_at=EXCLUDED.decided_at"
        )
        args = (self.run, review.job_id, review.decision.value, review.note, review.decided_at)
        self._call(lambda db: db.execute(sql, args))

    def close(self) -> None:
        with self._db.lock:
            self._db.drop()


def _job_row(row: dict[str, Any]) -> JobRow:
    d = {name: row[name] for name in JobRow.__dataclass_fields__}
    d["stage"] = Stage(d["stage"])
    return JobRow(**d)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
