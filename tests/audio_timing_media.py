"""Test media whose sound does not start where its picture does, and an independent way to find the voice in them.

    make_late_sound_mp4(path, voice, delay_s)   picture from 0, the voice (AAC, stream-copied) from `delay_s`
    make_flv(path, voice, seconds)              H.264 + AAC in FLV, as ffmpeg writes it (no seek index)
    plain_decode(path)                          the first audio stream as mono float at 48 kHz, decoded with no
                                                seek and no filter: sample 0 is the stream's first sample
    voice_offset(voice, other)                  where `voice` sits in `other` (seconds, > 0: later), and how well
                                                it matches (normalized correlation)
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
        _run(ffmpeg.output(_picture(seconds), sound, str(path), t=seconds, preset="veryfast",
                           **{"c:v": "libx264", "c:a": "copy"}), f"making {path.name}")
    return path


def make_flv(path: Path, voice: Path, seconds: float) -> Path:
    sound = ffmpeg.input(str(voice)).audio
    _run(ffmpeg.output(_picture(seconds), sound, str(path), t=seconds, preset="veryfast",
                       **{"c:v": "libx264", "c:a": "aac"}), f"making {path.name}")
    return path


def plain_decode(path: Path) -> np.ndarray:
    argv = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(RATE),
            "-f", "f32le", "-"]
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
