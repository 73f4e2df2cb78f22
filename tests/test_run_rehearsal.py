"""`lipsync run` end to end against the emulator: every provider, multi-chunk scripts, failures that stay
local to their job, and the --json contract."""

from __future__ import annotations

import json

import pytest
from loudness import r128_of
from runkit import checksums_hold, final_file, lipsync, make_batch_media, sha256, write_batch, write_config

from pipeline.emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_batch_media(tmp_path_factory.mktemp("media"))


@pytest.mark.parametrize("provider", ["pixverse", "aimlapi", "useapi", "fal"])
def test_rehearsal_delivers_audio_and_tts_jobs(tmp_path, media, provider):
    config = write_batch(
        tmp_path,
        media,
        [
            {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav", "loudness_lufs": -23.0},
            {"id": "spoken", "video": "clip.mp4", "text": "Hello there, welcome back.", "speaker": "Emily"},
        ],
        provider=provider,
    )
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)  # stdout holds the summary and nothing else
    assert summary["ok"] and summary["rehearsal"] and len(summary["jobs"]) == 2
    out = tmp_path / "out"
    for job in summary["jobs"]:
        final = out / job["id"] / "final.mp4"
        assert job["stage"] == "done" and job["final"] == str(final) and len(job["provider_job_ids"]) == 1
        media_seen = final_file(final)
        assert media_seen.width > 0 and media_seen.audio_s > 0.5
        manifest = json.loads((out / job["id"] / "manifest.json").read_text(encoding="utf-8"))
        assert [p["job_id"] for p in manifest["provider_jobs"]] == job["provider_job_ids"]
        assert manifest["provider_jobs"][0]["provider"] == provider
        assert {d["name"]: d["sha256"] for d in manifest["delivered"]}["final.mp4"] == sha256(final)
    manifest = json.loads((out / "voiced" / "manifest.json").read_text(encoding="utf-8"))
    assert {i["role"]: i["sha256"] for i in manifest["inputs"]} == {
        "video": sha256(media.video),
        "audio": sha256(media.voice),
    }
    assert manifest["config"]["provider"] == provider and manifest["config"]["audio"] == "voice.wav"
    assert manifest["conform"]["video"]["segments"][0]["plan"] and manifest["audio"]["loudness"]["segments"]
    assert any("ffmpeg" in argv[0] for argv in manifest["ffmpeg_commands"])
    assert manifest["verification"]["ok"]
    voiced = final_file(out / "voiced" / "final.mp4")
    assert abs(voiced.video_s - 2.0) < 0.2  # cut mode: the 2 s clip and the 2 s voice
    assert abs(r128_of(out / "voiced" / "final.mp4").integrated - -23.0) < 1.0  # the job's loudness target
    assert {"voiced/final.mp4", "spoken/final.mp4", "voiced/manifest.json"} <= set(checksums_hold(out))
    assert not any(".work" in name or "ledger" in name for name in checksums_hold(out))

    again = lipsync("run", str(config), "--rehearse", "--json")  # a rerun repeats nothing
    assert again.returncode == 0, again.stderr
    assert all(job["resumed"] for job in json.loads(again.stdout)["jobs"])


