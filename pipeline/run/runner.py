"""The batch runner: every job goes prepare → submit → poll → download → mux → verify → hand off.

Concurrency: a thread per job flow; ffmpeg work (prepare, and mux/verify at the end) takes a slot of a
small CPU pool, and each provider job (create + poll + download) runs in that provider's pool, at most
`max_jobs` wide (and no wider than the provider's own limit, e.g. useapi's maxJobs). So conforming the
next jobs overlaps waiting on the provider. A free CPU slot goes to finishing a job whose results are in
before it goes to preparing a new one (`CpuSlots`). A failing job never stops the others.

Crash safety: each provider job goes through the provider-job flow (`providers/flow.py`), which commits
every step to the ledger before the next one starts; here is only scheduling (slots, pools, progress) and
the job's two ends (prepare, deliver). Kill points for the crash tests: `pipeline/killpoints.py`.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from ..animate import ClipDone, make_clips, prepare_portrait
from ..errors import AuthError, ConfigError, LipsyncError, UncertainCreate, ValidationError, worst_exit_code
from ..fsutil import sha256_file, sha256_json, write_text_atomic
from ..killpoints import kill_point
from ..limits import load_image_limits
from ..providers import (
    PROVIDER_NAMES,
    JobRequest,
    PollPolicy,
    Provider,
    credential_from_env,
    get_provider,
    provider_class,
)
from ..providers.aimlapi import ImageJobRequest
from ..providers.download import result_cap
from ..providers.flow import FlowHooks, FlowSettings, ProviderJobFlow, SegmentJob, segment_key
from ..providers.store import CreateState, SegmentRef
from ..safetext import printable
from ..secrets import fingerprints
from .config import JobSpec, RunConfig, check_creates_per_job, text_creates
from .ledger import LEDGER_NAME, JobCost, Ledger, RunLedger, Stage, open_ledger, point_to_ledger, run_lock
from .progress import Progress, job_context, status_text
from .reviews import Reviews, Take, plan_takes, rejected_jobs
from .rundir import (
    WORK_DIR,
    RunDirVerdict,
    archive_delivery,
    claim_run_dir,
    list_run_dir,
    refresh_checksums,
    stale_temps,
)
from .steps import (
    PreparedJob,
    PreparedSegment,
    SegmentResult,
    deliver_job,
    deliver_portrait,
    estimate_job,
    face_refusal,
    prepare_job,
)

log = logging.getLogger("lipsync.run")


class Interrupted(Exception):
    """The user asked the run to stop (Ctrl-C); raised at the next safe point of each job."""


def inputs_key(spec: JobSpec, video_sha: str, audio_sha: str | None) -> str:
    """What a job's result depends on: its input files (by hash), its text and parameters."""
    return sha256_json({"video": video_sha, "audio": audio_sha, "text": spec.text, "params": spec.params()})


def take_key(key: str, take: Take | None) -> str:
    """The job's key for the ledger and its provider jobs: a take asked for in review is a job of its own."""
    return key if take is None else sha256_json({"inputs": key, "take": take.take})


def _take_fields(take: Take | None) -> dict[str, int]:
    """What a take adds to a provider job's idempotency key: nothing for the first delivery."""
    return {} if take is None else {"take": take.take}


# ---- CPU slots ----------------------------------------------------------------------------------


class SlotUse(IntEnum):
    """What a CPU slot is wanted for, most urgent first. Finishing delivers a result already paid for (and
    shortens the time a crash could leave it undelivered); preparing only starts new work."""

    FINISH = 0
    PREPARE = 1


