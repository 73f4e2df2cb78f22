"""Waiting for a job: a status stream where the provider offers one, else a bounded poller whose
schedule learns when jobs finish.

`next_interval` (how long to sleep), `estimate_from` (when jobs like this one finish) and `judge` (is this
status the end, and how) are pure functions; `wait_for_job` only streams, sleeps, polls and applies them.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from ..errors import GenerationFailed, JobTimeout, LipsyncError, Moderated, ResultPending
from ..safetext import printable
from .base import JobHandle, JobState, JobStatus
from .http import RetriesExhausted
from .sse import StreamBroken

if TYPE_CHECKING:
    from .base import Provider

log = logging.getLogger("lipsync.providers.poll")

WINDOW_POLLS = 8  # polls spent across the expected window, at most (never closer than `initial`)
GROWTH_BEFORE = 0.25  # s of interval added per s of distance before the window ...
GROWTH_AFTER = 0.1  # ... and after it: an estimate learned early is biased short, so back off slowly
KEPT_DURATIONS = 64  # the newest finished jobs an estimate is made from
DOCUMENTED_JOB_S = 34.0  # "Processing time: ~34 sec." (AI/ML API's page of the PixVerse lip-sync model)


@dataclass(frozen=True)
class PollPolicy:
    """Poll every `initial` s at first, growing by `factor` per poll up to `maximum`; give up after `timeout`.

    `initial` is also the shortest interval ever used (the provider's minimum: PixVerse asks for 3-5 s):
    once jobs have finished in this process, the schedule (`next_interval`) polls densely around the time
    they took and sparsely away from it. Against jobs of 20-60 s see bench/providers.py for the
    figures of each schedule.

    `expected_s`: how long a job is expected to take before any has finished in this process (the
    adapters' defaults: `DOCUMENTED_JOB_S`); it counts as one finished job, so its window is wide (± half).
    None: the growing schedule until a job has finished.

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
    expected_s: float | None = None

    def __post_init__(self) -> None:
        if not (
            self.initial > 0
            and self.maximum >= self.initial
            and self.factor >= 1
            and self.timeout > 0
            and (self.expected_s is None or self.expected_s > 0)
        ):
            raise ValueError(f"inconsistent poll policy: {self}")


@dataclass(frozen=True)
class CompletionEstimate:
    """When a job is expected to finish: `median` ± `spread` seconds on the wait's clock (see `shifted`),
    learned from `samples` finished jobs."""

    median: float
    spread: float
    samples: int

    @property
    def window(self) -> tuple[float, float]:
        return self.median - self.spread, self.median + self.spread

    def shifted(self, by: float) -> CompletionEstimate:
        """The same estimate `by` seconds earlier: from "after the job's creation" to "after the wait began"
        for a wait that began `by` s after the create (a resumed job)."""
        return replace(self, median=self.median - by)


def estimate_from(durations: Iterable[float]) -> CompletionEstimate | None:
    """The expected window of the next job from finished ones: the median ± half the interquartile range,
    never narrower than 10 % of the median, and wider while there are few samples (± median/2√n).
    None without any finished job."""
    kept = sorted(d for d in durations if d >= 0)
    if not kept:
        return None
    median = statistics.median(kept)
    quartiles = statistics.quantiles(kept, n=4) if len(kept) > 1 else [median, median, median]
    spread = max((quartiles[2] - quartiles[0]) / 2, 0.1 * median, median / (2 * len(kept) ** 0.5))
    return CompletionEstimate(median, spread, len(kept))


class DurationEstimator:
    """How long this provider's jobs took, in this process: thread-safe, shared by the jobs of a run."""

    def __init__(self, keep: int = KEPT_DURATIONS):
        self._durations: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self._durations.append(seconds)

    def estimate(self) -> CompletionEstimate | None:
        with self._lock:
            return estimate_from(self._durations)


def next_interval(
    policy: PollPolicy, polls_done: int, elapsed: float, estimate: CompletionEstimate | None = None
) -> float:
    """Seconds to sleep after the `polls_done`-th poll, `elapsed` s into the wait; never past the deadline,
    never under `policy.initial` (unless the deadline is nearer), never over `policy.maximum`.

    Without an estimate: `initial`, growing by `factor` per poll. With one: dense inside the expected
    window (`WINDOW_POLLS` polls across it, no closer than `initial`), and sparser with the distance from
    it (`GROWTH_BEFORE` / `GROWTH_AFTER` s more per second), so a wait comes in sparsely, polls densely
    where jobs like it finished, and backs off again if it overruns.
    """
    if estimate is None:
        interval = policy.initial * policy.factor ** max(0, polls_done - 1)
    else:
        low, high = estimate.window
        dense = max(policy.initial, (high - low) / WINDOW_POLLS)
        interval = dense + GROWTH_BEFORE * max(0.0, low - elapsed) + GROWTH_AFTER * max(0.0, elapsed - high)
    interval = min(policy.maximum, max(policy.initial, interval))
    return max(0.0, min(interval, policy.timeout - elapsed))


class Outcome(StrEnum):
    WAIT = "wait"
    SUCCEEDED = "succeeded"
    ACCEPTED = "accepted"  # done with a URL, but the provider never confirmed a size
    PENDING = "pending"  # done, but its result stayed missing: stop waiting, never fail it
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
        return Verdict(
            Outcome.ACCEPTED,
            f"{status.raw_status} with a result URL but no confirmed size "
            f"{unconfirmed_streak} times in a row; taking the URL",
        )
    if status.unconfirmed and unconfirmed_streak >= policy.max_unconfirmed:
        return Verdict(
            Outcome.PENDING, f"reported done {unconfirmed_streak} times without a result ({status.raw_status})"
        )
    return Verdict(Outcome.WAIT, f"{status.state.value} ({status.raw_status})")


def failure_error(status: JobStatus, provider: str, job_id: str, reason: str) -> LipsyncError:
    detail = status.error_message or reason
    kind = Moderated if status.state is JobState.MODERATED else GenerationFailed
    return kind(
        f"job {printable(job_id)} {printable(detail)}",
        provider=provider,
        code=printable(status.error_code or status.raw_status),
    )


def wait_for_job(
    provider: Provider,
    handle: JobHandle,
    policy: PollPolicy | None = None,
    on_status: Callable[[JobStatus], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobStatus:
    """Wait until the job is done. Returns the SUCCEEDED status (with its URL), or raises
    GenerationFailed / Moderated, or JobTimeout after `policy.timeout` (cancelling where supported).

    A provider with a status stream (`streams_status`) is followed on it; if the stream breaks, or ends
    without an answer, the rest of the wait polls, within the same deadline. Polls are spaced by
    `next_interval` with what `provider.durations` learned from the jobs finished before this one, and
    this job's duration is recorded there when it is seen done. `on_status` sees every status, streamed
    or polled; `sleep(0)` runs whenever stream bytes arrive, so a sleep that raises on a stop request (a
    batch's) also ends a stream, at the latest with the provider's next keep-alive. A poll that fails after
    its own retries is logged and the wait goes on: the job is still paid for.
    """
    waiter = _Waiter(provider, handle, policy or provider.poll_policy, on_status, clock)
    if getattr(provider, "streams_status", False):
        done = waiter.follow_stream(lambda: sleep(0))  # an interruptible sleep cuts a quiet stream short
        if done is not None:
            return done
    return waiter.poll(sleep)


class _Waiter:
    """One wait's state: its clock, the statuses seen, and what they teach the provider's estimator."""

    def __init__(
        self,
        provider: Provider,
        handle: JobHandle,
        policy: PollPolicy,
        on_status: Callable[[JobStatus], None] | None,
        clock: Callable[[], float],
    ):
        self.provider, self.handle, self.policy, self.on_status, self.clock = provider, handle, policy, on_status, clock
        self.durations: DurationEstimator | None = getattr(provider, "durations", None)
        self.start = clock()
        # a resumed job started before this wait: the estimate is about the job's age
        self.age_at_start = max(0.0, time.time() - handle.created_at) if handle.created_at > 0 else 0.0
        self.polls = self.unconfirmed = 0
        self.last: JobStatus | None = None
        self.last_running_at: float | None = None
        self.seen_done = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def follow_stream(self, on_chunk: Callable[[], None]) -> JobStatus | None:
        """The final status from the provider's status stream, or None to poll for the rest of the wait."""
        remaining = self.policy.timeout - self.elapsed()
        try:
            with closing(self.provider.stream_statuses(self.handle, remaining, on_chunk=on_chunk)) as statuses:
                for status in statuses:
                    done = self.take(status, watched=True)
                    if done is not None:
                        return done
        except (StreamBroken, RetriesExhausted) as exc:
            log.warning(
                "%s: job %s: status stream broke (%s); polling instead",
                self.provider.name,
                printable(self.handle.job_id),
                printable(str(exc)),
            )
        if self.elapsed() >= self.policy.timeout:
            raise _timeout(self.provider, self.handle, self.policy, self.last)
        return None

    def poll(self, sleep: Callable[[float], None]) -> JobStatus:
        while True:
            try:
                status: JobStatus | None = self.provider.poll(self.handle)
            except RetriesExhausted as exc:
                log.warning(
                    "%s: job %s: %s; still waiting",
                    self.provider.name,
                    printable(self.handle.job_id),
                    printable(exc.message),
                )
                status = None
            self.polls += 1
            if status is not None:
                done = self.take(status)
                if done is not None:
                    return done
            elapsed = self.elapsed()
            if elapsed >= self.policy.timeout:
                raise _timeout(self.provider, self.handle, self.policy, self.last)
            sleep(next_interval(self.policy, self.polls, elapsed, self.estimate()))

    def estimate(self) -> CompletionEstimate | None:
        """What the jobs finished so far say (else the policy's expected time), on this wait's clock."""
        estimate = self.durations.estimate() if self.durations is not None else None
        if estimate is None and self.policy.expected_s is not None:
            estimate = estimate_from([self.policy.expected_s])
        return estimate.shifted(self.age_at_start) if estimate is not None else None

    def take(self, status: JobStatus, *, watched: bool = False) -> JobStatus | None:
        """Apply one status (`watched`: pushed on a live stream): the final one to return, None to keep
        waiting; raises when the job failed."""
        self.last = status
        self.unconfirmed = self.unconfirmed + 1 if status.unconfirmed else 0
        self.learn(status, watched)
        if self.on_status is not None:
            self.on_status(status)
        verdict = judge(status, self.unconfirmed, self.policy)
        job = printable(self.handle.job_id)
        if verdict.outcome is Outcome.SUCCEEDED:
            return status
        if verdict.outcome is Outcome.ACCEPTED:
            log.warning("%s: job %s: %s", self.provider.name, job, printable(verdict.reason))
            return replace(status, state=JobState.SUCCEEDED)
        if verdict.outcome is Outcome.FAILED:
            raise failure_error(status, self.provider.name, self.handle.job_id, verdict.reason)
        if verdict.outcome is Outcome.PENDING:
            raise ResultPending(
                f"job {self.handle.job_id} {verdict.reason}; it is done and paid for: run again to fetch its result",
                provider=self.provider.name,
                code=status.raw_status,
            )
        return None

    def learn(self, status: JobStatus, watched: bool) -> None:
        """The first "done" after a "not yet" teaches the estimator: the job finished between the two (on a
        live stream, just now)."""
        now = self.elapsed()
        if status.reported_done:
            if not self.seen_done and self.last_running_at is not None and self.durations is not None:
                since = now if watched else self.last_running_at
                self.durations.record(self.age_at_start + (since + now) / 2)
            self.seen_done = True
        elif status.state in (JobState.QUEUED, JobState.RUNNING):
            self.last_running_at = now


def _timeout(provider: Provider, handle: JobHandle, policy: PollPolicy, last: JobStatus | None) -> JobTimeout:
    try:
        canceled = provider.cancel(handle)
    except LipsyncError as exc:
        log.warning("%s: job %s: cancel failed: %s", provider.name, printable(handle.job_id), printable(exc.message))
        canceled = False
    seen = printable(last.raw_status) if last else "no status received"
    job = printable(handle.job_id)
    then = "cancel requested" if canceled else f"it may still finish: check job {job} later"
    return JobTimeout(
        f"job {job} not done after {policy.timeout:g} s (last status: {seen}); {then}",
        provider=provider.name,
        code=printable(last.raw_status) if last else None,
    )
