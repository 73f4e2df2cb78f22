"""What the provider-job flow writes down, and the small interface it writes through.

Every billable step of `flow.py` is persisted through a `FlowStore` before the next one starts, so a
process killed at any instant leaves a record from which a rerun knows what exists at the provider.
`run/ledger.py` (SQLite, one per run directory) implements it for `lipsync run`; `lipsync submit` uses
the same class on a small ledger file beside its output. The store never decides anything: the flow's
pure `decide` reads a record and says what to do.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..secrets import redact


class CreateState(StrEnum):
    INTENT = "intent"  # committed just before the create request leaves; no answer yet
    CREATED = "created"  # the provider accepted the job and its id is recorded
    SUCCEEDED = "succeeded"  # the provider says done (sticky: never FAILED afterwards); result_url may lag
    DOWNLOADED = "downloaded"  # the paid result is on our disk (path + sha256)
    FAILED = "failed"  # the provider says the generation failed or was moderated
    REFUSED = "refused"  # the create was declined or never fully sent: nothing exists, nothing billed
    UNCERTAIN = "uncertain"  # the request may have reached the provider, but no usable answer came back

    @property
    def live(self) -> bool:
        """A provider job exists for this attempt and must not be created again."""
        return self in (CreateState.CREATED, CreateState.SUCCEEDED, CreateState.DOWNLOADED)

    @property
    def maybe_billed(self) -> bool:
        """A job may exist for this attempt: live, or sent without an answer."""
        return self.live or self in (CreateState.INTENT, CreateState.UNCERTAIN)


@dataclass(frozen=True)
class SegmentRef:
    """Which piece of which job a provider job is for: the run's job id, its inputs and the segment."""

    job_id: str
    inputs_key: str
    segment: int
    provider: str


@dataclass(frozen=True)
class CreateRecord:
    """One create attempt of one idempotency key, as the store last wrote it."""

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
    raw_reply: str | None
    intent_at: float
    created_at: float | None
    finished_at: float | None

    @property
    def reported_credits(self) -> float | None:
        """What the provider said this job cost, in its own credits (AI/ML API's meta.usage), if it said."""
        credits = (self.final_status or {}).get("credits")
        return float(credits) if isinstance(credits, int | float) else None

    @property
    def reported_usage(self) -> dict[str, float]:
        """The provider's usage figures for this job, as its replies name them (tokens_used, ...)."""
        usage = (self.final_status or {}).get("usage")
        return dict(usage) if isinstance(usage, dict) else {}


class FlowStore(Protocol):
    """Where the flow persists each step. Every method commits before it returns."""

    def latest_create(self, idem_key: str) -> CreateRecord | None:
        """The newest attempt for this key, or None if none was ever recorded."""

    def live_create_for(self, ref: SegmentRef) -> CreateRecord | None:
        """A live provider job made for the same job inputs and segment under another key (the prepared
        media were made again and came out different): it is paid for, so it is reused."""

    def record_intent(self, idem_key: str, ref: SegmentRef) -> int:
        """The create is about to be sent; returns the attempt number."""

    def record_refused(self, idem_key: str, attempt: int, *, error: str) -> None:
        """The provider declined the create (or it never fully left): the key is back to 'not created'."""

    def record_uncertain(
        self, idem_key: str, attempt: int, *, error: str, reconcile: dict[str, Any], raw_reply: str | None = None
    ) -> None:
        """The request may have been delivered but no usable answer was recorded."""

    def record_reply(self, idem_key: str, attempt: int, *, raw_reply: str) -> None:
        """An accepting reply, as received, before anything parses it (so a reply we cannot read still
        shows the job id it carried)."""

    def record_created(self, idem_key: str, attempt: int, *, handle: dict[str, Any], provider_job_id: str) -> None:
        """The provider accepted the job: its id and the handle to poll it."""

    def adopt(
        self, idem_key: str, attempt: int, *, handle: dict[str, Any], provider_job_id: str, raw_reply: str
    ) -> None:
        """An uncertain attempt was found at the provider (reconciled): it becomes that job."""

    def record_poll(self, idem_key: str, attempt: int, provider_state: str) -> None: ...

    def record_succeeded(self, idem_key: str, attempt: int, *, result_url: str | None, status: dict[str, Any]) -> None:
        """The provider says the job is done; the URL may still be missing (polled again, never failed)."""

    def record_failed(self, idem_key: str, attempt: int, *, error: str) -> None: ...

    def record_downloaded(self, idem_key: str, attempt: int, *, path: str, sha256: str, size: int) -> None: ...

    def lease(self, name: str, sleep: Callable[[float], None]) -> AbstractContextManager[None]:
        """Hold `name` (a segment's key, a job) against every other process sharing this store until the
        block ends, waiting with `sleep` while another holds it. A store only one process writes at a time
        (SQLite under the run lock) holds nothing; a shared one (PostgreSQL) must make it exclusive."""


