"""One provider job on prepared media, paid for once: the library side of `lipsync submit`.

The job goes through the same provider-job flow as a batch (`providers/flow.py`), recorded in a small
ledger beside the output (`OUT.ledger.sqlite`): running the same submit again after a crash, a Ctrl-C or
a lost connection resumes the job it already paid for (polls it, downloads it) instead of creating
another; after success it reuses the result. Delete the ledger to pay for a fresh job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .fsutil import exclusive_lock, sha256_file
from .providers.base import JobRequest, JobStatus, Provider
from .providers.flow import FlowHooks, FlowSettings, ProviderJobFlow, SegmentJob, segment_key
from .providers.sqlite_store import SqliteStore
from .providers.store import SegmentRef


def submit_ledger_path(out: Path) -> Path:
    return out.with_name(out.name + ".ledger.sqlite")


@dataclass(frozen=True)
class SubmitResult:
    provider: str
    job_id: str                   # the provider's job id
    output: Path
    sha256: str
    size: int
    started_with: str             # what the flow found: "create", "poll" (resumed), "reuse" ...
    ledger: Path
    width: int | None = None
    height: int | None = None
    credits: float | None = None
    result_url: str | None = None
    unconfirmed: bool = False     # taken after a grace: the provider never confirmed the result's size
    seconds: float = 0.0
    states: list[dict[str, Any]] = field(default_factory=list)   # every status seen in this process

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "output": str(self.output), "ledger": str(self.ledger)}


def submit(provider: Provider, request: JobRequest, out: str | Path, *, hooks: FlowHooks = FlowHooks(),
           settings: FlowSettings = FlowSettings()) -> SubmitResult:
    """Get `request` lip-synced by `provider` into `out`, creating at most one paid job for these inputs
    (whatever happened to earlier attempts at the same submit). Errors are raised typed."""
    out = Path(out)
    request = request.checked()
    key = segment_key(kind="submit", provider=provider.name, base_urls=provider.base_urls,
                      video=sha256_file(request.video), audio=sha256_file(request.audio) if request.audio else None,
                      text=request.text, speaker=request.speaker)
    job = SegmentJob(key=key, ref=SegmentRef("submit", key, 0, provider.name), request=request,
                     reply_ref=f"lipsync-submit/{key}", result_path=out)
    ledger = submit_ledger_path(out)
    started = time.monotonic()
    with exclusive_lock(ledger, f"{out}: another `lipsync submit` is working on it"), SqliteStore(ledger) as store:
        result = ProviderJobFlow(provider, store, settings, hooks).run(job)
    record = result.record
    status = record.final_status or {}
    return SubmitResult(
        provider=provider.name, job_id=record.provider_job_id or "", output=out, sha256=record.download_sha256 or "",
        size=record.download_size or 0, started_with=result.started_with.action.value, ledger=ledger,
        width=status.get("width"), height=status.get("height"), credits=status.get("credits"),
        result_url=record.result_url, unconfirmed=bool(status.get("unconfirmed")), seconds=round(time.monotonic() - started, 3),
        states=[_seen(s) for s in result.states],
    )


def _seen(status: JobStatus) -> dict[str, Any]:
    return {"state": status.state.value, "raw": status.raw_status}
