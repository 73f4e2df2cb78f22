"""Long media beyond a talking clip (issue 13, items 2, 3 and 7): a long voice over a short clip, a 1,500-character
script over a 60 s clip, a 4K HEVC minute. Media made here with ffmpeg; results read back with pymediainfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from media import make_video, media_info
from runkit import final_file, lipsync, write_config

from pipeline.demo import talk_with_pauses
from pipeline.ffmpeg import ffmpeg_exe, run_ffmpeg
from pipeline.limits import load_limits
from pipeline.speech import write_wav

FPS = 25
FRAME = 1 / FPS
LIMIT = 30.0
FAL = load_limits("fal")


def _seconds(path: Path, kind: str = "Video") -> float:
    return float(media_info(path)[kind][0].duration) / 1000


def test_a_long_voice_over_a_short_clip_is_split_and_the_bounce_carries_on_across_jobs(tmp_path):
    samples, _ = talk_with_pauses(40.0, 48000)
    write_wav(tmp_path / "voice.wav", samples, 48000)
    make_video(tmp_path / "clip.mp4", seconds=6.0, width=160, height=120, fps=FPS, audio=False)
    config = write_config(
        tmp_path, [{"id": "long-voice", "video": "clip.mp4", "audio": "voice.wav", "sync_mode": "bounce"}]
    )
    plan = lipsync("plan", str(config), "--json")
    assert plan.returncode == 0, plan.stderr
    parts = json.loads(plan.stdout)["jobs"][0]["segments"]
    assert len(parts) == 2 and all("pause" in p["cut_reason"] for p in parts[:-1])
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["jobs"][0]["provider_job_ids"]) == 2
    final = final_file(tmp_path / "out" / "long-voice" / "final.mp4")
    assert final.video_s == pytest.approx(40.0, abs=FRAME) and final.audio_s == pytest.approx(40.0, abs=FRAME)
    manifest = json.loads((tmp_path / "out" / "long-voice" / "manifest.json").read_text(encoding="utf-8"))
    videos = manifest["conform"]["video"]["segments"]
    assert [v["output"]["video"]["duration"] <= LIMIT for v in videos] == [True, True]
    # the second job's picture picks the bounce up where the first stopped, not at the clip's first frame
    first_leg = videos[1]["plan"]["legs"][0]
    assert first_leg["start"] > 0 or first_leg["reverse"]


def test_a_1500_character_script_over_a_60_s_clip(tmp_path):
    sentences = [
        "Good evening and welcome to the long form edition of our studio report.",
        "Tonight we walk through every step of the workshop, from the first sketch to the final coat of paint.",
        "Each step takes a little patience, and each mistake teaches something new.",
        "Stay with us until the end, where we answer the questions you sent in this week.",
    ]
    script = ""
    while len(script) < 1500:
        script += sentences[len(script) % len(sentences)] + " "
    script = script[: script.rindex(".", 0, 1500) + 1]
    assert 1400 <= len(script) <= 1500
    (tmp_path / "script.txt").write_text(script, encoding="utf-8")
    make_video(tmp_path / "clip.mp4", seconds=60.0, width=160, height=120, fps=FPS, audio=False)
    config = write_config(
        tmp_path,
        [{"id": "script", "video": "clip.mp4", "text_file": "script.txt", "sync_mode": "bounce"}],
        provider="fal",
    )
    plan = lipsync("plan", str(config), "--json")
    assert plan.returncode == 0, plan.stderr
    job = json.loads(plan.stdout)["jobs"][0]
    parts = job["segments"]
    assert len(parts) >= 1500 // FAL.tts_max_chars
    assert all(0 < p["tts_characters"] <= FAL.tts_max_chars for p in parts)
    assert all("sentence end" in p["cut_reason"] for p in parts[:-1]) and "end of the script" in parts[-1]["cut_reason"]
    assert parts[0]["start"] == 0 and parts[-1]["end"] == pytest.approx(60.0, abs=FRAME)
    run = lipsync("run", str(config), "--rehearse", "--json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["jobs"][0]["provider_job_ids"]) == len(parts)
    job_dir = tmp_path / "out" / "script"
    manifest = json.loads((job_dir / "manifest.json").read_text(encoding="utf-8"))
    returned = [s["returned_s"] for s in manifest["segments"]]
    assert len(returned) == len(parts) and all(r is not None for r in returned)
    final = final_file(job_dir / "final.mp4")
    assert final.video_s == pytest.approx(sum(returned), abs=FRAME * len(parts))
    assert "".join(manifest["conform"]["text_chunks"]).replace(" ", "") == script.replace(" ", "")


def _uhd_hevc_minute(folder: Path) -> Path:
    """A 3840x2160 HEVC minute at 5 fps with a talking voice: one second encoded, looped by stream copy (a 4K
    HEVC encode of a whole minute takes minutes on a shared 2-core machine)."""
    second = folder / "uhd-1s.mp4"
    run_ffmpeg(
        [
            *(ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=s=3840x2160:r=5:d=1"),
            *("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"),
            *("-pix_fmt", "yuv420p", "-tag:v", "hvc1", str(second)),
        ],
        what="making one second of 4K HEVC",
    )
    samples, _ = talk_with_pauses(60.0, 48000)
    write_wav(folder / "voice.wav", samples, 48000)
    uhd = folder / "uhd.mp4"
    run_ffmpeg(
        [
            *(ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"),
            *("-stream_loop", "59", "-i", str(second), "-i", str(folder / "voice.wav")),
            *("-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", "60", str(uhd)),
        ],
        what="looping it to a minute",
    )
    return uhd


@pytest.mark.slow
def test_a_4k_hevc_minute_is_split_into_provider_ready_segments(tmp_path):
    uhd = _uhd_hevc_minute(tmp_path)
    video = media_info(uhd)["Video"][0]
    assert (video.format, int(video.width), int(video.height)) == ("HEVC", 3840, 2160)
    assert _seconds(uhd) == pytest.approx(60.0, abs=0.2)
    run = lipsync("prepare", "--video", str(uhd), "--provider", "fal", "--out", str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    segments = json.loads(run.stdout)["segments"]
    # two full 30 s jobs would pin the cut to the 30 s mark: one more lets both cuts move into pauses
    assert len(segments) == 3 and all("pause" in s["cut_reason"] for s in segments[:-1])
    for seg in segments:
        out = media_info(seg["video"])["Video"][0]
        assert out.format == "AVC" and max(int(out.width), int(out.height)) <= FAL.video_max_side
        assert Path(seg["video"]).stat().st_size <= FAL.video_max_bytes
        assert _seconds(seg["video"]) <= LIMIT
        assert abs(_seconds(seg["video"]) - _seconds(seg["audio"], "Audio")) < 1 / 5
    assert sum(_seconds(s["video"]) for s in segments) == pytest.approx(60.0, abs=1 / 5)
