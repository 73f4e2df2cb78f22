"""Jobs kept in memory, advanced on wall time, rendered in worker threads; the per-provider create counter."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .faults import Faults
from .media import Rendered, RenderRequest, render_result
from .portrait import PortraitInput, render_portrait


class Outcome(StrEnum):
    """How a job will end, decided when it is created (from the faults in force then)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MODERATED = "moderated"
    STUCK = "stuck"


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MODERATED = "moderated"
    CANCELED = "canceled"


FINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.MODERATED, Phase.CANCELED})


@dataclass(frozen=True)
class JobInput:
    video: Path
    audio: Path | None
    text: str | None
    speaker: str | None


@dataclass
class Job:
    provider: str
    number: int  # 1-based, per provider
    job_id: str  # the provider's id, as text
    created_at: float  # time.monotonic()
    created_wall: float  # time.time(), for timestamps in replies
    queue_s: float
    run_s: float
    outcome: Outcome
    inputs: JobInput | PortraitInput
    flap_pending: bool = False
    canceled: bool = False
    render: Future[Rendered] | None = field(default=None, repr=False)
    attrs: dict[str, str] = field(default_factory=dict)  # protocol extras echoed back (e.g. useapi replyRef)
    answer_lost: str | None = None  # why the create's answer never reached the client (a fault), else None

    @property
    def rendered(self) -> Rendered | None:
        if self.render is None or not self.render.done() or self.render.exception() is not None:
            return None
        return self.render.result()

    @property
    def output(self) -> Rendered:
        """The rendered result of a job whose phase is SUCCEEDED (a job is SUCCEEDED once it has one)."""
        rendered = self.rendered
        if rendered is None:
            raise RuntimeError(f"{self.provider} job {self.job_id} has no rendered result")
        return rendered

    @property
    def render_error(self) -> str | None:
        if self.render is None or not self.render.done():
            return None
        exc = self.render.exception()
        return None if exc is None else str(exc)


def phase_at(job: Job, now: float) -> Phase:
    """Where `job` is at monotonic time `now`. A success waits for its render to finish."""
    if job.canceled:
        return Phase.CANCELED
    elapsed = now - job.created_at
    if elapsed < job.queue_s:
        return Phase.QUEUED
    if job.outcome is Outcome.STUCK or elapsed < job.queue_s + job.run_s:
        return Phase.RUNNING
    if job.outcome is Outcome.FAILED:
        return Phase.FAILED
    if job.outcome is Outcome.MODERATED:
        return Phase.MODERATED
    if job.render_error is not None:
        return Phase.FAILED
    return Phase.SUCCEEDED if job.rendered is not None else Phase.RUNNING


def outcome_from(faults: Faults) -> Outcome:
    if faults.stuck:
        return Outcome.STUCK
    if faults.moderate:
        return Outcome.MODERATED
    if faults.fail_generation:
        return Outcome.FAILED
    return Outcome.SUCCEEDED


@dataclass(frozen=True)
class Observation:
    phase: Phase
    flapping: bool  # this reply should lie about the final state, once


class JobStore:
    """One provider's jobs. Thread-safe: the event loop, render threads and test code all touch it."""

    def __init__(
        self,
        provider: str,
        *,
        queue_s: float,
        latency_s: float,
        jitter_s: float,
        short_side: int,
        out_dir: Path,
        executor: Executor,
    ):
        self.provider = provider
        self._queue_s, self._latency_s, self._jitter_s = queue_s, latency_s, jitter_s
        self._short_side = short_side
        self._out_dir = out_dir
        self._executor = executor
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._order: list[Job] = []

    def create(self, make_id: Callable[[int], str | int], inputs: JobInput | PortraitInput, faults: Faults) -> Job:
        """Accept a billable job. `make_id(number)` gives the provider's id for the n-th job; a PortraitInput
        renders a talking portrait, a JobInput a lip-synced video."""
        outcome = outcome_from(faults)
        stall_s = faults.stall_s if faults.take("stall_jobs") else 0.0
        with self._lock:
            number = len(self._order) + 1
            job = Job(
                provider=self.provider,
                number=number,
                job_id=str(make_id(number)),
                created_at=time.monotonic(),
                created_wall=time.time(),
                queue_s=self._queue_s,
                run_s=self._latency_s + random.uniform(0, self._jitter_s) + stall_s,
                outcome=outcome,
                inputs=inputs,
                flap_pending=faults.flap_status,
            )
            self._jobs[job.job_id] = job
            self._order.append(job)
        out = self._out_dir / f"{self.provider}-{number}.mp4"
        if outcome is Outcome.SUCCEEDED and isinstance(inputs, PortraitInput):
            job.render = self._executor.submit(render_portrait, inputs, out)
        elif outcome is Outcome.SUCCEEDED and isinstance(inputs, JobInput):
            request = RenderRequest(
                video=inputs.video,
                audio=inputs.audio,
                text=inputs.text,
                speaker=inputs.speaker,
                short_side=self._short_side,
                audio_offset_ms=faults.audio_offset_ms,
                out=out,
            )
            job.render = self._executor.submit(render_result, request)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._order)

    def accepted(self) -> int:
        with self._lock:
            return len(self._order)

    def running(self, now: float, where: Callable[[Job], bool] = lambda job: True) -> int:
        """Jobs not yet final (among those `where` picks): what counts against a useapi account's maxJobs."""
        return sum(1 for job in self.all() if where(job) and phase_at(job, now) not in FINAL_PHASES)

    def queue_position(self, job: Job, now: float) -> int:
        """How many earlier jobs are still waiting in the queue ahead of `job`."""
        return sum(1 for other in self.all()[: job.number - 1] if phase_at(other, now) is Phase.QUEUED)

    def observe(self, job: Job, now: float) -> Observation:
        """The job's phase for one status reply; consumes the one-time flap when the job is final."""
        phase = phase_at(job, now)
        flapping = False
        if phase in FINAL_PHASES and phase is not Phase.CANCELED:
            with self._lock:
                flapping, job.flap_pending = job.flap_pending, False
        return Observation(phase, flapping)
