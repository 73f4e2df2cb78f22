"""Footage longer than one provider job: split at pauses in the speech (issue 13), prepared and run.

The talking clip is generated here with known pauses between sentences and one stretch with none, so where a
cut may fall is known without the pipeline's own speech analysis; lengths are read back with pymediainfo and
the sound at every join is compared with the source's by a plain numpy correlation."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from media import make_video, media_info
from runkit import checksums_hold, final_file, lipsync, sha256, write_config

from pipeline.demo import talk_with_pauses
from pipeline.ffmpeg import ffmpeg_exe
from pipeline.speech import synth_speech, write_wav

RATE = 48000
FPS = 25
FRAME = 1 / FPS
LIMIT = 30.0  # every provider's duration limit (limits.toml [default])
SECONDS = 95.0
UNBROKEN = (40.8, 70.0)  # ~29 s of speech with no pause in it
PAUSE_S = 0.8


def make_talk(folder, seconds: float = SECONDS):
    """A 160x120 clip whose sound is speech-like audio with a 0.8 s pause every 5 s, except in UNBROKEN;
    returns the clip and the pauses (start, end) in seconds."""
    samples = synth_speech(seconds, sample_rate=RATE, seed=7)
    starts = [t for t in range(5, int(seconds) - 1, 5) if not UNBROKEN[0] < t < UNBROKEN[1]]
    pauses = tuple((float(t), t + PAUSE_S) for t in starts)
    for a, b in pauses:
        samples[round(a * RATE) : round(b * RATE)] = 0.0
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


def _pause_in(window, pauses) -> bool:
    lo, hi = window
    return any(a <= hi and b >= lo for a, b in pauses)


def test_prepare_splits_a_long_clip_at_pauses_into_segments_within_the_limits(talk, tmp_path):
    video, pauses = talk
    run = lipsync("prepare", "--video", str(video), "--provider", "fal", "--out", str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    segments = doc["segments"]
    assert len(segments) == 4  # 95 s in jobs of at most 30 s, balanced (not 30 + 30 + 30 + 5)
    for seg in segments:
        assert _seconds(seg["video"], "Video") <= LIMIT and _seconds(seg["audio"], "Audio") <= LIMIT
        assert _seconds(seg["video"], "Video") >= 3.0
        assert abs(_seconds(seg["video"], "Video") - _seconds(seg["audio"], "Audio")) < FRAME
        assert seg["cut_reason"]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(SECONDS, abs=FRAME)
    rate = Fraction(doc["cuts"]["rate"])
    for left, right, planned in zip(segments, segments[1:], doc["cuts"]["segments"], strict=False):
        assert left["end"] == right["start"]
        window = [float(f / rate) for f in planned["cut"]["window"]]
        if _pause_in(window, pauses):  # a pause reaches the window: the cut is in one
            assert _inside_a_pause(left["end"], pauses) and "longest pause" in left["cut_reason"], left
        else:  # the unbroken stretch: its quietest moment
            assert UNBROKEN[0] < left["end"] < UNBROKEN[1] and "quietest" in left["cut_reason"], left
    total = sum(_seconds(seg["video"], "Video") for seg in segments)
    assert total == pytest.approx(SECONDS, abs=FRAME)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"seg{i:03d}.{ext}" for i in range(4) for ext in ("mp4", "wav")
    ]


def test_a_split_voice_longer_than_the_picture_is_cut_to_it(talk, tmp_path):
    """The voice's plan gets the cut plan's length as a float: a Fraction there failed on Python 3.11, whose
    Fraction cannot be formatted with :.3f, as soon as the voice was longer than the picture."""
    video, _ = talk
    voice = tmp_path / "voice.wav"
    write_wav(voice, talk_with_pauses(SECONDS + 2, RATE, seed=5)[0], RATE)
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
    assert len(segments) == 4 and segments[-1]["end"] == pytest.approx(SECONDS, abs=FRAME)
    total = sum(_seconds(seg["audio"], "Audio") for seg in segments)
    assert total == pytest.approx(SECONDS, abs=FRAME)


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
    assert planned["creates"] == 4
    # the balanced windows all reach a pause: the plan steps around the ~29 s unbroken stretch instead of into it
    assert all("longest pause" in s["cut_reason"] for s in planned["segments"][:-1])
    seconds = sum(math.ceil(s["seconds"]) for s in planned["segments"])
    assert 95 <= seconds <= 99 and Decimal(planned["estimate"]["total"]) == Decimal("0.04") * seconds
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)["jobs"][0]
    assert len(job["provider_job_ids"]) == 4
    assert job["cost"]["estimated"] == planned["estimate"]["total"]
    final_path = tmp_path / "out" / "long" / "final.mp4"
    final = final_file(final_path)
    assert final.video_s == pytest.approx(SECONDS, abs=FRAME) and final.audio_s == pytest.approx(SECONDS, abs=FRAME)
    assert int(media_info(final_path)["Video"][0].frame_count) == round(SECONDS * FPS)
    manifest = json.loads((tmp_path / "out" / "long" / "manifest.json").read_text(encoding="utf-8"))
    joins = manifest["verification"]["segments"]
    assert len(joins) == 4 and all(abs(s["offset_s"]) <= FRAME for s in joins)
    assert [s["start"] for s in manifest["conform"]["segments"]] == [p["start"] for p in planned["segments"]]
    assert [(s["source_start"], s["cut_reason"]) for s in manifest["segments"]] == [
        (p["start"], p["cut_reason"]) for p in planned["segments"]
    ]
    assert all(s["provider_job"] and abs(s["offset_s"]) <= FRAME for s in manifest["segments"])
    for join in [p["start"] for p in planned["segments"][1:]]:
        assert abs(_offset_at(video, final_path, join)) <= FRAME, join
    clips = _read_back_cut_list(tmp_path / "out" / "long", SECONDS, 4)
    assert [c.source_range.start_time.to_seconds() for c in clips] == pytest.approx(
        [p["start"] for p in planned["segments"]], abs=1e-6
    )


def _mono(path, rate: int = 8000) -> np.ndarray:
    argv = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(rate)]
    raw = subprocess.run([*argv, "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").astype(float)


def _offset_at(source, final, t: float, *, rate: int = 8000, half: float = 1.5, max_lag: float = 0.2) -> float:
    """Seconds by which the final's sound around `t` is later than the source's (normalized cross-correlation
    of plain decodes, best lag within ±max_lag)."""
    ref = _mono(source, rate)[round((t - half) * rate) : round((t + half) * rate)]
    other = _mono(final, rate)
    lags = range(-round(max_lag * rate), round(max_lag * rate) + 1)

    def score(lag: int) -> float:
        seg = other[round((t - half) * rate) + lag :][: len(ref)]
        return float(np.dot(ref, seg) / (np.linalg.norm(ref) * np.linalg.norm(seg) or 1.0))

    best = max(lags, key=score)
    assert score(best) > 0.5, f"the source's sound at {t} s is not found in the final"
    return best / rate


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
