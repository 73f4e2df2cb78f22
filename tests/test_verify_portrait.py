"""verify_portrait on clips made at test time with ffmpeg (a still image held for the clip, a spoken line or
silence as its sound): each check passes on a good clip and fails on the one thing it guards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from image_media import marked_portrait
from PIL import Image

from pipeline.errors import VerificationError
from pipeline.ffmpeg import ffmpeg_exe
from pipeline.speech import speak_to_wav, synth_speech
from pipeline.stages.verify import (
    MIN_SPEECH_MODULATION,
    PortraitExpectations,
    loudness_modulation,
    speech_seconds,
    verify_portrait,
)


def still_clip(image: Path, dst: Path, size: tuple[int, int], seconds: float, sound: str | Path | None) -> Path:
    """`image` held for `seconds` at `size`; sound: a WAV, "silence", or None (no audio stream)."""
    argv = [ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-framerate", "24", "-t", str(seconds), "-i", str(image)]
    if sound == "silence":
        argv += ["-f", "lavfi", "-t", str(seconds), "-i", "anullsrc=r=24000:cl=mono"]
    elif sound is not None:
        argv += ["-i", str(sound)]
    argv += [
        "-vf",
        f"scale={size[0]}:{size[1]},setsar=1,format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-t",
        str(seconds),
    ]
    if sound is not None:
        argv += ["-af", "apad", "-c:a", "aac"]
    subprocess.run([*argv, str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("portrait-verify")
    image = d / "presenter.jpg"
    marked_portrait(480, 640).save(image, "JPEG", quality=95)
    other = d / "other.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (640, 480), dtype=np.uint8)).save(other)
    speech = speak_to_wav("Hello and welcome. Here are the headlines.", d / "line.wav")
    return {"dir": d, "image": image, "other": other, "speech": speech}


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def test_a_good_portrait_passes_and_records_its_figures(parts):
    clip = still_clip(parts["image"], parts["dir"] / "good.mp4", (540, 720), 5, parts["speech"])
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert report.ok, report.failed()
    assert set(by_name(report)) >= {
        "video_stream",
        "audio_stream",
        "decode",
        "short_side",
        "duration",
        "speech",
        "first_frame",
    }
    assert report.figures.first_frame_ssim > 0.9 and report.figures.speech_s > 1.0
    assert report.figures.speech_modulation >= MIN_SPEECH_MODULATION
    assert report.to_dict()["figures"]["first_frame_ssim"] == report.figures.first_frame_ssim
    report.raise_if_failed()


def test_a_short_side_off_by_more_than_2_px_fails(parts):
    clip = still_clip(parts["image"], parts["dir"] / "small.mp4", (536, 714), 5, parts["speech"])
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["short_side"] and by_name(report)["short_side"].measured == 536
    with pytest.raises(VerificationError, match="short_side"):
        report.raise_if_failed()


def test_within_2_px_passes(parts):
    clip = still_clip(parts["image"], parts["dir"] / "near.mp4", (538, 718), 5, parts["speech"])
    assert verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5)).ok


def test_a_clip_of_the_wrong_length_fails(parts):
    clip = still_clip(parts["image"], parts["dir"] / "long.mp4", (540, 720), 5.8, parts["speech"])
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["duration"]


def test_silence_where_a_line_was_asked_for_fails(parts):
    clip = still_clip(parts["image"], parts["dir"] / "mute.mp4", (540, 720), 5, "silence")
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["speech"] and report.figures.speech_s < 0.5


@pytest.mark.parametrize("sound", ["sine=frequency=220:sample_rate=24000", "anoisesrc=color=pink:amplitude=0.3"])
def test_a_tone_or_a_hiss_where_a_line_was_asked_for_fails(parts, sound):
    tone = parts["dir"] / f"{sound.split('=')[0]}.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-t", "5", "-i", sound, str(tone)], check=True)
    clip = still_clip(parts["image"], parts["dir"] / f"{tone.stem}.mp4", (540, 720), 5, tone)
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["speech"]
    assert report.figures.speech_s > 4 and report.figures.speech_modulation < MIN_SPEECH_MODULATION


def test_no_audio_stream_fails_unless_no_script_was_sent(parts):
    clip = still_clip(parts["image"], parts["dir"] / "noaudio.mp4", (540, 720), 5, None)
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["audio_stream"]
    assert verify_portrait(clip, PortraitExpectations(parts["image"], 540, 5, speech=False)).ok


def test_a_first_frame_of_another_picture_fails(parts):
    clip = still_clip(parts["other"], parts["dir"] / "other.mp4", (540, 720), 5, parts["speech"])
    report = verify_portrait(clip, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.failed()] == ["first_frame"] and report.figures.first_frame_ssim < 0.3


def test_an_unreadable_file_is_one_failed_check(parts):
    junk = parts["dir"] / "junk.mp4"
    junk.write_bytes(b"not a video")
    report = verify_portrait(junk, PortraitExpectations(parts["image"], short_side=540, duration_s=5))
    assert [c.name for c in report.checks] == ["readable"] and not report.ok


@settings(max_examples=40, deadline=None)
@given(lead=st.floats(0.0, 2.0), talk=st.floats(0.5, 4.0), tail=st.floats(0.0, 2.0), noise_db=st.floats(-90, -65))
def test_speech_seconds_counts_the_spoken_stretch(lead, talk, tail, noise_db):
    rate = 16000
    rng = np.random.default_rng(0)
    voice = (
        np.concatenate(
            [
                np.zeros(int(lead * rate)),
                np.sin(np.linspace(0, 2 * np.pi * 220 * talk, int(talk * rate))),
                np.zeros(int(tail * rate)),
            ]
        )
        * 0.3
    )
    voice += rng.normal(0, 10 ** (noise_db / 20), len(voice))
    assert abs(speech_seconds(voice, rate) - talk) <= 0.05


def test_speech_seconds_of_silence_and_of_synthetic_speech():
    assert speech_seconds(np.zeros(16000 * 3), 16000) == 0.0
    spoken = speech_seconds(synth_speech(3.0, sample_rate=16000).astype(np.float64), 16000)
    assert 1.5 <= spoken <= 3.0


@settings(max_examples=30, deadline=None)
@given(
    seconds=st.floats(1.0, 6.0),
    freq=st.floats(80, 4000),
    lead=st.floats(0.0, 1.0),
    amplitude=st.floats(0.01, 0.9),
    seed=st.integers(0, 50),
)
def test_steady_sound_is_not_speech_and_synthetic_speech_is(seconds, freq, lead, amplitude, seed):
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    tone = np.concatenate([np.zeros(int(lead * rate)), amplitude * np.sin(2 * np.pi * freq * t)])
    hiss = amplitude * np.random.default_rng(seed).normal(0, 0.3, len(t))
    assert loudness_modulation(tone, rate) < MIN_SPEECH_MODULATION
    assert loudness_modulation(hiss, rate) < MIN_SPEECH_MODULATION
    speech = synth_speech(seconds, sample_rate=rate, seed=seed).astype(np.float64)
    assert loudness_modulation(speech, rate) > MIN_SPEECH_MODULATION
    assert loudness_modulation(np.zeros(rate), rate) == 0.0
