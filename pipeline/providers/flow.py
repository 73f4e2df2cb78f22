"""The provider-job flow, the one way a job is paid for: both `lipsync submit` and `lipsync run` use it.

    upload (repeatable) → record intent → create (billable, never resent blindly) → record the job id
    → wait → record "done" (sticky) → download → record the result

Every step is persisted through a `FlowStore` before the next begins, so whatever instant the process
dies at, a rerun reads the last record and `decide` (pure) says what to do with it:

- no record, or the last create was refused            → create
- a create sent without an answer (intent / uncertain) → look it up where the provider allows it
  (useapi's replyRef), else leave it to the user (`resubmit_uncertain`)
- created                                              → poll it, never create again
- succeeded (the provider said done)                   → fetch the result; poll again if the URL is
  missing or expired; never failed, never re-created
- downloaded                                           → reuse the file (or fetch it again if lost)
- failed / moderated                                   → only `retry_failed` creates a new job

Each create attempt's outcome is recorded before any backoff sleep: a refusal (concurrency limit, 429, a
validation error, a body that never fully left) puts the key back to "not created"; only a request that
may have been delivered without an answer is uncertain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import GenerationFailed, LipsyncError, ProviderError, UncertainCreate
from ..fsutil import sha256_file, sha256_json
from ..killpoints import kill_point
from ..limits import load_limits
from .base import JobHandle, JobStatus, Provider, ProviderRequest, Submission
from .download import TransferLimits, result_cap
from .http import Accepted, Lost, Refused, TryAgain, run_with_retries
from .poll import wait_for_job
from .store import CreateRecord, CreateState, FlowStore, SegmentRef

log = logging.getLogger("lipsync.providers.flow")

# ---- the decision (pure) ------------------------------------------------------------------------


class Action(StrEnum):
    CREATE = "create"
    RECONCILE = "reconcile"
    POLL = "poll"
    DOWNLOAD = "download"
    REUSE = "reuse"
    UNCERTAIN = "uncertain"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(
    record: CreateRecord | None, *, have_result: bool, resubmit_uncertain: bool, retry_failed: bool, can_reconcile: bool
) -> Decision:
    """What to do with one provider job, from its last record alone. Never creates while a job may exist,
    unless the user said so (`resubmit_uncertain`, `retry_failed` for a job the provider failed)."""
    if record is None:
        return Decision(Action.CREATE, "no create on record for this key")
    state, job = record.state, record.provider_job_id
    if state is CreateState.REFUSED:
        return Decision(Action.CREATE, f"the last create was refused ({record.error}); nothing exists")
    if state is CreateState.DOWNLOADED and have_result:
        return Decision(Action.REUSE, f"the result of {job} is already on disk")
    if state in (CreateState.DOWNLOADED, CreateState.SUCCEEDED) and record.result_url:
        return Decision(Action.DOWNLOAD, f"{job} succeeded; fetching its result")
    if state in (CreateState.DOWNLOADED, CreateState.SUCCEEDED):
        return Decision(Action.POLL, f"{job} was reported done without a result URL on record; polling it")
    if state is CreateState.CREATED:
        return Decision(Action.POLL, f"{job} exists at the provider; polling it")
    if state in (CreateState.INTENT, CreateState.UNCERTAIN):
        if can_reconcile:
            return Decision(
                Action.RECONCILE,
                "a create was sent without a recorded answer; looking it up at the provider by its reference",
            )
        if resubmit_uncertain:
            return Decision(Action.CREATE, "the last create is uncertain and --resubmit-uncertain was given")
        return Decision(Action.UNCERTAIN, UNCERTAIN_ADVICE)
    if state is CreateState.FAILED:
        if retry_failed:
            return Decision(Action.CREATE, "the provider failed the last job and --retry-failed was given")
        return Decision(Action.FAILED, f"{job} failed: {record.error}")
    raise AssertionError(f"unhandled create state {state}")


UNCERTAIN_ADVICE = (
    "a create was sent but its answer never recorded: the job may exist and be billed; check the "
    "provider's dashboard, then rerun with --resubmit-uncertain to create it again (a second, "
    "separately billed job if the first one does exist)"
)


# ---- the flow -----------------------------------------------------------------------------------


class FlowStep(StrEnum):
    SUBMIT = "submit"
    POLL = "poll"
    DOWNLOAD = "download"


def _nothing(*_args: Any) -> None:
    return None


@dataclass(frozen=True)
class FlowHooks:
    """How a caller follows the flow: steps, statuses, the job id the moment it exists; `checkpoint`
    raises to stop at a safe point; `sleep` waits (interruptibly, in a batch)."""

    on_step: Callable[[FlowStep, str | None], None] = _nothing
    on_status: Callable[[JobStatus], None] = _nothing
    on_created: Callable[[JobHandle], None] = _nothing
    checkpoint: Callable[[], None] = _nothing
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class FlowSettings:
    resubmit_uncertain: bool = False
    retry_failed: bool = False
    max_result_bytes: int | None = None  # None: `result_cap` of the provider's limits
    transfer: TransferLimits = TransferLimits()  # a download's deadline and slowest acceptable rate


@dataclass(frozen=True)
class SegmentJob:
    """One provider job to get done: its idempotency key, what it is for, what it asks (a lip-sync
    `JobRequest`, or AI/ML API's `ImageJobRequest`), where its result goes."""

    key: str
    ref: SegmentRef
    request: ProviderRequest
    reply_ref: str  # sent where the protocol stores it (useapi's replyRef), to find the job again
    result_path: Path


@dataclass(frozen=True)
class FlowResult:
    record: CreateRecord  # DOWNLOADED
    path: Path  # the provider's result on our disk
    started_with: Decision  # what the flow found and did first (for logs and tests)
    states: list[JobStatus] = field(default_factory=list)


def segment_key(**what: Any) -> str:
    """The idempotency key of one provider job: a hash of everything its result depends on."""
    return sha256_json(what)


class ProviderJobFlow:
    def __init__(
        self,
        provider: Provider,
        store: FlowStore,
        settings: FlowSettings = FlowSettings(),
        hooks: FlowHooks = FlowHooks(),
    ):
        self.provider = provider
        self.store = store
        self.settings = settings
        self.hooks = hooks
        self.max_bytes = settings.max_result_bytes or result_cap(load_limits(provider.limits_key))

    def run(self, job: SegmentJob) -> FlowResult:
        """Bring `job` to a downloaded result, whatever state an earlier process left it in. The store's lease
        on the key is held throughout: a process sharing the store (another worker) waits, then finds the
        record this one left, so it never creates what this one is creating."""
        with self.store.lease(f"segment/{job.key}", self.hooks.sleep):
            return self._run(job)

    def _run(self, job: SegmentJob) -> FlowResult:
        self.hooks.checkpoint()
        key, record = job.key, self.store.latest_create(job.key)
        if record is None:
            record = self.store.live_create_for(job.ref)
            if record is not None:
                log.info(
                    "%s segment %d: reusing %s job %s made from the same inputs",
                    job.ref.job_id,
                    job.ref.segment,
                    job.ref.provider,
                    record.provider_job_id,
                )
                key = record.idem_key
        decision = decide(
            record,
            have_result=_is_intact(job.result_path, record),
            resubmit_uncertain=self.settings.resubmit_uncertain,
            retry_failed=self.settings.retry_failed,
            can_reconcile=self.provider.can_reconcile,
        )
        log.debug("%s segment %d: %s (%s)", job.ref.job_id, job.ref.segment, decision.action, decision.reason)
        states: list[JobStatus] = []
        action = decision.action
        if action is Action.RECONCILE:
            assert record is not None
            record, action = self._reconcile(job, key, record)
        if action is Action.UNCERTAIN:
            assert record is not None
            raise self._uncertain(job, key, record)
        if action is Action.FAILED:
            raise GenerationFailed(
                f"{job.ref.job_id} segment {job.ref.segment}: {decision.reason}", provider=job.ref.provider
            )
        if action is Action.CREATE:
            record = self.create(job)
        assert record is not None
        if action in (Action.CREATE, Action.POLL):
            record = self._wait(key, record, states)
        if action is Action.DOWNLOAD:
            record = self._download_stored(job, key, record, states)
        elif action is not Action.REUSE:
            record = self._download(job, key, record)
        return FlowResult(record, job.result_path, decision, states)

    # --- create ----------------------------------------------------------------------------------

    def create(self, job: SegmentJob) -> CreateRecord:
        """Upload, then create `job` at the provider, every attempt recorded; returns the CREATED record.
        Refusals are retried after a backoff; a lost answer raises UncertainCreate and is never resent."""
        key = job.key
        self.hooks.on_step(FlowStep.SUBMIT, None)
        submission = self.provider.submission(job.request.checked(), reply_ref=job.reply_ref)
        kill_point("upload")
        reconcile = self._reconcile_info(job, submission)
        attempt, accepted, sent_at = run_with_retries(
            lambda: self._create_attempt(job, key, submission, reconcile),
            policy=self.provider.create_retry,
            provider=self.provider.name,
            what="create",
            gave_up="still refused",
            sleep=self.hooks.sleep,
        )
        self.store.record_reply(key, attempt, raw_reply=accepted.raw)
        try:
            handle = self.provider.handle_from(accepted.body, sent_at)
            problem = "the reply has no job id"
        except Exception as exc:
            handle, problem = None, f"the reply could not be read ({type(exc).__name__}: {exc})"
        if handle is None:
            error = f"accepted, but {problem}; the provider's reply is kept in the record: {_excerpt(accepted.raw)}"
            self.store.record_uncertain(key, attempt, error=error, reconcile=reconcile, raw_reply=accepted.raw)
            raise UncertainCreate(
                f"{job.ref.job_id} segment {job.ref.segment}: {error}", provider=self.provider.name, reconcile=reconcile
            )
        handle = replace(handle, model=submission.model)
        self.store.record_created(key, attempt, handle=handle.to_dict(), provider_job_id=handle.job_id)
        log.debug(
            "%s segment %d: %s job %s created", job.ref.job_id, job.ref.segment, self.provider.name, handle.job_id
        )
        self.hooks.on_created(handle)
        kill_point("after_create")
        record = self.store.latest_create(key)
        assert record is not None
        return record

    def _create_attempt(
        self, job: SegmentJob, key: str, submission: Submission, reconcile: dict[str, Any]
    ) -> tuple[int, Accepted, float]:
        """One create attempt, its outcome recorded before anything else happens (a backoff sleep included)."""
        self.hooks.checkpoint()
        attempt = self.store.record_intent(key, job.ref)
        kill_point("after_intent")
        sent_at = time.time()
        try:
            outcome = self.provider.send_create(submission, after_send=lambda: kill_point("after_send"))
        except LipsyncError as err:  # a definite answer (auth, billing, validation): nothing was created
            self.store.record_refused(key, attempt, error=err.render())
            raise
        except BaseException as err:  # interrupted mid-request: the provider may have it
            self.store.record_uncertain(
                key,
                attempt,
                error=f"interrupted while sending ({type(err).__name__})",
                reconcile={**reconcile, "sent_at": _utc(sent_at)},
            )
            raise
        if isinstance(outcome, Refused):
            self.store.record_refused(key, attempt, error=outcome.reason)
            kill_point("backoff")
            raise TryAgain(f"refused: {outcome.reason}", outcome.retry_after)
        if isinstance(outcome, Lost):
            info = {**reconcile, "sent_at": _utc(sent_at), "reason": outcome.reason}
            error = (
                f"the create sent at {info['sent_at']} got no usable answer ({outcome.reason}); the job may "
                f"exist and be billed"
            )
            self.store.record_uncertain(key, attempt, error=error, reconcile=info)
            raise UncertainCreate(
                f"{job.ref.job_id} segment {job.ref.segment}: {error}; {self._next_step()}",
                provider=self.provider.name,
                reconcile=info,
            )
        return attempt, outcome, sent_at

    def _reconcile_info(self, job: SegmentJob, submission: Submission | None) -> dict[str, Any]:
        """What a person needs to find a create whose answer was lost (never secrets or media bytes)."""
        asked = job.request.summary()
        info: dict[str, Any] = {
            "provider": self.provider.name,
            "job": job.ref.job_id,
            "segment": job.ref.segment,
            "reply_ref": job.reply_ref,
            **asked,
        }
        if submission is not None:
            info.update(
                endpoint=submission.request.url,
                request=submission.fields,
                fingerprint=sha256_json({**asked, **submission.fields}),
            )
        return info

    def _next_step(self) -> str:
        if self.provider.can_reconcile:
            return "the next run looks it up at the provider by its reference before anything else"
        return (
            "check the provider's dashboard; --resubmit-uncertain creates it again (billed again if the "
            "first one exists)"
        )

    def _uncertain(self, job: SegmentJob, key: str, record: CreateRecord) -> UncertainCreate:
        """The error for a create left without an answer; an intent a killed process left becomes uncertain."""
        reconcile = record.reconcile
        if record.state is CreateState.INTENT or not reconcile:
            reconcile = {**self._reconcile_info(job, None), "intent_at": _utc(record.intent_at)}
            self.store.record_uncertain(
                key,
                record.attempt,
                reconcile=reconcile,
                raw_reply=record.raw_reply,
                error="the process stopped after sending the create, before its answer was recorded",
            )
        return UncertainCreate(
            f"{job.ref.job_id} segment {job.ref.segment}: {UNCERTAIN_ADVICE}",
            provider=job.ref.provider,
            reconcile=reconcile,
        )

    def _reconcile(self, job: SegmentJob, key: str, record: CreateRecord) -> tuple[CreateRecord, Action]:
        """Look a create whose answer was lost up at the provider, by the reference it was sent with: found,
        it becomes the job (poll it); listed nowhere, it never became a job (the provider lists a job the
        moment it accepts it), so the key goes back to "not created"; a lookup that fails decides nothing."""
        try:
            found = self.provider.find_created(job.reply_ref)
        except LipsyncError as err:
            log.warning(
                "%s segment %d: could not look the lost create up (%s)", job.ref.job_id, job.ref.segment, err.render()
            )
            return record, Action.CREATE if self.settings.resubmit_uncertain else Action.UNCERTAIN
        if found is None:
            log.warning(
                "%s segment %d: %s has no job with reference %s: it was never created; creating it",
                job.ref.job_id,
                job.ref.segment,
                self.provider.name,
                job.reply_ref,
            )
            self.store.record_refused(
                key,
                record.attempt,
                error=f"{self.provider.name} lists no job with reference {job.reply_ref}: never created",
            )
            return self._latest(key), Action.CREATE
        handle, raw = found
        self.store.adopt(key, record.attempt, handle=handle.to_dict(), provider_job_id=handle.job_id, raw_reply=raw)
        log.info(
            "%s segment %d: found the lost create at %s: job %s",
            job.ref.job_id,
            job.ref.segment,
            self.provider.name,
            handle.job_id,
        )
        self.hooks.on_created(handle)
        return self._latest(key), Action.POLL

    # --- wait and download -----------------------------------------------------------------------

    def _wait(self, key: str, record: CreateRecord, states: list[JobStatus]) -> CreateRecord:
        assert record.handle is not None
        handle = JobHandle.from_dict(record.handle)
        self.hooks.on_step(FlowStep.POLL, handle.job_id)
        reported_done = record.state is CreateState.SUCCEEDED

        def on_status(status: JobStatus) -> None:
            nonlocal reported_done
            states.append(status)
            self.store.record_poll(key, record.attempt, status.raw_status)
            if status.reported_done:
                self._record_succeeded(key, record, status)
                reported_done = True
            self.hooks.on_status(status)
            kill_point("poll")
            self.hooks.checkpoint()

        try:
            status = wait_for_job(
                self.provider, handle, self.provider.poll_policy, on_status=on_status, sleep=self.hooks.sleep
            )
        except GenerationFailed as err:  # includes Moderated: the job ended without a result
            if reported_done:  # success is sticky: never failed (nor paid for again) after a "done"
                raise ProviderError(
                    f"job {handle.job_id} was reported done, then: {err.message}; it stays "
                    f"recorded as done and the next run polls it again",
                    provider=self.provider.name,
                ) from None
            self.store.record_failed(key, record.attempt, error=err.render())
            raise
        self._record_succeeded(key, record, status)
        return self._latest(key)

    def _record_succeeded(self, key: str, record: CreateRecord, status: JobStatus) -> None:
        """Record the "done", with the usage the create reply reported where the status has none."""
        created = self.provider.create_usage(record.raw_reply) if record.raw_reply else {}
        if created:
            credits = status.credits if status.credits is not None else created.get("credits_used")
            status = replace(status, usage={**created, **status.usage}, credits=credits)
        self.store.record_succeeded(key, record.attempt, result_url=status.result_url, status=status.to_dict())

    def _download(self, job: SegmentJob, key: str, record: CreateRecord) -> CreateRecord:
        self.hooks.on_step(FlowStep.DOWNLOAD, record.provider_job_id)
        self.hooks.checkpoint()
        got = self.provider.download(
            record.result_url or "", job.result_path, max_bytes=self.max_bytes, limits=self.settings.transfer
        )
        kill_point("download")
        self.store.record_downloaded(key, record.attempt, path=str(got.path), sha256=got.sha256, size=got.size)
        return self._latest(key)

    def _download_stored(
        self, job: SegmentJob, key: str, record: CreateRecord, states: list[JobStatus]
    ) -> CreateRecord:
        """Download from a URL an earlier process recorded; result URLs expire, so on failure poll for a fresh one."""
        try:
            return self._download(job, key, record)
        except LipsyncError as err:
            log.warning(
                "%s segment %d: the stored result URL failed (%s); polling for a fresh one",
                job.ref.job_id,
                job.ref.segment,
                err.render(),
            )
        return self._download(job, key, self._wait(key, record, states))

    def _latest(self, key: str) -> CreateRecord:
        record = self.store.latest_create(key)
        assert record is not None
        return record


def _is_intact(path: Path, record: CreateRecord | None) -> bool:
    if record is None or record.download_sha256 is None or not path.is_file():
        return False
    return sha256_file(path) == record.download_sha256


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _excerpt(text: str, limit: int = 300) -> str:
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + (f"… ({len(text)} characters)" if len(text) > limit else "")
