"""The run ledger: what was asked of each provider, what it answered, and where each job stands.

One SQLite file per run directory: the provider-job flow's records (`providers/sqlite_store.py`: the
intent committed before a create leaves, the provider's job id the moment it is known) and, here, where
each job of the run stands and how long each stage took.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..fsutil import exclusive_lock, write_text_atomic
from ..pricing import UNKNOWN, Estimate
from ..providers.sqlite_store import SqliteStore, create_record
from ..providers.store import CreateRecord, CreateState, FlowStore
from ..secrets import Fingerprint, add_fingerprints

if TYPE_CHECKING:
    from .config import RunConfig

LEDGER_NAME = "ledger.sqlite"
POINTER_NAME = "ledger.postgresql.json"  # where a run's PostgreSQL ledger is (no password: libpq's environment)
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
CREATE TABLE IF NOT EXISTS secrets (
    length      INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (length, sha256)
);
CREATE TABLE IF NOT EXISTS stage_times (
    job_id      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (job_id, stage)
);
CREATE TABLE IF NOT EXISTS estimates (
    job_id          TEXT NOT NULL,
    inputs_key      TEXT NOT NULL,
    segment         INTEGER NOT NULL,
    seconds         REAL NOT NULL,
    tts_characters  INTEGER NOT NULL,
    currency        TEXT,
    amount          TEXT,
    reason          TEXT NOT NULL,
    PRIMARY KEY (job_id, inputs_key, segment)
);
"""


class Stage(StrEnum):
    PENDING = "pending"
    PREPARE = "prepare"
    QUEUED = "queued"  # prepared, waiting for a provider slot
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
class StageTime:
    job_id: str
    stage: str
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class SegmentEstimate:
    """What one provider job of a job was estimated to cost before it was created (pipeline.pricing)."""

    segment: int
    seconds: float
    tts_characters: int
    currency: str | None
    amount: Decimal | None  # None: the provider documents no price
    reason: str

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> SegmentEstimate:
        amount = r["amount"]
        return cls(
            int(r["segment"]),
            float(r["seconds"]),
            int(r["tts_characters"]),
            r["currency"],
            None if amount is None else Decimal(amount),
            str(r["reason"]),
        )


def estimate_rows(job_id: str, inputs_key: str, estimate: Estimate) -> list[tuple[Any, ...]]:
    """An estimate as rows of the estimates table (both ledgers), one per planned provider job."""
    return [
        (
            job_id,
            inputs_key,
            line.index,
            line.seconds,
            line.tts_characters,
            estimate.currency,
            None if line.amount is None else str(line.amount),
            line.reason,
        )
        for line in estimate.lines
    ]


@dataclass(frozen=True)
class JobCost:
    """A job's cost as estimated before its creates and as its provider reported it afterwards."""

    estimates: tuple[SegmentEstimate, ...]
    creates: tuple[CreateRecord, ...]  # the job's live provider jobs (those that may be billed)

    @property
    def estimated(self) -> Decimal | None:
        """The total estimate; None when nothing was estimated or one segment's price is unknown."""
        amounts = [e.amount for e in self.estimates]
        if not amounts or any(a is None for a in amounts):
            return None
        return sum((a for a in amounts if a is not None), Decimal(0))

    @property
    def currency(self) -> str | None:
        return next((e.currency for e in self.estimates if e.currency), None)

    @property
    def reported_credits(self) -> float | None:
        """The credits the provider reported over the job's provider jobs; None when it reported none."""
        credits = [c.reported_credits for c in self.creates if c.reported_credits is not None]
        return sum(credits) if credits else None

    def estimated_text(self) -> str:
        if not self.estimates:
            return "-"
        total = self.estimated
        return UNKNOWN if total is None else f"{self.currency or ''} {total:.2f}".strip()

    def reported_text(self) -> str:
        credits = self.reported_credits
        return "-" if credits is None else f"{credits:,.3f}".rstrip("0").rstrip(".") + " credits"

    def to_dict(self) -> dict[str, Any]:
        estimated = self.estimated
        by_segment = {c.segment: c for c in self.creates}
        return {
            "estimated": None if not self.estimates else (UNKNOWN if estimated is None else str(estimated)),
            "currency": self.currency,
            "reported_credits": self.reported_credits,
            "segments": [
                {
                    "segment": e.segment,
                    "seconds": e.seconds,
                    "tts_characters": e.tts_characters,
                    "estimated": UNKNOWN if e.amount is None else str(e.amount),
                    "reason": e.reason,
                    "provider_job": by_segment[e.segment].provider_job_id if e.segment in by_segment else None,
                    "reported_credits": (by_segment[e.segment].reported_credits if e.segment in by_segment else None),
                    "reported_usage": by_segment[e.segment].reported_usage if e.segment in by_segment else {},
                }
                for e in self.estimates
            ],
        }


