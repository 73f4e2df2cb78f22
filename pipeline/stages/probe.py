"""Stage 1: probe a media file with pymediainfo into one typed result, and check it against limits.

TYPES BELOW ARE THE SHARED CONTRACT (other stages read them). Implementation: see probe().
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple

import ffmpeg
from pymediainfo import MediaInfo, Track

from ..errors import InputError, ToolError
from ..ffmpeg import compile_stream, media_path, run_ffmpeg
from ..limits import Limits


@dataclass(frozen=True)
class VideoStream:
    codec: str  # MediaInfo Format: "AVC", "HEVC", "ProRes", "MPEG Video", "VP9", ...
    profile: str | None  # e.g. "High", "Main 10"
    width: int  # coded (stored) size
    height: int
    display_width: int  # what a player shows: after rotation and pixel aspect ratio
    display_height: int
    rotation: int  # 0, 90, 180 or 270 (clockwise display rotation)
    fps: float | None
    frame_rate_mode: str  # "CFR" or "VFR"
    scan_type: str  # "progressive", "interlaced" (or "mbaff"), "unknown"
    bit_depth: int | None
    chroma_subsampling: str | None  # "4:2:0", "4:2:2", "4:4:4"
    pixel_aspect_ratio: float  # 1.0 = square pixels
    hdr_transfer: str | None  # "PQ", "HLG" or None for SDR
    duration: float | None  # seconds: from the packets (first frame to the end of the last) when readable
    frame_count: int | None
    index: int = 0  # ffmpeg's "V:<index>": the stream's rank among the non-cover-art video streams
    start: float = 0.0  # seconds from the file's start to the first frame (edit list, fragments, TS)
    primaries: str | None = None  # MediaInfo's colour description ("BT.709", "BT.2020", "BT.601 PAL"...);
    transfer: str | None = None  # None: not tagged
    matrix: str | None = None  # "BT.709", "BT.601", "BT.2020 non-constant", ...
    color_range: str | None = None  # "Limited" or "Full"
    hdr_format: str | None = None  # HDR side data it carries: "SMPTE ST 2086", "SMPTE ST 2094 App 4", ...


@dataclass(frozen=True)
class AudioStream:
    codec: str  # "AAC", "PCM", "MPEG Audio", "Opus", ...
    channels: int
    sample_rate: int
    duration: float | None  # seconds; decoded where the header only guesses or disagrees (_decoded)
    bit_depth: int | None
    start: float = 0.0  # seconds from the file's start to its first packet (a sound that starts late)
    index: int = 0  # ffmpeg's "a:<index>": the stream's rank among the file's audio streams
    language: str | None = None  # as the container tags it ("en", "fr"...)
    title: str | None = None
    default: bool | None = None  # the container's default flag (None: the container has none)
    declared_duration: float | None = None  # the header's figure, when the decoded one is far from it

    @property
    def number(self) -> int:
        """The track number users see and name (`--audio-track`): 1 for the first audio track."""
        return self.index + 1

    @property
    def end(self) -> float | None:
        """Where the sound ends on the file's timeline (its start counts: silence before it is part of the track)."""
        return None if self.duration is None else self.start + self.duration


@dataclass(frozen=True)
class MediaProbe:
    path: Path
    container: str  # normalized: "mp4", "mov", "webm", "mkv", "mpegts", "wav", "mp3", ...
    duration: float | None  # seconds, container-level
    size_bytes: int
    video: VideoStream | None  # first real video stream; never cover art
    audio: AudioStream | None  # the audio stream in use: the first, unless with_audio_track chose another
    cover_art: bool = False  # an attached picture was present (and ignored as video)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    audio_streams: tuple[AudioStream, ...] = ()  # every audio stream, in ffmpeg's order (audio is one of them)

    def with_audio_track(self, index: int) -> MediaProbe:
        """This probe with audio stream `index` (ffmpeg's a:<index>) as the one in use (a probe built by hand
        may list no streams: its `audio` is then the only one)."""
        return replace(self, audio=self.audio_streams[index]) if self.audio_streams else self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class Violation:
    """One provider limit a file breaks, and why (shown by `lipsync probe`, and used by planners)."""

    limit: str  # the Limits field name, e.g. "video_max_side"
    value: object  # what the file has
    allowed: object  # what the limit allows
    reason: str  # a sentence for the user


