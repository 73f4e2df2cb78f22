"""`lipsync verify FILE [--audio MASTER]` on files that did not come from a run: exit 0 / 5 / 6."""

from __future__ import annotations

import json

import pytest
from face_media import audio_following, carphone, with_sound, write_wav16
from runkit import lipsync

from pipeline.speech import synth_speech
from pipeline.stages.mouth import mouth_track
from pipeline.stages.probe import probe_video


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    fps = probe_video(carphone()).video.fps
    opening, _ = mouth_track(carphone(), fps=fps, mesh_every=1)
    in_sync = with_sound(carphone(), audio_following(opening, fps, 0, folder / "sync.wav"), folder / "in sync.mp4")
    late = with_sound(carphone(), audio_following(opening, fps, 6, folder / "late.wav"), folder / "late.mp4")
    return folder, in_sync, late


def test_a_file_whose_lips_follow_its_sound_passes(talking):
    folder, in_sync, _ = talking
    done = lipsync("verify", str(in_sync), "--audio", str(folder / "sync.wav"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and {c["name"] for c in doc["checks"]} >= {"decode", "av_offset", "lip_sync"}
    (score,) = doc["lip_sync"]
    assert score["status"] == "ok" and abs(score["offset_frames"]) <= 1 and score["face"]["face_share"] == 1.0


def test_sound_six_frames_late_fails_with_exit_5(talking):
    _, _, late = talking
    done = lipsync("verify", str(late))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "lips and sound +" in done.stdout and "failed" in done.stdout.splitlines()[-1]


def test_unrelated_sound_fails_on_confidence(tmp_path):
    voice = write_wav16(tmp_path / "other.wav", synth_speech(4.0, sample_rate=48000, seed=9))
    done = lipsync("verify", str(with_sound(carphone(), voice, tmp_path / "dub.mp4")), "--json")
    assert done.returncode == 5
    (check,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "lip_sync"]
    assert not check["ok"] and "confidence" in check["detail"]


def test_a_file_that_is_not_media_is_exit_6(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video", encoding="utf-8")
    done = lipsync("verify", str(bogus))
    assert done.returncode == 6 and "notes.mp4" in done.stderr
