"""The face pre-flight where users meet it: `lipsync prepare` (warning, or --require-face refusing with exit 6)
and a batch run whose config requires a face (refused before any create)."""

from __future__ import annotations

import json
import sqlite3

from face_media import carphone, write_wav16
from media import make_audio, make_video
from runkit import lipsync, write_config

from pipeline.speech import synth_speech


def test_prepare_warns_about_a_faceless_clip_and_records_the_figures(tmp_path):
    clip = make_video(tmp_path / "pattern.mp4", seconds=2)
    voice = make_audio(tmp_path / "voice.wav", seconds=2)
    done = lipsync("prepare", "--video", str(clip), "--audio", str(voice), "--out", str(tmp_path / "out"), "--json")
    assert done.returncode == 0, done.stderr
    (face,) = json.loads(done.stdout)["faces"]
    assert face["segment"] == 0 and face["with_face"] == 0 and face["sampled"] >= 5
    assert "segment 0: a face in 0%" in done.stderr


def test_prepare_require_face_refuses_naming_the_segment_and_the_figure(tmp_path):
    clip = make_video(tmp_path / "pattern.mp4", seconds=2)
    voice = make_audio(tmp_path / "voice.wav", seconds=2)
    out = tmp_path / "out"
    done = lipsync("prepare", "--video", str(clip), "--audio", str(voice), "--out", str(out), "--require-face")
    assert done.returncode == 6, done.stderr
    assert "face required: segment 0: a face in 0% of" in done.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing half-done is left


def test_prepare_require_face_passes_a_talking_face(tmp_path):
    voice = write_wav16(tmp_path / "voice.wav", synth_speech(4.0, sample_rate=48000, seed=2))
    done = lipsync(
        "prepare",
        "--video",
        str(carphone()),
        "--audio",
        str(voice),
        "--out",
        str(tmp_path / "out"),
        "--require-face",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    (face,) = json.loads(done.stdout)["faces"]
    assert face["face_share"] == 1.0 and face["main_size"] > 0.1
    assert "TensorFlow Lite" not in done.stderr and ".cc:" not in done.stderr  # mediapipe's native notes
    assert "absl" not in done.stderr and done.stderr.strip()  # our own lines still come through


def test_a_run_requiring_a_face_refuses_a_faceless_job_before_any_create(tmp_path):
    make_video(tmp_path / "pattern.mp4", seconds=2, width=160, height=120)
    make_audio(tmp_path / "voice.wav", seconds=2)
    config = write_config(
        tmp_path, [{"id": "noface", "video": "pattern.mp4", "audio": "voice.wav", "require_face": True}]
    )
    done = lipsync("run", str(config), "--rehearse", "--json")
    assert done.returncode == 6, done.stderr
    (job,) = json.loads(done.stdout)["jobs"]
    assert job["exit_code"] == 6 and "face required: segment 0" in job["error"]
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM creates").fetchone()[0] == 0
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")  # written for a failed run too
    assert "noface" in report and "face required: segment 0" in report