# ---- implementation -----------------------------------------------------------------------------------------


# MediaInfo's General "Format" -> our container name. Anything else is refused as unsupported.
_CONTAINERS = {
    "MPEG-4": "mp4",
    "QuickTime": "mov",
    "Matroska": "mkv",
    "WebM": "webm",
    "MPEG-TS": "mpegts",
    "BDAV": "mpegts",
    "MPEG-PS": "mpegps",
    "AVI": "avi",
    "MXF": "mxf",
    "Flash Video": "flv",
    "DV": "dv",
    "Windows Media": "asf",
    "Ogg": "ogg",
    "Wave": "wav",
    "Wave64": "w64",
    "RF64": "wav",
    "AIFF": "aiff",
    "MPEG Audio": "mp3",
    "FLAC": "flac",
    "ADTS": "aac",
    "AMR": "amr",
    "CAF": "caf",
}
_STILL_IMAGES = {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP", "AVIF", "HEIF", "JPEG 2000", "JPEG XL"}
_HDR_TRANSFERS = {"PQ": "PQ", "SMPTE ST 2084": "PQ", "HLG": "HLG", "ARIB STD-B67": "HLG"}
_SCAN_TYPES = {
    "progressive": "progressive",
    "interlaced": "interlaced",
    "mbaff": "mbaff",
    "paff": "interlaced",
    "mixed": "interlaced",
}
STANDARD_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)
STANDARD_RATE_TOLERANCE = 0.01  # a measured or average rate within 1% of a standard rate is that rate
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

# A file MediaInfo flags as truncated is refused only when it really is: less decodes than it declares.
# (Piped WAVs and files with trailing junk are flagged too, yet play in full.)
_TRUNCATION_TOLERANCE_S = 0.5
_TRUNCATION_TOLERANCE_FRACTION = 0.02
_NO_PTS = -(2**63)  # AV_NOPTS_VALUE: a packet without a timestamp (MPEG-PS/TS leave some out)
_DISCARD_FLAG = 0x4  # AV_PKT_FLAG_DISCARD: decoded only to reach the first shown frame
# Packets spanning this much more than the video track's declared length mean damaged timestamps.
_TIMESTAMP_JUMP_S = 1.0
_TIMESTAMP_JUMP_FRACTION = 0.1
_SIZE_SHORTFALL = re.compile(r"File size (\d+) is less than expected size (?:at least )?(\d+)")
_UNKNOWN_RIFF_SIZES = (0xFFFFFFFF + 8, 8)  # a streamed WAV writes "unknown" sizes
# Containers whose header length is a guess: the audio is decoded and counted instead (see guessed_length).
_GUESSED_LENGTH = {
    "mp3": "an MP3's length is its VBR header's or its bitrate's guess",
    "aac": "raw ADTS AAC declares no length",
}
_CODEC_FRAME_SAMPLES = {"MPEG Audio": 1152, "AAC": 1024, "AC-3": 1536, "E-AC-3": 1536, "Opus": 960}
_FRAME_S = 0.05  # a video frame at 20 fps: a length off by more than this shows against the picture
_COUNT_RATE = 8000  # decoded lengths are counted in samples at this rate (1/8000 s)


