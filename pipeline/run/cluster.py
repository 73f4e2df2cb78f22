"""`lipsync run --cluster ADDRESS`: each job of the batch is a task on a Dask distributed cluster.

A task runs one job exactly as the single-machine runner does (`BatchRunner.run_job`: prepare, the
provider-job flow per segment, mux → verify → handoff), in a runner kept per worker process. Pay-once
rests on the flow and the shared PostgreSQL ledger, not on Dask: the flow reads the ledger before every
billable step and holds the segment's lease while it works, and the job's lease keeps one process on a
job. So when Dask runs a dead worker's task again elsewhere, the new run finds the intent, the provider's
job id or the downloaded result, and goes on from there. Tasks are submitted with `retries=0`: a job that
fails is recorded and reported, never re-run by Dask on its own.

A provider's concurrency (`max_jobs`, capped by the provider's own limit) holds across the cluster: each
provider job holds a lease of a `distributed.Semaphore` named after the run and provider.

Workers read and write the run's files at the same paths as this machine (a shared filesystem): checked
before any job starts (`storage_problems`). The SQLite ledger is refused with a cluster: its lock and
its writes would be only as safe as the network filesystem's locking; PostgreSQL's are the server's.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LipsyncError, ValidationError
from ..fsutil import write_text_atomic
from ..providers import credential_from_env
from ..secrets import RedactingFilter, record_environment
from .config import JobSpec, RunConfig, load_config
from .ledger import Stage
from .ledger_pg import PgLedger, shown_url
from .progress import Progress
from .reviews import Take
from .rundir import WORK_DIR
from .runner import (
    CPU_SLOTS_ENV,
    BatchRunner,
    Endpoints,
    JobOutcome,
    RunOptions,
    RunSummary,
    open_provider,
    opened_run,
    provider_endpoints,
    provider_width,
    record_takes,
    selected_jobs,
    stoppable_sleep,
    summarize,
)

log = logging.getLogger("lipsync.run")

CONNECT_TIMEOUT_S = 30
STATUS_EVERY_S = 1.0  # how often the client reads the jobs' stages from the ledger for its progress display


@dataclass(frozen=True)
class ClusterTask:
    """What a job's task carries to a worker. No keys: a worker reads its own environment, except in a
    rehearsal, whose endpoints are the client's emulator and its test keys."""

    config_path: str
    options: RunOptions
    foreign: tuple[str, ...]
    job_id: str
    rehearsal: Endpoints | None
    takes: tuple[Take, ...] = ()  # each job's latest take asked for in review (run/reviews.py)


def run_on_cluster(config: RunConfig, options: RunOptions, progress: Progress, address: str) -> RunSummary:
    """Run (or resume) the selected jobs of `config` as tasks on the Dask cluster at `address`."""
    if config.ledger is None:
        raise ConfigError(
            f"{config.path}: a cluster run needs a ledger every worker reaches: set [run] ledger = "
            '"postgresql://user@host/database" (the password from PGPASSWORD)'
        )
    from distributed import Client, wait
    from distributed.client import FuturesCancelledError

    jobs = selected_jobs(config, options)
    started = time.monotonic()
    with opened_run(config, options) as (ledger, verdict), provider_endpoints(config, options) as endpoints:
        takes = tuple(record_takes(config, options, jobs).values())
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise LipsyncError(f"cannot reach the Dask scheduler at {address}: {err}") from None
        with client:
            check_shared_storage(client, config, jobs)
            log.info("cluster %s: %d workers; ledger %s", address, len(client.nthreads()), shown_url(config.ledger))
            progress.start([(job.id, job.provider) for job in jobs])
            rehearsal = endpoints if options.rehearse else None
            token = secrets.token_hex(4)  # a rerun of the same config is a new set of tasks, not a cached result
            futures = {
                job.id: client.submit(
                    run_job_task,
                    ClusterTask(str(config.path), options, verdict.foreign, job.id, rehearsal, takes),
                    key=f"lipsync-{config.name}-{job.id}-{token}",
                    pure=False,
                    retries=0,
                )
                for job in jobs
            }
            try:
                while client.status == "running" and (running := [f for f in futures.values() if not f.done()]):
                    # distributed's wait raises when its timeout passes, and when the scheduler is lost; only
                    # the running tasks: a finished one would end every wait at once (a busy loop)
                    with suppress(TimeoutError, FuturesCancelledError):
                        wait(running, timeout=STATUS_EVERY_S, return_when="FIRST_COMPLETED")
                    _show_stages(ledger.jobs(), progress, futures)
            except KeyboardInterrupt:
                log.warning("stopping: jobs running on workers finish and are recorded; run again to resume")
                client.cancel(list(futures.values()))
                raise
            if client.status != "running":  # the scheduler went away: its tasks are cancelled, not failed
                raise LipsyncError(
                    f"lost the Dask scheduler at {address}; every step done so far is in the ledger: "
                    "run the same command again (on the restarted cluster) to resume"
                )
            outcomes = [_outcome(job, futures[job.id]) for job in jobs]
            _show_stages(ledger.jobs(), progress, futures)
    return summarize(config, options, outcomes, started)


