"""AI/ML API `pixverse/v5/image-to-video` (seed 003) on the emulator: the image check and the rendered
talking portrait (the create body's rules are with the protocol, in aimlapi.py).

The render is the image slowly zoomed at the requested resolution (short side) and length, its first frame the
whole image, with the TTS speech as its sound (none without TTS). An https `image_url` the emulator cannot
fetch is accepted as the real API would, and a test picture animated in its place.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from ..ffmpeg import X264_THREADS, Stream, compile_stream, run_ffmpeg
from ..fsutil import atomic_output
from ..limits import ImageLimits
from ..speech import speak_to_wav
from .media import Rendered, inspect_image

MODEL = "pixverse/v5/image-to-video"
TOKENS_PER_JOB = 420_000  # seed 003's sample reply: meta.usage.tokens_used
FPS = 24
ZOOM = 0.08  # how much closer the last frame is than the first
STAND_IN = "testsrc2=size=1280x720"  # animated when the image is an https URL out of the emulator's reach
IMAGE_FORMATS = ("JPEG", "PNG", "WebP")  # MediaInfo's names of what the model takes


@dataclass(frozen=True)
class PortraitInput:
    """A validated create: the image (None: an unreachable https URL) and what to render."""

    image: Path | None
    prompt: str
    resolution: str
    duration: int
    text: str | None
    speaker: str | None


def image_problem(path: Path, limits: ImageLimits) -> str | None:
    """Why the bytes at `path` are not an image the model takes; None when they are."""
    info = inspect_image(path)
    if info.kind != "image" or info.container not in IMAGE_FORMATS:
        return f"image_url does not hold a JPEG, PNG or WebP image (found {info.container})"
    if info.size_bytes > limits.image_max_bytes:
        return f"image is {info.size_bytes} bytes, over {limits.image_max_bytes}"
    return None


def frame_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The rendered frame: the image's shape with its short side at `short_side` (up or down), both even."""
    short = min(width, height)
    scale = short_side / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _picture(req: PortraitInput) -> tuple[Stream, tuple[int, int]]:
    if req.image is None:
        return ffmpeg.input(f"{STAND_IN}:rate={FPS}", f="lavfi", t=req.duration), (1280, 720)
    info = inspect_image(req.image)
    assert info.width is not None and info.height is not None  # check_fields read the image's size
    return ffmpeg.input(str(req.image), loop=1, framerate=FPS, t=req.duration), (info.width, info.height)


def render_portrait(req: PortraitInput, out: Path) -> Rendered:
    """The image zoomed slowly in at the requested size and length; the TTS speech padded/cut to it."""
    picture, (width, height) = _picture(req)
    w, h = frame_size(width, height, int(req.resolution.removesuffix("p")))
    per_frame = ZOOM / (req.duration * FPS)
    video = (
        picture.video.filter("scale", w, h)
        .filter("setsar", 1)
        .filter(
            "zoompan", z=f"1+{per_frame:.8f}*on", x="iw/2-(iw/zoom/2)", y="ih/2-(ih/zoom/2)", d=1, s=f"{w}x{h}", fps=FPS
        )
        .filter("format", "yuv420p")
    )
    streams = [video]
    if req.text is not None:
        voice_seed = zlib.crc32((req.speaker or "").encode()) % 1000
        speech = speak_to_wav(req.text, out.with_suffix(".tts.wav"), voice_seed=voice_seed)
        streams.append(ffmpeg.input(str(speech)).audio.filter("apad"))
    with atomic_output(out) as tmp:
        command = ffmpeg.output(
            *streams,
            str(tmp),
            t=req.duration,
            r=FPS,
            vcodec="libx264",
            preset="ultrafast",
            crf=28,
            **{"threads:v": X264_THREADS},
            acodec="aac",
            audio_bitrate="96k",
            movflags="+faststart",
            f="mp4",
        )
        run_ffmpeg(compile_stream(command.global_args("-v", "error")), what=f"rendering emulator portrait {out.name}")
    return Rendered(out, w, h, out.stat().st_size, float(req.duration))