def _number(value: object) -> float | None:
    """MediaInfo values arrive as int, float-ish strings or "48000 / 24000"; take the first number."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _NUMBER.search(str(value))
    return float(m.group()) if m else None


def _int(value: object) -> int | None:
    n = _number(value)
    return None if n is None else round(n)


def _seconds(ms: object) -> float | None:
    n = _number(ms)
    return None if n is None else n / 1000.0


def _container(general: Track) -> str | None:
    fmt = general.format
    if fmt == "MPEG-4" and "QuickTime" in str(general.format_profile or ""):
        return "mov"
    return _CONTAINERS.get(fmt)


def _rotation(track: Track) -> int:
    degrees = _number(track.rotation) or 0.0
    return round(degrees / 90.0) * 90 % 360


def _is_picture(track: Track) -> bool:
    """A 'video' track that is really a still (cover art stored as a video track); MJPEG video has many frames."""
    return track.format in _STILL_IMAGES and (_int(track.frame_count) or 0) <= 1


@dataclass(frozen=True)
class PacketTiming:
    start: float  # seconds from the file's start (as ffmpeg reads it) to the earliest frame
    end: float  # where the last frame ends
    packets: int
    time_base: str = ""  # the stream's time base as ffmpeg reads it, e.g. "1/12800"


def _shown(row: list[str]) -> bool:
    """A packet that is presented: it has a timestamp and no discard flag (F=0x4: before an edit list's start)."""
    flags = next((int(f.strip()[2:], 16) for f in row[6:] if f.strip().startswith("F=")), 0)
    return int(row[2]) != _NO_PTS and not flags & _DISCARD_FLAG


def parse_framecrc(text: str) -> PacketTiming | None:
    """Timing of one stream from ffmpeg's framecrc listing ("#tb 0: 1/12800" then "0, dts, pts, duration, ...")."""
    time_base = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("#tb 0:")), None)
    rows = [line.split(",") for line in text.splitlines() if line[:1].isdigit()]
    try:
        frames = [(int(row[2]), int(row[3])) for row in rows if len(row) >= 4 and _shown(row)]
        tb = Fraction(time_base) if time_base else None
    except (ValueError, ZeroDivisionError):
        return None
    if not frames or not tb:
        return None
    return PacketTiming(
        float(min(pts for pts, _ in frames) * tb),
        float(max(pts + d for pts, d in frames) * tb),
        len(frames),
        str(time_base),
    )


PROBE_CACHE_SIZE = 512  # probes of unchanged files kept per process (a few hundred bytes each)


class FileIdentity(NamedTuple):
    """What tells an unchanged file from a changed one without reading it (a rewrite changes the size or the
    modification time; an atomic replace, the inode)."""

    path: str  # absolute
    device: int
    inode: int
    size: int
    mtime_ns: int


