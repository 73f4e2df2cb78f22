"""Stage 1: probe a media file with pymediainfo into one typed result, and check it against limits.

TYPES BELOW ARE THE SHARED CONTRACT (other stages read them). Implementation: see probe().
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VideoStream:
    codec: str                      # MediaInfo Format: "AVC", "HEVC", "ProRes", "MPEG Video", "VP9", ...
    profile: str | None             # e.g. "High", "Main 10"
    width: int                      # coded (stored) size
    height: int
    display_width: int              # what a player shows: after rotation and pixel aspect ratio
    display_height: int
    rotation: int                   # 0, 90, 180 or 270 (clockwise display rotation)
    fps: float | None
    frame_rate_mode: str            # "CFR" or "VFR"
    scan_type: str                  # "progressive", "interlaced" (or "mbaff"), "unknown"
    bit_depth: int | None
    chroma_subsampling: str | None  # "4:2:0", "4:2:2", "4:4:4"
    pixel_aspect_ratio: float       # 1.0 = square pixels
    hdr_transfer: str | None        # "PQ", "HLG" or None for SDR
    duration: float | None          # seconds
    frame_count: int | None


@dataclass(frozen=True)
class AudioStream:
    codec: str                      # "AAC", "PCM", "MPEG Audio", "Opus", ...
    channels: int
    sample_rate: int
    duration: float | None
    bit_depth: int | None


@dataclass(frozen=True)
class MediaProbe:
    path: Path
    container: str                  # normalized: "mp4", "mov", "webm", "mkv", "mpegts", "wav", "mp3", ...
    duration: float | None          # seconds, container-level
    size_bytes: int
    video: VideoStream | None       # first real video stream; never cover art
    audio: AudioStream | None       # first audio stream
    cover_art: bool = False         # an attached picture was present (and ignored as video)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class Violation:
    """One provider limit a file breaks, and why (shown by `lipsync probe`, and used by planners)."""

    limit: str      # the Limits field name, e.g. "video_max_side"
    value: object   # what the file has
    allowed: object # what the limit allows
    reason: str     # a sentence for the user
