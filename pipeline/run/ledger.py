"""The run ledger: what was asked of each provider, what it answered, and where each job stands.

One SQLite file per run directory (stdlib sqlite3, WAL, synchronous=FULL). All writes go through one
connection behind a lock, each in its own short transaction, so a SIGKILL at any instant leaves the
ledger at the last committed step. The rule that keeps users from paying twice lives here:
the intent to create is committed before the create request leaves, and the provider's job id is
committed the moment it is known. An intent without a job id is `uncertain`: the job may exist and may
be billed, so nothing re-creates it unless the user says so.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    inputs_key  TEXT NOT NULL,
    stage       TEXT NOT NULL,
    detail      TEXT,
    exit_code   INTEGER,
    error       TEXT,
    final_path  TEXT,
    final_sha256 TEXT,
    started_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS stage_times (
    job_id      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (job_id, stage)
);
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
    intent_at       REAL NOT NULL,
    created_at      REAL,
    finished_at     REAL,
    PRIMARY KEY (idem_key, attempt)
);
CREATE INDEX IF NOT EXISTS creates_by_job ON creates (job_id, segment);
"""


class Stage(StrEnum):
    PENDING = "pending"
    PREPARE = "prepare"
    QUEUED = "queued"          # prepared, waiting for a provider slot
    SUBMIT = "submit"
    POLL = "poll"
    DOWNLOAD = "download"
    MUX = "mux"
    VERIFY = "verify"
    HANDOFF = "handoff"
    DONE = "done"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (Stage.DONE, Stage.FAILED, Stage.UNCERTAIN)


class CreateState(StrEnum):
    INTENT = "intent"          # committed before the request; no job id yet
    CREATED = "created"        # the provider answered with a job id
    SUCCEEDED = "succeeded"    # the provider says done, with a result URL
    DOWNLOADED = "downloaded"  # the paid result is on our disk (path + sha256)
    FAILED = "failed"          # the provider says failed or moderated
    REJECTED = "rejected"      # the create was refused outright: nothing exists, nothing billed
    UNCERTAIN = "uncertain"    # the answer was lost: the job may exist

    @property
    def live(self) -> bool:
        """A provider job exists (or may exist) for this attempt and must not be created again."""
        return self in (CreateState.CREATED, CreateState.SUCCEEDED, CreateState.DOWNLOADED)


@dataclass(frozen=True)
class JobRow:
    job_id: str
    provider: str
    inputs_key: str
    stage: Stage
    detail: str | None
    exit_code: int | None
    error: str | None
    final_path: str | None
    final_sha256: str | None
    started_at: float
    updated_at: float
    finished_at: float | None


@dataclass(frozen=True)
class CreateRecord:
    idem_key: str
    attempt: int
    job_id: str
    inputs_key: str
    segment: int
    provider: str
    state: CreateState
    handle: dict[str, Any] | None
    provider_job_id: str | None
    provider_state: str | None
    polls: int
    final_status: dict[str, Any] | None
    result_url: str | None
    download_path: str | None
    download_sha256: str | None
    download_size: int | None
    error: str | None
    reconcile: dict[str, Any] | None
    intent_at: float
    created_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class StageTime:
    job_id: str
    stage: str
    started_at: float
    finished_at: float | None


