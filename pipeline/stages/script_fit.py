"""Stage: does the spoken script fit a talking-portrait clip? Pure decisions, with reasons.

A clip is 5 or 8 s (ImageLimits.durations; 1080p takes 5 s only). The script's speaking time is estimated
(`estimate_speech_seconds`) and may fill `speech_fill` of a clip (a breath before the first word and after
the last; the estimate is rough).

choose_duration(text, resolution, limits, max_chars, requested=None) -> ClipFit
    the shortest allowed clip that holds the speech (or the requested one if it does); ValidationError
    (exit 6) naming the estimate and the fix otherwise.
plan_chain(text, resolution, limits, max_chars) -> ChainPlan
    the script cut at sentence/clause boundaries (`chunk_text`) into clips that each fit, each the
    shortest clip that holds its chunk.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ValidationError
from ..limits import ImageLimits
from ..speech import estimate_speech_seconds
from .text import chunk_text, normalize_text, spoken


@dataclass(frozen=True)
class OptionNames:
    """How a refusal's fixes name the user's options: `lipsync animate`'s flags, or a config job's keys."""

    duration: str = "--duration {}"
    chain: str = "pass --chain"


CLI_OPTION_NAMES = OptionNames()
CONFIG_OPTION_NAMES = OptionNames(duration="duration = {}", chain="set chain = true")


@dataclass(frozen=True)
class ClipFit:
    duration: int  # seconds of video asked for
    speech_seconds: float  # estimated speaking time of the text
    room_seconds: float  # how much speech the clip holds (duration * speech_fill)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChainClip:
    index: int
    text: str  # the chunk as cut: the chunks joined give the normalized script back
    fit: ClipFit

    @property
    def spoken(self) -> str:
        """What is sent as the clip's TTS text."""
        return spoken(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "spoken": self.spoken, "fit": self.fit.to_dict()}


@dataclass(frozen=True)
class ChainPlan:
    resolution: str
    clips: tuple[ChainClip, ...]
    reasons: tuple[str, ...]

    @property
    def seconds(self) -> int:
        return sum(clip.fit.duration for clip in self.clips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "seconds": self.seconds,
            "clips": [c.to_dict() for c in self.clips],
            "reasons": list(self.reasons),
        }


def allowed_durations(resolution: str, limits: ImageLimits) -> tuple[int, ...]:
    """The clip lengths `resolution` takes, shortest first; ValidationError for an unknown resolution."""
    if resolution not in limits.resolutions:
        raise ValidationError(f"resolution {resolution!r} is not one of {', '.join(limits.resolutions)}")
    return limits.durations_at(resolution)


def room(duration: int, limits: ImageLimits) -> float:
    """Seconds of speech a clip of `duration` holds."""
    return duration * limits.speech_fill


def _too_long(
    text: str,
    speech: float,
    resolution: str,
    longest: int,
    limits: ImageLimits,
    requested: int | None,
    names: OptionNames,
) -> ValidationError:
    """The refusal: the estimate, what the clip holds, and the ways out."""
    clip = requested or longest
    held = room(clip, limits)
    keep = max(1, math.floor(len(text) * held / speech))
    fixes = [f"shorten the script to about {keep} characters"]
    if requested is not None and requested < longest:
        fixes.append(f"use {names.duration.format(longest)}")
    if longest < max(limits.durations):
        longer = [r for r in limits.resolutions if max(limits.durations_at(r)) > longest]
        if longer:
            fixes.append(f"use a resolution that takes {max(limits.durations)} s clips ({', '.join(longer)})")
    fixes.append(f"{names.chain} to speak it over several clips")
    return ValidationError(
        f"the script takes about {speech:.1f} s to speak; a {clip} s clip at {resolution} holds "
        f"{held:.1f} s: {', or '.join(fixes)}"
    )


def choose_duration(
    text: str,
    resolution: str,
    limits: ImageLimits,
    max_chars: int,
    requested: int | None = None,
    names: OptionNames = CLI_OPTION_NAMES,
) -> ClipFit:
    """The clip for `text` at `resolution`: `requested` if given and it holds the speech, else the shortest
    allowed one that does. ValidationError with the estimate and the fix when none does."""
    allowed = allowed_durations(resolution, limits)
    if requested is not None and requested not in allowed:
        other = [r for r in limits.resolutions if requested in limits.durations_at(r)]
        where = f" (it is allowed at {', '.join(other)})" if other else ""
        raise ValidationError(
            f"{resolution} does not take {requested} s clips: use "
            f"{' or '.join(names.duration.format(d) for d in allowed)}{where}"
        )
    words = spoken(normalize_text(text))
    if not words:
        raise ValidationError("the script is empty")
    if len(words) > max_chars:
        raise ValidationError(
            f"the script is {len(words)} characters; one clip's TTS text takes at most {max_chars}: "
            f"shorten it, or {names.chain} to speak it over several clips"
        )
    speech = estimate_speech_seconds(words)
    candidates = (requested,) if requested is not None else allowed
    for duration in candidates:
        if speech <= room(duration, limits):
            how = "asked for" if requested is not None else "the shortest that holds it"
            return ClipFit(
                duration,
                round(speech, 3),
                round(room(duration, limits), 3),
                f"about {speech:.1f} s of speech fits a {duration} s clip ({how})",
            )
    raise _too_long(words, speech, resolution, allowed[-1], limits, requested, names)


def plan_chain(text: str, resolution: str, limits: ImageLimits, max_chars: int) -> ChainPlan:
    """Clips that each hold their part of the script, cut at sentence/clause boundaries (as full as the
    longest allowed clip lets them be: fewer clips, fewer joins)."""
    longest = allowed_durations(resolution, limits)[-1]
    chunks = chunk_text(text, max_chars, room(longest, limits))
    clips = tuple(
        ChainClip(i, chunk, choose_duration(chunk, resolution, limits, max_chars)) for i, chunk in enumerate(chunks)
    )
    reasons = [
        f"{len(clips)} clip(s) at {resolution}: each holds at most {room(longest, limits):.1f} s of speech "
        f"({longest} s x {limits.speech_fill:g}) and {max_chars} characters"
    ]
    reasons += [f"clip {c.index}: {c.fit.reason}" for c in clips]
    return ChainPlan(resolution, clips, tuple(reasons))
