"""Media on the emulator's side: inspect uploads (pymediainfo, independent of the client's probe code),
check them against the provider limits, and render a job's result mp4.
"""

from __future__ import annotations

import logging
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
from pymediainfo import MediaInfo as _PyMediaInfo
from pymediainfo import Track

from ..ffmpeg import X264_THREADS, compile_stream, run_ffmpeg
from ..fsutil import atomic_output
from ..limits import Limits
from ..speech import speak_to_wav

log = logging.getLogger("lipsync.emulator.media")


@dataclass(frozen=True)
class MediaInfo:
    """What the emulator needs to know about an uploaded file."""

    kind: str | None  # "video", "audio", "image" (inspect_image), or None when none is found
    container: str  # "mp4", "mov", "mp3", "wav", or MediaInfo's own format name
    duration_s: float | None
    width: int | None  # display size (rotation applied)
    height: int | None
    size_bytes: int


_CONTAINERS = {"Wave": "wav", "MPEG Audio": "mp3"}


def _container(general: Track) -> str:
    if general.format == "MPEG-4":
        return "mov" if (general.codec_id or "").strip() == "qt" else "mp4"
    return _CONTAINERS.get(general.format or "", (general.format or "unknown").lower())


def inspect_media(path: Path) -> MediaInfo:
    """Parse `path` with libmediainfo. Blocking: call from a worker thread."""
    info = _PyMediaInfo.parse(str(path))
    general = info.general_tracks[0] if info.general_tracks else None
    size = path.stat().st_size
    if general is None or not general.format:
        return MediaInfo(kind=None, container="unknown", duration_s=None, width=None, height=None, size_bytes=size)
    video = next(iter(info.video_tracks), None)  # MediaInfo lists mp4/mov cover art as a tag, not a track
    audio = next(iter(info.audio_tracks), None)
    duration = float(general.duration) / 1000 if general.duration else None
    if video is not None and video.width and video.height:
        width, height = int(video.width), int(video.height)
        if round(float(video.rotation or 0)) % 180 == 90:
            width, height = height, width
        return MediaInfo("video", _container(general), duration, width, height, size)
    kind = "audio" if audio is not None else None
    return MediaInfo(kind, _container(general), duration, None, None, size)


def inspect_image(path: Path) -> MediaInfo:
    """A still image's format and pixel size by libmediainfo (kind "image", else None): independent of the
    client's Pillow probe. Blocking: call from a worker thread."""
    info = _PyMediaInfo.parse(str(path))
    general = info.general_tracks[0] if info.general_tracks else None
    image = next(iter(info.image_tracks), None)
    container = (general.format if general is not None else None) or "unknown"
    size = path.stat().st_size
    if image is None or not image.width or not image.height:
        return MediaInfo(None, container, None, None, None, size)
    return MediaInfo("image", container, None, int(image.width), int(image.height), size)


def media_problems(info: MediaInfo, limits: Limits, role: str) -> list[str]:
    """Why `info` cannot be used as the job's `role` ("video" or "audio"); empty when it can."""
    if info.kind != role:
        found = info.kind or "no audio or video"
        return [f"expected a {role} file, got {found} ({info.container})"]
    if role == "video":
        containers, max_bytes, max_s = limits.video_containers, limits.video_max_bytes, limits.video_max_seconds
    else:
        containers, max_bytes, max_s = limits.audio_containers, limits.audio_max_bytes, limits.audio_max_seconds
    problems = []
    if info.container not in containers:
        problems.append(f"{role} format {info.container} not supported (use {', '.join(containers)})")
    if info.size_bytes > max_bytes:
        problems.append(f"{role} is {info.size_bytes} bytes, over {max_bytes}")
    if info.duration_s is None or info.duration_s <= 0:
        problems.append(f"{role} has no duration")
    elif info.duration_s > max_s + 0.05:
        problems.append(f"{role} is {info.duration_s:.2f}s long, over {max_s:g}s")
    if role == "video" and max(info.width or 0, info.height or 0) > limits.video_max_side:
        problems.append(f"video is {info.width}x{info.height}, longest side over {limits.video_max_side}")
    return problems


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The provider's output frame: short side scaled down to `short_side` (never up), both sides even."""
    short = min(width, height)
    if short > short_side:
        width, height = width * short_side // short, height * short_side // short
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


@dataclass(frozen=True)
class RenderRequest:
    video: Path
    audio: Path | None  # the submitted audio, or None for TTS
    text: str | None
    speaker: str | None
    short_side: int
    audio_offset_ms: int
    out: Path


@dataclass(frozen=True)
class Rendered:
    path: Path
    width: int
    height: int
    size_bytes: int
    duration_s: float


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def render_result(req: RenderRequest) -> Rendered:
    """The lip-synced stand-in: the video looped/trimmed to the audio, scaled, audio re-encoded to AAC."""
    audio = req.audio
    if audio is None:
        voice_seed = zlib.crc32((req.speaker or "").encode()) % 1000
        audio = speak_to_wav(req.text or "", req.out.with_suffix(".tts.wav"), voice_seed=voice_seed)
        seconds = _wav_seconds(audio)
    else:
        seconds = inspect_media(audio).duration_s or 0.0
    source = inspect_media(req.video)
    width, height = output_size(source.width or 2, source.height or 2, req.short_side)
    video_in = ffmpeg.input(str(req.video), stream_loop=-1)
    audio_in = ffmpeg.input(str(audio))
    # "V": video streams that are not attached pictures (ffmpeg shows mp4/mov cover art as one)
    v = video_in["V:0"].filter("scale", width, height).filter("setsar", 1).filter("format", "yuv420p")
    a = audio_in.audio
    if req.audio_offset_ms > 0:
        a = a.filter("adelay", f"{req.audio_offset_ms}", all=1)
    elif req.audio_offset_ms < 0:
        a = a.filter("atrim", start=-req.audio_offset_ms / 1000).filter("asetpts", "PTS-STARTPTS")
    with atomic_output(req.out) as tmp:
        out = ffmpeg.output(
            v,
            a,
            str(tmp),
            t=f"{seconds:.3f}",
            vcodec="libx264",
            preset="ultrafast",
            crf=30,
            **{"threads:v": X264_THREADS},
            acodec="aac",
            audio_bitrate="96k",
            movflags="+faststart",
            f="mp4",
        )
        run_ffmpeg(compile_stream(out.global_args("-v", "error")), what=f"rendering emulator result {req.out.name}")
    return Rendered(req.out, width, height, req.out.stat().st_size, seconds)
