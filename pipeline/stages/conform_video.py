"""Stage: conform a video to what a provider accepts. plan_video() decides, execute_video() runs ONE ffmpeg command.

The plan is a pure function of the probe, the limits and the options; every choice carries its reason so the
manifest can say why a file was re-encoded. A compliant file (mp4/mov, H.264 8-bit 4:2:0, CFR, progressive,
no rotation tag, square pixels, inside every limit) is stream-copied with +faststart. Anything else becomes
H.264 High 8-bit yuv420p with AAC sound: deinterlaced, constant frame rate, rotation applied to the pixels,
HDR tone-mapped to BT.709, downscaled (never upscaled) to even dimensions, trimmed to the duration limit.

Size: one CRF encode under a VBV cap (maxrate/bufsize) derived from the byte budget; the output is measured
and, only if it still overshoots, encoded once more with a cap lowered by the overshoot.

The timeline is a list of legs, each read from the source by its own input and joined with the concat filter:
one leg for a plain cut, forward legs for `loop`, forward/reversed legs for `bounce`. A short leg that repeats is
read once and replayed (`split`), see leg_reads(). In a container with a seek index a leg's input seeks (-ss/-t);
in one without (FLV, MPEG-TS/PS, AVI, ...) a seek lands seconds away or nowhere, so the leg is read from the
start and cut on its decoded timestamps (trim/atrim), see read_by_seeking().
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import ffmpeg
from ffmpeg.nodes import InputNode

from ..errors import InputError, ToolError, ValidationError
from ..ffmpeg import X264_THREADS, FfmpegRun, ProgressFn, Stream, compile_stream, media_path, run_ffmpeg
from ..fsutil import atomic_output
from ..limits import Limits
from .probe import STANDARD_RATE_TOLERANCE, MediaProbe, VideoStream, probe_video, snap_to_standard_rate

log = logging.getLogger("lipsync.conform_video")

COPY_CONTAINERS = ("mp4", "mov")  # containers whose streams we can hand over as they are
# containers whose index takes an input seek to the right frame; any other is read from its start (see
# read_by_seeking). Matroska without cues is still seekable: ffmpeg walks its clusters.
SEEKABLE_CONTAINERS = ("mp4", "mov", "mkv", "webm")
SIZE_MARGIN = 0.95  # aim this far under the byte limit (container overhead, VBV slack)
COPY_SIZE_MARGIN = 0.98  # a copied file changes size only by its headers
VBV_BUFFER_SECONDS = 1.0  # bufsize = this many seconds at maxrate
RETRY_SAFETY = 0.9  # the second encode aims this much lower than the overshoot suggests
# of a frame: 10.010 s at 29.97 fps is 300 frames, not 299; millisecond timestamps (FLV, Matroska) shave up to
# 0.06 of a frame at 60 fps off the last one (48 frames at 24 fps last 1.999 s)
FRAME_ROUNDING = 0.1
LATE_START_S = 0.0005  # a picture starting later than this into the file is not copied
MAX_REASON_CHARS = 120  # of ffmpeg's last line, in an error message
SHARED_READ_BYTES = 256 * 2**20  # a repeated leg whose frames fit in this is decoded once, replayed
TONEMAP_TRANSFER = {"PQ": "smpte2084", "HLG": "arib-std-b67"}
# MediaInfo's matrix name -> the scale filter's in_color_matrix; the output is always BT.709
SOURCE_MATRICES = {
    "BT.709": "bt709",
    "BT.601": "bt601",
    "BT.470 System B/G": "bt470",
    "FCC 73.682": "fcc",
    "SMPTE 240M": "smpte240m",
    "BT.2020 non-constant": "bt2020",
}
# Frame side data that describes HDR or the source's colour volume: false on an SDR BT.709 output
HDR_SIDE_DATA = (
    "MASTERING_DISPLAY_METADATA",
    "CONTENT_LIGHT_LEVEL",
    "DYNAMIC_HDR_PLUS",
    "DYNAMIC_HDR_VIVID",
    "DOVI_METADATA",
    "DOVI_RPU_BUFFER",
    "AMBIENT_VIEWING_ENVIRONMENT",
    "ICC_PROFILE",
)
# The colour description written for an untagged stream that is copied (how a player reads it), as the
# muxer's colr box: the packets stay as they are (a bitstream filter would drop any it cannot parse)
COPY_TAGS = {"bt709": "bt709", "bt601": "smpte170m"}


@dataclass(frozen=True)
class VideoOptions:
    start: float | None = None  # seconds in the source
    end: float | None = None
    target_duration: float | None = None  # extend/cut the output to exactly this (sync modes)
    extend: Literal["loop", "bounce"] | None = None  # how to reach target_duration when the source is shorter
    extend_from: int = 0  # frames of the loop/bounce played before this output (a long voice split into jobs)
    keep_audio: bool = True  # carry the source audio (AAC) along
    force_transcode: bool = False  # re-encode even a compliant file
    crf: int = 20  # x264 quality when the size budget allows it
    # x264 speed/efficiency: the provider re-renders what we send, so quality per second of CPU decides, not
    # habit. Measured (bench/long.py, under a full 30 s segment's cap, 4K60 HEVC source): superfast 1.56-1.69x
    # the decode-and-scale floor at SSIM 0.988, against fast's 2.2x at 0.987; veryfast swung 1.51-1.87x
    preset: str = "superfast"
    max_bitrate: int = 40_000_000  # never cap above this (bits/s): H.264 level 4.1/4.2 territory
    max_fps: float = 60.0  # faster capture (slow-motion phones) is resampled to this
    audio_bitrate: int = 128_000  # AAC, bits/s


@dataclass(frozen=True)
class Decision:
    what: str
    reason: str


@dataclass(frozen=True)
class Leg:
    """One read of the source: `duration` seconds from `start`, played backwards when `reverse`."""

    start: float
    duration: float
    reverse: bool = False


@dataclass(frozen=True)
class VideoPlan:
    source: Path
    mode: Literal["copy", "transcode"]
    duration: float  # seconds of output
    legs: tuple[Leg, ...]
    width: int  # output size (display orientation, square pixels)
    height: int
    scale: bool  # the rotated source picture is not already width x height
    fps: float | None  # output constant rate (None: copy keeps the source timing)
    rotation: int  # clockwise degrees applied to the pixels
    deinterlace: bool
    tonemap: str | None  # "PQ"/"HLG": the source transfer mapped to BT.709 SDR
    crf: int | None
    preset: str | None
    maxrate: int | None  # bits/s (VBV cap)
    bufsize: int | None  # bits
    audio: Literal["copy", "aac", "none"]
    audio_channels: int | None
    audio_rate: int | None
    audio_bitrate: int | None
    max_bytes: int  # the limit the output must stay under
    decisions: tuple[Decision, ...] = ()
    warnings: tuple[str, ...] = ()
    stream: int = 0  # the source's video stream, ffmpeg's "V:<stream>"
    offset: float = 0.0  # where that stream's first frame is in the file: legs count from it
    seek: bool = True  # legs read by an input seek; False: from the start, cut on timestamps
    colour_matrix: str = "bt709"  # how the source's YUV is read (scale's in_color_matrix); out: BT.709
    copy_tags: str | None = None  # copy of an untagged stream: the colour it is tagged with (COPY_TAGS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = str(self.source)
        return d


@dataclass(frozen=True)
class VideoResult:
    path: Path
    plan: VideoPlan  # the plan of the run that produced the file
    runs: list[FfmpegRun]
    probe: MediaProbe  # the output, probed
    size_bytes: int
    attempts: list[VideoPlan] = field(default_factory=list)  # every plan run, in order

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "plan": self.plan.to_dict(),
            "attempts": len(self.attempts),
            "runs": [{"argv": r.argv, "seconds": round(r.seconds, 3)} for r in self.runs],
            "output": self.probe.to_dict(),
        }


# ---- planning (pure) ----------------------------------------------------------------------------------------


def _source_seconds(p: MediaProbe) -> float:
    assert p.video is not None  # probe_video found the picture
    seconds = p.video.duration or p.duration
    if not seconds:
        raise InputError(p.path, "cannot tell how long the video is")
    return seconds


def _window(p: MediaProbe, opts: VideoOptions, total: float) -> tuple[float, float, list[Decision]]:
    """The part of the source to use: [start, end) from --start/--end, clamped to the file."""
    start = max(0.0, opts.start or 0.0)
    end = min(total, opts.end) if opts.end is not None else total
    if start >= end:
        raise InputError(p.path, f"nothing to use between {start:g} s and {end:g} s (the video lasts {total:.3f} s)")
    decisions = []
    if start > 0 or end < total:
        decisions.append(Decision("window", f"using {start:.3f}-{end:.3f} s of {total:.3f} s as asked"))
    return start, end, decisions


def output_fps(v: VideoStream, max_fps: float) -> tuple[float, str | None]:
    """The constant rate to encode at, and why it differs from the source's (None when it does not)."""
    if v.fps is None:
        return min(25.0, max_fps), "the frame rate is unknown: encoding at 25 fps"
    if v.fps > max_fps * (1 + STANDARD_RATE_TOLERANCE):
        return max_fps, f"{v.fps:g} fps (high-speed capture) is more than the {max_fps:g} fps kept"
    if v.frame_rate_mode != "VFR":
        return v.fps, None
    rate = snap_to_standard_rate(v.fps) or round(v.fps, 3)
    return rate, f"variable frame rate (average {v.fps:.3f} fps) becomes constant {rate:g} fps"


