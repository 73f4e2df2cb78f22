"""Test media for the end of the pipeline: master audio and imitation provider results (mux, verify, avsync).

read_wav(path) -> (mono float samples, rate)
shifted_wav(src, dst, delay_s)            the same audio, later (delay_s > 0) or earlier (< 0), same length
provider_result(dst, master, delay_s=..)  what a provider sends back: its own resolution, an AAC re-encode of
                                          our master at 44.1 kHz stereo, delayed by `delay_s`
first_frame_time(path, stream)            presentation time of the first decoded frame of "v" or "a"
"""

from __future__ import annotations

import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from media import make_video

from pipeline.ffmpeg import ffmpeg_exe
from pipeline.speech import write_wav


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width == 3:  # 24-bit: widen to int32
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        ints = b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16)
        ints = np.where(ints & 0x800000, ints - (1 << 24), ints)
        samples = ints / float(1 << 23)
    else:
        samples = np.frombuffer(raw, dtype="<i2") / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def shift(samples: np.ndarray, n: int) -> np.ndarray:
    """Later by n samples (n > 0) or earlier (n < 0), same length, zero-filled."""
    if n >= 0:
        return np.concatenate([np.zeros(n), samples])[: len(samples)]
    return np.concatenate([samples[-n:], np.zeros(-n)])


def shifted_wav(src: str | Path, dst: str | Path, delay_s: float) -> Path:
    samples, rate = read_wav(src)
    write_wav(dst, shift(samples, round(delay_s * rate)), rate)
    return Path(dst)


def provider_result(
    dst: str | Path,
    master: str | Path,
    *,
    delay_s: float = 0.04,
    seconds: float = 3.0,
    width: int = 256,
    height: int = 144,
    fps: float = 25,
) -> Path:
    dst = Path(dst)
    shifted = shifted_wav(master, dst.with_name(dst.stem + "_provider_audio.wav"), delay_s)
    return make_video(
        dst,
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
        audio_file=shifted,
        audio_rate=44100,
        audio_channels=2,
        audio_bitrate="128k",
    )


def first_frame_time(path: str | Path, stream: str) -> float:
    """When a player shows the first frame of stream "v" or "a" (decoded, after edit lists), in seconds."""
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        f"0:{stream}:0",
        "-frames:" + stream,
        "1",
        "-f",
        "framecrc",
        "-",
    ]
    lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    tb = Fraction(next(line for line in lines if line.startswith("#tb 0:")).split(":")[1].strip())
    pts = int(next(line for line in lines if line[:1].isdigit()).split(",")[2])
    return float(pts * tb)