class CpuSlots:
    """A counting semaphore that serves its waiters by use (`SlotUse` order), first come first served within
    a use. A waiter only takes a slot when it is at the head of the queue, so a late finish overtakes
    every prepare still waiting but never one already running."""

    def __init__(self, slots: int):
        self._free = slots
        self._queue: list[tuple[SlotUse, int]] = []  # a heap: its head is served next
        self._arrivals = itertools.count()
        self._changed = threading.Condition()

    @contextmanager
    def slot(self, use: SlotUse) -> Iterator[None]:
        ticket = (use, next(self._arrivals))
        with self._changed:
            heapq.heappush(self._queue, ticket)
            self._changed.wait_for(lambda: self._free > 0 and self._queue[0] == ticket)
            heapq.heappop(self._queue)
            self._free -= 1
            self._changed.notify_all()  # with slots still free, the new head may go too
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()

    def queued(self) -> list[SlotUse]:
        """The uses waiting for a slot, in the order they will be served."""
        with self._changed:
            return [use for use, _ in sorted(self._queue)]


CPU_SLOTS_ENV = "LIPSYNC_CPU_SLOTS"  # this process's share of the machine, e.g. set by `lipsync cluster up`


def cpu_slot_count(requested: int | None) -> int:
    """Slots for ffmpeg work: as asked, else as `LIPSYNC_CPU_SLOTS` says (a worker process sharing the machine
    with others), else one per core up to 4 (ffmpeg itself uses several threads)."""
    shared = os.environ.get(CPU_SLOTS_ENV, "")
    return max(1, requested or (int(shared) if shared.isdigit() else 0) or min(4, os.cpu_count() or 1))


# ---- outcomes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    provider: str
    stage: Stage
    exit_code: int
    error: str | None
    final: Path | None
    provider_job_ids: tuple[str, ...]
    seconds: float
    resumed: bool
    uncertain: tuple[dict[str, Any], ...] = ()
    cost: JobCost | None = None  # estimated before the creates, reported by the provider

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "provider": self.provider,
            "stage": self.stage.value,
            "exit_code": self.exit_code,
            "error": self.error,
            "final": str(self.final) if self.final else None,
            "provider_job_ids": list(self.provider_job_ids),
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
            "uncertain": list(self.uncertain),
            "cost": None if self.cost is None else self.cost.to_dict(),
        }


@dataclass(frozen=True)
class RunOptions:
    jobs: int | None = None
    only: tuple[str, ...] = ()
    rehearse: bool = False
    resubmit_uncertain: bool = False
    retry_failed: bool = False
    cpu_slots: int | None = None  # concurrent ffmpeg work; None: `cpu_slot_count`'s default
    force: bool = False  # run in a folder holding files we did not write (never touching them)
    cluster: str | None = None  # a Dask scheduler's address (overrides [run] cluster)
    only_rejected: bool = False  # only the jobs rejected in review, each re-run as a new take (run/reviews.py)


# ---- the runner ---------------------------------------------------------------------------------


