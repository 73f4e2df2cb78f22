"""One job end to end on prepared media: create → wait → download, with a record of what happened.

Used by `lipsync submit`; the batch runner drives the same steps itself so it can commit the handle to
its ledger between them (`on_handle` is the hook for that here).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..limits import load_limits
from .base import JobHandle, JobRequest, JobStatus, Provider
from .poll import wait_for_job

# A result is a lip-synced copy of an input that is at most 50 MB; leave room for a higher bitrate.
RESULT_MAX_BYTES_FACTOR = 4


@dataclass
class JobRecord:
    provider: str
    job_id: str | None = None
    handle: dict[str, Any] | None = None
    states: list[dict[str, Any]] = field(default_factory=list)   # every status seen, with its time
    timings: dict[str, float] = field(default_factory=dict)      # seconds: create, wait, download, total
    output: str | None = None
    sha256: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    credits: float | None = None
    result_url: str | None = None
    unconfirmed: bool = False           # taken after the grace: the provider never confirmed a size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def result_cap(provider: str) -> int:
    return load_limits(provider).video_max_bytes * RESULT_MAX_BYTES_FACTOR


def run_job(provider: Provider, req: JobRequest, dst: Path, *,
            on_handle: Callable[[JobHandle], None] | None = None,
            on_status: Callable[[JobStatus], None] | None = None,
            max_bytes: int | None = None) -> JobRecord:
    """Create the job, wait for it, download the result to `dst`. Errors propagate, typed; `on_handle`
    hears the job id as soon as it exists, so a caller can always report it."""
    record = JobRecord(provider.name)
    start = time.monotonic()

    def seen(status: JobStatus) -> None:
        record.states.append({"t": round(time.monotonic() - start, 3), "state": status.state.value,
                              "raw": status.raw_status})
        if on_status is not None:
            on_status(status)

    handle = provider.create(req)
    record.job_id, record.handle = handle.job_id, handle.to_dict()
    record.timings["create"] = round(time.monotonic() - start, 3)
    if on_handle is not None:
        on_handle(handle)
    status = wait_for_job(provider, handle, on_status=seen)
    record.timings["wait"] = round(time.monotonic() - start - record.timings["create"], 3)
    record.result_url, record.width, record.height, record.credits, record.unconfirmed = (
        status.result_url, status.width, status.height, status.credits, status.unconfirmed)
    t = time.monotonic()
    got = provider.download(status.result_url or "", Path(dst), max_bytes=max_bytes or result_cap(provider.name))
    record.timings["download"] = round(time.monotonic() - t, 3)
    record.timings["total"] = round(time.monotonic() - start, 3)
    record.output, record.sha256, record.size = str(got.path), got.sha256, got.size
    return record
