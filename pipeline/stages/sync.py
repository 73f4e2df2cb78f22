"""Length policy when a video and a voice track (or a script) of different lengths go into one job.

Pure decisions with reasons; prepare applies them through VideoOptions(target_duration, extend) and the
audio trim/pad of conform_audio.

Modes (`--sync-mode`):
- cut:    the shorter one wins; the longer is trimmed.
- loop:   the audio wins; a shorter video is looped to its length (a longer one is trimmed).
- bounce: like loop, but the video plays forwards then backwards (no jump cut). The default.
- pad:    the video wins; shorter audio is padded with silence (longer audio is trimmed).
Whatever the mode, the result is capped at the strictest duration limit, with a warning naming the cut.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

from ..limits import Limits


class SyncMode(StrEnum):
    CUT = "cut"
    LOOP = "loop"
    BOUNCE = "bounce"
    PAD = "pad"


DEFAULT_SYNC_MODE = SyncMode.BOUNCE
EXTENDING_MODES = (SyncMode.LOOP, SyncMode.BOUNCE)

VideoExtend = Literal["loop", "bounce"]
"""How a video grows to a longer duration: VideoOptions.extend."""


def _extend_of(mode: SyncMode) -> VideoExtend:
    """The VideoOptions.extend value of an extending mode (its own name)."""
    return "loop" if mode == SyncMode.LOOP else "bounce"


def max_job_seconds(limits: Limits) -> float:
    """The longest pair a job may carry: both the video and the audio limit apply."""
    return min(limits.video_max_seconds, limits.audio_max_seconds)


@dataclass(frozen=True)
class SyncPlan:
    mode: SyncMode
    video_seconds: float  # the source video's length (after --start/--end)
    audio_seconds: float  # the voice track's length
    duration: float  # what both prepared files last
    video_extend: VideoExtend | None  # "loop"/"bounce" when the video must grow to `duration`, else None
    audio_pad_seconds: float  # silence appended to the audio
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def video_trimmed(self) -> bool:
        return self.duration < self.video_seconds

    @property
    def audio_trimmed(self) -> bool:
        return self.duration < self.audio_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": str(self.mode)}


def _wanted_duration(video_s: float, audio_s: float, mode: SyncMode) -> tuple[float, str]:
    if abs(video_s - audio_s) < 1e-6:  # equal but for float noise: nothing to pad, extend or cut
        return min(video_s, audio_s), f"video and audio both last {video_s:.3f} s"
    longer, shorter = ("video", "audio") if video_s > audio_s else ("audio", "video")
    if mode is SyncMode.CUT:
        return min(video_s, audio_s), f"cut: the {shorter} is shorter, the {longer} is trimmed to it"
    if mode in EXTENDING_MODES:
        if audio_s > video_s:
            return audio_s, f"{mode}: the video ({video_s:.3f} s) is extended to the audio ({audio_s:.3f} s)"
        return audio_s, f"{mode}: the audio is shorter, the video is trimmed to it ({audio_s:.3f} s)"
    if video_s > audio_s:
        return video_s, f"pad: the audio ({audio_s:.3f} s) is padded with silence to the video ({video_s:.3f} s)"
    return video_s, f"pad: the audio is longer, it is trimmed to the video ({video_s:.3f} s)"


def plan_sync(
    video_seconds: float, audio_seconds: float, mode: SyncMode | str, limits: Limits, *, capped: bool = True
) -> SyncPlan:
    """How long the prepared pair lasts, and how each side gets there. `capped=False`: the whole length, for
    footage that is split into several jobs (each then within the limit)."""
    mode = SyncMode(mode)
    duration, reason = _wanted_duration(video_seconds, audio_seconds, mode)
    reasons, warnings = [reason], []
    cap = max_job_seconds(limits)
    if capped and duration > cap:
        warnings.append(
            f"the pair would last {duration:.3f} s, over the {cap:g} s limit: cut at {cap:g} s "
            f"({duration - cap:.3f} s dropped from the end)"
        )
        duration = cap
    extend = _extend_of(mode) if mode in EXTENDING_MODES and duration > video_seconds else None
    return SyncPlan(
        mode=mode,
        video_seconds=video_seconds,
        audio_seconds=audio_seconds,
        duration=duration,
        video_extend=extend,
        audio_pad_seconds=max(0.0, duration - audio_seconds),
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class TextSpan:
    """The part of the source video that carries one TTS chunk."""

    index: int
    start: float  # seconds in the source video
    end: float  # exclusive; the source range used (after any cut)
    speech_seconds: float  # the chunk's estimated speaking time
    duration: float  # what the prepared video part lasts
    extend: VideoExtend | None  # "loop"/"bounce" when the part is extended to fit the speech
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_text_spans(
    start: float, end: float, speech_seconds: list[float], mode: SyncMode | str, limits: Limits
) -> list[TextSpan]:
    """Cut the source range [start, end) into consecutive parts in proportion to each chunk's speech time.

    A part shorter than its chunk's speech is extended in loop/bounce mode (the TTS would otherwise run
    past the picture); in cut/pad mode it is kept as is. Every part is capped at the duration limit.
    """
    mode = SyncMode(mode)
    total = sum(speech_seconds)
    cap = max_job_seconds(limits)
    spans, done = [], 0.0
    for index, speech in enumerate(speech_seconds):
        part_start = start + (end - start) * done / total
        done += speech
        part_end = end if index == len(speech_seconds) - 1 else start + (end - start) * done / total
        part = part_end - part_start
        reasons = [
            f"chunk {index}: {speech:.2f} s of estimated speech of {total:.2f} s gets "
            f"{part:.3f} s of the video ({part_start:.3f}-{part_end:.3f} s)"
        ]
        warnings = []
        extend: VideoExtend | None
        duration, extend = part, None
        if mode in EXTENDING_MODES and speech > part:
            duration, extend = min(speech, cap), _extend_of(mode)
            reasons.append(f"{mode}: the part is extended to the estimated speech ({duration:.3f} s)")
        elif duration > cap:
            warnings.append(
                f"video part {part_start:.3f}-{part_end:.3f} s is longer than the {cap:g} s limit: "
                f"cut at {part_start + cap:.3f} s ({part - cap:.3f} s dropped)"
            )
            duration, part_end = cap, part_start + cap
        spans.append(TextSpan(index, part_start, part_end, speech, duration, extend, tuple(reasons), tuple(warnings)))
    return spans
