"""prepare() against the files real users bring: broadcast, post-production and phone formats, odd sizes and
timings, several streams, damage and misleading names. Each case either yields a pair that passes every
limit when probed independently (pymediainfo and an ffmpeg decode, never pipeline.stages.probe), or fails
with a one-line InputError naming the file and leaves no media file behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from media import (
    assert_provider_ready,
    decode_stats,
    flip_bits,
    make_animated_gif,
    make_audio,
    make_copy_trimmed,
    make_dnxhr_mxf,
    make_fragmented_mp4,
    make_image,
    make_interlaced_mpeg2_ts,
    make_mjpeg_avi,
    make_mkv_with_subtitles_and_font,
    make_odd_size_phone,
    make_offset_streams,
    make_prores_tmcd_mov,
    make_two_video_two_audio,
    make_video,
    media_info,
)

from pipeline.errors import InputError
from pipeline.limits import load_limits
from pipeline.prepare import PrepareRequest, prepare

LIMITS = load_limits()


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]
    name: str  # the file name (the suffix may lie about the content)
    request: dict = field(default_factory=dict)  # PrepareRequest fields beyond the video
    voice: float | None = None  # seconds of a separate voice track (None: the file's own sound)
    error: str | None = None  # words of the expected InputError (None: must conform)


def _mkv_named_mp4(path: Path) -> Path:
    return make_video(path, seconds=1, width=160, height=120, f="matroska")


def _webm_named_mp4(path: Path) -> Path:
    return make_video(path, seconds=1, width=160, height=120, vcodec="libvpx-vp9", acodec="libopus", f="webm")


def _corrupt(path: Path) -> Path:
    clean = make_video(path.with_name("clean.mp4"), seconds=2, width=160, height=120, g=10)
    return flip_bits(clean, path)


CASES = {
    "mpeg2 interlaced ts ac3 5.1": Case(make_interlaced_mpeg2_ts, "broadcast.ts"),
    "h264 mbaff m2ts": Case(
        lambda p: make_video(p, seconds=1, width=320, height=240, interlaced=True, acodec="ac3", audio_channels=6),
        "camcorder.m2ts",
    ),
    "prores hq 24-bit tmcd mov": Case(make_prores_tmcd_mov, "grade.mov"),
    "dnxhr mxf op1a": Case(make_dnxhr_mxf, "avid export.mxf"),
    "vp9 opus webm": Case(lambda p: make_video(p, seconds=1, width=160, height=120), "browser.webm"),
    "odd vfr phone rot90": Case(lambda p: make_odd_size_phone(p, rotate=90), "IMG_0001.MOV"),
    "odd vfr phone rot270 mp4": Case(lambda p: make_odd_size_phone(p, rotate=270), "PXL_1.mp4"),
    "rotation 180 only": Case(lambda p: make_video(p, seconds=1, width=160, height=120, rotate=180), "upside down.mp4"),
    "anamorphic pal": Case(lambda p: make_video(p, seconds=0.6, width=720, height=576, sar="64:45"), "pal.mp4"),
    "h264 4:2:2 10-bit": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, pix_fmt="yuv422p10le"), "422.mov"
    ),
    "h264 4:4:4": Case(lambda p: make_video(p, seconds=1, width=160, height=120, pix_fmt="yuv444p"), "444.mp4"),
    "h264 10-bit": Case(lambda p: make_video(p, seconds=1, width=160, height=120, pix_fmt="yuv420p10le"), "10bit.mp4"),
    "h264 main profile": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, **{"profile:v": "main"}), "main profile.mp4"
    ),
    "8k": Case(lambda p: make_video(p, seconds=0.04, width=7680, height=4320), "8k.mov", voice=0.3),
    "mpeg-1 program stream": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, vcodec="mpeg1video", acodec="mp2"), "vcd.mpg"
    ),
    "vp9 alpha webm": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, pix_fmt="yuva420p"), "overlay.webm"
    ),
    "prores 4444 alpha": Case(
        lambda p: make_video(
            p,
            seconds=1,
            width=160,
            height=120,
            vcodec="prores_ks",
            pix_fmt="yuva444p10le",
            acodec="pcm_s16le",
            **{"profile:v": "4"},
        ),
        "key.mov",
    ),
    "mjpeg full range avi": Case(make_mjpeg_avi, "webcam.avi"),
    "hevc hlg": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, vcodec="libx265", pix_fmt="yuv420p10le", hdr="hlg"),
        "hlg.mov",
    ),
    "hevc pq": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, vcodec="libx265", pix_fmt="yuv420p10le", hdr="pq"),
        "pq.mp4",
    ),
    # containers without a seek index: an input seek lands away from the asked time, or reads nothing
    "flv as ffmpeg writes it": Case(lambda p: make_video(p, seconds=2, width=160, height=120), "stream.flv"),
    "flv cut from 0.5 s": Case(
        lambda p: make_video(p, seconds=2, width=160, height=120), "stream cut.flv", request={"start": 0.5}
    ),
    "short ts cut from 0.5 s": Case(
        lambda p: make_video(p, seconds=2, width=160, height=120), "recording.ts", request={"start": 0.5}
    ),
    "mpeg-2 program stream cut": Case(
        lambda p: make_video(p, seconds=2, width=160, height=120, vcodec="mpeg2video", acodec="mp2"),
        "dvd.mpg",
        request={"start": 0.5, "end": 1.5},
    ),
    "h264 avi cut from 0.5 s": Case(
        lambda p: make_video(p, seconds=2, width=160, height=120), "capture.avi", request={"start": 0.5}
    ),
    "moov at the end": Case(lambda p: make_video(p, seconds=1, width=160, height=120), "moov last.mp4"),
    "fragmented mp4": Case(make_fragmented_mp4, "fragmented.mp4"),
    "audio before video": Case(make_offset_streams, "edit list.mp4"),
    "trimmed by stream copy": Case(make_copy_trimmed, "gallery trim.mp4"),
    "mkv subtitles font": Case(make_mkv_with_subtitles_and_font, "subbed.mkv"),
    "thumbnail + 2 video, 2 audio": Case(make_two_video_two_audio, "two tracks.mp4"),
    "video only, voice given": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, audio=False), "mute.mp4", voice=1.5
    ),
    "video only, own sound": Case(
        lambda p: make_video(p, seconds=1, width=160, height=120, audio=False), "mute.mp4", error="has no sound"
    ),
    "audio longer than video": Case(
        lambda p: make_offset_streams(p, seconds=1, video_delay=0.0), "long tail.mp4", request={"sync_mode": "pad"}
    ),
    "one frame": Case(lambda p: make_video(p, seconds=0.04, width=160, height=120), "one frame.mp4", voice=1.0),
    "sub-second loop to 25 s": Case(
        lambda p: make_video(p, seconds=0.3, width=64, height=48),
        "blink.mp4",
        voice=25.0,
        request={"sync_mode": "loop"},
    ),
    "one frame bounced to 25 s": Case(
        lambda p: make_video(p, seconds=0.04, width=64, height=48), "still.mp4", voice=25.0
    ),
    "window past the end": Case(
        lambda p: make_video(p, seconds=33, width=64, height=48, fps=10),
        "long.mp4",
        request={"start": 31.0, "end": 40.0},
    ),
    "start past the end": Case(
        lambda p: make_video(p, seconds=1, width=64, height=48),
        "short.mp4",
        request={"start": 5.0},
        error="nothing to use",
    ),
    "extreme aspect 5000x200": Case(lambda p: make_video(p, seconds=0.2, width=5000, height=200), "banner.mp4"),
    "extreme aspect 4000x10": Case(lambda p: make_video(p, seconds=0.2, width=4000, height=10), "sliver.mp4"),
    "tiny 16x16": Case(lambda p: make_video(p, seconds=0.5, width=16, height=16), "icon.mp4"),
    "animated gif": Case(make_animated_gif, "reaction.gif", voice=1.0, error="GIF"),
    "still image": Case(lambda p: make_image(p, width=64, height=64), "portrait.png", voice=1.0, error="still image"),
    "bit flips mid-file": Case(_corrupt, "bad sector.mp4"),
    "mkv named .mp4": Case(_mkv_named_mp4, "lying.mp4"),
    "webm named .mp4": Case(_webm_named_mp4, "lying webm.mp4"),
    "name: spaces quotes emoji": Case(
        lambda p: make_video(p, seconds=0.5, width=64, height=48), 'it\'s a "take" 🎬 [1].mov'
    ),
    "name: leading dash and colon": Case(
        lambda p: make_video(p, seconds=0.5, width=64, height=48, rotate=90), "-take:2.mp4"
    ),
}


def media_files(out: Path) -> list[Path]:
    return (
        sorted(p for p in out.iterdir() if p.suffix in (".mp4", ".wav", ".mp3") or ".part" in p.name)
        if out.exists()
        else []
    )


def assert_pair_ready(video: Path, audio: Path, seconds: float | None = None) -> None:
    """Both files inside every limit, of one length (within a frame) and of `seconds` if given, probed
    independently."""
    assert_provider_ready(video, LIMITS)
    general = media_info(audio)["General"][0]
    assert general.format in ("Wave", "MPEG Audio") and audio.stat().st_size <= LIMITS.audio_max_bytes
    v, a = decode_stats(video), decode_stats(audio)
    fps = float(media_info(video)["Video"][0].frame_rate)
    assert v.video_frames >= 1 and 0 < v.video_seconds <= LIMITS.video_max_seconds + 1e-3
    assert abs(v.video_seconds - a.audio_seconds) <= 1 / fps + 1e-3, (v, a)
    for track in (media_info(video)["Video"][0], media_info(audio)["Audio"][0]):  # what the headers say, too
        assert abs(float(track.duration) / 1000 - v.video_seconds) <= 1 / fps + 2e-3, track.track_type
    if seconds is not None:
        assert abs(v.video_seconds - seconds) <= 1 / fps + 1e-3, (v, seconds)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_input_conforms_or_fails_clearly(tmp_path, case: Case):
    src = case.build(tmp_path / case.name)
    voice = make_audio(tmp_path / "voice.wav", seconds=case.voice) if case.voice else None
    out = tmp_path / "out"
    request = PrepareRequest(video=src, audio=voice, **case.request)
    if case.error:
        with pytest.raises(InputError) as err:
            prepare(request, out)
        message = str(err.value)
        assert err.value.exit_code == 6 and "\n" not in message and len(message) < 300
        assert str(src) in message and case.error in message
        assert media_files(out) == []
        return
    result = prepare(request, out)
    (segment,) = result.segments
    assert_pair_ready(segment.video, segment.audio, result.sync.duration)
    assert media_files(out) == sorted([segment.video, segment.audio])


@pytest.mark.parametrize("case", ["mpeg2 interlaced ts ac3 5.1", "name: leading dash and colon", "animated gif"])
def test_cli_json_on_hostile_input(tmp_path, case):
    """As a user runs it: one JSON document on stdout, a conformed pair or exit 6 with a one-line error."""
    spec = CASES[case]
    src = spec.build(tmp_path / spec.name)
    args = ["prepare", "--video", src, "--out", tmp_path / "out", "--json"]
    if spec.voice:
        args += ["--audio", make_audio(tmp_path / "voice.wav", seconds=spec.voice)]
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_TOKEN"))}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lipsync"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    doc = json.loads(done.stdout)
    assert "Traceback" not in done.stderr
    if spec.error:
        assert done.returncode == 6 and doc["ok"] is False and spec.error in json.dumps(doc)
        assert media_files(tmp_path / "out") == []
        return
    assert done.returncode == 0, done.stderr
    (segment,) = doc["segments"]
    assert_pair_ready(Path(segment["video"]), Path(segment["audio"]))
