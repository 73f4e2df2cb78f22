"""An editor's decisions on a run's jobs (approve, or reject with a note), kept in the run's ledger file.

Its own tables (`reviews`, `takes`) and its own small class beside `Ledger`, so the provider-job records are
untouched. `rejected_jobs(reviews, job_ids)` (pure) is what `lipsync run --only-rejected` selects, and
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
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..fsutil import write_text_atomic
from .ledger import LEDGER_NAME, has_ledger

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


class Reviews:
    """The `reviews` table of `run_dir/ledger.sqlite`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LEDGER_NAME
        if not has_ledger(self.run_dir):
            raise ValidationError(
                f"{self.run_dir}: no {LEDGER_NAME} here; give the output directory of a `lipsync run`"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def _rows(self, table: str, query: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if not self.path.is_file():  # a run whose ledger is in PostgreSQL: reviews are not kept there yet
            return []
        with self._connect() as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                return []
            return db.execute(query, args).fetchall()

    def all(self) -> dict[str, Review]:
        rows = self._rows("reviews", "SELECT * FROM reviews")
        return {r["job_id"]: Review(r["job_id"], Decision(r["decision"]), r["note"], r["decided_at"]) for r in rows}

    def takes(self) -> dict[str, Take]:
        """Each job's latest take (jobs never re-run are absent)."""
        rows = self._rows("takes", "SELECT * FROM takes ORDER BY take")
        return {r["job_id"]: Take(r["job_id"], r["take"], r["answers"], r["note"], r["started_at"]) for r in rows}

    def start_take(self, take: Take) -> None:
        """Record `take` before any of its provider jobs is created (once: a take on record stays as it is)."""
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO takes VALUES (?, ?, ?, ?, ?)",
                (take.job_id, take.take, take.answers, take.note, time.time()),
            )

    def settle(self, take: Take) -> bool:
        """`take` is delivered: the rejection it answers no longer stands (a newer decision is kept)."""
        with self._connect() as db:
            db.executescript(_SCHEMA)
            gone = db.execute(
                "DELETE FROM reviews WHERE job_id=? AND decision=? AND decided_at=?",
                (take.job_id, Decision.REJECTED.value, take.answers),
            )
            return gone.rowcount > 0

    def decide(self, job_id: str, decision: Decision, note: str = "") -> Review:
        """Record the decision (the latest one stands) and write it into the job's manifest.json."""
        if decision is Decision.REJECTED and not note.strip():
            raise ValidationError(f"{job_id}: say why it is rejected (a note is required)")
        if not self.path.is_file():
            raise ValidationError(
                f"{self.run_dir}: reviews of a run whose ledger is in PostgreSQL are not supported yet"
            )
        review = Review(job_id, decision, note.strip()[:MAX_NOTE], time.time())
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?)",
                (review.job_id, review.decision.value, review.note, review.decided_at),
            )
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