class BatchRunner:
    def __init__(
        self,
        config: RunConfig,
        options: RunOptions,
        ledger: RunLedger,
        providers: dict[str, Provider],
        progress: Progress,
        foreign: Collection[str] = (),
        stop: threading.Event | None = None,
        takes: dict[str, Take] | None = None,
    ):
        self.config = config
        self.options = options
        self.ledger = ledger
        self.providers = providers
        self.progress = progress
        self.foreign = foreign  # paths in the run directory we did not write: never touched
        self.stop = stop or threading.Event()  # set on Ctrl-C/SIGTERM: every wait and retry sleep ends
        self.takes = takes or {}  # each job's latest take asked for in review (run/reviews.py)
        self._cpu = CpuSlots(cpu_slot_count(options.cpu_slots))
        self._pools = {
            name: ThreadPoolExecutor(
                max_workers=provider_width(provider, options.jobs or config.max_jobs),
                thread_name_prefix=f"lipsync-{name}",
            )
            for name, provider in providers.items()
        }
        self._flow_settings = FlowSettings(
            resubmit_uncertain=options.resubmit_uncertain,
            retry_failed=options.retry_failed,
            transfer=config.download.transfer_limits(),
        )

    @property
    def run_dir(self) -> Path:
        return self.config.output

    def run(self, jobs: tuple[JobSpec, ...]) -> list[JobOutcome]:
        self.progress.start([(job.id, job.provider) for job in jobs])
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 64)), thread_name_prefix="lipsync-job") as flows:
            futures = [flows.submit(self.run_job, job) for job in jobs]
            try:
                while not all(f.done() for f in futures):
                    wait(futures, timeout=0.5)
            except KeyboardInterrupt:
                log.warning("stopping: requests in flight finish and are recorded; run again to resume")
                self.stop.set()
                wait(futures)
                raise
            finally:
                for pool in self._pools.values():
                    pool.shutdown(wait=True)
        return [f.result() for f in futures]

    # --- one job ---------------------------------------------------------------------------------

    def run_job(self, spec: JobSpec) -> JobOutcome:
        with job_context(spec.id):
            try:
                # a ledger shared with other processes (PostgreSQL): one of them works on a job at a time
                with self.ledger.lease(f"job/{spec.id}", self._sleep):
                    outcome = self._run_job_flow(spec)
            except Interrupted:  # stopped while waiting for another process to let go of the job
                return JobOutcome(spec.id, spec.provider, Stage.INTERRUPTED, 1, "interrupted", None, (), 0.0, False)
        take = self.takes.get(spec.id)
        if take is not None and outcome.stage is Stage.DONE and Reviews(self.run_dir).settle(take):
            log.info("%s: take %d delivered; the rejection it answers is cleared", spec.id, take.take)
        return outcome

    def _run_job_flow(self, spec: JobSpec) -> JobOutcome:
        started = time.monotonic()
        source = spec.video if spec.portrait is None else spec.portrait.image
        assert source is not None  # a footage job has a video (JobSpec checks)
        video_sha = _input_sha256(source)
        audio_sha = _input_sha256(spec.audio) if spec.audio else None
        key = inputs_key(spec, video_sha, audio_sha)  # the prepared media's
        job_key = take_key(key, self.takes.get(spec.id))
        row = self.ledger.start_job(spec.id, spec.provider, job_key)
        final = self.run_dir / spec.id / "final.mp4"
        if row.stage is Stage.DONE and final.is_file() and sha256_file(final) == row.final_sha256:
            self.progress.update(spec.id, stage=Stage.DONE, note="already done")
            return self._outcome(spec, started, resumed=True)
        self._remove_stale_temps(spec.id)
        try:
            self._checkpoint()
            if spec.portrait is not None:
                self._portrait(spec, job_key, final)
            else:
                _check_creates(self.config, spec, text_creates(spec))
                prepared = self._prepare(spec, key)
                estimate = estimate_job(spec, prepared, self.config.prices)
                self.ledger.record_estimate(spec.id, key, estimate)
                _check_creates(self.config, spec, len(prepared.segments))
                refusal = face_refusal(spec, prepared)  # a cached prepare predates today's face settings
                if refusal is not None:
                    raise ValidationError(f"{spec.id}: {refusal}")
                self._set_stage(spec.id, Stage.QUEUED)
                results = self._provider_jobs(spec, prepared, job_key)
                self._checkpoint()
                self._finish(spec, final, functools.partial(deliver_job, spec, prepared, results, estimate=estimate))
        except Interrupted:
            self._set_stage(spec.id, Stage.INTERRUPTED)
        except UncertainCreate as err:
            self._fail(spec.id, Stage.UNCERTAIN, err)
        except LipsyncError as err:
            if self.stop.is_set():  # e.g. Ctrl-C also reached the ffmpeg child: an interruption, not a failure
                self._set_stage(spec.id, Stage.INTERRUPTED)
            else:
                self._fail(spec.id, Stage.FAILED, err)
        except Exception as err:
            log.exception("%s: unexpected error", spec.id)
            self._fail(spec.id, Stage.FAILED, LipsyncError(f"internal error: {type(err).__name__}: {err}"))
        return self._outcome(spec, started, resumed=False)

    def _remove_stale_temps(self, job_id: str) -> None:
        """Temp files of writes a killed run left half-done (atomic_output names); we hold the run lock.
        `.work/` is ours whole; in the job folder only our own temp names, never a file we did not write."""
        for stale in (self.run_dir / WORK_DIR / job_id).rglob(".*.part*"):
            stale.unlink(missing_ok=True)
        for path in stale_temps(list_run_dir(self.run_dir, {job_id}), self.foreign):
            if path.startswith(f"{job_id}/"):
                (self.run_dir / path).unlink(missing_ok=True)

    def _checkpoint(self) -> None:
        if self.stop.is_set():
            raise Interrupted()

    def _set_stage(self, job_id: str, stage: Stage, detail: str | None = None) -> None:
        self.ledger.set_stage(job_id, stage, detail)
        self.progress.update(job_id, stage=stage, note=detail)

    def _fail(self, job_id: str, stage: Stage, err: LipsyncError) -> None:
        log.error("%s: %s", job_id, err.render())
        self.ledger.finish_job(job_id, stage, exit_code=err.exit_code, error=err.render())
        self.progress.update(job_id, stage=stage, note=err.render())

    def _outcome(self, spec: JobSpec, started: float, *, resumed: bool) -> JobOutcome:
        row = self.ledger.job(spec.id)
        creates = [c for c in self.ledger.creates(spec.id, current=True) if c.state.maybe_billed]
        uncertain = tuple(
            {"segment": c.segment, "key": c.idem_key, "attempt": c.attempt, "reconcile": c.reconcile or {}}
            for c in creates
            if c.state in (CreateState.UNCERTAIN, CreateState.INTENT)
        )
        exit_code = row.exit_code if row.exit_code is not None else (0 if row.stage is Stage.DONE else 1)
        return JobOutcome(
            job_id=spec.id,
            provider=spec.provider,
            stage=row.stage,
            exit_code=exit_code,
            error=row.error,
            final=Path(row.final_path) if row.final_path else None,
            provider_job_ids=tuple(c.provider_job_id for c in creates if c.provider_job_id),
            seconds=time.monotonic() - started,
            resumed=resumed,
            uncertain=uncertain,
            cost=self.ledger.cost(spec.id),
        )

    # --- prepare ---------------------------------------------------------------------------------

    def _prepare(self, spec: JobSpec, key: str) -> PreparedJob:
        work = self.run_dir / WORK_DIR / spec.id / f"prepare-{key[:16]}"
        record_path = work / "prepared.json"
        cached = _load_prepared(record_path, key)
        if cached is not None:
            log.debug("%s: prepared media reused from %s", spec.id, work)
            return cached
        # the stage starts when a CPU slot is ours, so its timing is the work, not the queue
        with self._cpu.slot(SlotUse.PREPARE):
            self._checkpoint()
            self._set_stage(spec.id, Stage.PREPARE)
            shutil.rmtree(work, ignore_errors=True)  # whatever is there is a killed prepare's partial output
            prepared = prepare_job(spec, key, work, lambda f: self.progress.update(spec.id, fraction=f))
        kill_point("prepare")
        write_text_atomic(record_path, prepared.model_dump_json(indent=2))
        return prepared

    # --- provider jobs ---------------------------------------------------------------------------

    def _provider_jobs(self, spec: JobSpec, prepared: PreparedJob, job_key: str) -> list[SegmentResult]:
        pool = self._pools[spec.provider]
        self.progress.update(spec.id, segments=len(prepared.segments), segments_done=0)
        futures: list[Future[SegmentResult]] = [
            pool.submit(self._segment, spec, job_key, seg) for seg in prepared.segments
        ]
        wait(futures)
        errors = [error for f in futures if (error := f.exception()) is not None]
        if errors:
            raise _most_telling(errors)
        return [f.result() for f in futures]

    def _provider_slot(self, provider: str) -> AbstractContextManager[None]:
        """Held around each provider job, over what the provider's pool allows: a cluster's limit
        across all its workers (`cluster.py`). On one machine the pool is the limit."""
        return nullcontext()

    def _segment(self, spec: JobSpec, inputs_key: str, seg: PreparedSegment) -> SegmentResult:
        with job_context(spec.id), self._provider_slot(spec.provider):
            result = self._segment_flow(spec, inputs_key, seg)
        self.progress.segment_done(spec.id)
        return result

    def _segment_flow(self, spec: JobSpec, inputs_key: str, seg: PreparedSegment) -> SegmentResult:
        key = segment_key(
            job=spec.id,
            provider=spec.provider,
            segment=seg.index,
            video=seg.video_sha256,
            audio=seg.audio_sha256,
            text=seg.text,
            speaker=seg.speaker,
            **_take_fields(self.takes.get(spec.id)),
        )
        job = SegmentJob(
            key=key,
            ref=SegmentRef(spec.id, inputs_key, seg.index, spec.provider),
            request=JobRequest(video=seg.video, audio=seg.audio, text=seg.text, speaker=seg.speaker),
            reply_ref=f"{self.config.name}/{spec.id}/{seg.index}/{key}",
            result_path=self.run_dir / WORK_DIR / spec.id / f"provider-{seg.index}-{key[:12]}.mp4",
        )
        result = self._flow(spec, seg.index).run(job)
        return SegmentResult(seg, result.record, result.path)

    def _flow(self, spec: JobSpec, segment: int) -> ProviderJobFlow:
        hooks = FlowHooks(
            on_step=lambda step, detail: self._set_stage(spec.id, Stage(step.value), detail),
            on_created=lambda handle: log.info(
                "%s segment %d: %s job %s created", spec.id, segment, spec.provider, printable(handle.job_id)
            ),
            on_status=lambda status: self.progress.update(spec.id, provider_state=status_text(status)),
            checkpoint=self._checkpoint,
            sleep=self._sleep,
        )
        settings = replace(self._flow_settings, max_result_bytes=result_cap(spec.limits))
        return ProviderJobFlow(self.providers[spec.provider], self.ledger, settings, hooks)

    def _sleep(self, seconds: float) -> None:
        stoppable_sleep(self.stop)(seconds)

    # --- mux, verify, hand off -------------------------------------------------------------------

    def _finish(self, spec: JobSpec, final: Path, deliver: Callable[..., Path]) -> None:
        """Deliver a job whose results are all in (`deliver_job`, `deliver_portrait` with their first arguments)."""
        self.progress.update(spec.id, waiting="every result is in; waiting for a free CPU slot to mux")
        with self._cpu.slot(SlotUse.FINISH):
            self._set_stage(spec.id, Stage.MUX)
            kill_point("mux")
            take = self.takes.get(spec.id)
            if take is not None and archive_delivery(self.run_dir, spec.id, take.take - 1):
                log.info("%s: take %d kept in %s/take-%d/", spec.id, take.take - 1, spec.id, take.take - 1)
            deliver(
                work=self.run_dir / WORK_DIR / spec.id,
                job_dir=self.run_dir / spec.id,
                base_dir=self.config.path.parent,
                on_stage=lambda stage: self._set_stage(spec.id, stage),
            )
        self.ledger.finish_job(spec.id, Stage.DONE, exit_code=0, final_path=str(final), final_sha256=sha256_file(final))
        self.progress.update(spec.id, stage=Stage.DONE, note=str(final))

    # --- a talking portrait: a still image animated, one paid job per clip (pipeline/animate.py) ----

    def _portrait(self, spec: JobSpec, inputs_key: str, final: Path) -> None:
        assert spec.portrait is not None
        limits = load_image_limits(spec.provider)
        work = self.run_dir / WORK_DIR / spec.id / f"portrait-{inputs_key[:16]}"
        with self._cpu.slot(SlotUse.PREPARE):
            self._checkpoint()
            self._set_stage(spec.id, Stage.PREPARE)
            plan = prepare_portrait(spec.portrait, work, limits, spec.limits.tts_max_chars)
        kill_point("prepare")
        _check_creates(self.config, spec, len(plan.script.clips))
        self._set_stage(spec.id, Stage.QUEUED)
        self.progress.update(spec.id, segments=len(plan.script.clips), segments_done=0)
        clips = make_clips(spec.portrait, plan, work, limits, functools.partial(self._portrait_clip, spec, inputs_key))
        self._checkpoint()
        self._finish(spec, final, functools.partial(deliver_portrait, spec, plan, clips, limits))

    def _portrait_clip(
        self, spec: JobSpec, inputs_key: str, index: int, request: ImageJobRequest, dst: Path
    ) -> ClipDone:
        """One clip's paid job, in the provider's pool (a chain's clips go one after another: each starts
        from the last frame of the one before)."""
        key = segment_key(
            job=spec.id,
            provider=spec.provider,
            segment=index,
            **request.summary(),
            **_take_fields(self.takes.get(spec.id)),
        )
        job = SegmentJob(
            key=key,
            ref=SegmentRef(spec.id, inputs_key, index, spec.provider),
            request=request,
            reply_ref=f"{self.config.name}/{spec.id}/{index}/{key}",
            result_path=dst,
        )

        def run() -> ClipDone:
            with job_context(spec.id), self._provider_slot(spec.provider):
                return ClipDone.from_flow(index, self._flow(spec, index).run(job))

        done = self._pools[spec.provider].submit(run).result()
        self.progress.segment_done(spec.id)
        return done