class Ledger(SqliteStore):
    """The SQLite ledger of one run directory: the flow's create records (`SqliteStore`) plus where each
    job of the run stands. Thread-safe: one connection, one lock, short transactions."""

    schema = _SCHEMA

    @classmethod
    def in_dir(cls, run_dir: Path, *, readonly: bool = False) -> Ledger:
        return cls(Path(run_dir) / LEDGER_NAME, readonly=readonly)

    # --- secrets: fingerprints only, so a later `lipsync status` can hide a key it no longer holds -----

    def record_secrets(self, prints: list[Fingerprint]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO secrets (length, sha256) VALUES (?, ?)", [(p.length, p.sha256) for p in prints]
            )

    def secret_fingerprints(self) -> list[Fingerprint]:
        try:
            rows = self._read("SELECT length, sha256 FROM secrets")
        except sqlite3.OperationalError:  # a ledger written before fingerprints were kept
            return []
        return [Fingerprint(int(r["length"]), str(r["sha256"])) for r in rows]

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
            db.execute("UPDATE stage_times SET finished_at=? WHERE job_id=? AND finished_at IS NULL", (now, job_id))
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
            db.execute("UPDATE stage_times SET finished_at=? WHERE job_id=? AND finished_at IS NULL", (now, job_id))
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

    # --- cost: estimated before any create, reported by the provider (in the creates' final status) -----

    def record_estimate(self, job_id: str, inputs_key: str, estimate: Estimate) -> None:
        """Each planned provider job's estimate for these inputs (replacing an earlier one for them)."""
        with self._write() as db:
            db.execute("DELETE FROM estimates WHERE job_id=? AND inputs_key=?", (job_id, inputs_key))
            db.executemany(
                "INSERT INTO estimates (job_id, inputs_key, segment, seconds, tts_characters, currency, amount,"
                " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                estimate_rows(job_id, inputs_key, estimate),
            )

    def estimates(self, job_id: str) -> list[SegmentEstimate]:
        """The estimates recorded for the job's present inputs, by segment."""
        try:
            rows = self._read(
                "SELECT e.* FROM estimates e JOIN jobs j ON e.job_id = j.job_id AND e.inputs_key = j.inputs_key"
                " WHERE e.job_id=? ORDER BY e.segment",
                (job_id,),
            )
        except sqlite3.OperationalError:  # a ledger written before estimates were kept
            return []
        return [SegmentEstimate.from_row(dict(r)) for r in rows]

    def cost(self, job_id: str) -> JobCost:
        live = [c for c in self.creates(job_id, current=True) if c.state.live]
        return JobCost(tuple(self.estimates(job_id)), tuple(live))

    def creates(self, job_id: str | None = None, *, current: bool = False) -> list[CreateRecord]:
        """Every create on record (of one job). `current`: only those for the job's present inputs."""
        if job_id is None:
            rows = self._read("SELECT * FROM creates ORDER BY intent_at")
        elif current:
            rows = self._read(
                "SELECT c.* FROM creates c JOIN jobs j ON c.job_id = j.job_id AND c.inputs_key = j.inputs_key"
                " WHERE c.job_id=? ORDER BY c.segment, c.attempt",
                (job_id,),
            )
        else:
            rows = self._read("SELECT * FROM creates WHERE job_id=? ORDER BY segment, attempt", (job_id,))
        return [create_record(r) for r in rows]

    def running(self) -> bool:
        """Is a `lipsync run` working in this ledger's run directory now?"""
        return run_in_progress(self.path.parent)


def _job_row(row: sqlite3.Row) -> JobRow:
    d = dict(row)
    d["stage"] = Stage(d["stage"])
    return JobRow(**d)


class RunLedger(FlowStore, Protocol):
    """What a run writes and `lipsync status` reads: `Ledger` (SQLite) and `ledger_pg.PgLedger`."""

    def record_secrets(self, prints: list[Fingerprint]) -> None: ...
    def secret_fingerprints(self) -> list[Fingerprint]: ...
    def start_job(self, job_id: str, provider: str, inputs_key: str) -> JobRow: ...
    def set_stage(self, job_id: str, stage: Stage, detail: str | None = None) -> None: ...
    def finish_job(
        self,
        job_id: str,
        stage: Stage,
        *,
        exit_code: int,
        error: str | None = None,
        final_path: str | None = None,
        final_sha256: str | None = None,
    ) -> None: ...
    def job(self, job_id: str) -> JobRow: ...
    def jobs(self) -> list[JobRow]: ...
    def stage_times(self, job_id: str) -> list[StageTime]: ...
    def creates(self, job_id: str | None = None, *, current: bool = False) -> list[CreateRecord]: ...
    def record_estimate(self, job_id: str, inputs_key: str, estimate: Estimate) -> None: ...
    def cost(self, job_id: str) -> JobCost: ...
    def close(self) -> None: ...
    def running(self) -> bool: ...