def source_frames(seconds: float, fps: float) -> int:
    """Frames a source window holds, forgiving the rounding of millisecond durations and NTSC rates."""
    return math.floor(seconds * fps + FRAME_ROUNDING)


def frames_within(seconds: float, fps: float) -> int:
    """Whole frames that never run past `seconds` (a target or a limit)."""
    return math.floor(seconds * fps + 1e-9)


def _legs(
    p: MediaProbe, start: float, end: float, target: float, extend: str, fps: float, skip: int = 0
) -> tuple[Leg, ...]:
    """Loop or bounce the window [start, end) until `target` seconds, in whole frames, leaving out the first
    `skip` frames of that timeline (played by the segments before this one)."""
    window = source_frames(end - start, fps)
    if window < 1:
        raise InputError(p.path, f"cannot {extend} {end - start:.3f} s: shorter than one frame at {fps:g} fps")
    remaining = frames_within(target, fps)  # never past the target (which is within the limit)
    legs, backwards = [], False
    while remaining > 0:
        played = min(skip, window)
        skip -= played
        n = min(window - played, remaining)
        if n > 0:
            if backwards:  # a reversed leg plays the window from its end: `played` frames from the end are gone
                legs.append(Leg(max(start, end - (played + n) / fps), n / fps, reverse=True))
            else:
                legs.append(Leg(start + played / fps, n / fps))
            remaining -= n
        backwards = extend == "bounce" and not backwards
    return tuple(legs)


