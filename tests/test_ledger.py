"""The ledger: intents survive a crash, stages are timed, a second process sees every commit."""

from __future__ import annotations

import multiprocessing
import os
import signal

from pipeline.providers.store import CreateState, SegmentRef
from pipeline.run.ledger import Ledger, Stage


def test_create_lifecycle_and_attempts(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("a", "fal", "k1")
        attempt = ledger.record_intent("idem", SegmentRef("a", "k1", 0, "fal"))
        assert attempt == 1
        rec = ledger.latest_create("idem")
        assert rec.state is CreateState.INTENT and rec.provider_job_id is None
        ledger.record_created("idem", 1, handle={"provider": "fal", "job_id": "r1", "urls": {}}, provider_job_id="r1")
        ledger.record_poll("idem", 1, "IN_QUEUE")
        ledger.record_poll("idem", 1, "IN_PROGRESS")
        ledger.record_succeeded("idem", 1, result_url="http://x/r.mp4", status={"raw_status": "COMPLETED", "width": 8})
        ledger.record_downloaded("idem", 1, path="/d/r.mp4", sha256="ab" * 32, size=10)
        rec = ledger.latest_create("idem")
        assert rec.state is CreateState.DOWNLOADED and rec.state.live
        assert rec.handle["job_id"] == "r1" and rec.download_size == 10
        assert rec.polls == 2 and rec.provider_state == "COMPLETED" and rec.final_status["width"] == 8
        assert ledger.record_intent("idem", SegmentRef("a", "k1", 0, "fal")) == 2
        assert ledger.latest_create("idem").attempt == 2
        assert [c.attempt for c in ledger.creates("a")] == [1, 2]


def test_stage_timings_and_changed_inputs_restart_the_job(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("a", "fal", "k1")
        ledger.set_stage("a", Stage.PREPARE)
        ledger.set_stage("a", Stage.POLL, "IN_QUEUE")
        ledger.finish_job("a", Stage.DONE, exit_code=0, final_path="/f.mp4", final_sha256="0" * 64)
        times = ledger.stage_times("a")
        assert [t.stage for t in times] == ["prepare", "poll"]
        assert all(t.finished_at is not None and t.finished_at >= t.started_at for t in times)
        assert ledger.start_job("a", "fal", "k1").stage is Stage.DONE  # same inputs: still done
        row = ledger.start_job("a", "fal", "k2")  # changed inputs: start over
        assert row.stage is Stage.PENDING and row.final_path is None and ledger.stage_times("a") == []


def _intent_then_die(path):
    ledger = Ledger.in_dir(path)
    ledger.start_job("a", "pixverse", "k")
    ledger.record_intent("idem", SegmentRef("a", "k", 0, "pixverse"))
    os.kill(os.getpid(), signal.SIGKILL)


def test_intent_is_durable_across_sigkill(tmp_path):
    proc = multiprocessing.get_context("spawn").Process(target=_intent_then_die, args=(tmp_path,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    with Ledger.in_dir(tmp_path, readonly=True) as ledger:
        rec = ledger.latest_create("idem")
        assert rec is not None and rec.state is CreateState.INTENT and not rec.state.live
        assert ledger.job("a").stage is Stage.PENDING


def test_threads_share_one_writer(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with Ledger.in_dir(tmp_path) as ledger:

        def work(i):
            ledger.start_job(f"j{i}", "aimlapi", "k")
            a = ledger.record_intent(f"idem{i}", SegmentRef(f"j{i}", "k", 0, "aimlapi"))
            ledger.record_created(f"idem{i}", a, handle={}, provider_job_id=str(i))
            ledger.set_stage(f"j{i}", Stage.POLL)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(64)))
        assert len(ledger.jobs()) == 64
        assert sorted(int(c.provider_job_id) for c in ledger.creates()) == list(range(64))


def test_live_create_for_finds_a_standing_job_of_the_same_inputs_under_another_key(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.start_job("a", "fal", "inputs-1")
        ledger.record_intent("old-key", SegmentRef("a", "inputs-1", 0, "fal"))
        assert ledger.live_create_for(SegmentRef("a", "inputs-1", 0, "fal")) is None  # an intent is not a standing job
        ledger.record_created("old-key", 1, handle={}, provider_job_id="req-1")
        ledger.record_intent("other", SegmentRef("a", "inputs-1", 1, "fal"))
        found = ledger.live_create_for(SegmentRef("a", "inputs-1", 0, "fal"))
        assert found.idem_key == "old-key" and found.provider_job_id == "req-1"
        assert ledger.live_create_for(SegmentRef("a", "inputs-2", 0, "fal")) is None
        ledger.record_failed("old-key", 1, error="moderated")
        assert ledger.live_create_for(SegmentRef("a", "inputs-1", 0, "fal")) is None
