"""Crash safety: SIGKILL a real `lipsync run` at named points and at random times, then rerun.

The emulator lives in this test process, so it outlives every killed run and counts what was really
created. Named kill points use the test-only LIPSYNC_TEST_KILL_AT hook of pipeline.run.runner.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

import pytest
from runkit import checksums_hold, lipsync, make_batch_media, sha256, start_lipsync, write_config

from pipeline.emulator import Emulator, EmulatorSettings

JOBS = [
    {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
    {"id": "spoken", "video": "clip.mp4", "text": "Short line, one job.", "speaker": "James"},
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, media):
    """The finals of an uninterrupted run of the same batch."""
    folder = tmp_path_factory.mktemp("reference")
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        config = _batch(folder, media, emu)
        run = lipsync("run", str(config), "--json", env=emu.env())
    assert run.returncode == 0, run.stderr
    return {job["id"]: sha256(folder / "out" / job["id"] / "final.mp4") for job in JOBS}


def _batch(folder, media, emu, jobs=JOBS, **kw):
    for f in (media.video, media.voice, media.script):
        (folder / f.name).symlink_to(f)
    return write_config(folder, jobs, base_urls=emu.base_urls, **kw)


def _prepared_files(run_dir) -> dict[str, int]:
    """Files of every finished prepare (those with their prepared.json), with their modification times."""
    done = [record.parent for record in run_dir.glob(".work/*/prepare-*/prepared.json")]
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for folder in done for p in folder.iterdir()}


def _ledger_stages(run_dir) -> dict[str, str]:
    try:
        with sqlite3.connect(f"file:{run_dir / 'ledger.sqlite'}?mode=ro", uri=True) as db:
            return dict(db.execute("SELECT job_id, stage FROM jobs").fetchall())
    except sqlite3.Error:
        return {}


@pytest.mark.parametrize("point", ["prepare", "after_create", "poll", "download", "mux", "handoff"])
def test_kill_at_a_named_point_then_resume(tmp_path, media, reference, point):
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        # One job at a time, so the kill lands at the named point and never while the other job's create
        # is in flight (that create would rightly be uncertain: the random-kill test below covers it).
        config = _batch(tmp_path, media, emu, max_jobs=1)
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": point})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        prepared_before = _prepared_files(tmp_path / "out")
        for result in (tmp_path / "out").glob(".work/*/provider-*.mp4"):  # as a download killed mid-way leaves
            (result.parent / f".{result.stem}.x1y2.part.mp4").write_bytes(b"half a file")
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)  # one create per key, kill or no kill
    if point != "prepare":  # finished conform work is reused, not repeated
        after = _prepared_files(tmp_path / "out")
        assert prepared_before and all(after[name] == stamp for name, stamp in prepared_before.items())
    out = tmp_path / "out"
    assert {j["id"]: sha256(out / j["id"] / "final.mp4") for j in JOBS} == reference
    assert {"voiced/final.mp4", "spoken/final.mp4"} <= set(checksums_hold(out))
    assert not list(out.rglob("*.part*"))  # nothing half-written is left behind


def test_kill_between_intent_and_create_is_reported_uncertain(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        config = _batch(tmp_path, media, emu, JOBS[:1])
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "after_intent"})
        assert killed.returncode == -signal.SIGKILL
        again = lipsync("run", str(config), "--json", env=emu.env())
        assert emu.accepted_creates("pixverse") == 0  # nothing re-sent on its own
        job = json.loads(again.stdout)["jobs"][0]
        assert again.returncode != 0 and job["stage"] == "uncertain"
        reconcile = job["uncertain"][0]["reconcile"]
        assert reconcile["provider"] == "pixverse" and reconcile["intent_at"].endswith("Z")
        assert len(reconcile["video_sha256"]) == 64 and reconcile["reply_ref"].startswith("t/voiced/0/")
        fixed = lipsync("run", str(config), "--resubmit-uncertain", env=emu.env())
        assert fixed.returncode == 0, fixed.stderr
        assert emu.accepted_creates("pixverse") == 1


def test_kill_at_random_times_never_creates_twice(tmp_path, media, reference):
    rng = random.Random(7)
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        config = _batch(tmp_path, media, emu)
        finals_seen: dict[str, str] = {}
        for _ in range(6):
            proc = start_lipsync("run", str(config), env=emu.env())
            time.sleep(rng.uniform(0.3, 2.5))
            proc.kill()
            proc.wait()
            for job_id, stage in _ledger_stages(tmp_path / "out").items():
                final = tmp_path / "out" / job_id / "final.mp4"
                if stage == "done":  # a delivered result is never lost or rewritten by a later run
                    finals_seen.setdefault(job_id, sha256(final))
                    assert sha256(final) == finals_seen[job_id]
        run = lipsync("run", str(config), "--json", env=emu.env())
        summary = json.loads(run.stdout)
        uncertain = [j for j in summary["jobs"] if j["stage"] == "uncertain"]
        created = emu.accepted_creates("pixverse")
        assert created <= len(JOBS)  # never twice for one key
        if uncertain:  # a kill landed between intent and answer: only the user may resubmit
            run = lipsync("run", str(config), "--json", "--resubmit-uncertain", env=emu.env())
            assert emu.accepted_creates("pixverse") <= created + len(uncertain)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    assert {j["id"]: sha256(out / j["id"] / "final.mp4") for j in JOBS} == reference
    checksums_hold(out)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_term_stops_cleanly_and_the_run_resumes(tmp_path, media, reference, stop):
    with Emulator(EmulatorSettings(latency_s=1.5)) as emu:
        config = _batch(tmp_path, media, emu)
        proc = start_lipsync("run", str(config), env=emu.env())
        deadline = time.monotonic() + 60
        while "poll" not in _ledger_stages(tmp_path / "out").values():
            assert time.monotonic() < deadline and proc.poll() is None, "the run never reached polling"
            time.sleep(0.05)
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        stages = _ledger_stages(tmp_path / "out")
        assert "interrupted" in stages.values() and "uncertain" not in stages.values()
        with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM creates WHERE state='intent'").fetchone()[0] == 0
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert emu.accepted_creates("pixverse") == len(JOBS)
    out = tmp_path / "out"
    assert {j["id"]: sha256(out / j["id"] / "final.mp4") for j in JOBS} == reference


def test_an_expired_result_url_is_refreshed_by_polling(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = _batch(tmp_path, media, emu, JOBS[:1])
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "download"})
        assert killed.returncode == -signal.SIGKILL
        with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:  # the recorded URL no longer works
            assert (
                db.execute(
                    "UPDATE creates SET result_url=? WHERE state='succeeded'", (f"{emu.root}/expired/result.mp4",)
                ).rowcount
                == 1
            )
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert "fresh one" in resumed.stderr
        assert emu.accepted_creates("pixverse") == 1


def test_lost_prepare_cache_does_not_pay_again(tmp_path, media):
    """Deleting the work folder (or a re-encode that comes out different) must not create a second job."""
    import shutil

    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = _batch(tmp_path, media, emu, JOBS[:1])
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "poll"})
        assert killed.returncode == -signal.SIGKILL
        shutil.rmtree(tmp_path / "out" / ".work")
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        final = tmp_path / "out" / "voiced" / "final.mp4"
        delivered = sha256(final)
        final.unlink()  # a delivered file lost downstream is rebuilt from the kept provider result
        rebuilt = lipsync("run", str(config), "--json", env=emu.env())
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert emu.accepted_creates("pixverse") == 1
    assert sha256(final) == delivered


def test_killed_in_the_backoff_after_a_refusal_the_rerun_creates_with_nothing_uncertain(tmp_path, media, reference):
    """PixVerse answers the first create with 500044 (not accepted); the run dies waiting to try again."""
    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        emu.faults("pixverse").rate_limit_creates = 1
        config = _batch(tmp_path, media, emu, JOBS[:1])
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "backoff"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
            assert [s for (s,) in db.execute("SELECT state FROM creates")] == ["refused"]
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert emu.accepted_creates("pixverse") == 1
    assert not json.loads(resumed.stdout)["uncertain"]
    assert sha256(tmp_path / "out" / "voiced" / "final.mp4") == reference["voiced"]


def test_killed_during_an_upload_the_rerun_creates_once(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = _batch(tmp_path, media, emu, JOBS[:1])
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "upload"})
        assert killed.returncode == -signal.SIGKILL
        assert emu.accepted_creates("pixverse") == 0
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert resumed.returncode == 0, resumed.stderr
        assert emu.accepted_creates("pixverse") == 1


@pytest.mark.parametrize("provider,delivered", [("pixverse", False), ("useapi", True)])
def test_killed_after_the_body_was_sent(tmp_path, media, provider, delivered):
    """The provider has the job, we have no answer: PixVerse's is left to the user (uncertain); useapi's is
    found again by its replyRef and delivered, never created twice."""
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = _batch(tmp_path, media, emu, JOBS[:1])
        config.write_text(
            config.read_text(encoding="utf-8").replace('provider = "pixverse"', f'provider = "{provider}"'),
            encoding="utf-8",
        )
        killed = lipsync("run", str(config), env={**emu.env(), "LIPSYNC_TEST_KILL_AT": "after_send"})
        assert killed.returncode == -signal.SIGKILL
        resumed = lipsync("run", str(config), "--json", env=emu.env())
        assert emu.accepted_creates(provider) == 1
    job = json.loads(resumed.stdout)["jobs"][0]
    if delivered:
        assert resumed.returncode == 0 and job["stage"] == "done", resumed.stderr
    else:
        assert resumed.returncode == 1 and job["stage"] == "uncertain"
        reconcile = job["uncertain"][0]["reconcile"]
        assert reconcile["intent_at"].endswith("Z") and reconcile["reply_ref"].startswith("t/voiced/0/")
        plain = lipsync("run", str(config), env={"PIXVERSE_API_KEY": "k"})  # the emulator is gone: no request needed
        assert "voiced segment 0: a create sent to pixverse at" in plain.stderr
        assert "--resubmit-uncertain sends it again" in plain.stderr