def test_long_script_becomes_several_provider_jobs_stitched(tmp_path, media):
    config = write_batch(
        tmp_path,
        media,
        [{"id": "talk", "video": "clip.mp4", "text_file": "script.txt", "sync_mode": "bounce"}],
        provider="fal",
    )
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)["jobs"][0]
    assert len(job["provider_job_ids"]) >= 2  # the script is longer than one TTS request may be
    manifest = json.loads((tmp_path / "out" / "talk" / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(p["segment"] for p in manifest["provider_jobs"]) == list(range(len(job["provider_job_ids"])))
    final = final_file(tmp_path / "out" / "talk" / "final.mp4")
    assert final.video_s > 4.0  # longer than one 2 s clip: the segments were joined


def test_a_failing_job_does_not_stop_the_others_and_sets_the_exit_code(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        emu.faults("aimlapi").moderate = True
        config = write_batch(
            tmp_path,
            media,
            [
                {"id": "fine", "video": "clip.mp4", "audio": "voice.wav"},
                {"id": "flagged", "video": "clip.mp4", "audio": "voice.wav", "provider": "aimlapi"},
            ],
            base_urls=emu.base_urls,
        )
        run = lipsync("run", str(config), "--json", env=emu.env())
        emu.faults("aimlapi").clear()
        rerun = lipsync("run", str(config), "--json", env=emu.env())
        assert emu.accepted_creates("aimlapi") == 1  # a failed generation is not re-created on its own
        retried = lipsync("run", str(config), "--json", "--retry-failed", env=emu.env())
        assert emu.accepted_creates("aimlapi") == 2 and emu.accepted_creates("pixverse") == 1
    assert run.returncode == 5, run.stderr
    jobs = {j["id"]: j for j in json.loads(run.stdout)["jobs"]}
    assert jobs["fine"]["stage"] == "done" and (tmp_path / "out" / "fine" / "final.mp4").is_file()
    assert jobs["flagged"]["stage"] == "failed" and jobs["flagged"]["exit_code"] == 5
    assert "aimlapi" in jobs["flagged"]["error"]
    assert rerun.returncode == 5 and retried.returncode == 0, retried.stderr


def test_lost_create_answer_is_uncertain_and_never_recreated_unless_asked(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        emu.faults("pixverse").drop_after_create = 1
        config = write_batch(
            tmp_path, media, [{"id": "lost", "video": "clip.mp4", "audio": "voice.wav"}], base_urls=emu.base_urls
        )
        first = lipsync("run", str(config), "--json", env=emu.env())
        second = lipsync("run", str(config), "--json", env=emu.env())
        assert emu.accepted_creates("pixverse") == 1  # the dropped answer's job exists; nothing re-created it
        status = lipsync("status", str(tmp_path / "out"), "--json")
        third = lipsync("run", str(config), "--json", "--resubmit-uncertain", env=emu.env())
        assert emu.accepted_creates("pixverse") == 2
    for run in (first, second):
        assert run.returncode != 0
        job = json.loads(run.stdout)["jobs"][0]
        assert job["stage"] == "uncertain" and job["uncertain"]
    assert [u["job"] for u in json.loads(status.stdout)["uncertain"]] == ["lost"]
    assert third.returncode == 0, third.stderr
    assert (tmp_path / "out" / "lost" / "final.mp4").is_file()


def test_refused_create_is_retried_on_the_next_run(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        emu.faults("fal").out_of_credits = True
        config = write_batch(
            tmp_path,
            media,
            [{"id": "broke", "video": "clip.mp4", "audio": "voice.wav"}],
            provider="fal",
            base_urls=emu.base_urls,
        )
        first = lipsync("run", str(config), env=emu.env())
        emu.faults("fal").clear()
        second = lipsync("run", str(config), env=emu.env())
        assert emu.accepted_creates("fal") == 1
    assert first.returncode == 4 and "fal" in first.stderr and "broke" in first.stdout
    assert second.returncode == 0, second.stderr


def test_changed_inputs_make_new_jobs_and_unchanged_ones_are_kept(tmp_path, media):
    from media import make_audio

    with Emulator(EmulatorSettings(latency_s=0.3)) as emu:
        config = write_batch(
            tmp_path,
            media,
            [
                {"id": "voiced", "video": "clip.mp4", "audio": "voice.wav"},
                {"id": "spoken", "video": "clip.mp4", "text": "Same words, new voice.", "speaker": "Emily"},
            ],
            base_urls=emu.base_urls,
        )
        first = lipsync("run", str(config), "--json", env=emu.env())
        assert first.returncode == 0, first.stderr
        before = {j["id"]: j for j in json.loads(first.stdout)["jobs"]}
        (tmp_path / "voice.wav").unlink()
        make_audio(tmp_path / "voice.wav", seconds=2.0, rate=24000, seed=5)  # a different take
        config.write_text(config.read_text(encoding="utf-8").replace('"Emily"', '"Oliver"'), encoding="utf-8")
        second = lipsync("run", str(config), "--json", env=emu.env())
        assert second.returncode == 0, second.stderr
        third = lipsync("run", str(config), "--json", env=emu.env())
        assert emu.accepted_creates("pixverse") == 4  # two jobs, each created once per version of its inputs
    after = {j["id"]: j for j in json.loads(second.stdout)["jobs"]}
    for job_id in ("voiced", "spoken"):
        assert not after[job_id]["resumed"]
        assert set(after[job_id]["provider_job_ids"]).isdisjoint(before[job_id]["provider_job_ids"])
    assert all(j["resumed"] for j in json.loads(third.stdout)["jobs"])


def test_provider_concurrency_stays_within_jobs(tmp_path, media):
    with Emulator(EmulatorSettings(latency_s=0.6)) as emu:
        config = write_batch(
            tmp_path,
            media,
            [{"id": f"j{i}", "video": "clip.mp4", "audio": "voice.wav"} for i in range(5)],
            base_urls=emu.base_urls,
        )
        run = lipsync(
            "run", str(config), "--jobs", "2", "--only", "j0,j1", "--only", "j2", "--only", "j3", env=emu.env()
        )
        jobs = emu.jobs("pixverse")
    assert run.returncode == 0, run.stderr
    assert len(jobs) == 4 and not (tmp_path / "out" / "j4").exists()
    spans = [(j.created_at, j.created_at + j.queue_s + j.run_s) for j in jobs]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2  # never more than --jobs at the provider at once


def test_a_real_run_without_keys_stops_before_any_work(tmp_path, media, monkeypatch):
    for var in ("PIXVERSE_API_KEY", "AIMLAPI_KEY", "USEAPI_TOKEN", "FAL_KEY"):
        monkeypatch.delenv(var, raising=False)
    config = write_batch(
        tmp_path,
        media,
        [{"id": "a", "video": "clip.mp4", "audio": "voice.wav"}],
        base_urls={"pixverse": "http://127.0.0.1:9"},
    )
    run = lipsync("run", str(config))
    assert run.returncode == 3 and "PIXVERSE_API_KEY" in run.stderr
    assert not (tmp_path / "out" / ".work").exists()


@pytest.mark.parametrize(
    "edit, key",
    [
        ('provider = "pixverse"', "run.provider"),
        ('audio = "voice.wav"', "job[0].audio"),
    ],
)
def test_bad_config_exits_6_naming_the_key(tmp_path, media, edit, key):
    config = write_batch(tmp_path, media, [{"id": "a", "video": "clip.mp4", "audio": "voice.wav"}])
    broken = {"run.provider": 'provider = "pixvers"', "job[0].audio": 'audio = "missing.wav"'}[key]
    config.write_text(config.read_text(encoding="utf-8").replace(edit, broken), encoding="utf-8")
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 6
    assert key in run.stderr and str(config) in run.stderr
    assert json.loads(run.stdout)["ok"] is False


def test_a_job_with_only_a_video_lip_syncs_to_its_own_sound(tmp_path, media):
    from media import make_video

    make_video(tmp_path / "talking.mp4", seconds=2.0, width=160, height=120, fps=25, audio_file=media.voice)
    config = write_config(tmp_path, [{"id": "own", "video": "talking.mp4"}], provider="fal")
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)["jobs"][0]
    assert job["stage"] == "done" and len(job["provider_job_ids"]) == 1
    manifest = json.loads((tmp_path / "out" / "own" / "manifest.json").read_text(encoding="utf-8"))
    assert [i["role"] for i in manifest["inputs"]] == ["video"] and manifest["config"]["audio"] is None
    final = final_file(tmp_path / "out" / "own" / "final.mp4")
    assert abs(final.video_s - 2.0) < 0.1 and abs(final.audio_s - 2.0) < 0.1
    import opentimelineio as otio  # the editor's cut list: one clip, the whole source

    (clip,) = otio.adapters.read_from_file(str(tmp_path / "out" / "own" / "timeline.otio")).find_clips()
    assert clip.source_range.duration.to_seconds() == pytest.approx(2.0, abs=0.04)
    assert clip.metadata["lipsync"]["provider_job"] == job["provider_job_ids"][0]
