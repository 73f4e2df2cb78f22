"""The run ledger on a real PostgreSQL server (started by the `pg_server` fixture): the same records as the
SQLite ledger, and leases that keep two `lipsync run`s of one config from ever creating a segment twice."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from runkit import checksums_hold, lipsync, make_batch_media, sha256, start_lipsync, write_batch

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import ConfigError
from pipeline.providers.store import CreateState, SegmentRef
from pipeline.run.ledger import Stage
from pipeline.run.ledger_pg import PgLedger, shown_url

# real clusters and servers on 2 busy cores: minutes, not the suite's default 300 s
pytestmark = pytest.mark.timeout(600)

JOBS = [
    {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
    {"id": "spoken", "video": "clip.mp4", "text": "Short line, one job.", "speaker": "James"},
    {"id": "again", "video": "clip.mp4", "audio": "voice.wav", "loudness_lufs": -20.0},
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def with_ledger(config, url: str) -> None:
    """Point a runkit config's [run] at the PostgreSQL ledger."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[run]\n", f"[run]\nledger = {json.dumps(url)}\n", 1), encoding="utf-8")


def test_store_records_and_leases(pg_url):
    ref = SegmentRef("job-1", "inputs", 0, "pixverse")
    with PgLedger(pg_url, "r1") as ledger, PgLedger(pg_url, "r1") as other, PgLedger(pg_url, "r2") as elsewhere:
        ledger.start_job("job-1", "pixverse", "inputs")
        attempt = ledger.record_intent("k", ref)
        assert (attempt, other.latest_create("k").state) == (1, CreateState.INTENT)
        ledger.record_refused("k", attempt, error="429")
        assert ledger.record_intent("k", ref) == 2
        ledger.record_created("k", 2, handle={"job_id": "p-1"}, provider_job_id="p-1")
        ledger.record_poll("k", 2, "running")
        ledger.record_succeeded("k", 2, result_url="http://x/r.mp4", status={"raw_status": "done"})
        ledger.record_downloaded("k", 2, path="/r.mp4", sha256="ab", size=3)
        record = other.latest_create("k")
        assert (record.state, record.provider_job_id, record.polls, record.handle) == (
            CreateState.DOWNLOADED,
            "p-1",
            1,
            {"job_id": "p-1"},
        )
        assert other.live_create_for(ref).idem_key == "k"
        assert elsewhere.latest_create("k") is None  # runs share a database, never records
        ledger.set_stage("job-1", Stage.POLL, "running")
        ledger.finish_job("job-1", Stage.DONE, exit_code=0, final_path="/f.mp4", final_sha256="cd")
        assert other.job("job-1").stage is Stage.DONE and [t.stage for t in other.stage_times("job-1")] == ["poll"]

        with ledger.lease("segment/k", lambda s: pytest.fail("the lease was free")):
            assert other.held_elsewhere("segment/k") and not elsewhere.held_elsewhere("segment/k")
        assert not other.held_elsewhere("segment/k")


def test_a_dropped_connection_is_reopened_and_no_intent_is_lost(pg_url):
    ref = SegmentRef("job-1", "inputs", 0, "pixverse")
    with PgLedger(pg_url, "r") as ledger, psycopg.connect(pg_url, autocommit=True) as admin:
        ledger.start_job("job-1", "pixverse", "inputs")
        with ledger.lease("job/job-1", lambda s: None):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'lipsync%'"
            )
            assert ledger.record_intent("k", ref) == 1
            with PgLedger(pg_url, "r") as other:  # the lease is taken again on a new connection
                deadline = time.monotonic() + 60
                while not other.held_elsewhere("job/job-1"):
                    assert time.monotonic() < deadline, "the lease was never taken again"
                    time.sleep(0.2)
        assert [c.attempt for c in ledger.creates("job-1")] == [1]


def test_a_password_never_goes_in_the_url(pg_url):
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        PgLedger("postgresql://u:s3cret@db.example/x", "r")
    assert shown_url("postgresql://u:s3cret@db/x?sslmode=require&password=s3cret") == (
        "postgresql://u@db/x?sslmode=require"
    )


def test_two_concurrent_runs_of_one_config_create_each_segment_once(tmp_path, media, pg_url):
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        config = write_batch(tmp_path, media, JOBS, base_urls=emu.base_urls)
        with_ledger(config, pg_url)
        runs = [start_lipsync("run", str(config), "--json", env=emu.env()) for _ in range(2)]
        outputs = [run.communicate(timeout=240) for run in runs]
        for run, (_, stderr) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)
    out = tmp_path / "out"
    assert not (out / "ledger.sqlite").exists()
    status = lipsync("status", str(out), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert {j["id"]: j["stage"] for j in report["jobs"]} == dict.fromkeys((j["id"] for j in JOBS), "done")
    assert [len(j["provider_jobs"]) for j in report["jobs"]] == [1] * len(JOBS)
    for job in JOBS:
        final = out / job["id"] / "final.mp4"
        assert report["jobs"][[j["id"] for j in report["jobs"]].index(job["id"])]["final_sha256"] == sha256(final)
    assert {f"{j['id']}/final.mp4" for j in JOBS} <= set(checksums_hold(out))