def open_ledger(config: RunConfig) -> RunLedger:
    """The ledger `config` names: its run directory's SQLite file, or its PostgreSQL database."""
    if config.ledger is None:
        return Ledger.in_dir(config.output)
    from .ledger_pg import PgLedger

    return PgLedger(config.ledger, config.name)


def point_to_ledger(config: RunConfig) -> None:
    """Leave in the run directory where its PostgreSQL ledger is, for `lipsync status` and the report."""
    if config.ledger is not None:  # the config refuses a URL with a password
        write_text_atomic(config.output / POINTER_NAME, json.dumps({"url": config.ledger, "run": config.name}) + "\n")


def has_ledger(run_dir: Path) -> bool:
    return (run_dir / LEDGER_NAME).is_file() or (run_dir / POINTER_NAME).is_file()


def ledger_pointer(run_dir: Path) -> tuple[str, str] | None:
    """The PostgreSQL URL and run name of a run directory whose ledger is in PostgreSQL, else None."""
    pointer = run_dir / POINTER_NAME
    if (run_dir / LEDGER_NAME).is_file() or not pointer.is_file():
        return None
    where = json.loads(pointer.read_text(encoding="utf-8"))
    return str(where["url"]), str(where["run"])


def open_run_ledger(run_dir: Path) -> RunLedger:
    """The ledger of a run directory, read-only: its SQLite file, or the database its pointer names."""
    pointer = ledger_pointer(run_dir)
    if pointer is not None:
        from .ledger_pg import PgLedger

        return PgLedger(*pointer, readonly=True)
    return Ledger.in_dir(run_dir, readonly=True)


# --- who owns a run directory ---------------------------------------------------------------------


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """One `lipsync run` per run directory at a time: two would both think they own the ledger's intents."""
    return exclusive_lock(run_dir / LOCK_NAME, f"{run_dir}: another `lipsync run` is using this run directory")


def run_in_progress(run_dir: Path) -> bool:
    """Is a `lipsync run` working in `run_dir` right now?"""
    try:
        with open(run_dir / LOCK_NAME) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


# --- the read-only view `lipsync status` shows ---------------------------------------------------


@dataclass(frozen=True)
class JobView:
    row: JobRow
    creates: list[CreateRecord]
    stages: list[StageTime]
    cost: JobCost

    def elapsed(self, now: float) -> float:
        return (self.row.finished_at or now) - self.row.started_at

    def to_dict(self, now: float) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.job_id,
            "provider": r.provider,
            "stage": r.stage.value,
            "detail": r.detail,
            "exit_code": r.exit_code,
            "error": r.error,
            "final": r.final_path,
            "final_sha256": r.final_sha256,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "elapsed_s": round(self.elapsed(now), 3),
            "stages": [
                {"stage": s.stage, "seconds": round((s.finished_at or now) - s.started_at, 3)} for s in self.stages
            ],
            "provider_jobs": [
                {
                    "segment": c.segment,
                    "attempt": c.attempt,
                    "state": c.state.value,
                    "job_id": c.provider_job_id,
                    "provider_state": c.provider_state,
                    "polls": c.polls,
                    "error": c.error,
                    "reconcile": c.reconcile,
                }
                for c in self.creates
            ],
            "cost": self.cost.to_dict(),
        }


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    running: bool  # a `lipsync run` holds the directory now; if not, unfinished stages are stopped ones
    jobs: list[JobView]

    @property
    def uncertain(self) -> list[CreateRecord]:
        return [
            c
            for j in self.jobs
            for c in j.creates
            if c.state in (CreateState.UNCERTAIN, CreateState.INTENT) and j.row.stage is not Stage.SUBMIT
        ]

    def to_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            "run_dir": str(self.run_dir),
            "running": self.running,
            "jobs": [j.to_dict(now) for j in self.jobs],
            "uncertain": [
                {
                    "job": c.job_id,
                    "segment": c.segment,
                    "attempt": c.attempt,
                    "key": c.idem_key,
                    "reconcile": c.reconcile,
                }
                for c in self.uncertain
            ],
        }


def read_status(run_dir: str | Path) -> RunStatus:
    """Everything the ledger of `run_dir` knows, read-only (safe while a run is writing)."""
    from ..errors import ValidationError

    run_dir = Path(run_dir)
    if not has_ledger(run_dir):
        raise ValidationError(f"{run_dir}: no {LEDGER_NAME} here; give the output directory of a `lipsync run`")
    ledger = open_run_ledger(run_dir)
    try:
        add_fingerprints(ledger.secret_fingerprints())  # what this shell no longer holds is still hidden
        jobs = [
            JobView(row, ledger.creates(row.job_id), ledger.stage_times(row.job_id), ledger.cost(row.job_id))
            for row in ledger.jobs()
        ]
        running = ledger.running()
    finally:
        ledger.close()
    return RunStatus(run_dir, running, jobs)
