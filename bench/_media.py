"""Tiny generated inputs shared by the benchmarks."""

from __future__ import annotations

from pathlib import Path

import ffmpeg

from pipeline.ffmpeg import compile_stream, run_ffmpeg
from pipeline.speech import speak_to_wav


def tiny_clip(folder: Path, *, seconds: float, fps: int, words: str) -> tuple[Path, Path]:
    """A 160x120 H.264 test-pattern clip and a spoken voice track, for benchmarks that time everything else."""
    video = folder / "clip.mp4"
    src = ffmpeg.input(f"testsrc2=size=160x120:rate={fps}", f="lavfi", t=seconds)
    run_ffmpeg(
        compile_stream(ffmpeg.output(src, str(video), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p")),
        what="making the bench clip",
    )
    return video, speak_to_wav(words, folder / "voice.wav")