def plan_timeline(
    p: MediaProbe, limits: Limits, opts: VideoOptions, fps: float
) -> tuple[tuple[Leg, ...], float, list[Decision], list[str]]:
    """(legs, output seconds, decisions, warnings) for the source window, the target and the duration limit."""
    total = _source_seconds(p)
    start, end, decisions = _window(p, opts, total)
    span, cap, warnings = end - start, limits.video_max_seconds, []
    if opts.target_duration is None:
        if span > cap:
            span = frames_within(cap, fps) / fps  # whole frames: a last partial frame would pass the limit
            warnings.append(
                f"{p.path.name}: {end - start:.3f} s is over the {cap:g} s limit: kept {start:.3f}-"
                f"{start + span:.3f} s, cut {start + span:.3f}-{end:.3f} s"
            )
        return (Leg(start, span),), span, decisions, warnings
    target = opts.target_duration
    if target <= 0 or target > cap:
        raise ValidationError(f"{p.path}: target duration {target:g} s is outside (0, {cap:g}] s (the limit)")
    if target <= span and not (opts.extend and opts.extend_from):
        duration = min(span, frames_within(target, fps) / fps)
        if duration < span:
            decisions.append(
                Decision("cut", f"cut to {duration:.3f} s ({target:.3f} s in whole frames) to match the voice track")
            )
        return (Leg(start, duration),), duration, decisions, warnings
    if opts.extend is None:
        raise ValidationError(
            f"{p.path}: the video ({span:.3f} s) is shorter than the target {target:.3f} s "
            "and no extend mode (loop or bounce) was given"
        )
    legs = _legs(p, start, end, target, opts.extend, fps, opts.extend_from)
    duration = sum(leg.duration for leg in legs)
    decisions.append(
        Decision(
            opts.extend,
            f"{span:.3f} s of video {opts.extend}ed {len(legs)} times to reach "
            f"{duration:.3f} s (target {target:.3f} s)"
            + (f", from frame {opts.extend_from} of the {opts.extend}" if opts.extend_from else ""),
        )
    )
    return legs, duration, decisions, warnings


def read_by_seeking(p: MediaProbe, legs: tuple[Leg, ...], offset: float) -> tuple[bool, Decision | None]:
    """(seek, decision): whether the legs are read with an input seek, or from the file's start. Pure.

    An input seek is fast and lands on the right frame where the container has an index (a long source is not
    decoded from 0 for a cut at 25 s). Without one, ffmpeg guesses a byte position from the bitrate and
    timestamps: in an FLV as ffmpeg writes it even `-ss 0.02` reads nothing, in a 2 s MPEG-TS `-ss 0.5` reads
    nothing, so those are decoded from the start and cut where the decoded timestamps say.
    """
    latest = max(offset + leg.start for leg in legs)
    if latest <= 0:
        return True, None  # nothing to seek to
    if p.container in SEEKABLE_CONTAINERS:
        return True, Decision(
            "seek", f"{p.container} has a seek index: each leg is read from {latest:.3f} s at most by an input seek"
        )
    return False, Decision(
        "seek",
        f"{p.container} has no reliable seek index (a seek lands away from where it "
        f"is asked): the source is read from its start and cut at {latest:.3f} s at "
        "most on the decoded timestamps",
    )


