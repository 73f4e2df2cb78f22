"""The cut plan for footage longer than one provider job: where to split it, and why.

`plan_cuts` is pure. Time is counted in frames at an exact rational rate (30000/1001 for 29.97), so a
segment is [start_frame, end_frame) and its seconds are exact fractions: no float drift over ten minutes.
Cues come in seconds on the same timeline (from the first frame) and are snapped to frames here.

How each cut is chosen: k = ceil(frames / max_frames) segments, or more where there are cues to move the
cuts to and k full segments would not leave every cut CUT_ROOM_S (or BALANCE of a segment) of room: 600 s
at 25 fps in jobs of 30 s would pin every cut to its exact 30 s mark, mid-word (`segment_count`). After the
previous cut at p, with R frames and r segments left, the balanced point is p + R/r. The cut's window is
every frame that keeps the rest feasible (each segment between min_frames and max_frames, each later cut
keeping its room) and lies within BALANCE of the balanced length from the balanced point. Inside the
window, first match wins:
  1. a pause in the speech: the longest silence with a frame in the window, cut at its middle;
  2. a sentence end (scripts): the one nearest the balanced point;
  3. a shot change (measured from the picture): the one nearest the balanced point;
  4. the quietest moment of the loudness envelope;
  5. the balanced point itself.

Two thin executors measure the cues that speech activity does not give: `measure_shot_changes` (ffmpeg's
scene score) and `measure_loudness` (RMS per step of the decoded sound).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from ..errors import ValidationError
from ..ffmpeg import FfmpegRun, compile_stream, media_path, run_ffmpeg
from ..limits import Limits
from .avsync import decode_pcm
from .conform_audio import SpeechActivity, loudness_levels
from .conform_video import SIZE_MARGIN, VBV_BUFFER_SECONDS
from .sync import max_job_seconds

DEFAULT_MIN_SECONDS = 3.0
CUT_ROOM_S = 5  # room each cut keeps to move to a cue (or BALANCE of a segment, if less); segments are added for it
BALANCE = Fraction(1, 4)  # a cut may move this share of the balanced length away from the balanced point
SCENE_THRESHOLD = 0.3  # ffmpeg's scene score (0..1) above which a frame starts a new shot
SCENE_WIDTH = 160  # the picture is scored at this width: a cut is as visible, the decode cheaper
LOUDNESS_STEP = 0.05  # seconds per level of the loudness envelope
LOUDNESS_RATE = 8000  # Hz: enough to tell loud from quiet
_NTSC_BASES = (24, 30, 48, 60, 120)


class CutKind(StrEnum):
    PAUSE = "pause"
    SENTENCE_END = "sentence_end"
    SHOT_CHANGE = "shot_change"
    QUIETEST = "quietest"
    BALANCED = "balanced"
    SOURCE_END = "source_end"


WITHOUT_A_BETTER_CUE = (CutKind.QUIETEST, CutKind.BALANCED)  # a shot change in their window would win


def windows_wanting_shots(plan: CutPlan) -> tuple[tuple[Fraction, Fraction], ...]:
    """The windows (seconds) of the cuts that found no pause or sentence end: where a shot change would be
    the better cut, so where measuring the picture can pay off."""
    return tuple(
        (Fraction(s.cut.window[0]) / plan.rate, Fraction(s.cut.window[1]) / plan.rate)
        for s in plan.segments
        if s.cut.kind in WITHOUT_A_BETTER_CUE
    )


def frame_rate(fps: float | str | Fraction) -> Fraction:
    """An exact frame rate: 29.97 (as MediaInfo rounds it) is 30000/1001, 25.0 is 25, "24000/1001" is itself."""
    rate = Fraction(fps)
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(rate - ntsc) < Fraction(1, 200):
            return ntsc
    rate = rate.limit_denominator(1001)
    if rate <= 0:
        raise ValidationError(f"frame rate {fps!r} is not positive")
    return rate


def sample_at(frame: int, rate: Fraction, sample_rate: int) -> int:
    """The audio sample where `frame` starts: the nearest one, the same for both segments of a cut."""
    return round(frame * sample_rate / rate)


@dataclass(frozen=True)
class LoudnessEnvelope:
    step: float  # seconds per level
    levels_db: tuple[float, ...]  # RMS dBFS of [i*step, (i+1)*step), SILENCE_FLOOR_DB for digital silence

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "levels": len(self.levels_db)}


@dataclass(frozen=True)
class CutCues:
    """What the planner may cut at, in seconds from the first frame. Everything is optional."""

    pauses: tuple[tuple[float, float], ...] = ()  # (start, end) silences of the voice
    sentence_ends: tuple[float, ...] = ()
    shot_changes: tuple[float, ...] = ()  # the first frame of each new shot
    loudness: LoudnessEnvelope | None = None


def pauses_of(activity: SpeechActivity) -> tuple[tuple[float, float], ...]:
    """The silences of a voice track: before its first span, between spans, after the last."""
    bounds = [0.0, *(t for span in activity.spans for t in span), activity.seconds]
    return tuple((a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True) if b > a)


@dataclass(frozen=True)
class Cut:
    frame: int
    kind: CutKind
    reason: str
    window: tuple[int, int]  # the frames this cut could take (both included)

    def to_dict(self, rate: Fraction) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "seconds": round(float(self.frame / rate), 6),
            "kind": str(self.kind),
            "reason": self.reason,
            "window": list(self.window),
        }


@dataclass(frozen=True)
class PlannedSegment:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    rate: Fraction
    cut: Cut  # where the segment ends, and why

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start(self) -> Fraction:
        return self.start_frame / self.rate

    @property
    def end(self) -> Fraction:
        return self.end_frame / self.rate

    @property
    def duration(self) -> Fraction:
        return self.frames / self.rate

    def samples(self, sample_rate: int) -> tuple[int, int]:
        """[first, end) samples of this segment in a track that starts with the first frame."""
        return sample_at(self.start_frame, self.rate, sample_rate), sample_at(self.end_frame, self.rate, sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start": round(float(self.start), 6),
            "end": round(float(self.end), 6),
            "duration": round(float(self.duration), 6),
            "cut_reason": self.cut.reason,
            "cut": self.cut.to_dict(self.rate),
        }


@dataclass(frozen=True)
class CutPlan:
    rate: Fraction
    frames: int  # the whole source
    max_frames: int
    min_frames: int
    segments: tuple[PlannedSegment, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": f"{self.rate.numerator}/{self.rate.denominator}",
            "frames": self.frames,
            "max_frames": self.max_frames,
            "min_frames": self.min_frames,
            "segments": [s.to_dict() for s in self.segments],
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CutPlan:
        """The plan `to_dict` wrote (e.g. kept with a cached prepare)."""
        rate = Fraction(d["rate"])
        segments = tuple(
            PlannedSegment(
                s["index"],
                s["start_frame"],
                s["end_frame"],
                rate,
                Cut(s["cut"]["frame"], CutKind(s["cut"]["kind"]), s["cut"]["reason"], tuple(s["cut"]["window"])),
            )
            for s in d["segments"]
        )
        return cls(rate, d["frames"], d["max_frames"], d["min_frames"], segments, tuple(d["reasons"]))


def max_segment_seconds(
    limits: Limits, *, video_bitrate: int | None = None, audio_bitrate: int = 0
) -> tuple[float, str]:
    """The longest segment every limit allows, and which limit decides.

    With a planned video bitrate (bits/s), the byte limit bounds the length too, counted as conform_video
    spends it: a VBV-capped encode uses at most bitrate × (seconds + buffer) of SIZE_MARGIN of the limit."""
    cap = max_job_seconds(limits)
    reason = f"a job carries at most {cap:g} s (the video and audio duration limits)"
    if video_bitrate:
        bits = limits.video_max_bytes * SIZE_MARGIN * 8 - video_bitrate * VBV_BUFFER_SECONDS
        by_size = bits / (video_bitrate + audio_bitrate)
        if by_size < cap:
            cap = by_size
            reason = (
                f"{SIZE_MARGIN:.0%} of {limits.video_max_bytes / 1e6:g} MB holds {by_size:.2f} s at "
                f"{video_bitrate / 1e6:.2f} Mbit/s video + {audio_bitrate / 1e3:g} kbit/s audio"
            )
    if cap <= 0:
        raise ValidationError(f"no segment fits: {reason}")
    return cap, reason


def plan_cuts(
    seconds: float,
    fps: float | str | Fraction,
    limits: Limits,
    *,
    cues: CutCues = CutCues(),
    min_seconds: float = DEFAULT_MIN_SECONDS,
    video_bitrate: int | None = None,
    audio_bitrate: int = 0,
) -> CutPlan:
    """Split `seconds` of footage at `fps` into segments inside every limit, each cut at the best cue."""
    rate = frame_rate(fps)
    total = round(Fraction(seconds) * rate)
    if total <= 0:
        raise ValidationError(f"nothing to cut: {seconds} s at {float(rate):g} fps is no frame")
    cap, cap_reason = max_segment_seconds(limits, video_bitrate=video_bitrate, audio_bitrate=audio_bitrate)
    max_frames = math.floor(Fraction(cap) * rate)
    if max_frames < 2:
        raise ValidationError(f"a segment could hold {max_frames} frame(s): {cap_reason}")
    reasons = [f"segments of at most {max_frames} frames ({float(max_frames / rate):.3f} s): {cap_reason}"]
    min_frames = math.ceil(Fraction(min_seconds) * rate)
    if min_frames > max_frames // 2:
        min_frames = max_frames // 2
        reasons.append(
            f"minimum lowered from {min_seconds:g} s to {float(min_frames / rate):.3f} s, half the "
            f"longest segment, so any length splits into segments above it"
        )
    min_frames = max(1, min_frames)
    if total <= max_frames:
        reasons.append(f"the whole source ({float(total / rate):.3f} s) fits in one segment")
        cuts = [Cut(total, CutKind.SOURCE_END, "the end of the source", (total, total))]
    else:
        count, reserve, why = segment_count(total, max_frames, min_frames, rate, cues)
        cuts = _cuts(total, count, reserve, max_frames, min_frames, rate, cues)
        reasons.append(f"{count} balanced segments of about {float(total / count / rate):.2f} s{why}")
    starts = [0, *(c.frame for c in cuts[:-1])]
    segments = tuple(
        PlannedSegment(i, start, cut.frame, rate, cut) for i, (start, cut) in enumerate(zip(starts, cuts, strict=True))
    )
    return CutPlan(rate, total, max_frames, min_frames, segments, tuple(reasons))


def segment_count(total: int, max_frames: int, min_frames: int, rate: Fraction, cues: CutCues) -> tuple[int, int, str]:
    """How many segments a source longer than one takes, the room (frames) each cut keeps for every later
    one, and why more than the fewest (else "").

    A cut that lands early to reach a pause spends room the later cuts need: k segments of at most max_frames
    leave k * max_frames - total frames of it in all, and once it is spent each later cut is pinned to its
    mark. So, where there are cues to move cuts to, segments are added until every cut can keep `room`."""
    fewest = -(-total // max_frames)
    if not (cues.pauses or cues.sentence_ends or cues.shot_changes or cues.loudness is not None):
        return fewest, 0, ""
    room = math.floor(min(CUT_ROOM_S * rate, BALANCE * max_frames))
    count = fewest
    while count * max_frames - total < (count - 1) * room and (count + 1) * min_frames <= total:
        count += 1
    reserve = min(room, (count * max_frames - total) // (count - 1))
    if count == fewest:
        return count, reserve, ""
    return (
        count,
        reserve,
        (
            f": {count - fewest} more than the fewest ({fewest}), whose full segments would leave the cuts "
            f"{float((fewest * max_frames - total) / rate):.2f} s of room in all; each cut keeps "
            f"{float(reserve / rate):.2f} s for moving the later ones to a pause or another cue"
        ),
    )


def _cuts(
    total: int, count: int, reserve: int, max_frames: int, min_frames: int, rate: Fraction, cues: CutCues
) -> list[Cut]:
    """The `count` cuts of a source longer than one segment, the last one being its end.

    Invariant: with r segments left, r × min_frames ≤ rest ≤ r × max_frames - (r - 1) × reserve, so the
    balanced point is always inside the feasible window (min_frames ≤ max_frames / 2 makes it hold at the
    start; segment_count chooses the reserve so that it does)."""
    cuts, previous = [], 0
    for left in range(count, 1, -1):
        rest = total - previous
        balanced = previous + Fraction(rest, left)
        slack = max(BALANCE * Fraction(rest, left), Fraction(1))
        earliest = total - (left - 1) * max_frames + (left - 2) * reserve  # the later cuts keep their room
        lo = max(previous + min_frames, earliest, math.ceil(balanced - slack))
        hi = min(previous + max_frames, total - (left - 1) * min_frames, math.floor(balanced + slack))
        cut = _choose(lo, hi, balanced, rate, cues)
        cuts.append(cut)
        previous = cut.frame
    return [*cuts, Cut(total, CutKind.SOURCE_END, "the end of the source", (total, total))]


Found = tuple[int, CutKind, str] | None  # a cue's frame, its kind and why


def _choose(lo: int, hi: int, balanced: Fraction, rate: Fraction, cues: CutCues) -> Cut:
    found = (
        _at_pause(lo, hi, balanced, rate, cues)
        or _at_nearest(cues.sentence_ends, CutKind.SENTENCE_END, "sentence end", lo, hi, balanced, rate)
        or _at_nearest(cues.shot_changes, CutKind.SHOT_CHANGE, "shot change", lo, hi, balanced, rate)
        or _at_quietest(lo, hi, balanced, rate, cues)
        or (
            min(max(round(balanced), lo), hi),
            CutKind.BALANCED,
            "no pause, sentence end, shot change or loudness measure: the balanced point",
        )
    )
    frame, kind, why = found
    return Cut(frame, kind, f"{why}, in the window {float(lo / rate):.3f}-{float(hi / rate):.3f} s", (lo, hi))


def _at_pause(lo: int, hi: int, balanced: Fraction, rate: Fraction, cues: CutCues) -> Found:
    best = None
    for a, b in cues.pauses:
        first = max(lo, math.ceil(Fraction(a) * rate))
        last = min(hi, math.floor(Fraction(b) * rate))
        if first > last:
            continue
        frame = min(max(round((Fraction(a) + Fraction(b)) / 2 * rate), first), last)
        key = (-(b - a), abs(frame - balanced))
        if best is None or key < best[0]:
            best = (key, frame, f"the middle of the longest pause in the speech ({a:.3f}-{b:.3f} s, {b - a:.2f} s)")
    return None if best is None else (best[1], CutKind.PAUSE, best[2])


def _at_nearest(
    times: tuple[float, ...], kind: CutKind, what: str, lo: int, hi: int, balanced: Fraction, rate: Fraction
) -> Found:
    frames = [f for f in (round(Fraction(t) * rate) for t in times) if lo <= f <= hi]
    if not frames:
        return None
    frame = min(frames, key=lambda f: (abs(f - balanced), f))
    return frame, kind, f"the {what} nearest the balanced point ({float(frame / rate):.3f} s)"


def _at_quietest(lo: int, hi: int, balanced: Fraction, rate: Fraction, cues: CutCues) -> Found:
    env = cues.loudness
    if env is None or not env.levels_db:
        return None
    step = Fraction(env.step)
    first = math.floor(lo / rate / step)
    last = min(math.floor(hi / rate / step), len(env.levels_db) - 1)
    best = None
    for i in range(first, last + 1):
        frame = min(max(round((i + Fraction(1, 2)) * step * rate), lo), hi)
        key = (env.levels_db[i], abs(frame - balanced))
        if best is None or key < best[0]:
            best = (key, frame)
    if best is None:
        return None
    return best[1], CutKind.QUIETEST, f"the quietest moment ({best[0][0]:.1f} dBFS) of a stretch with no pause"


# ---- measures (thin executors) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShotChanges:
    times: tuple[float, ...]  # seconds from the first frame, each the first frame of a new shot
    threshold: float
    run: FfmpegRun


_PTS_TIME = re.compile(r"\bpts_time:(-?[0-9.]+)")


def measure_shot_changes(
    path: str | Path,
    *,
    threshold: float = SCENE_THRESHOLD,
    stream: int = 0,
    start: float = 0.0,
    duration: float | None = None,
) -> ShotChanges:
    """The frames where the picture changes shot: ffmpeg's scene score over `threshold`, timed from the
    first frame of video stream `V:<stream>` (the same origin as the cut plan), or from `start` seconds of the
    file (an input seek: only that stretch is decoded) with the times given from the file's `start`."""
    window = {"t": f"{duration:.6f}"} if duration else {}
    if start > 0:
        window["ss"] = f"{start:.6f}"
    with tempfile.TemporaryDirectory(prefix="lipsync-shots-") as scratch:
        found = Path(scratch) / "shots.txt"
        video = (
            ffmpeg.input(media_path(path), **window)[f"V:{stream}"]
            .filter("setpts", "PTS-STARTPTS")
            .filter("scale", SCENE_WIDTH, -2)
            .filter("select", f"gt(scene,{threshold})")
            .filter("metadata", mode="print", file=str(found))
        )
        argv = compile_stream(video.output("-", f="null").global_args("-hide_banner", "-nostats"))
        run = run_ffmpeg(argv, what=f"finding the shot changes of {Path(path).name}")
        text = found.read_text(encoding="utf-8") if found.exists() else ""
    return ShotChanges(tuple(start + float(t) for t in _PTS_TIME.findall(text)), threshold, run)


def measure_loudness(path: str | Path, *, step: float = LOUDNESS_STEP) -> LoudnessEnvelope:
    """The RMS level of the first audio stream per `step` seconds, from t=0 of the file's timeline."""
    samples = decode_pcm(path, sample_rate=LOUDNESS_RATE)
    return LoudnessEnvelope(step, loudness_levels(samples, LOUDNESS_RATE, step))