def _show_stages(rows: list[Any], progress: Progress, futures: dict[str, Any]) -> None:
    for row in rows:
        if row.job_id in futures:
            progress.update(row.job_id, stage=row.stage, note=row.error or row.detail)


def _outcome(job: JobSpec, future: Any) -> JobOutcome:
    """The task's outcome; a task Dask gave up on (its workers kept dying) is the job's failure."""
    if future.status == "finished":
        outcome: JobOutcome = future.result()
        return outcome
    error = future.exception() if future.status == "error" else None
    message = f"the cluster could not run the job: {type(error).__name__}: {error}" if error else "cancelled"
    return JobOutcome(job.id, job.provider, Stage.FAILED, 1, message, None, (), 0.0, False)


# ---- shared storage ---------------------------------------------------------------------------------


def storage_problems(inputs: list[str], probe: str, token: str) -> list[str]:
    """What this machine cannot do of what a worker must: read each input, find the probe the client wrote
    in the run directory (the same storage, not only the same path), write beside it."""
    problems = []
    for path in inputs:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as err:
            problems.append(f"cannot read {path} ({err.strerror or err})")
    try:
        if Path(probe).read_text(encoding="utf-8") != token:
            problems.append(f"{Path(probe).parent} is another folder than the client's (a different disk)")
    except OSError as err:
        problems.append(f"cannot read {probe} ({err.strerror or err})")
    try:
        mine = Path(f"{probe}.{os.getpid()}")
        mine.write_text(token, encoding="utf-8")
        mine.unlink()
    except OSError as err:
        problems.append(f"cannot write in {Path(probe).parent} ({err.strerror or err})")
    return problems


def _job_inputs(config: RunConfig, jobs: tuple[JobSpec, ...]) -> list[str]:
    paths = [config.path]
    for job in jobs:
        paths += [p for p in (job.video, job.audio, job.text_file) if p is not None]
        if job.portrait is not None:
            paths.append(job.portrait.image)
    return [str(p) for p in dict.fromkeys(paths)]