def stoppable_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A wait (backoff, poll interval, retry) that a stop request cuts short with Interrupted."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted()

    return sleep


def _ledger_job_ids(run_dir: Path) -> set[str]:
    """The jobs an earlier run of this directory recorded (their folders are ours too)."""
    if not (run_dir / LEDGER_NAME).is_file():
        return set()
    with Ledger.in_dir(run_dir, readonly=True) as ledger:
        return {row.job_id for row in ledger.jobs()}


def _check_creates(config: RunConfig, spec: JobSpec, creates: int | None) -> None:
    """A job may not make more paid creates than the config allows (a stray file is not 157 jobs)."""
    if creates is not None:
        check_creates_per_job(config, spec.id, creates)


def provider_width(provider: Provider, asked: int | None) -> int:
    """Provider jobs in flight at once: as asked (CLI, config), else the provider's default; never wider
    than the provider's own limit (useapi's maxJobs)."""
    width = asked or provider.default_concurrency
    return min(width, provider.max_concurrency or width)


def _most_telling(errors: list[BaseException]) -> BaseException:
    """The error a job reports when several of its segments failed: an uncertain create first, else the worst."""
    for err in errors:
        if isinstance(err, UncertainCreate):
            return err
    codes = [err.exit_code if isinstance(err, LipsyncError) else 1 for err in errors]
    return errors[codes.index(worst_exit_code(codes))]


