"""Footage longer than one provider job: split at pauses in the speech (issue 13), prepared and run.

The talking clip is generated here with known pauses between sentences, so where a cut may fall is known
without the pipeline's own speech analysis; lengths are read back with pymediainfo."""

from __future__ import annotations

import itertools
import json
import math
from decimal import Decimal

import pytest
from media import make_video, media_info
from runkit import checksums_hold, final_file, lipsync, sha256, write_config

from pipeline.demo import talk_with_pauses
from pipeline.speech import write_wav

RATE = 48000
FPS = 25
FRAME = 1 / FPS
LIMIT = 30.0  # every provider's duration limit (limits.toml [default])


def make_talk(folder, seconds: float = 70.0):
    """A 160x120 clip whose sound is sentences of speech-like audio with 0.8 s pauses between (the demo's
    generator); returns the clip and the pauses (start, end) in seconds."""
    samples, pauses = talk_with_pauses(seconds, RATE)
    voice = folder / "talk.wav"
    write_wav(voice, samples, RATE)
    video = make_video(folder / "talk.mp4", seconds=seconds, width=160, height=120, fps=FPS, audio_file=voice)
    return video, pauses


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    return make_talk(tmp_path_factory.mktemp("talk"))


def _seconds(path, kind: str) -> float:
    return float(media_info(path)[kind][0].duration) / 1000


def _inside_a_pause(t: float, pauses) -> bool:
    return any(a - FRAME <= t <= b + FRAME for a, b in pauses)


def test_prepare_splits_a_long_clip_at_pauses_into_segments_within_the_limits(talk, tmp_path):
    video, pauses = talk
    run = lipsync("prepare", "--video", str(video), "--provider", "fal", "--out", str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    segments = json.loads(run.stdout)["segments"]
    assert len(segments) == 3  # 70 s in jobs of at most 30 s
    for seg in segments:
        assert _seconds(seg["video"], "Video") <= LIMIT and _seconds(seg["audio"], "Audio") <= LIMIT
        assert abs(_seconds(seg["video"], "Video") - _seconds(seg["audio"], "Audio")) < FRAME
        assert seg["cut_reason"]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(70.0, abs=FRAME)
    for left, right in itertools.pairwise(segments):
        assert left["end"] == right["start"] and _inside_a_pause(left["end"], pauses), left
        assert "pause" in left["cut_reason"]
    total = sum(_seconds(seg["video"], "Video") for seg in segments)
    assert total == pytest.approx(70.0, abs=FRAME)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"seg{i:03d}.{ext}" for i in range(3) for ext in ("mp4", "wav")
    ]


def test_a_split_voice_longer_than_the_picture_is_cut_to_it(talk, tmp_path):
    """The voice's plan gets the cut plan's length as a float: a Fraction there failed on Python 3.11, whose
    Fraction cannot be formatted with :.3f, as soon as the voice was longer than the picture."""
    video, _ = talk
    voice = tmp_path / "voice.wav"
    write_wav(voice, talk_with_pauses(72.0, RATE, seed=5)[0], RATE)
    run = lipsync(
        "prepare",
        "--video",
        str(video),
        "--audio",
        str(voice),
        "--sync-mode",
        "cut",
        "--provider",
        "fal",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    segments = json.loads(run.stdout)["segments"]
    assert len(segments) == 3 and segments[-1]["end"] == pytest.approx(70.0, abs=FRAME)
    total = sum(_seconds(seg["audio"], "Audio") for seg in segments)
    assert total == pytest.approx(70.0, abs=FRAME)


def test_trim_keeps_one_job_and_warns(talk, tmp_path):
    video, _ = talk
    run = lipsync(
        "prepare",
        "--video",
        str(video),
        "--provider",
        "fal",
        "--long-media",
        "trim",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert len(doc["segments"]) == 1 and _seconds(doc["segments"][0]["video"], "Video") <= LIMIT
    assert any("dropped" in w for w in doc["warnings"])


def test_a_long_clip_is_delivered_full_length_in_sync_at_every_join(talk, tmp_path):
    video, _ = talk
    (tmp_path / "talk.mp4").symlink_to(video)
    config = write_config(tmp_path, [{"id": "long", "video": "talk.mp4"}], provider="fal")
    plan = lipsync("plan", str(config), "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)["jobs"][0]
    assert planned["creates"] == 3 and all("pause" in s["cut_reason"] for s in planned["segments"][:-1])
    seconds = sum(math.ceil(s["seconds"]) for s in planned["segments"])
    assert 70 <= seconds <= 73 and Decimal(planned["estimate"]["total"]) == Decimal("0.04") * seconds
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)["jobs"][0]
    assert len(job["provider_job_ids"]) == 3
    final = final_file(tmp_path / "out" / "long" / "final.mp4")
    assert final.video_s == pytest.approx(70.0, abs=FRAME) and final.audio_s == pytest.approx(70.0, abs=FRAME)
    manifest = json.loads((tmp_path / "out" / "long" / "manifest.json").read_text(encoding="utf-8"))
    joins = manifest["verification"]["segments"]
    assert len(joins) == 3 and all(abs(s["offset_s"]) <= FRAME for s in joins)
    assert [s["start"] for s in manifest["conform"]["segments"]] == [p["start"] for p in planned["segments"]]
    clips = _read_back_cut_list(tmp_path / "out" / "long", 70.0, 3)
    assert [c.source_range.start_time.to_seconds() for c in clips] == pytest.approx(
        [p["start"] for p in planned["segments"]], abs=1e-6
    )


def _read_back_cut_list(job_dir, source_seconds: float, segments: int):
    """timeline.otio read with OpenTimelineIO: one clip per segment, no gap or overlap, the source's length;
    both files delivered with their checksums."""
    import opentimelineio as otio

    timeline = otio.adapters.read_from_file(str(job_dir / "timeline.otio"))
    (track,) = timeline.video_tracks()
    clips = list(track.find_clips())
    assert len(clips) == segments and all(isinstance(item, otio.schema.Clip) for item in track)
    ranges = [track.range_of_child_at_index(i) for i in range(len(track))]
    assert ranges[0].start_time.value == 0
    for before, after in itertools.pairwise(ranges):
        assert before.end_time_exclusive() == after.start_time  # no gap, no overlap
    assert track.duration().to_seconds() == pytest.approx(source_seconds, abs=FRAME)
    assert all(clip.media_reference.target_url.endswith(".mp4") for clip in clips)
    assert all(clip.metadata["lipsync"]["provider_job"] for clip in clips)
    manifest = json.loads((job_dir / "manifest.json").read_text(encoding="utf-8"))
    delivered = {d["name"]: d["sha256"] for d in manifest["delivered"]}
    assert {"timeline.otio", "cuts.edl"} <= set(delivered)
    assert delivered["cuts.edl"] == sha256(job_dir / "cuts.edl")
    events = [line for line in (job_dir / "cuts.edl").read_text().splitlines() if line[:3].isdigit()]
    assert len(events) == segments  # one CMX3600 event per clip
    names = checksums_hold(job_dir.parent)
    assert f"{job_dir.name}/timeline.otio" in names and f"{job_dir.name}/cuts.edl" in names
    return clips