def source_matrix(v: VideoStream) -> tuple[str, str]:
    """(scale's in_color_matrix, reason): the source's YUV matrix as tagged, or as players take an untagged one
    (HD, over 576 lines or 1280 wide: BT.709; smaller: BT.601). Pure."""
    if v.matrix in SOURCE_MATRICES:
        return SOURCE_MATRICES[v.matrix], f"colour matrix {v.matrix} as tagged"
    hd = v.width >= 1280 or v.height > 576
    guess = "bt709" if hd else "bt601"
    what = "untagged" if v.matrix is None else f"tagged {v.matrix!r} (unknown here)"
    return guess, (
        f"colour {what}: read as {guess.upper().replace('BT', 'BT.')}, as players do for {'HD' if hd else 'SD'} video"
    )


def colour_blocker(v: VideoStream) -> str | None:
    """Why a stream cannot be copied for its colour (anything but SDR BT.709 limited range, or untagged)."""
    tags = [t for t in (v.primaries, v.matrix) if t is not None and t != "BT.709"]
    if tags:
        return f"colour {'/'.join(dict.fromkeys(tags))} becomes BT.709"
    if v.color_range == "Full":
        return "full-range colour becomes limited range"
    if v.hdr_format:
        return f"HDR metadata ({v.hdr_format}) on SDR video is dropped"
    return None


