"""Waiting for a job: an adaptive, bounded poller over pure decisions.

`next_interval` (how long to sleep) and `judge` (is this status the end, and how) are pure functions;
`wait_for_job` only sleeps, polls and applies them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Callable

from ..errors import GenerationFailed, JobTimeout, LipsyncError, Moderated, ResultPending
from ..safetext import printable
from .base import JobHandle, JobState, JobStatus
from .http import RetriesExhausted

if TYPE_CHECKING:
    from .base import Provider

log = logging.getLogger("lipsync.providers.poll")


@dataclass(frozen=True)
class PollPolicy:
    """Poll every `initial` s at first, growing by `factor` per poll up to `maximum`; give up after `timeout`.

    Jobs take tens of seconds: early polls are cheap insurance against an immediate failure, later
    ones stretch out. Against jobs of 20-60 s these defaults detect completion ~4.5 s after it on
    average (a fixed 15 s poll: ~7 s) for ~9 requests a job (fixed: ~4); see bench/providers.py.

    `max_unconfirmed` bounds how many "done but no result URL" replies in a row are waited on before the
    wait ends (`ResultPending`, exit 2): the job stays recorded as done and the next run polls it again.
    `accept_unconfirmed_after`: "done, here is the URL, size 0 or missing" replies in a row before the
    URL is taken anyway (a peer that follows PixVerse's doc sample literally reports `size: 0` forever);
    the download, probe and verify that follow are the real evidence.
    """

    initial: float = 2.0
    factor: float = 1.25
    maximum: float = 10.0
    timeout: float = 1800.0
    max_unconfirmed: int = 6
    accept_unconfirmed_after: int = 3

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum >= self.initial and self.factor >= 1 and self.timeout > 0):
            raise ValueError(f"inconsistent poll policy: {self}")


def next_interval(policy: PollPolicy, polls_done: int, elapsed: float) -> float:
    """Seconds to sleep after the `polls_done`-th poll, `elapsed` s into the wait; never past the deadline."""
    interval = min(policy.maximum, policy.initial * policy.factor ** max(0, polls_done - 1))
    return max(0.0, min(interval, policy.timeout - elapsed))


class Outcome(StrEnum):
    WAIT = "wait"
    SUCCEEDED = "succeeded"
    ACCEPTED = "accepted"       # done with a URL, but the provider never confirmed a size
    PENDING = "pending"         # done, but its result stayed missing: stop waiting, never fail it
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


def judge(status: JobStatus, unconfirmed_streak: int, policy: PollPolicy) -> Verdict:
    """Is the wait over? Success needs evidence (a result URL); a provider that keeps saying "done"
    without one ends the wait after `policy.max_unconfirmed` replies in a row, as pending, not failed."""
    if status.state is JobState.SUCCEEDED:
        if status.result_url:
            return Verdict(Outcome.SUCCEEDED, f"{status.raw_status} with a result URL")
        return Verdict(Outcome.WAIT, f"{status.raw_status} but no result URL yet")
    if status.state in (JobState.FAILED, JobState.MODERATED, JobState.CANCELED):
        return Verdict(Outcome.FAILED, f"ended {status.state.value} ({status.raw_status})")
    if status.unconfirmed and status.result_url and unconfirmed_streak >= policy.accept_unconfirmed_after:
        return Verdict(Outcome.ACCEPTED, f"{status.raw_status} with a result URL but no confirmed size "
                                         f"{unconfirmed_streak} times in a row; taking the URL")
    if status.unconfirmed and unconfirmed_streak >= policy.max_unconfirmed:
        return Verdict(Outcome.PENDING, f"reported done {unconfirmed_streak} times without a result "
                                        f"({status.raw_status})")
    return Verdict(Outcome.WAIT, f"{status.state.value} ({status.raw_status})")


def failure_error(status: JobStatus, provider: str, job_id: str, reason: str) -> LipsyncError:
    detail = status.error_message or reason
    kind = Moderated if status.state is JobState.MODERATED else GenerationFailed
    return kind(f"job {printable(job_id)} {printable(detail)}", provider=provider,
                code=printable(status.error_code or status.raw_status))


def wait_for_job(provider: Provider, handle: JobHandle, policy: PollPolicy | None = None,
                 on_status: Callable[[JobStatus], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> JobStatus:
    """Poll until the job is done. Returns the SUCCEEDED status (with its URL), or raises
    GenerationFailed / Moderated, or JobTimeout after `policy.timeout` (cancelling where supported).

    A poll that fails after its own retries is logged and the wait goes on: the job is still paid for.
    """
    policy = policy or provider.poll_policy
    start = clock()
    polls = unconfirmed = 0
    last: JobStatus | None = None
    while True:
        try:
            status: JobStatus | None = provider.poll(handle)
        except RetriesExhausted as exc:
            log.warning("%s: job %s: %s; still waiting", provider.name, printable(handle.job_id),
                        printable(exc.message))
            status = None
        polls += 1
        if status is not None:
            last = status
            unconfirmed = unconfirmed + 1 if status.unconfirmed else 0
            if on_status is not None:
                on_status(status)
            verdict = judge(status, unconfirmed, policy)
            if verdict.outcome is Outcome.SUCCEEDED:
                return status
            if verdict.outcome is Outcome.ACCEPTED:
                log.warning("%s: job %s: %s", provider.name, printable(handle.job_id), printable(verdict.reason))
                return replace(status, state=JobState.SUCCEEDED)
            if verdict.outcome is Outcome.FAILED:
                raise failure_error(status, provider.name, handle.job_id, verdict.reason)
            if verdict.outcome is Outcome.PENDING:
                raise ResultPending(f"job {handle.job_id} {verdict.reason}; it is done and paid for: run again "
                                    f"to fetch its result", provider=provider.name, code=status.raw_status)
        elapsed = clock() - start
        if elapsed >= policy.timeout:
            raise _timeout(provider, handle, policy, last)
        sleep(next_interval(policy, polls, elapsed))


def _timeout(provider: Provider, handle: JobHandle, policy: PollPolicy, last: JobStatus | None) -> JobTimeout:
    try:
        canceled = provider.cancel(handle)
    except LipsyncError as exc:
        log.warning("%s: job %s: cancel failed: %s", provider.name, printable(handle.job_id),
                    printable(exc.message))
        canceled = False
    seen = printable(last.raw_status) if last else "no status received"
    job = printable(handle.job_id)
    then = "cancel requested" if canceled else f"it may still finish: check job {job} later"
    return JobTimeout(f"job {job} not done after {policy.timeout:g} s (last status: {seen}); {then}",
                      provider=provider.name, code=printable(last.raw_status) if last else None)