def file_identity(path: str | Path) -> FileIdentity:
    st = os.stat(path)
    return FileIdentity(os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def stream_packets(path: str | Path, spec: str) -> PacketTiming | None:
    """Read one stream's packets (no decoding). None when ffmpeg cannot list them. Each stage asks of the
    files it checks, so an unchanged file's answer is kept."""
    try:
        identity = file_identity(path)
    except OSError:
        return None
    return _packets_unchanged(str(path), spec, identity)


@functools.lru_cache(maxsize=PROBE_CACHE_SIZE)
def _packets_unchanged(path: str, spec: str, identity: FileIdentity) -> PacketTiming | None:
    stream = ffmpeg.input(media_path(path))[spec].output("-", c="copy", f="framecrc")
    argv = compile_stream(stream.global_args("-v", "error", "-nostdin"))
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    return parse_framecrc(out.stdout) if out.returncode == 0 else None


def _packet_timing(path: Path, index: int) -> PacketTiming | None:
    """Read one video stream's packets (no decoding). None when ffmpeg cannot list them."""
    return stream_packets(path, f"V:{index}")


def _video_stream(track: Track) -> VideoStream:
    width, height = _int(track.width) or 0, _int(track.height) or 0
    par = _number(track.pixel_aspect_ratio) or 1.0
    rotation = _rotation(track)
    shown_w, shown_h = max(1, round(width * par)), height
    if rotation in (90, 270):
        shown_w, shown_h = shown_h, shown_w
    duration = _seconds(track.duration)
    frames = _int(track.frame_count)
    fps = _number(track.frame_rate) or _number(track.original_frame_rate)
    if fps is None and frames and duration:
        fps = frames / duration
    mode = str(track.frame_rate_mode or "").upper()
    chroma = str(track.chroma_subsampling).split()[0] if track.chroma_subsampling else None
    return VideoStream(
        codec=track.format or "unknown",
        profile=str(track.format_profile).split("@")[0] if track.format_profile else None,
        width=width,
        height=height,
        display_width=shown_w,
        display_height=shown_h,
        rotation=rotation,
        fps=fps,
        frame_rate_mode="VFR" if mode.startswith("VFR") or fps is None else "CFR",
        scan_type=_SCAN_TYPES.get(str(track.scan_type or "").lower(), "unknown"),
        bit_depth=_int(track.bit_depth),
        chroma_subsampling=chroma,
        pixel_aspect_ratio=par,
        hdr_transfer=_HDR_TRANSFERS.get(str(track.transfer_characteristics or "")),
        duration=duration,
        frame_count=frames,
        primaries=_text(track.color_primaries),
        transfer=_text(track.transfer_characteristics),
        matrix=_text(track.matrix_coefficients),
        color_range=_text(track.color_range),
        hdr_format=_text(track.hdr_format),
    )


def _text(value: object) -> str | None:
    return str(value) if value else None


def _timed(path: Path, track: Track, index: int) -> tuple[VideoStream, str | None]:
    """The video stream with its place and length on the timeline ffmpeg reads, from its packets (and a warning).

    MediaInfo's track duration counts an edit list's empty edit and a fragmented file's offset, and often
    leaves out the last frame of VFR video; what ffmpeg will cut from is what the plans need. Packets spanning
    far more than the header says are damaged timestamps (the header's length is kept); far less, a damaged
    index (refused: ffmpeg would read only that much).
    """
    video = replace(_video_stream(track), index=index)
    timing = _packet_timing(path, index)
    if timing is None:
        return video, None
    span = timing.end - timing.start
    # the header's two lengths: the edit list's (which may add a delay or trim the media) and the media's own
    declared = [d for d in (video.duration, _seconds(track.source_duration)) if d]
    longest, shortest = max(declared, default=None), min(declared, default=None)
    if longest and span > longest + max(_TIMESTAMP_JUMP_S, longest * _TIMESTAMP_JUMP_FRACTION):
        return video, (
            f"{path.name}: the video timestamps jump ({span:.1f} s of packets for {longest:.1f} s "
            "of video): damaged file, the header's length is used"
        )
    if shortest and span < shortest - max(_TRUNCATION_TOLERANCE_S, shortest * _TRUNCATION_TOLERANCE_FRACTION):
        raise InputError(
            path, f"damaged: ffmpeg can read only {span:.2f} s of the {shortest:.2f} s of video it declares"
        )
    video = replace(video, start=round(timing.start, 6), duration=round(span, 6))
    if video.fps is None and timing.packets >= 2 and span > 0:
        video = _rate_from_packets(video, timing.packets / span, str(track.frame_rate_mode or "").upper())
    return video, None


def snap_to_standard_rate(fps: float) -> float | None:
    """The standard frame rate within STANDARD_RATE_TOLERANCE of `fps`, or None."""
    near = min(STANDARD_RATES, key=lambda r: abs(r - fps))
    return near if abs(near - fps) <= near * STANDARD_RATE_TOLERANCE else None


def _rate_from_packets(video: VideoStream, measured: float, mode: str) -> VideoStream:
    """MediaInfo gives no rate for some streams (short H.264 in MPEG-TS): count the frames over their span.

    A count that lands on a standard rate is taken as constant unless MediaInfo said the rate varies.
    """
    standard = snap_to_standard_rate(measured)
    constant = standard is not None and not mode.startswith("VFR")
    return replace(video, fps=standard or round(measured, 3), frame_rate_mode="CFR" if constant else "VFR")


def _flag(value: object) -> bool | None:
    text = str(value or "").lower()
    return True if text == "yes" else False if text == "no" else None


def _audio_stream(track: Track, index: int) -> AudioStream:
    return AudioStream(
        codec=track.format or "unknown",
        channels=_int(track.channel_s) or 0,
        sample_rate=_int(track.sampling_rate) or 0,
        duration=_seconds(track.duration),
        bit_depth=_int(track.bit_depth),
        index=index,
        language=_text(track.language),
        title=_text(track.title),
        default=_flag(track.default),
    )


def mismatch_tolerance(audio: AudioStream) -> float:
    """How far a header's length may stray from the decoded one before it is recorded: a video frame at
    20 fps, or two codec frames (an encoder's priming and padding, which headers count differently)."""
    frame = _CODEC_FRAME_SAMPLES.get(audio.codec, 1024) / (audio.sample_rate or 48000)
    return max(_FRAME_S, 2 * frame)


def decoded_seconds(path: Path, index: int) -> float | None:
    """How long audio stream `index` really is: every sample decoded and counted (mono at _COUNT_RATE Hz)."""
    stream = ffmpeg.input(media_path(path))[f"a:{index}"].output("-", ac=1, ar=_COUNT_RATE, f="u8")
    argv = compile_stream(stream.global_args("-v", "error", "-nostdin"))
    out = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
    return len(out.stdout) / _COUNT_RATE if out.stdout else None


def _decoded(path: Path, audio: AudioStream, why: str, also: float | None = None) -> tuple[AudioStream, str | None]:
    """`audio` with its decoded length, and a warning with both figures when the header's is off by more
    than mismatch_tolerance. `also`: the header's other figure (the container's), the nearer one counts."""
    decoded = decoded_seconds(path, audio.index)
    if decoded is None:
        return audio, None
    measured = replace(audio, duration=round(decoded, 6))
    figures = [d for d in (audio.duration, also) if d is not None]
    declared = min(figures, key=lambda d: abs(d - decoded), default=None)
    if declared is None or abs(decoded - declared) <= mismatch_tolerance(audio):
        return measured, None
    return replace(measured, declared_duration=declared), (
        f"{path.name}: audio track {audio.number} declares {declared:.3f} s but {decoded:.3f} s decodes ({why}): "
        "the decoded length is used"
    )


def guessed_length(path: Path, container: str) -> str | None:
    """Why the header's length of an audio-only file is only a guess (then it is decoded), or None."""
    if container == "wav":
        with path.open("rb") as f:
            riff_size = int.from_bytes(f.read(8)[4:8], "little")
        return "a streamed WAV declares no size" if riff_size + 8 in _UNKNOWN_RIFF_SIZES else None
    return _GUESSED_LENGTH.get(container)


def _timed_audio(path: Path, audio: AudioStream) -> tuple[AudioStream, str | None]:
    """The audio stream with its place and length on the file's timeline, from its packets (and a warning).

    Only asked beside a picture: in an audio-only file the timeline starts with the sound. The first packet
    may carry the encoder's priming (AAC: 1024 samples), so the start is within a packet of the first sample.
    Packets and header disagreeing (by less than a timestamp jump) are settled by decoding the stream.
    """
    timing = stream_packets(path, f"a:{audio.index}")
    if timing is None:
        return audio, None
    declared = audio.duration
    if declared and timing.end > declared + max(_TIMESTAMP_JUMP_S, declared * _TIMESTAMP_JUMP_FRACTION):
        return audio, None  # damaged timestamps: the header's figures are the better guess
    duration = round(timing.end - timing.start, 6)
    timed = replace(audio, start=round(max(0.0, timing.start), 6), duration=duration)
    if declared is None or abs(duration - declared) <= mismatch_tolerance(audio):
        return timed, None
    return _decoded(path, replace(timed, duration=declared), f"its packets span {timing.end - timing.start:.3f} s")


def _present_seconds(path: Path) -> float:
    """How many seconds of packets the file really holds: a stream copy to the null muxer, no decoding."""
    stream = ffmpeg.input(media_path(path)).output("-", f="null", c="copy", map="0")
    argv = compile_stream(stream.global_args("-v", "error", "-progress", "pipe:2", "-nostats"))
    try:
        run = run_ffmpeg(argv, what=f"reading {path.name}")
    except ToolError as err:
        raise InputError(path, f"damaged or truncated: ffmpeg cannot read it ({err.message})") from None
    times = re.findall(r"out_time_us=(\d+)", run.stderr_tail)
    return int(times[-1]) / 1e6 if times else 0.0


def _check_truncation(path: Path, general: Track, declared: float | None) -> str:
    """Raise InputError when the file is cut short; return a warning when MediaInfo's flag is a false alarm."""
    m = _SIZE_SHORTFALL.search(str(general.general_compliance or ""))
    if m and int(m.group(2)) not in _UNKNOWN_RIFF_SIZES:
        have, want = int(m.group(1)), int(m.group(2))
        if have < want * (1 - _TRUNCATION_TOLERANCE_FRACTION):
            raise InputError(
                path, f"truncated: {have} of the {want} bytes its header declares (an incomplete download or copy?)"
            )
    if declared:
        present = _present_seconds(path)
        if present < declared - max(_TRUNCATION_TOLERANCE_S, declared * _TRUNCATION_TOLERANCE_FRACTION):
            raise InputError(
                path,
                f"truncated: it declares {declared:.2f} s but only {present:.2f} s is present "
                "(an incomplete download or copy?)",
            )
    return "MediaInfo flags the file as truncated, but all of its declared length is present"


def probe(path: str | Path) -> MediaProbe:
    """Describe a media file. Raises InputError for missing, empty, unparseable, truncated or unsupported files.

    A file probed before and unchanged since (`file_identity`) is not read again: a job probes its inputs and
    outputs at several stages, and a batch often shares one clip among many jobs."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    identity = file_identity(path)
    if identity.size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    return _probe_unchanged(str(path), identity)


@functools.lru_cache(maxsize=PROBE_CACHE_SIZE)
def _probe_unchanged(given: str, identity: FileIdentity) -> MediaProbe:
    """probe() of the file `given` names, keyed also by its identity so that a changed file is read again.
    Errors are raised, never cached."""
    path, size = Path(given), identity.size
    try:
        info = MediaInfo.parse(str(path))
    except Exception as exc:  # pymediainfo raises plain exceptions for unreadable files
        raise InputError(path, f"cannot be read ({exc})") from None
    general = info.general_tracks[0] if info.general_tracks else None
    if general is None or not general.format:
        raise InputError(path, "not a media file (no known audio or video format inside)")
    if general.format == "GIF":
        raise InputError(path, "a GIF (animated or not) is not accepted as footage: convert it to an mp4 first")
    if general.format in _STILL_IMAGES:
        raise InputError(path, f"a still image ({general.format}), not a video or audio file")
    container = _container(general)
    if container is None:
        raise InputError(path, f"unsupported container {general.format!r}")

    warnings: list[str] = []
    real_videos = [t for t in info.video_tracks if not _is_picture(t)]
    cover_art = (
        str(general.cover or "").lower() == "yes"
        or bool(info.image_tracks)
        or len(real_videos) < len(info.video_tracks)
    )
    audios = [_audio_stream(t, i) for i, t in enumerate(info.audio_tracks)]
    if len(real_videos) > 1:
        warnings.append(f"{len(real_videos)} video streams: using the first")
    duration = _seconds(general.duration)
    if duration is None:
        known = [_seconds(t.duration) for t in [*real_videos[:1], *info.audio_tracks[:1]]]
        duration = max((k for k in known if k), default=None)

    guess = None if real_videos else guessed_length(path, container)
    if str(general.istruncated or "").lower() == "yes":
        if not (real_videos or audios):
            raise InputError(
                path, "truncated: the file ends before its streams are described (an incomplete download or copy?)"
            )
        if guess is None:  # a guessed length is decoded below: what decodes is delivered, with a warning
            warnings.append(_check_truncation(path, general, duration))
    if not real_videos and not audios:
        raise InputError(path, f"no audio or video stream in this {container} file")
    video = None
    if real_videos:  # read after the truncation check, whose message says more than a short packet count
        video, jump = _timed(path, real_videos[0], info.video_tracks.index(real_videos[0]))
        warnings += [jump] if jump else []
        audios, notes = _each(audios, lambda a: _timed_audio(path, a))
    elif guess is not None:
        audios, notes = _each(audios, lambda a: _decoded(path, a, guess, also=duration))
        duration = max((a.duration for a in audios if a.duration is not None), default=duration)
    else:
        notes = []
    return MediaProbe(
        path=path,
        container=container,
        duration=duration,
        size_bytes=size,
        video=video,
        audio=audios[0] if audios else None,
        cover_art=cover_art,
        warnings=tuple(warnings + notes),
        audio_streams=tuple(audios),
    )


def _each(
    audios: list[AudioStream], measure: Callable[[AudioStream], tuple[AudioStream, str | None]]
) -> tuple[list[AudioStream], list[str]]:
    """`measure` (stream -> (stream, warning or None)) over every audio stream: the streams and the warnings."""
    done = [measure(a) for a in audios]
    return [a for a, _ in done], [w for _, w in done if w]


def probe_video(path: str | Path) -> MediaProbe:
    """probe() that also requires a real video stream (cover art does not count)."""
    p = probe(path)
    if p.video is None:
        what = "an audio-only file" if p.audio is not None else "a file without video"
        art = " (its only picture is cover art)" if p.cover_art else ""
        raise InputError(path, f"{what}{art} was given where a video is needed")
    return p


def probe_audio(path: str | Path) -> MediaProbe:
    """probe() that also requires an audio stream."""
    p = probe(path)
    if p.audio is None:
        raise InputError(path, "no audio stream, where a voice track is needed")
    return p


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_limits(p: MediaProbe, limits: Limits, role: Literal["video", "audio"]) -> list[Violation]:
    """Every limit `p` breaks when used as the job's video or audio, each with a sentence saying why."""
    if role == "video":
        containers, max_bytes, max_seconds = limits.video_containers, limits.video_max_bytes, limits.video_max_seconds
        prefix = "video"
    else:
        containers, max_bytes, max_seconds = limits.audio_containers, limits.audio_max_bytes, limits.audio_max_seconds
        prefix = "audio"
    out: list[Violation] = []
    if p.container not in containers:
        out.append(
            Violation(
                f"{prefix}_containers",
                p.container,
                list(containers),
                f"container {p.container} is not accepted (only {', '.join(containers)})",
            )
        )
    if p.size_bytes > max_bytes:
        out.append(
            Violation(
                f"{prefix}_max_bytes",
                p.size_bytes,
                max_bytes,
                f"{_mb(p.size_bytes)} is over the {_mb(max_bytes)} limit",
            )
        )
    if p.duration is not None and p.duration > max_seconds:
        out.append(
            Violation(
                f"{prefix}_max_seconds",
                round(p.duration, 3),
                max_seconds,
                f"{p.duration:.2f} s is over the {max_seconds:g} s limit",
            )
        )
    if role == "video" and p.video is not None:
        side = max(p.video.display_width, p.video.display_height)
        if side > limits.video_max_side:
            out.append(
                Violation(
                    "video_max_side",
                    side,
                    limits.video_max_side,
                    f"{p.video.display_width}x{p.video.display_height} has a {side} px side, "
                    f"over the {limits.video_max_side} px limit",
                )
            )
    return out