class RecordingStore(ABC):
    """The `FlowStore` record methods, written once on three primitives a database-specific store provides
    (SQLite, PostgreSQL). Everything a provider sent that is stored goes through `redact` first."""

    @abstractmethod
    def _insert_intent(self, idem_key: str, ref: SegmentRef, now: float) -> int:
        """Insert the next attempt of `idem_key` as INTENT in one transaction; returns its number."""

    @abstractmethod
    def _update(self, idem_key: str, attempt: int, **values: Any) -> None:
        """Set columns of one attempt, committed."""

    @abstractmethod
    def _count_poll(self, idem_key: str, attempt: int, provider_state: str) -> None:
        """provider_state set and polls + 1, committed."""

    def lease(self, name: str, sleep: Callable[[float], None]) -> AbstractContextManager[None]:
        return _held()

    def record_intent(self, idem_key: str, ref: SegmentRef) -> int:
        return self._insert_intent(idem_key, ref, time.time())

    def record_refused(self, idem_key: str, attempt: int, *, error: str) -> None:
        self._update(idem_key, attempt, state=CreateState.REFUSED, error=redact(error), finished_at=time.time())

    def record_uncertain(
        self, idem_key: str, attempt: int, *, error: str, reconcile: dict[str, Any], raw_reply: str | None = None
    ) -> None:
        self._update(
            idem_key,
            attempt,
            state=CreateState.UNCERTAIN,
            error=redact(error),
            reconcile=redact(json.dumps(reconcile)),
            raw_reply=None if raw_reply is None else redact(raw_reply),
            finished_at=time.time(),
        )

    def record_reply(self, idem_key: str, attempt: int, *, raw_reply: str) -> None:
        self._update(idem_key, attempt, raw_reply=redact(raw_reply))

    def record_created(self, idem_key: str, attempt: int, *, handle: dict[str, Any], provider_job_id: str) -> None:
        self._update(
            idem_key,
            attempt,
            state=CreateState.CREATED,
            handle=json.dumps(handle),
            provider_job_id=provider_job_id,
            created_at=time.time(),
        )

    def adopt(
        self, idem_key: str, attempt: int, *, handle: dict[str, Any], provider_job_id: str, raw_reply: str
    ) -> None:
        self._update(
            idem_key,
            attempt,
            state=CreateState.CREATED,
            handle=json.dumps(handle),
            provider_job_id=provider_job_id,
            raw_reply=redact(raw_reply),
            created_at=time.time(),
            error=None,
            finished_at=None,
        )

    def record_poll(self, idem_key: str, attempt: int, provider_state: str) -> None:
        self._count_poll(idem_key, attempt, redact(provider_state))

    def record_succeeded(self, idem_key: str, attempt: int, *, result_url: str | None, status: dict[str, Any]) -> None:
        self._update(
            idem_key,
            attempt,
            state=CreateState.SUCCEEDED,
            result_url=result_url,
            provider_state=redact(str(status.get("raw_status"))),
            final_status=redact(json.dumps(status)),
        )

    def record_failed(self, idem_key: str, attempt: int, *, error: str) -> None:
        self._update(idem_key, attempt, state=CreateState.FAILED, error=redact(error), finished_at=time.time())

    def record_downloaded(self, idem_key: str, attempt: int, *, path: str, sha256: str, size: int) -> None:
        self._update(
            idem_key,
            attempt,
            state=CreateState.DOWNLOADED,
            download_path=path,
            download_sha256=sha256,
            download_size=size,
            finished_at=time.time(),
        )


def create_record(row: dict[str, Any]) -> CreateRecord:
    """A stored row (column name -> value, JSON columns as text) as a record."""
    d = dict(row)
    d["state"] = CreateState("refused" if d["state"] == "rejected" else d["state"])
    for name in ("handle", "reconcile", "final_status"):
        d[name] = json.loads(d[name]) if d[name] else None
    d.setdefault("raw_reply", None)  # a file of schema 1, opened read-only
    return CreateRecord(**{name: d[name] for name in CreateRecord.__dataclass_fields__})


@contextmanager
def _held() -> Iterator[None]:
    yield
