"""`lipsync run --cluster`: a real Dask cluster (`lipsync cluster up`: a scheduler and 2 worker processes),
a real PostgreSQL ledger (the `pg_server` fixture) and the emulator in this process, which outlives every
killed worker and counts what was really created. Faults: a worker process SIGKILLed mid-conform,
mid-create, mid-poll and mid-download (its nanny restarts it, Dask runs the task again), the database
connections dropped mid-run, a worker that cannot see the media."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg
import pytest
from runkit import LIPSYNC, checksums_hold, lipsync, make_batch_media, sha256, start_lipsync, write_batch
from test_ledger_pg import with_ledger

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.run.reviews import Decision, Reviews

# real clusters and servers on 2 busy cores: minutes, not the suite's default 300 s
pytestmark = pytest.mark.timeout(900)

JOBS = [
    {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
    {"id": "spoken", "video": "clip.mp4", "text": "Short line, one job.", "speaker": "James"},
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, media):
    """The finals of an uninterrupted single-machine run of the same batch (SQLite ledger)."""
    folder = tmp_path_factory.mktemp("reference")
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        run = lipsync("run", str(write_batch(folder, media, JOBS, base_urls=emu.base_urls)), env=emu.env())
    assert run.returncode == 0, run.stderr
    return {job["id"]: sha256(folder / "out" / job["id"] / "final.mp4") for job in JOBS}


@dataclass(frozen=True)
class Cluster:
    address: str
    process_group: int  # of its `lipsync cluster up`: the scheduler, the nannies and the workers


@contextmanager
def cluster_up(env: dict[str, str], wrapper: tuple[str, ...] = (), threads: int = 4):
    """`lipsync cluster up` (2 workers of `threads` threads) as its own process group; yields its address and
    process group."""
    full_env = {**os.environ, "LIPSYNC_POLL_INTERVAL": "0.1", **env}
    proc = subprocess.Popen(
        [*wrapper, LIPSYNC, "cluster", "up", "--workers", "2", "--threads", str(threads), "--port", "0", "--json"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        while not lines or lines[-1] != "}":
            line = proc.stdout.readline()
            assert line, f"lipsync cluster up ended ({proc.wait()})"
            lines.append(line.rstrip("\n"))
        yield Cluster(json.loads("\n".join(lines))["address"], proc.pid)
    finally:
        with suppress(ProcessLookupError):  # a test may have killed it
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _batch(folder, media, emu, pg_url, jobs=JOBS, provider="pixverse", **kw):
    config = write_batch(folder, media, jobs, base_urls=emu.base_urls, provider=provider, **kw)
    with_ledger(config, pg_url)
    return config


def _delivered(out, jobs=JOBS) -> dict[str, str]:
    assert {f"{j['id']}/final.mp4" for j in jobs} <= set(checksums_hold(out))
    return {j["id"]: sha256(out / j["id"] / "final.mp4") for j in jobs}


def test_a_batch_runs_on_the_cluster(tmp_path, media, reference, pg_url):
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu, cluster_up(emu.env()) as cluster:
        # one provider job at a time across the cluster, though each of the 2 workers has a pool of 1
        config = _batch(tmp_path, media, emu, pg_url, max_jobs=1)
        run = lipsync("run", str(config), "--cluster", cluster.address, "--json", env=emu.env())
        assert run.returncode == 0, run.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)
        again = lipsync("run", str(config), "--cluster", cluster.address, "--json", env=emu.env())
        assert again.returncode == 0, again.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)  # a rerun finds every job done
        jobs = sorted(emu.jobs("pixverse"), key=lambda job: job.created_at)
    for before, after in itertools.pairwise(jobs):  # the semaphore is held from create to download
        assert after.created_at >= before.created_at + before.queue_s + before.run_s
    summary = json.loads(run.stdout)
    assert [j["stage"] for j in summary["jobs"]] == ["done"] * len(JOBS)
    assert _delivered(tmp_path / "out") == reference
    status = json.loads(lipsync("status", str(tmp_path / "out"), "--json").stdout)
    assert [len(j["provider_jobs"]) for j in status["jobs"]] == [1] * len(JOBS)


@pytest.mark.parametrize(
    "points, provider",
    [
        # mid-conform (media conformed, not yet recorded), mid-poll, mid-download: one worker death each
        ("prepare,poll,download", "pixverse"),
        # mid-create: sent, its answer never read (useapi's replyRef finds the job the create made)
        ("after_send", "useapi"),
    ],
)
def test_workers_killed_mid_job_cost_no_second_create(tmp_path, media, reference, pg_url, points, provider):
    died = tmp_path / "killed"
    env_kill = {
        "LIPSYNC_TEST_KILL_AT": points,
        "LIPSYNC_TEST_KILL_ONCE": str(died),
        # a task on a worker that dies is suspect; Dask gives up on one after 3 such deaths, all we cause here
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "10",
    }
    # one job at a time per worker process: a death at a named point then stops only the job that reached it
    # (a PixVerse create in flight on the same worker would rightly become uncertain: no lookup by reference)
    with (
        Emulator(EmulatorSettings(latency_s=0.5)) as emu,
        cluster_up({**emu.env(), **env_kill}, threads=1) as cluster,
    ):
        config = _batch(tmp_path, media, emu, pg_url, provider=provider)
        run = lipsync("run", str(config), "--cluster", cluster.address, "--json", env=emu.env())
        assert run.returncode == 0, run.stderr
        for point in points.split(","):
            assert (tmp_path / f"killed.{point}").exists(), f"no worker died at {point}"
        assert emu.accepted_creates(provider) == len(JOBS)
    delivered = _delivered(tmp_path / "out")
    if provider == "pixverse":
        assert delivered == reference


def test_a_job_rejected_in_review_is_made_again_once_on_the_cluster(tmp_path, media, pg_url):
    out = tmp_path / "out"
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu, cluster_up(emu.env()) as cluster:
        config = _batch(tmp_path, media, emu, pg_url)
        args = ("run", str(config), "--cluster", cluster.address, "--json")
        first = lipsync(*args, env=emu.env())
        assert first.returncode == 0, first.stderr
        delivered = sha256(out / "voiced" / "final.mp4")
        Reviews(out).decide("voiced", Decision.REJECTED, "the lips trail the words")  # kept in PostgreSQL
        retake = lipsync(*args, "--only-rejected", env=emu.env())
        assert retake.returncode == 0, retake.stderr
        plain = lipsync(*args, env=emu.env())  # every worker now works on the job's new take: nothing to redo
        assert plain.returncode == 0, plain.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS) + 1
    [old] = [job["provider_job_ids"] for job in json.loads(first.stdout)["jobs"] if job["id"] == "voiced"]
    [new] = json.loads(retake.stdout)["jobs"]
    assert new["id"] == "voiced" and new["stage"] == "done" and not set(new["provider_job_ids"]) & set(old)
    assert sha256(out / "voiced" / "take-0" / "final.mp4") == delivered
    assert "voiced" not in Reviews(out).all() and Reviews(out).takes()["voiced"].take == 1
    assert not (out / "ledger.sqlite").exists()


def test_dropped_database_connections_are_reopened(tmp_path, media, reference, pg_url):
    with Emulator(EmulatorSettings(latency_s=2.0)) as emu, cluster_up(emu.env()) as cluster:
        config = _batch(tmp_path, media, emu, pg_url)
        proc = start_lipsync("run", str(config), "--cluster", cluster.address, "--json", env=emu.env())
        _wait_for_polling(pg_url, proc)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'lipsync%'"
            ).fetchone()[0]
        _, stderr = proc.communicate(timeout=240)
        assert dropped >= 3 and proc.returncode == 0, stderr  # the client's and both workers' ledgers at least
        assert emu.accepted_creates("pixverse") == len(JOBS)
    assert _delivered(tmp_path / "out") == reference


def test_the_cluster_dies_mid_run_and_the_run_resumes_on_a_new_one(tmp_path, media, reference, pg_url):
    with Emulator(EmulatorSettings(latency_s=2.0)) as emu:
        config = _batch(tmp_path, media, emu, pg_url)
        with cluster_up(emu.env()) as cluster:
            proc = start_lipsync("run", str(config), "--cluster", cluster.address, env=emu.env())
            _wait_for_polling(pg_url, proc)
            os.killpg(cluster.process_group, signal.SIGKILL)  # scheduler, nannies and workers at once
            _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 1 and "lost the Dask scheduler" in stderr, stderr
        with cluster_up(emu.env()) as cluster:
            resumed = lipsync("run", str(config), "--cluster", cluster.address, "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)
    assert _delivered(tmp_path / "out") == reference


def _wait_for_polling(pg_url, proc) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        deadline = time.monotonic() + 120
        while not _polling(admin):
            assert time.monotonic() < deadline and proc.poll() is None, "no job reached polling"
            time.sleep(0.1)


def _polling(admin) -> bool:
    try:
        return admin.execute("SELECT 1 FROM lipsync_jobs WHERE stage='poll'").fetchone() is not None
    except psycopg.errors.UndefinedTable:  # the run has not created its ledger yet
        return False


def test_a_worker_that_cannot_see_the_media_stops_the_run_before_any_create(tmp_path, media, pg_url):
    if shutil.which("unshare") is None:
        pytest.fail("this test needs util-linux's unshare (a worker in its own mount namespace)")
    hidden = tmp_path / "media"
    hidden.mkdir()
    shutil.copy(media.video, hidden / "clip.mp4")
    shutil.copy(media.voice, hidden / "voice.wav")
    jobs = [{"id": "voiced", "video": "media/clip.mp4", "audio": "media/voice.wav"}]
    # the workers see an empty folder where this machine has the media: a disk only the client mounted
    wrapper = ("unshare", "-m", *(() if os.geteuid() == 0 else ("-r",)), "sh", "-c")
    mask = f'mount -t tmpfs none "{hidden}" && exec "$0" "$@"'
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu, cluster_up(emu.env(), (*wrapper, mask)) as cluster:
        config = _batch(tmp_path, media, emu, pg_url, jobs=jobs)
        run = lipsync("run", str(config), "--cluster", cluster.address, env=emu.env())
        assert run.returncode == 6, run.stderr
        assert f"cannot read {hidden / 'clip.mp4'}" in run.stderr and "every worker sees" in run.stderr
        assert emu.accepted_creates("pixverse") == 0


def test_a_cluster_run_refuses_the_sqlite_ledger(tmp_path, media):
    config = write_batch(tmp_path, media, JOBS)
    run = lipsync("run", str(config), "--cluster", "tcp://127.0.0.1:1")
    assert run.returncode == 6 and "[run] ledger" in run.stderr
