"""An editor's decisions on a run's jobs (approve, or reject with a note), kept in the run's ledger.

Their own tables beside the ledger's, so the provider-job records are untouched: `reviews` and `takes` in
the SQLite ledger file, or `lipsync_reviews` and `lipsync_takes` for a run whose ledger is in PostgreSQL
(`ReviewTables`). `rejected_jobs(reviews, job_ids)` (pure) is what `lipsync run --only-rejected` selects, and
`plan_takes` (pure) what it does with each: a rejected job gets a new *take*, a delivery made from new
provider jobs (its creates have keys of their own: the reviewer asked to pay again, once). The take is
recorded (`takes`) before anything is created, naming the rejection it answers, so a killed re-run resumes
the same take instead of starting another; every later run of the directory works on a job's latest take.
Once the take is delivered (the earlier delivery archived in `<job>/take-<n>/`, see `run.rundir`), the
rejection it answers is cleared: the job is pending review again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager, closing
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ..errors import ValidationError
from ..fsutil import write_text_atomic
from .ledger import LEDGER_NAME, has_ledger, ledger_pointer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    job_id     TEXT PRIMARY KEY,
    decision   TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS takes (
    job_id     TEXT NOT NULL,
    take       INTEGER NOT NULL,
    answers    REAL NOT NULL,
    note       TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (job_id, take)
);
"""
MAX_NOTE = 2000


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Review:
    job_id: str
    decision: Decision
    note: str
    decided_at: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.value}


@dataclass(frozen=True)
class Take:
    """A job's delivery number `take` (1, 2, ...; the first delivery is take 0 and has no row), made anew
    because of the rejection decided at `answers` (its `Review.decided_at`) with `note`."""

    job_id: str
    take: int
    answers: float
    note: str
    started_at: float = 0.0


@dataclass(frozen=True)
class TakePlan:
    take: Take
    new: bool  # False: a killed re-run already recorded it; it is resumed, never started twice
    reason: str


class ReviewTables(Protocol):
    """Where a run keeps its reviews and takes: its SQLite ledger file, or its PostgreSQL ledger."""

    def reviews(self) -> list[Review]: ...
    def takes(self) -> list[Take]: ...  # in take order
    def add_take(self, take: Take, started_at: float) -> None: ...  # a take on record stays as it is
    def clear_rejection(self, job_id: str, decided_at: float) -> bool: ...
    def put_review(self, review: Review) -> None: ...  # the latest decision stands
    def close(self) -> None: ...


class SqliteReviewTables:
    """The `reviews` and `takes` tables of a run directory's `ledger.sqlite`."""

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def _rows(self, table: str, query: str) -> list[sqlite3.Row]:
        with closing(self._connect()) as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                return []
            return db.execute(query).fetchall()

    def _write(self, query: str, args: tuple[Any, ...]) -> int:
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)
            return db.execute(query, args).rowcount

    def reviews(self) -> list[Review]:
        return [
            Review(r["job_id"], Decision(r["decision"]), r["note"], r["decided_at"])
            for r in self._rows("reviews", "SELECT * FROM reviews")
        ]

    def takes(self) -> list[Take]:
        return [
            Take(r["job_id"], r["take"], r["answers"], r["note"], r["started_at"])
            for r in self._rows("takes", "SELECT * FROM takes ORDER BY take")
        ]

    def add_take(self, take: Take, started_at: float) -> None:
        self._write(
            "INSERT OR IGNORE INTO takes VALUES (?, ?, ?, ?, ?)",
            (take.job_id, take.take, take.answers, take.note, started_at),
        )

    def clear_rejection(self, job_id: str, decided_at: float) -> bool:
        query = "DELETE FROM reviews WHERE job_id=? AND decision=? AND decided_at=?"
        return self._write(query, (job_id, Decision.REJECTED.value, decided_at)) > 0

    def put_review(self, review: Review) -> None:
        self._write(
            "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?)",
            (review.job_id, review.decision.value, review.note, review.decided_at),
        )

    def close(self) -> None:
        pass


def review_tables(run_dir: Path, *, readonly: bool) -> ReviewTables:
    """The review tables of `run_dir`'s ledger: its SQLite file, or the PostgreSQL database its pointer names."""
    pointer = ledger_pointer(run_dir)
    if pointer is None:
        return SqliteReviewTables(run_dir / LEDGER_NAME)
    from .ledger_pg import PgReviewTables

    return PgReviewTables(*pointer, readonly=readonly)


class Reviews:
    """An editor's decisions on the jobs of the run in `run_dir`, and the takes made because of them."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not has_ledger(self.run_dir):
            raise ValidationError(
                f"{self.run_dir}: no {LEDGER_NAME} here; give the output directory of a `lipsync run`"
            )

    def _tables(self, *, readonly: bool = False) -> AbstractContextManager[ReviewTables]:
        return closing(review_tables(self.run_dir, readonly=readonly))

    def all(self) -> dict[str, Review]:
        with self._tables(readonly=True) as tables:
            return {review.job_id: review for review in tables.reviews()}

    def takes(self) -> dict[str, Take]:
        """Each job's latest take (jobs never re-run are absent)."""
        with self._tables(readonly=True) as tables:
            return {take.job_id: take for take in tables.takes()}

    def start_take(self, take: Take) -> None:
        """Record `take` before any of its provider jobs is created (once: a take on record stays as it is)."""
        with self._tables() as tables:
            tables.add_take(take, time.time())

    def settle(self, take: Take) -> bool:
        """`take` is delivered: the rejection it answers no longer stands (a newer decision is kept)."""
        with self._tables() as tables:
            return tables.clear_rejection(take.job_id, take.answers)

    def decide(self, job_id: str, decision: Decision, note: str = "") -> Review:
        """Record the decision (the latest one stands) and write it into the job's manifest.json."""
        if decision is Decision.REJECTED and not note.strip():
            raise ValidationError(f"{job_id}: say why it is rejected (a note is required)")
        review = Review(job_id, decision, note.strip()[:MAX_NOTE], time.time())
        with self._tables() as tables:
            tables.put_review(review)
        if _into_manifest(self.run_dir / job_id / "manifest.json", review):
            from .rundir import refresh_checksums

            refresh_checksums(self.run_dir)  # the manifest changed: its checksum line with it
        return review


def _into_manifest(manifest: Path, review: Review) -> bool:
    if not manifest.is_file():
        return False
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    doc["review"] = review.to_dict()
    write_text_atomic(manifest, json.dumps(doc, indent=2, ensure_ascii=False))
    return True


def rejected_jobs(reviews: dict[str, Review], job_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The jobs of `job_ids` (config order) whose latest review rejects them."""
    return tuple(j for j in job_ids if j in reviews and reviews[j].decision is Decision.REJECTED)


def plan_takes(reviews: dict[str, Review], takes: dict[str, Take], job_ids: tuple[str, ...]) -> tuple[TakePlan, ...]:
    """For each rejected job of `job_ids`: a new take answering its rejection, or the take already recorded
    for that very rejection (a re-run that was stopped before it delivered)."""
    plans = []
    for job_id in rejected_jobs(reviews, job_ids):
        review, latest = reviews[job_id], takes.get(job_id)
        if latest is not None and latest.answers == review.decided_at:
            plans.append(TakePlan(latest, False, f"take {latest.take} answers this rejection already; resuming it"))
            continue
        take = Take(job_id, (latest.take if latest else 0) + 1, review.decided_at, review.note)
        plans.append(TakePlan(take, True, f"rejected in review ({review.note}): take {take.take}, new provider jobs"))
    return tuple(plans)