def check_shared_storage(client: Any, config: RunConfig, jobs: tuple[JobSpec, ...]) -> None:
    """Fail the run before any create when a worker cannot reach an input or the run directory."""
    token = secrets.token_hex(16)
    probe = config.output / WORK_DIR / f".storage-check-{token[:8]}"
    write_text_atomic(probe, token)
    try:
        found: dict[str, list[str]] = client.run(storage_problems, _job_inputs(config, jobs), str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    problems = [f"worker {worker}: {problem}" for worker, listed in sorted(found.items()) for problem in listed]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationError(
            f"{problems[0]}{more}; inputs and the output folder must be on storage every worker sees "
            "at the same path (a network filesystem)"
        )


# ---- on a worker ------------------------------------------------------------------------------------


class ClusterRunner(BatchRunner):
    """The batch runner of one worker process: jobs come as tasks; each provider job holds a lease of the
    cluster-wide semaphore of its provider, so `max_jobs` counts across all workers."""

    def __init__(self, *args: Any, semaphores: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._semaphores = semaphores

    def _provider_slot(self, provider: str) -> AbstractContextManager[None]:
        return _leased(self._semaphores[provider])


@contextmanager
def _leased(semaphore: Any) -> Iterator[None]:
    semaphore.acquire()
    try:
        yield
    finally:
        semaphore.release()


_runners: dict[tuple[Any, ...], ClusterRunner] = {}
_runners_lock = threading.Lock()


def run_job_task(task: ClusterTask) -> JobOutcome:
    """A Dask task: one job, by this worker process's runner for the run."""
    runner = _runner_for(task)
    spec = next(job for job in runner.config.jobs if job.id == task.job_id)
    return runner.run_job(spec)


def _runner_for(task: ClusterTask) -> ClusterRunner:
    """The runner of this worker process for the task's run (config file version, options, endpoints)."""
    from distributed import Semaphore

    stat = os.stat(task.config_path)
    rehearsal = task.rehearsal and (tuple(task.rehearsal.base_urls.items()), tuple(task.rehearsal.credentials.items()))
    key = (task.config_path, stat.st_mtime_ns, stat.st_size, task.options, task.foreign, rehearsal, task.takes)
    with _runners_lock:
        if key in _runners:
            return _runners[key]
        _worker_logging()
        _stop_worker_profiler()
        config = load_config(task.config_path)
        assert config.ledger is not None
        endpoints = task.rehearsal or Endpoints(
            dict(config.base_urls), {name: credential_from_env(name) for name in config.providers}
        )
        stop = threading.Event()
        providers = {
            name: open_provider(config, task.options, name, endpoints, stoppable_sleep(stop))
            for name in config.providers
        }
        semaphores = {
            name: Semaphore(
                max_leases=provider_width(provider, task.options.jobs or config.max_jobs),
                name=f"lipsync/{config.name}/{name}",
            )
            for name, provider in providers.items()
        }
        ledger = PgLedger(config.ledger, config.name)
        takes = {take.job_id: take for take in task.takes}
        runner = ClusterRunner(
            config, task.options, ledger, providers, Progress(), task.foreign, stop, takes, semaphores=semaphores
        )
        runner.progress.start([(job.id, job.provider) for job in config.jobs])
        _runners[key] = runner
        return runner


def _stop_worker_profiler() -> None:
    """Dask's statistical profiler samples every thread's stack every 10 ms. A worker here runs dozens of
    jobs in threads, mostly waiting on a provider; the sampling then stalled whole worker processes for
    seconds (py-spy: the GIL held by `trigger_profile` → `sys._current_frames` → a garbage collection), and
    a profile of waiting threads says nothing. Off on this worker (`distributed.worker.profile.enabled`)."""
    from distributed import get_worker

    periodic = get_worker().periodic_callbacks
    for name in ("profile", "profile-cycle"):
        if name in periodic:
            periodic[name].stop()


def _worker_logging() -> None:
    """A worker's lipsync warnings and errors on its stderr, keys masked, as the CLI's are (a job's routine
    lines, many per job, would bury them in a cluster's log; the client shows the jobs' stages)."""
    record_environment()
    root = logging.getLogger("lipsync")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        root.propagate = False


# ---- `lipsync cluster up` ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalClusterInfo:
    address: str
    workers: int
    threads_per_worker: int


@contextmanager
def local_cluster(workers: int, threads: int, host: str, port: int) -> Iterator[LocalClusterInfo]:
    """A scheduler and `workers` worker processes (each under a nanny, which restarts it if it dies) on this
    machine: for trying `--cluster`, and for the tests and the benchmark. The workers split the machine's
    cores for their ffmpeg work (`LIPSYNC_CPU_SLOTS`), as one process would use them all."""
    from distributed import LocalCluster

    share = max(1, min(4, os.cpu_count() or 1) // workers)
    with LocalCluster(
        env={CPU_SLOTS_ENV: str(share)},
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        host=host,
        scheduler_port=port,
        dashboard_address=":0",  # no fixed port: several clusters may share a machine
    ) as cluster:
        yield LocalClusterInfo(str(cluster.scheduler_address), workers, threads)
