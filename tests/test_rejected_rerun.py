"""`lipsync run --only-rejected`: a job rejected in review is made again from new provider jobs, paid once
even when the re-run is killed and run again; the delivery it replaces is kept as `<job>/take-0/`, and the
job is pending review again once the new take is delivered. Real `lipsync` processes against the emulator
(in this test process, so it outlives every kill and counts what was really created)."""

from __future__ import annotations

import json
import signal

import pytest
from runkit import checksums_hold, lipsync, make_batch_media, sha256, write_batch
from test_ledger_pg import with_ledger

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.run.reviews import Decision, Reviews

JOBS = [
    {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
    {"id": "spoken", "video": "clip.mp4", "text": "Short line, one job.", "speaker": "James"},
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


def _summary(run) -> dict:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _job_ids(summary: dict) -> dict[str, list[str]]:
    return {job["id"]: job["provider_job_ids"] for job in summary["jobs"]}


@pytest.mark.parametrize(
    "kill_at, ledger", [("after_create", "sqlite"), ("handoff", "sqlite"), ("after_create", "postgresql")]
)
def test_a_rejected_job_is_made_again_once_and_its_earlier_delivery_is_kept(request, tmp_path, media, kill_at, ledger):
    out = tmp_path / "out"
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        batch = write_batch(tmp_path, media, JOBS, base_urls=emu.base_urls, max_jobs=1)
        if ledger == "postgresql":  # the reviews and takes then live in the database, beside the run's records
            with_ledger(batch, request.getfixturevalue("pg_url"))
        config = str(batch)
        first = _job_ids(_summary(lipsync("run", config, "--json", env=emu.env())))
        assert emu.accepted_creates("pixverse") == 2
        delivered = {name: sha256(out / "voiced" / name) for name in ("final.mp4", "manifest.json")}
        approved_final = sha256(out / "spoken" / "final.mp4")

        nothing = _summary(lipsync("run", config, "--only-rejected", "--json", env=emu.env()))
        assert nothing["jobs"] == [] and emu.accepted_creates("pixverse") == 2

        Reviews(out).decide("voiced", Decision.REJECTED, "the mouth lags the words")
        Reviews(out).decide("spoken", Decision.APPROVED)
        rejected_manifest = sha256(out / "voiced" / "manifest.json")  # now holding the review
        killed = lipsync("run", config, "--only-rejected", env={**emu.env(), "LIPSYNC_TEST_KILL_AT": kill_at})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert emu.accepted_creates("pixverse") == 3  # the new take's create went out before the kill
        assert sha256(out / "voiced" / "final.mp4") == delivered["final.mp4"]  # nothing lost meanwhile
        rerun = _summary(lipsync("run", config, "--only-rejected", "--json", env=emu.env()))
        assert emu.accepted_creates("pixverse") == 3  # exactly one new create, kill or no kill

        again = _summary(lipsync("run", config, "--only-rejected", "--json", env=emu.env()))
        plain = _summary(lipsync("run", config, "--json", env=emu.env()))
        assert emu.accepted_creates("pixverse") == 3

    retake = _job_ids(rerun)
    assert list(retake) == ["voiced"] and rerun["jobs"][0]["stage"] == "done"
    assert retake["voiced"] and not set(retake["voiced"]) & set(first["voiced"])  # a new provider job
    assert again["jobs"] == []  # the rejection is answered: the job waits for a review again
    assert _job_ids(plain) == {"voiced": retake["voiced"], "spoken": first["spoken"]}

    kept = out / "voiced" / "take-0"
    assert sha256(kept / "final.mp4") == delivered["final.mp4"]
    assert sha256(kept / "manifest.json") == rejected_manifest
    assert json.loads((kept / "manifest.json").read_text(encoding="utf-8"))["review"]["note"] == (
        "the mouth lags the words"
    )
    manifest = json.loads((out / "voiced" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["review"] is None and (out / "voiced" / "final.mp4").is_file()
    faces, lip_sync = manifest["conform"]["faces"], manifest["verification"]["lip_sync"]
    assert [f["segment"] for f in faces] == [s["segment"] for s in lip_sync] == [0]
    assert faces[0]["face_share"] < 0.5 < faces[0]["sampled"]  # the batch clip is a test pattern
    assert lip_sync[0]["status"] == "no face" and lip_sync[0]["method"]["max_lag_frames"] == 15
    assert sha256(out / "spoken" / "final.mp4") == approved_final
    reviews = Reviews(out).all()
    assert "voiced" not in reviews and reviews["spoken"].decision is Decision.APPROVED
    assert Reviews(out).takes()["voiced"].take == 1
    assert {"voiced/final.mp4", "spoken/final.mp4"} <= set(checksums_hold(out))
    assert (out / "ledger.sqlite").is_file() is (ledger == "sqlite")
    status = json.loads(lipsync("status", str(out), "--json").stdout)
    assert {job: review["decision"] for job, review in status["reviews"].items()} == {"spoken": "approved"}
    assert not list(out.rglob("*.part*")) and not (out / ".work" / "voiced" / "take-0").exists()
