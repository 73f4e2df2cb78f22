"""Test media whose sound does not start where its picture does, and an independent way to find the voice in them.

make_late_sound_mp4(path, voice, delay_s)   picture from 0, the voice (AAC, stream-copied) from `delay_s`
make_flv(path, voice, seconds)              H.264 + AAC in FLV, as ffmpeg writes it (no seek index)
plain_decode(path)                          the first audio stream as mono float at 48 kHz, decoded with no
                                            seek and no filter: sample 0 is the stream's first sample
voice_offset(voice, other)                  where `voice` sits in `other` (seconds, > 0: later), and how well
                                            it matches (normalized correlation)
write_stereo(path, left, right)             a stereo WAV of two float channels (a dead or inverted side)
channel_decode(path, channel)               one channel, decoded with no downmix
channel_loudness(path, channel)             one channel's loudness as dual mono (ebur128, not loudnorm)
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np
from sync_media import read_wav

from pipeline.ffmpeg import compile_stream, ffmpeg_exe, run_ffmpeg
from pipeline.stages.avsync import measure_offset_samples

RATE = 48000


def _picture(seconds: float):
    return ffmpeg.input("testsrc2=size=160x120:rate=25", f="lavfi", t=seconds).video


def _run(out, what: str) -> None:
    run_ffmpeg(compile_stream(out.global_args("-hide_banner", "-loglevel", "error")), what=what)


def make_late_sound_mp4(path: Path, voice: Path, delay_s: float, seconds: float = 3.0) -> Path:
    """An mp4 whose audio stream starts `delay_s` after its first frame (the AAC is stream-copied, so the
    delay is only in the timestamps: an empty edit in the mp4)."""
    with tempfile.TemporaryDirectory() as scratch:
        aac = Path(scratch) / "voice.m4a"
        _run(ffmpeg.input(str(voice)).audio.output(str(aac), **{"c:a": "aac"}), f"encoding {voice.name}")
        sound = ffmpeg.input(str(aac), itsoffset=f"{delay_s}").audio
        _run(
            ffmpeg.output(
                _picture(seconds), sound, str(path), t=seconds, preset="veryfast", **{"c:v": "libx264", "c:a": "copy"}
            ),
            f"making {path.name}",
        )
    return path


def make_flv(path: Path, voice: Path, seconds: float) -> Path:
    sound = ffmpeg.input(str(voice)).audio
    _run(
        ffmpeg.output(
            _picture(seconds), sound, str(path), t=seconds, preset="veryfast", **{"c:v": "libx264", "c:a": "aac"}
        ),
        f"making {path.name}",
    )
    return path


def plain_decode(path: Path) -> np.ndarray:
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-ac",
        "1",
        "-ar",
        str(RATE),
        "-f",
        "f32le",
        "-",
    ]
    return np.frombuffer(subprocess.run(argv, capture_output=True, check=True).stdout, dtype="<f4").astype(float)


def voice_offset(voice: Path | np.ndarray, other: Path | np.ndarray, *, max_lag_s: float = 1.0) -> tuple[float, float]:
    """(seconds, correlation): where `voice` (a WAV, or samples at 48 kHz) is found in `other`, within ±max_lag_s.

    The compared stretch of `other` starts max_lag_s in: keep the lag range small against the voice's length."""
    ref = voice if isinstance(voice, np.ndarray) else read_wav(voice)[0]
    oth = other if isinstance(other, np.ndarray) else read_wav(other)[0]
    n = max(len(ref), len(oth))  # silence after the shorter: the search needs the whole lag range of both
    ref, oth = (np.concatenate([x, np.zeros(n - len(x))]) for x in (ref, oth))
    found = measure_offset_samples(ref, oth, RATE, max_lag_s=max_lag_s)
    return found.seconds, found.correlation


def write_stereo(path: Path, left: np.ndarray, right: np.ndarray, rate: int = RATE) -> Path:
    """A 16-bit stereo WAV of two float channels (clipped to full scale)."""
    import wave

    frames = np.clip(np.stack([left, right], axis=1), -1.0, 1.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
    return path


def channel_decode(path: Path, channel: int) -> np.ndarray:
    """One channel of the first audio stream as float at 48 kHz (no downmix)."""
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-af",
        f"pan=mono|c0=c{channel}",
        "-ar",
        str(RATE),
        "-f",
        "f32le",
        "-",
    ]
    return np.frombuffer(subprocess.run(argv, capture_output=True, check=True).stdout, dtype="<f4").astype(float)


def channel_loudness(path: Path, channel: int, *, dual_mono: bool = True) -> float:
    """EBU R128 integrated loudness (LUFS) of one channel; `dual_mono`: heard on both speakers (ebur128's dual
    mono), so a voice copied to both channels of a file at -16 LUFS measures -16 on each."""
    import re

    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-af",
        f"pan=mono|c0=c{channel},ebur128=dualmono={str(dual_mono).lower()}",
        "-f",
        "null",
        "-",
    ]
    err = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace").stderr
    found = re.findall(r"Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS", err)
    if not found:
        raise AssertionError(f"ebur128 measured nothing in channel {channel} of {path}: {err[-300:]}")
    return float(found[-1])
