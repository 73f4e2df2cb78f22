"""One provider job on prepared media, paid for once: the library side of `lipsync submit` (and of each
clip of `lipsync animate`, which keeps its clips in the same kind of ledger).

The job goes through the same provider-job flow as a batch (`providers/flow.py`), recorded in a small
ledger beside the output (`OUT.ledger.sqlite`): running the same submit again after a crash, a Ctrl-C or
a lost connection resumes the job it already paid for (polls it, downloads it) instead of creating
another; after success it reuses the result. Delete the ledger to pay for a fresh job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .fsutil import exclusive_lock
from .providers.base import JobStatus, Provider, ProviderRequest
from .providers.flow import FlowHooks, FlowSettings, ProviderJobFlow, SegmentJob, segment_key
from .providers.sqlite_store import SqliteStore
from .providers.store import SegmentRef


def submit_ledger_path(out: Path) -> Path:
    return out.with_name(out.name + ".ledger.sqlite")


@dataclass(frozen=True)
class SubmitResult:
    provider: str
    job_id: str  # the provider's job id
    output: Path
    sha256: str
    size: int
    started_with: str  # what the flow found: "create", "poll" (resumed), "reuse" ...
    ledger: Path
    width: int | None = None
    height: int | None = None
    credits: float | None = None
    usage: dict[str, float] = field(default_factory=dict)  # the provider's usage figures, as it names them
    result_url: str | None = None
    unconfirmed: bool = False  # taken after a grace: the provider never confirmed the result's size
    seconds: float = 0.0
    states: list[dict[str, Any]] = field(default_factory=list)  # every status seen in this process

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "output": str(self.output), "ledger": str(self.ledger)}


@contextmanager
def submit_store(out: Path) -> Iterator[SqliteStore]:
    """The ledger beside `out`, held by this process alone while the block runs."""
    ledger = submit_ledger_path(out)
    with exclusive_lock(ledger, f"{out}: another lipsync command is working on it"), SqliteStore(ledger) as store:
        yield store


def submit(
    provider: Provider,
    request: ProviderRequest,
    out: str | Path,
    *,
    hooks: FlowHooks = FlowHooks(),
    settings: FlowSettings = FlowSettings(),
) -> SubmitResult:
    """Get `request` done by `provider` into `out`, creating at most one paid job for these inputs
    (whatever happened to earlier attempts at the same submit). Errors are raised typed."""
    out = Path(out)
    provider.check_credential()  # a missing key leaves no ledger behind
    with submit_store(out) as store:
        return submit_to(store, provider, request, out, hooks=hooks, settings=settings)


def submit_job(
    provider: Provider, request: ProviderRequest, out: Path, *, command: str = "submit", segment: int = 0
) -> SegmentJob:
    """The flow's job for `request`, keyed by what it asks of which provider (so the same command finds it
    again); `segment` numbers the jobs one ledger keeps (a chain's clips)."""
    request = request.checked()
    key = segment_key(kind=command, provider=provider.name, base_urls=provider.base_urls, **request.summary())
    return SegmentJob(
        key=key,
        ref=SegmentRef(command, key, segment, provider.name),
        request=request,
        reply_ref=f"lipsync-{command}/{key}",
        result_path=out,
    )


def submit_to(
    store: SqliteStore,
    provider: Provider,
    request: ProviderRequest,
    out: Path,
    *,
    hooks: FlowHooks = FlowHooks(),
    settings: FlowSettings = FlowSettings(),
) -> SubmitResult:
    """`submit` into an open ledger."""
    started = time.monotonic()
    result = ProviderJobFlow(provider, store, settings, hooks).run(submit_job(provider, request, out))
    record = result.record
    status = record.final_status or {}
    return SubmitResult(
        provider=provider.name,
        job_id=record.provider_job_id or "",
        output=out,
        sha256=record.download_sha256 or "",
        size=record.download_size or 0,
        started_with=result.started_with.action.value,
        ledger=store.path,
        width=status.get("width"),
        height=status.get("height"),
        credits=status.get("credits"),
        usage=status.get("usage") or {},
        result_url=record.result_url,
        unconfirmed=bool(status.get("unconfirmed")),
        seconds=round(time.monotonic() - started, 3),
        states=[_seen(s) for s in result.states],
    )


def _seen(status: JobStatus) -> dict[str, Any]:
    return {"state": status.state.value, "raw": status.raw_status}