def _even_floor(x: float) -> int:
    return max(2, int(x) // 2 * 2)


def output_size(v: VideoStream, max_side: int) -> tuple[int, int]:
    """Display size (rotation and pixel aspect applied), scaled so the longest side fits, never up, even."""
    scale = min(1.0, max_side / max(v.display_width, v.display_height))
    return _even_floor(v.display_width * scale), _even_floor(v.display_height * scale)


def _coded_size(v: VideoStream) -> tuple[int, int]:
    """The decoded picture size once the rotation is applied (before any scaling)."""
    return (v.height, v.width) if v.rotation in (90, 270) else (v.width, v.height)


def _picture_changes(v: VideoStream, size: tuple[int, int], max_side: int, fps_reason: str | None) -> list[Decision]:
    """Everything about the picture that forces a re-encode, each with its reason."""
    out = []
    if v.codec != "AVC" or v.profile != "High" or v.bit_depth != 8 or v.chroma_subsampling != "4:2:0":
        profile = f" {v.profile}" if v.codec == "AVC" and v.profile and v.profile != "High" else ""
        depth = f" {v.bit_depth}-bit" if v.bit_depth else ""
        chroma = f" {v.chroma_subsampling}" if v.chroma_subsampling else ""
        out.append(Decision("codec", f"{v.codec}{profile}{depth}{chroma} becomes H.264 High 8-bit 4:2:0"))
    if fps_reason:
        out.append(Decision("fps", fps_reason))
    if v.scan_type != "progressive":
        out.append(
            Decision("deinterlace", f"scan type {v.scan_type}: deinterlaced (bwdif)")
            if v.scan_type in ("interlaced", "mbaff")
            else Decision("scan", "scan type unknown: re-encoded as progressive")
        )
    if v.rotation:
        out.append(Decision("rotate", f"rotation tag {v.rotation}° applied to the pixels (no tag left)"))
    if abs(v.pixel_aspect_ratio - 1.0) > 0.01:
        out.append(Decision("square pixels", f"pixel aspect {v.pixel_aspect_ratio:.3f} resampled to square pixels"))
    if v.hdr_transfer:
        out.append(Decision("tonemap", f"HDR ({v.hdr_transfer}) tone-mapped to SDR BT.709"))
    if size != (v.display_width, v.display_height):
        longest = max(v.display_width, v.display_height)
        why = (
            f"longest side {longest} px is over the {max_side} px limit"
            if longest > max_side
            else "H.264 4:2:0 needs even dimensions"
        )
        out.append(Decision("scale", f"{v.display_width}x{v.display_height} becomes {size[0]}x{size[1]}: {why}"))
    return out


def _audio_plan(p: MediaProbe, opts: VideoOptions, copy_video: bool) -> tuple[str, int | None, int | None, Decision]:
    """(action, channels, sample rate, decision) for the sound."""
    a = p.audio
    if a is None:
        return "none", None, None, Decision("audio", "the source has no sound")
    if not opts.keep_audio:
        return "none", None, None, Decision("audio", "sound dropped as asked")
    if copy_video and a.codec == "AAC" and a.channels <= 2:
        return "copy", None, None, Decision("audio", "AAC sound copied as it is")
    channels = min(a.channels, 2) or 2
    rate = a.sample_rate if a.sample_rate in (44100, 48000) else 48000
    return (
        "aac",
        channels,
        rate,
        Decision("audio", f"{a.codec} {a.channels} ch {a.sample_rate} Hz encoded as AAC {channels} ch {rate} Hz"),
    )


def _video_bits(max_bytes: int, duration: float, audio_bitrate: int | None) -> float:
    """The bits the picture may use: the byte limit, less the margin and the sound."""
    return max_bytes * SIZE_MARGIN * 8 - (audio_bitrate or 0) * duration


def video_budget(duration: float, limits: Limits, opts: VideoOptions, with_audio: bool) -> tuple[int, int, str]:
    """(maxrate bits/s, bufsize bits, reason): a VBV cap under which one encode lands inside the byte limit.

    A VBV-capped encode spends at most maxrate * duration + bufsize bits, so that is what must fit.
    """
    bits = _video_bits(limits.video_max_bytes, duration, opts.audio_bitrate if with_audio else None)
    maxrate = int(min(opts.max_bitrate, bits / (duration + VBV_BUFFER_SECONDS)))
    if maxrate <= 0:
        raise ValidationError(f"no room for video in {limits.video_max_bytes} bytes over {duration:.1f} s")
    bufsize = int(maxrate * VBV_BUFFER_SECONDS)
    reason = (
        f"CRF {opts.crf} capped at {maxrate / 1e6:.2f} Mbit/s (buffer {bufsize / 1e6:.2f} Mbit) so "
        f"{duration:.2f} s fits in {SIZE_MARGIN:.0%} of {limits.video_max_bytes / 1e6:g} MB"
    )
    return maxrate, bufsize, reason


def plan_video(p: MediaProbe, limits: Limits, opts: VideoOptions = VideoOptions()) -> VideoPlan:
    """Decide everything about the conformed video. Pure: reads only the probe, the limits and the options."""
    v = p.video
    if v is None:
        raise InputError(p.path, "no video stream to conform")
    fps, fps_reason = output_fps(v, opts.max_fps)
    legs, duration, decisions, warnings = plan_timeline(p, limits, opts, fps)
    size = output_size(v, limits.video_max_side)
    changes = _picture_changes(v, size, limits.video_max_side, fps_reason)
    blockers = []
    if opts.force_transcode:
        blockers.append("re-encode asked for")
    if p.container not in COPY_CONTAINERS or p.container not in limits.video_containers:
        blockers.append(f"container {p.container} becomes mp4")
    whole = len(legs) == 1 and legs[0].start == 0 and abs(legs[0].duration - _source_seconds(p)) < 0.5 / fps
    if not whole:
        blockers.append("the timeline changes (cut or extended)")
    elif (p.duration or 0.0) > limits.video_max_seconds:
        blockers.append(
            f"the file lasts {p.duration:.3f} s (longer sound than picture), over the "
            f"{limits.video_max_seconds:g} s limit"
        )
    if v.start > LATE_START_S:
        blockers.append(
            f"the picture starts {v.start:.3f} s into the file (an edit list or fragments): "
            "its timeline is rebuilt from the first frame"
        )
    if v.index:
        blockers.append(f"video stream {v.index + 1} is the real video: the others are left out")
    if p.size_bytes > limits.video_max_bytes * COPY_SIZE_MARGIN:
        blockers.append(f"{p.size_bytes / 1e6:.1f} MB is over the {limits.video_max_bytes / 1e6:g} MB limit")
    colour = colour_blocker(v)
    if colour and not v.hdr_transfer:  # HDR has its own reason (tonemap)
        blockers.append(colour)
    copy = not blockers and not changes
    matrix, matrix_reason = source_matrix(v)
    audio, channels, rate, audio_decision = _audio_plan(p, opts, copy)
    common: dict[str, Any] = {
        "source": p.path,
        "duration": duration,
        "legs": legs,
        "width": size[0],
        "height": size[1],
        "scale": size != _coded_size(v),
        "max_bytes": limits.video_max_bytes,
        "audio": audio,
        "audio_channels": channels,
        "audio_rate": rate,
        "audio_bitrate": opts.audio_bitrate if audio == "aac" else None,
        "warnings": tuple(warnings),
        "stream": v.index,
        "offset": v.start,
        "colour_matrix": matrix,
    }
    if copy:
        tagged = None not in (v.primaries, v.transfer, v.matrix)
        decisions += [
            Decision("copy", "already compliant: streams copied, index moved to the front (+faststart)"),
            audio_decision,
        ]
        if not tagged:
            decisions.append(Decision("colour", f"{matrix_reason}: tagged so in the copy"))
        return VideoPlan(
            mode="copy",
            fps=None,
            rotation=0,
            deinterlace=False,
            tonemap=None,
            crf=None,
            preset=None,
            maxrate=None,
            bufsize=None,
            decisions=tuple(decisions),
            copy_tags=None if tagged else matrix,
            **common,
        )
    maxrate, bufsize, budget_reason = video_budget(duration, limits, opts, audio != "none")
    seek, seek_decision = read_by_seeking(p, legs, v.start)
    why = "; ".join(blockers + [d.what for d in changes])
    colour_reason = "tone-mapped" if v.hdr_transfer else matrix_reason
    decisions += [
        Decision("transcode", f"re-encoded to H.264 High in mp4 ({why})"),
        *changes,
        *([seek_decision] if seek_decision else []),
        Decision("bitrate", budget_reason),
        audio_decision,
        Decision(
            "colour",
            f"{colour_reason}: written as BT.709 limited range with explicit tags; "
            "no HDR side data (mastering display, light level, dynamic metadata) kept",
        ),
    ]
    return VideoPlan(
        mode="transcode",
        fps=fps,
        rotation=v.rotation,
        deinterlace=v.scan_type in ("interlaced", "mbaff"),
        tonemap=v.hdr_transfer,
        crf=opts.crf,
        preset=opts.preset,
        maxrate=maxrate,
        bufsize=bufsize,
        decisions=tuple(decisions),
        seek=seek,
        **common,
    )


def lower_cap(plan: VideoPlan, size_bytes: int) -> VideoPlan:
    """The plan for a second encode after the first came out at `size_bytes`, over the limit. Pure.

    The cap shrinks by how far the picture overshot its share, from whichever is lower: the old cap or the
    budget's own rate (a plan may carry a cap above the budget, e.g. one set by hand).
    """
    assert plan.maxrate is not None  # only a transcode has a size to lower
    bits = _video_bits(plan.max_bytes, plan.duration, plan.audio_bitrate)
    spent = max(1.0, size_bytes * 8 - (plan.audio_bitrate or 0) * plan.duration)
    budget_rate = bits / (plan.duration + VBV_BUFFER_SECONDS)
    maxrate = int(min(plan.maxrate, budget_rate) * min(1.0, bits / spent) * RETRY_SAFETY)
    reason = (
        f"the first encode was {size_bytes / 1e6:.2f} MB, over {plan.max_bytes / 1e6:g} MB: "
        f"cap lowered to {maxrate / 1e6:.2f} Mbit/s"
    )
    return replace(
        plan,
        maxrate=maxrate,
        bufsize=int(maxrate * VBV_BUFFER_SECONDS),
        decisions=(*plan.decisions, Decision("retry", reason)),
    )


# ---- execution ----------------------------------------------------------------------------------------------


def _rotate(stream: Stream, degrees: int) -> Stream:
    if degrees == 90:
        return stream.filter("transpose", "clock")
    if degrees == 180:
        return stream.filter("hflip").filter("vflip")
    if degrees == 270:
        return stream.filter("transpose", "cclock")
    return stream


def _tonemap(stream: Stream, transfer: str) -> Stream:
    """HDR to SDR BT.709: linearize, map the gamut, tone-map (hable), back to BT.709 limited range."""
    return (
        stream.filter("zscale", tin=TONEMAP_TRANSFER[transfer], pin="bt2020", min="bt2020nc", t="linear", npl=100)
        .filter("format", "gbrpf32le")
        .filter("zscale", p="bt709")
        .filter("tonemap", tonemap="hable", desat=0)
        .filter("zscale", t="bt709", m="bt709", r="tv")
    )


def bt709_picture(stream: Stream, plan: VideoPlan) -> Stream:
    """The picture at its output size as 8-bit 4:2:0 BT.709 limited range, its frames tagged so, and with no
    HDR side data left (a tone-mapped picture would otherwise still carry its mastering display)."""
    size = {"w": plan.width, "h": plan.height} if plan.scale else {}
    # after a tone map the frames are RGB: the matrix is the output's only
    stream = stream.filter(
        "scale",
        **size,
        in_color_matrix="auto" if plan.tonemap else plan.colour_matrix,
        out_color_matrix="bt709",
        out_range="tv",
    ).filter("format", "yuv420p")
    for kind in HDR_SIDE_DATA:
        stream = stream.filter("sidedata", mode="delete", type=kind)
    return stream.filter("setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709", range="tv")


def _leg_input(plan: VideoPlan, index: int, leg: Leg) -> Stream:
    """The input of one leg: `-ss start -t duration -i source`, or `-t end -i source` when the plan does not seek.

    Each leg is its own input, demuxer and decoder. ffmpeg-python merges equal input nodes, which would make two
    identical legs (a loop) share one decoder through a `split` that buffers a whole leg in memory (wanted only
    for short legs: leg_reads decides); the node's positional args (never put on the command line) carry the leg
    index to keep them apart.
    """
    assert plan.fps is not None  # a transcode's legs have an output rate
    start = plan.offset + leg.start
    # two frames of slack: the leg is cut to its exact frame count after the fps filter
    read = leg.duration + 2 / plan.fps
    opts: dict[str, Any] = {"filename": media_path(plan.source)}
    if plan.seek and start > 0:
        opts["ss"] = f"{start:.6f}"
    else:
        read += start
    opts["t"] = f"{read:.6f}"
    if plan.rotation:
        opts["display_rotation"] = 0  # we rotate the pixels ourselves; ffmpeg must not do it a second time
    return InputNode(ffmpeg.input.__name__, args=[index], kwargs=opts).stream()


def _leg_sources(plan: VideoPlan, index: int, leg: Leg) -> tuple[Stream, Stream | None]:
    """(video, audio or None) of one leg, starting at the leg's start: by the input seek, or cut from the decoded
    timestamps (the file's timeline, on which plan.offset and the legs are measured)."""
    src = _leg_input(plan, index, leg)
    v, a = src[f"V:{plan.stream}"], src["a:0"] if plan.audio != "none" else None
    start = plan.offset + leg.start
    if plan.seek or start <= 0:
        return v, a
    # from the first kept frame: the fps filter lays its grid from there (ms timestamps would shift it a frame)
    v = v.filter("trim", start=f"{start:.6f}").filter("setpts", "PTS-STARTPTS")
    if a is not None:
        # first_pts=0: silence before a sound that starts late, priming before 0 dropped, so the cut is in place
        a = a.filter("aresample", first_pts=0).filter("atrim", start=f"{start:.6f}").filter("asetpts", "PTS-STARTPTS")
    return v, a


def _leg_streams(plan: VideoPlan, index: int, leg: Leg) -> tuple[Stream, Stream | None]:
    """The filtered video (and audio) of one leg."""
    assert plan.fps is not None  # a transcode's legs have an output rate
    v, a = _leg_sources(plan, index, leg)
    if plan.deinterlace:
        v = v.filter("bwdif", mode="send_frame", parity="auto", deint="all")
    frames = round(leg.duration * plan.fps)
    # a window starting between two source frames gives a first timestamp past zero: the leg is moved back to 0
    v = v.filter("fps", fps=plan.fps).filter("trim", end_frame=frames).filter("setpts", "PTS-STARTPTS")
    v = _rotate(v, plan.rotation)
    if plan.tonemap:
        v = _tonemap(v, plan.tonemap)
    v = bt709_picture(v, plan).filter("setsar", sar=1)
    if a is not None:
        a = a.filter("apad", whole_dur=leg.duration).filter("atrim", duration=leg.duration)
    if leg.reverse:
        v = v.filter("reverse")
        a = a.filter("areverse") if a is not None else None
    return v, a


def leg_reads(plan: VideoPlan) -> list[int]:
    """For each leg, the leg whose read it replays. Pure.

    A leg repeated by a loop or a bounce is read (and decoded) once and replayed from memory when its frames fit
    in SHARED_READ_BYTES: a one-frame clip looped to 30 s would otherwise open 750 decoders on the source.
    """
    frame_bytes = plan.width * plan.height * 3 // 2
    first: dict[Leg, int] = {}
    reads = []
    for i, leg in enumerate(plan.legs):
        small = round(leg.duration * (plan.fps or 0)) * frame_bytes <= SHARED_READ_BYTES
        reads.append(first.setdefault(leg, i) if small else i)
    return reads


def _timeline_streams(plan: VideoPlan) -> list[tuple[Stream, Stream | None]]:
    """(video, audio) per leg, in order; legs sharing a read take the outputs of one split/asplit in turn."""
    reads = leg_reads(plan)
    users = Counter(reads)
    copies: dict[int, tuple[Iterator[Stream], Iterator[Stream] | None]] = {}
    for read, n in users.items():
        v, a = _leg_streams(plan, read, plan.legs[read])
        copies[read] = (_split(v, "split", n), _split(a, "asplit", n) if a is not None else None)
    return [(next(copies[r][0]), next(audio) if (audio := copies[r][1]) is not None else None) for r in reads]


def _split(stream: Stream, name: str, n: int) -> Iterator[Stream]:
    """An iterator over `n` copies of `stream` (the stream itself when n == 1)."""
    if n == 1:
        return iter([stream])
    node = stream.filter_multi_output(name, n)
    return iter([node.stream(k) for k in range(n)])


def build_command(plan: VideoPlan, dst: Path) -> list[str]:
    """The one ffmpeg argv that carries out `plan` into `dst`."""
    fmt = "mov" if dst.suffix.lower() == ".mov" else "mp4"
    common = {"movflags": "+faststart", "map_metadata": -1, "f": fmt}
    audio_opts = (
        {"c:a": "copy"}
        if plan.audio == "copy"
        else {"c:a": "aac", "b:a": plan.audio_bitrate, "ac": plan.audio_channels, "ar": plan.audio_rate}
    )
    if plan.mode == "copy":
        src = ffmpeg.input(media_path(plan.source))
        streams = [src[f"V:{plan.stream}"]] + ([src["a:0"]] if plan.audio != "none" else [])
        tags = {} if plan.copy_tags is None else colour_tags(COPY_TAGS[plan.copy_tags])
        out = ffmpeg.output(
            *streams,
            media_path(dst),
            **{"c:v": "copy"},
            **tags,
            **(audio_opts if plan.audio != "none" else {}),
            **common,
        )
        return compile_stream(out.global_args("-hide_banner"))
    pairs = _timeline_streams(plan)
    with_audio = plan.audio != "none"
    if len(pairs) == 1:
        streams = [s for s in pairs[0] if s is not None]
    else:
        joined = ffmpeg.concat(*[s for pair in pairs for s in pair if s is not None], v=1, a=int(with_audio)).node
        # concat places a leg after the previous one's last timestamp, and a one-frame leg has no length there:
        # every frame is on the output grid already, so it is numbered onto it
        streams = [joined[0].filter("setpts", "N/FRAME_RATE/TB")] + ([joined[1]] if with_audio else [])
    video_opts = {
        "c:v": "libx264",
        "threads:v": X264_THREADS,
        "profile:v": "high",
        "pix_fmt": "yuv420p",
        "preset": plan.preset,
        "crf": plan.crf,
        "maxrate": plan.maxrate,
        "bufsize": plan.bufsize,
        **colour_tags("bt709"),
    }
    out = ffmpeg.output(
        *streams,
        media_path(dst),
        t=f"{plan.duration:.6f}",
        **video_opts,
        **(audio_opts if with_audio else {}),
        **common,
    )
    return compile_stream(out.global_args("-hide_banner"))


def colour_tags(name: str) -> dict[str, str]:
    """Output options stating the colour explicitly (limited range): the encoder's VUI, the mp4's colr box."""
    return {"color_primaries": name, "color_trc": name, "colorspace": name, "color_range": "tv"}


def _encode(plan: VideoPlan, tmp: Path, progress: ProgressFn | None) -> FfmpegRun:
    """One ffmpeg run. The source passed the probe, so ffmpeg failing on it is a damaged or unusual input."""
    try:
        return run_ffmpeg(
            build_command(plan, tmp), what=f"conforming {plan.source.name}", duration=plan.duration, progress=progress
        )
    except ToolError as err:
        log.debug("%s", err.message)
        reason = err.message.rsplit(": ", 1)[-1][:MAX_REASON_CHARS]
        raise InputError(plan.source, f"ffmpeg cannot convert it ({reason})") from None


def execute_video(plan: VideoPlan, dst: str | Path, progress: ProgressFn | None = None) -> VideoResult:
    """Run the plan into `dst` (atomically). A transcode that overshoots the byte limit is re-encoded once;
    one that still overshoots raises ValidationError and leaves nothing behind.

    The plan's warnings (a cut at the limit) are the caller's to show: prepare logs them and puts them in the
    manifest."""
    dst = Path(dst)
    attempts = [plan]
    with atomic_output(dst) as tmp:
        runs = [_encode(plan, tmp, progress)]
        size = tmp.stat().st_size
        if size > plan.max_bytes and plan.mode == "transcode":
            log.warning(
                "%s: %.2f MB is over the %g MB limit, encoding again with a lower cap",
                plan.source.name,
                size / 1e6,
                plan.max_bytes / 1e6,
            )
            attempts.append(lower_cap(plan, size))
            runs.append(_encode(attempts[-1], tmp, progress))
            size = tmp.stat().st_size
        if size > plan.max_bytes:
            raise ValidationError(
                f"{plan.source}: the conformed video is {size / 1e6:.2f} MB, over the "
                f"{plan.max_bytes / 1e6:g} MB limit, even after {len(attempts)} encode(s)"
            )
        output = replace(probe_video(tmp), path=dst)
    return VideoResult(path=dst, plan=attempts[-1], runs=runs, probe=output, size_bytes=size, attempts=attempts)