def _input_sha256(path: Path) -> str:
    """Inputs are often shared by many jobs of a batch: hash each version of a file once."""
    stat = path.stat()
    return _sha256_of_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of_version(path: str, _size: int, _mtime_ns: int) -> str:
    return sha256_file(path)


def _load_prepared(path: Path, key: str) -> PreparedJob | None:
    """A cached prepare result, if it is for these inputs and every file it names is still there."""
    try:
        prepared = PreparedJob.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files_ok = all(s.video.is_file() and (s.audio is None or s.audio.is_file()) for s in prepared.segments)
    return prepared if prepared.inputs_key == key and files_ok else None


# ---- a whole run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    name: str
    run_dir: Path
    outcomes: tuple[JobOutcome, ...]
    seconds: float
    checksums: Path | None
    rehearsal: bool

    @property
    def exit_code(self) -> int:
        return worst_exit_code([o.exit_code for o in self.outcomes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "run": self.name,
            "run_dir": str(self.run_dir),
            "rehearsal": self.rehearsal,
            "seconds": round(self.seconds, 3),
            "checksums": str(self.checksums) if self.checksums else None,
            "jobs": [o.to_dict() for o in self.outcomes],
            "uncertain": [{"job": o.job_id, **u} for o in self.outcomes for u in o.uncertain],
        }


@dataclass(frozen=True)
class Endpoints:
    """Where each provider is reached and with which key."""

    base_urls: dict[str, str]
    credentials: dict[str, str | None]  # provider -> key (None: its variable is not set)


@contextmanager
def provider_endpoints(config: RunConfig, options: RunOptions) -> Iterator[Endpoints]:
    """The config's base URLs (or the adapters' defaults) with the keys from the environment, or an
    in-process emulator's URLs and test keys (the environment is left alone)."""
    if not options.rehearse:
        yield Endpoints(dict(config.base_urls), {name: credential_from_env(name) for name in PROVIDER_NAMES})
        return
    from ..emulator import Emulator, EmulatorSettings

    settings = EmulatorSettings(latency_s=config.rehearse.latency_s, queue_s=config.rehearse.queue_s)
    with Emulator(settings) as emu:
        log.info("rehearsal: providers emulated at %s (no credits are used)", emu.root)
        yield Endpoints(emu.base_urls, dict(emu.credentials()))


def rehearsal_poll(default: PollPolicy, latency_s: float, queue_s: float) -> PollPolicy:
    """A provider's poll policy against the emulator, whose jobs take `latency_s` (after `queue_s` queued),
    not the real providers' half minute: poll often."""
    quick = max(0.05, min(default.initial, latency_s / 4))
    maximum = max(quick, min(default.maximum, latency_s))
    return replace(default, initial=quick, maximum=maximum, expected_s=max(0.05, latency_s + queue_s))


def poll_policy(config: RunConfig, options: RunOptions, default: PollPolicy) -> PollPolicy:
    """The provider's poll policy with the config's overrides, and LIPSYNC_POLL_INTERVAL (tests) on top.
    Rehearsals poll often: the emulator answers in seconds, not minutes."""
    changes: dict[str, Any] = {}
    if options.rehearse:
        default = rehearsal_poll(default, config.rehearse.latency_s, config.rehearse.queue_s)
    poll = config.poll
    for name, value in (("initial", poll.interval_s), ("maximum", poll.max_interval_s), ("timeout", poll.timeout_s)):
        if value is not None:
            changes[name] = value
    env_interval = os.environ.get("LIPSYNC_POLL_INTERVAL")
    if env_interval:
        changes.update(initial=float(env_interval), maximum=float(env_interval))
    if changes.get("maximum", default.maximum) < changes.get("initial", default.initial):
        changes["maximum"] = changes["initial"]
    return replace(default, **changes)


def open_provider(
    config: RunConfig, options: RunOptions, name: str, endpoints: Endpoints, sleep: Callable[[float], None]
) -> Provider:
    extra = config.provider_options.get(name, {})
    credential = endpoints.credentials.get(name)
    cls = provider_class(name)
    if credential is None:  # stops the run before any conform work
        raise AuthError(f"no API key: set the environment variable {cls.secret_env}", provider=name)
    try:
        return get_provider(
            name,
            credential=credential,
            base_urls=endpoints.base_urls,
            poll=poll_policy(config, options, cls.default_poll),
            sleep=sleep,
            **extra,
        )
    except (TypeError, LipsyncError) as err:
        raise ConfigError(f"{config.path}: run.provider_options.{name}: {err}") from None


@contextmanager
def opened_run(config: RunConfig, options: RunOptions) -> Iterator[tuple[RunLedger, RunDirVerdict]]:
    """The run directory claimed and its ledger open. The SQLite ledger is the run directory's, under its
    lock (one `lipsync run` at a time); a PostgreSQL ledger is shared, its leases keep processes apart."""
    job_ids = {job.id for job in config.jobs}
    with ExitStack() as stack:
        if config.ledger is None:
            verdict = claim_run_dir(config.output, job_ids | _ledger_job_ids(config.output), force=options.force)
            stack.enter_context(run_lock(config.output))
            ledger = open_ledger(config)
            stack.callback(ledger.close)
        else:
            ledger = open_ledger(config)
            stack.callback(ledger.close)
            verdict = claim_run_dir(config.output, job_ids | {r.job_id for r in ledger.jobs()}, force=options.force)
            point_to_ledger(config)
        ledger.record_secrets(fingerprints())
        yield ledger, verdict


def rejected_only(config: RunConfig, only: tuple[str, ...]) -> tuple[str, ...]:
    """The jobs of the selection (`only`, else every job) that a review rejected, in config order."""
    return rejected_jobs(Reviews(config.output).all(), tuple(job.id for job in config.select(only)))


def selected_jobs(config: RunConfig, options: RunOptions) -> tuple[JobSpec, ...]:
    """The jobs this run works on: `--only`'s (else all), and of those only the rejected with --only-rejected."""
    jobs = config.select(options.only)
    if not options.only_rejected:
        return jobs
    rejected = set(rejected_only(config, options.only))
    return tuple(job for job in jobs if job.id in rejected)


def record_takes(config: RunConfig, options: RunOptions, jobs: tuple[JobSpec, ...]) -> dict[str, Take]:
    """Each job's latest take, after recording (with --only-rejected) a new take for each rejected job of
    `jobs` before anything of it is created."""
    reviews = Reviews(config.output)
    if options.only_rejected:
        for plan in plan_takes(reviews.all(), reviews.takes(), tuple(job.id for job in jobs)):
            log.info("%s: %s", plan.take.job_id, plan.reason)
            if plan.new:
                reviews.start_take(plan.take)
    return reviews.takes()


def run_batch(config: RunConfig, options: RunOptions, progress: Progress) -> RunSummary:
    """Run (or resume) every selected job of `config`; returns the summary. Never raises for a job's failure.
    With a cluster address (option or config) the jobs run as tasks on its workers (`cluster.py`)."""
    if options.cluster or config.cluster:
        from .cluster import run_on_cluster

        return run_on_cluster(config, options, progress, options.cluster or str(config.cluster))
    jobs = selected_jobs(config, options)
    started = time.monotonic()
    with (
        opened_run(config, options) as (ledger, verdict),
        provider_endpoints(config, options) as endpoints,
        ExitStack() as providers_open,
    ):
        takes = record_takes(config, options, jobs)
        stop = threading.Event()
        providers = {
            name: providers_open.enter_context(open_provider(config, options, name, endpoints, stoppable_sleep(stop)))
            for name in dict.fromkeys(job.provider for job in jobs)
        }
        runner = BatchRunner(config, options, ledger, providers, progress, verdict.foreign, stop, takes)
        outcomes = runner.run(jobs)
    return summarize(config, options, outcomes, started)


def summarize(config: RunConfig, options: RunOptions, outcomes: list[JobOutcome], started: float) -> RunSummary:
    """The run's summary, once its jobs are over (the checksums refreshed if any was delivered)."""
    checksums = refresh_checksums(config.output) if any(o.stage is Stage.DONE for o in outcomes) else None
    return RunSummary(
        config.name, config.output, tuple(outcomes), time.monotonic() - started, checksums, options.rehearse
    )
