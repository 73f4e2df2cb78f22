"""An editor's decisions on a run's jobs (approve, or reject with a note), kept in the run's ledger file.

Its own table (`reviews`) and its own small class beside `Ledger`, so the provider-job records are untouched.
`rejected_jobs(reviews, job_ids)` (pure) is what `lipsync run --only-rejected` selects.
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

    def all(self) -> dict[str, Review]:
        if not self.path.is_file():  # a run whose ledger is in PostgreSQL: reviews are not kept there yet
            return {}
        with self._connect() as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name='reviews'").fetchone():
                return {}
            rows = db.execute("SELECT * FROM reviews").fetchall()
        return {r["job_id"]: Review(r["job_id"], Decision(r["decision"]), r["note"], r["decided_at"]) for r in rows}

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