class Ledger:
    """The SQLite ledger of one run directory. Thread-safe: one connection, one lock, short transactions."""

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    @classmethod
    def in_dir(cls, run_dir: Path, *, readonly: bool = False) -> "Ledger":
        return cls(Path(run_dir) / LEDGER_NAME, readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- jobs -------------------------------------------------------------------------------------

    def start_job(self, job_id: str, provider: str, inputs_key: str) -> JobRow:
        """Register a job for this run. A job whose inputs changed starts over (its old creates stay on record)."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT inputs_key, stage FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None or row["inputs_key"] != inputs_key:
                db.execute("DELETE FROM stage_times WHERE job_id=?", (job_id,))
                db.execute(
                    "INSERT OR REPLACE INTO jobs (job_id, provider, inputs_key, stage, started_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, provider, inputs_key, Stage.PENDING, now, now),
                )
        return self.job(job_id)

    def set_stage(self, job_id: str, stage: Stage, detail: str | None = None) -> None:
        """Move a job to `stage`, closing the previous stage's timing."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE stage_times SET finished_at=? WHERE job_id=? AND finished_at IS NULL", (now, job_id)
            )
            if not stage.finished and stage is not Stage.INTERRUPTED:
                db.execute(
                    "INSERT OR REPLACE INTO stage_times (job_id, stage, started_at) VALUES (?, ?, ?)",
                    (job_id, stage, now),
                )
            db.execute(
                "UPDATE jobs SET stage=?, detail=?, updated_at=?, exit_code=NULL, error=NULL, finished_at=NULL"
                " WHERE job_id=?",
                (stage, detail, now, job_id),
            )

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
        with self._write() as db:
            db.execute(
                "UPDATE stage_times SET finished_at=? WHERE job_id=? AND finished_at IS NULL", (now, job_id)
            )
            db.execute(
                "UPDATE jobs SET stage=?, exit_code=?, error=?, final_path=?, final_sha256=?, updated_at=?,"
                " finished_at=? WHERE job_id=?",
                (stage, exit_code, error, final_path, final_sha256, now, now, job_id),
            )

    def job(self, job_id: str) -> JobRow:
        rows = self._read("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        if not rows:
            raise KeyError(job_id)
        return _job_row(rows[0])

    def jobs(self) -> list[JobRow]:
        return [_job_row(r) for r in self._read("SELECT * FROM jobs ORDER BY started_at, job_id")]

    def stage_times(self, job_id: str) -> list[StageTime]:
        rows = self._read("SELECT * FROM stage_times WHERE job_id=? ORDER BY started_at", (job_id,))
        return [StageTime(**dict(r)) for r in rows]

    # --- creates ----------------------------------------------------------------------------------

    def latest_create(self, idem_key: str) -> CreateRecord | None:
        rows = self._read("SELECT * FROM creates WHERE idem_key=? ORDER BY attempt DESC LIMIT 1", (idem_key,))
        return _create_record(rows[0]) if rows else None

    def live_create_for(self, job_id: str, inputs_key: str, segment: int) -> CreateRecord | None:
        """The latest create for this job's inputs and segment that exists at the provider, whatever its key."""
        live = tuple(state.value for state in CreateState if state.live)
        rows = self._read(
            f"SELECT * FROM creates WHERE job_id=? AND inputs_key=? AND segment=? AND state IN ({','.join('?' * len(live))})"
            " ORDER BY intent_at DESC LIMIT 1", (job_id, inputs_key, segment, *live),
        )
        return _create_record(rows[0]) if rows else None

    def creates(self, job_id: str | None = None, *, current: bool = False) -> list[CreateRecord]:
        """Every create on record (of one job). `current`: only those for the job's present inputs."""
        if job_id is None:
            rows = self._read("SELECT * FROM creates ORDER BY intent_at")
        elif current:
            rows = self._read(
                "SELECT c.* FROM creates c JOIN jobs j ON c.job_id = j.job_id AND c.inputs_key = j.inputs_key"
                " WHERE c.job_id=? ORDER BY c.segment, c.attempt", (job_id,),
            )
        else:
            rows = self._read("SELECT * FROM creates WHERE job_id=? ORDER BY segment, attempt", (job_id,))
        return [_create_record(r) for r in rows]

    def record_intent(self, idem_key: str, *, job_id: str, inputs_key: str, segment: int, provider: str) -> int:
        """Commit the intent to create (before the request is sent). Returns the attempt number."""
        with self._write() as db:
            last = db.execute("SELECT MAX(attempt) FROM creates WHERE idem_key=?", (idem_key,)).fetchone()[0]
            attempt = (last or 0) + 1
            db.execute(
                "INSERT INTO creates (idem_key, attempt, job_id, inputs_key, segment, provider, state, intent_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (idem_key, attempt, job_id, inputs_key, segment, provider, CreateState.INTENT, time.time()),
            )
        return attempt

    def record_created(self, idem_key: str, attempt: int, *, handle: dict[str, Any], provider_job_id: str) -> None:
        self._update_create(
            idem_key, attempt, state=CreateState.CREATED, handle=json.dumps(handle),
            provider_job_id=provider_job_id, created_at=time.time(),
        )

    def record_poll(self, idem_key: str, attempt: int, provider_state: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE creates SET provider_state=?, polls=polls+1 WHERE idem_key=? AND attempt=?",
                (provider_state, idem_key, attempt),
            )

    def record_succeeded(self, idem_key: str, attempt: int, *, result_url: str, status: dict[str, Any]) -> None:
        """The provider says done, with a result URL; `status` is its last status reply, kept for the manifest."""
        self._update_create(
            idem_key, attempt, state=CreateState.SUCCEEDED, result_url=result_url,
            provider_state=status.get("raw_status"), final_status=json.dumps(status),
        )

    def record_downloaded(self, idem_key: str, attempt: int, *, path: str, sha256: str, size: int) -> None:
        self._update_create(
            idem_key, attempt, state=CreateState.DOWNLOADED, download_path=path, download_sha256=sha256,
            download_size=size, finished_at=time.time(),
        )

    def record_failed(self, idem_key: str, attempt: int, *, error: str, provider_state: str | None = None) -> None:
        self._update_create(
            idem_key, attempt, state=CreateState.FAILED, error=error, provider_state=provider_state,
            finished_at=time.time(),
        )

    def record_rejected(self, idem_key: str, attempt: int, *, error: str) -> None:
        self._update_create(idem_key, attempt, state=CreateState.REJECTED, error=error, finished_at=time.time())

    def record_uncertain(self, idem_key: str, attempt: int, *, error: str, reconcile: dict[str, Any] | None) -> None:
        self._update_create(
            idem_key, attempt, state=CreateState.UNCERTAIN, error=error,
            reconcile=json.dumps(reconcile or {}), finished_at=time.time(),
        )

    def _update_create(self, idem_key: str, attempt: int, **values: Any) -> None:
        columns = ", ".join(f"{name}=?" for name in values)
        with self._write() as db:
            db.execute(
                f"UPDATE creates SET {columns} WHERE idem_key=? AND attempt=?",
                (*values.values(), idem_key, attempt),
            )


def _job_row(row: sqlite3.Row) -> JobRow:
    d = dict(row)
    d["stage"] = Stage(d["stage"])
    return JobRow(**d)


def _create_record(row: sqlite3.Row) -> CreateRecord:
    d = dict(row)
    d["state"] = CreateState(d["state"])
    d["handle"] = json.loads(d["handle"]) if d["handle"] else None
    d["reconcile"] = json.loads(d["reconcile"]) if d["reconcile"] else None
    d["final_status"] = json.loads(d["final_status"]) if d["final_status"] else None
    return CreateRecord(**d)


# --- who owns a run directory ---------------------------------------------------------------------


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One `lipsync run` per run directory at a time: two would both think they own the ledger's intents.
    The kernel drops the lock when the process dies, however it dies."""
    from ..errors import LipsyncError

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LipsyncError(f"{run_dir}: another `lipsync run` is using this run directory") from None
        yield


def run_in_progress(run_dir: Path) -> bool:
    """Is a `lipsync run` working in `run_dir` right now?"""
    try:
        handle = open(run_dir / LOCK_NAME, "r")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


# --- the read-only view `lipsync status` shows ---------------------------------------------------


@dataclass(frozen=True)
class JobView:
    row: JobRow
    creates: list[CreateRecord]
    stages: list[StageTime]

    def elapsed(self, now: float) -> float:
        return (self.row.finished_at or now) - self.row.started_at

    def to_dict(self, now: float) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.job_id, "provider": r.provider, "stage": r.stage.value, "detail": r.detail,
            "exit_code": r.exit_code, "error": r.error, "final": r.final_path, "final_sha256": r.final_sha256,
            "started_at": r.started_at, "finished_at": r.finished_at, "elapsed_s": round(self.elapsed(now), 3),
            "stages": [{"stage": s.stage, "seconds": round((s.finished_at or now) - s.started_at, 3)}
                       for s in self.stages],
            "provider_jobs": [
                {"segment": c.segment, "attempt": c.attempt, "state": c.state.value, "job_id": c.provider_job_id,
                 "provider_state": c.provider_state, "polls": c.polls, "error": c.error,
                 "reconcile": c.reconcile} for c in self.creates
            ],
        }


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    running: bool             # a `lipsync run` holds the directory now; if not, unfinished stages are stopped ones
    jobs: list[JobView]

    @property
    def uncertain(self) -> list[CreateRecord]:
        return [c for j in self.jobs for c in j.creates
                if c.state in (CreateState.UNCERTAIN, CreateState.INTENT) and j.row.stage is not Stage.SUBMIT]

    def to_dict(self) -> dict[str, Any]:
        now = time.time()
        return {"run_dir": str(self.run_dir), "running": self.running, "jobs": [j.to_dict(now) for j in self.jobs],
                "uncertain": [{"job": c.job_id, "segment": c.segment, "attempt": c.attempt, "key": c.idem_key,
                               "reconcile": c.reconcile} for c in self.uncertain]}


def read_status(run_dir: str | Path) -> RunStatus:
    """Everything the ledger of `run_dir` knows, read-only (safe while a run is writing)."""
    from ..errors import ValidationError

    run_dir = Path(run_dir)
    if not (run_dir / LEDGER_NAME).is_file():
        raise ValidationError(f"{run_dir}: no {LEDGER_NAME} here; give the output directory of a `lipsync run`")
    with Ledger.in_dir(run_dir, readonly=True) as ledger:
        jobs = [JobView(row, ledger.creates(row.job_id), ledger.stage_times(row.job_id)) for row in ledger.jobs()]
    return RunStatus(run_dir, run_in_progress(run_dir), jobs)
