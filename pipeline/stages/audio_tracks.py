"""Which audio track of a file carries the voice: a pure decision with its reason.

In order: the track the user names (`--audio-track N`, `audio_track` in a config; numbered from 1 as
`lipsync probe` lists them), the one track the container flags as default, else the track with the most
speech (conform_audio.measure_speech_shares, the speech-activity measure of the voice check). The choice
and its reason go into the audio plan, so into the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import InputError
from .probe import AudioStream, MediaProbe

# A used track speaking this much less of its length than another gets a warning (the wrong default flag?).
SPEECH_GAP = 0.3
TrackRule = Literal["only", "asked", "default", "most speech", "first"]


@dataclass(frozen=True)
class TrackChoice:
    index: int  # ffmpeg's "a:<index>"
    number: int  # as users name it: index + 1
    rule: TrackRule
    reason: str
    speech_shares: tuple[float, ...] = ()  # per track (by index), when measured: share of its length spoken
    warning: str | None = None  # a flagged or first track that speaks far less than another

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audio_streams(p: MediaProbe) -> tuple[AudioStream, ...]:
    """Every audio stream of the probe (a probe built by hand may carry only `audio`)."""
    return p.audio_streams or ((p.audio,) if p.audio is not None else ())


def describe_track(a: AudioStream) -> str:
    """'audio track 2 (fr, "Dialogue")': how messages and listings name a track."""
    tags = ", ".join(x for x in (a.language, f'"{a.title}"' if a.title else None) if x)
    return f"audio track {a.number}" + (f" ({tags})" if tags else "")


def choose_audio_track(p: MediaProbe, asked: int | None = None, shares: Sequence[float] | None = None) -> TrackChoice:
    """The voice track of `p`: `asked` (a track number from 1), else the single default, else the most speech.

    `shares` (one per track, by index) is the share of each track's length that speaks; without them a file
    with no single default track falls back to its first track, and the reason says so."""
    streams = audio_streams(p)
    if not streams:
        raise InputError(p.path, "has no audio track")
    measured = tuple(shares or ())
    count = len(streams)
    if asked is not None:
        if not 1 <= asked <= count:
            raise InputError(
                p.path,
                f"has {count} audio track{'s' if count > 1 else ''}: there is no audio "
                f"track {asked} (see `lipsync probe`)",
            )
        return TrackChoice(asked - 1, asked, "asked", f"{describe_track(streams[asked - 1])}, as asked", measured)
    if count == 1:
        return TrackChoice(0, 1, "only", "the only audio track", measured)
    defaults = [a for a in streams if a.default]
    if len(defaults) == 1:
        chosen = defaults[0]
        return TrackChoice(
            chosen.index,
            chosen.number,
            "default",
            f"{describe_track(chosen)}: the one flagged as default of {count} tracks",
            measured,
            _quieter_warning(p, streams, chosen.index, measured),
        )
    flagged = "none" if not defaults else f"{len(defaults)}"
    if len(measured) == count:
        best = max(range(count), key=lambda i: (measured[i], -i))
        others = ", ".join(f"track {i + 1} {measured[i]:.0%}" for i in range(count) if i != best)
        return TrackChoice(
            best,
            best + 1,
            "most speech",
            f"{describe_track(streams[best])}: the most speech ({measured[best]:.0%} of its length; "
            f"{others}) of {count} tracks, {flagged} flagged as default",
            measured,
        )
    return TrackChoice(
        0,
        1,
        "first",
        f"{describe_track(streams[0])}: the first of {count} tracks ({flagged} flagged "
        "as default, speech not measured)",
        measured,
    )


def _quieter_warning(
    p: MediaProbe, streams: Sequence[AudioStream], chosen: int, shares: tuple[float, ...]
) -> str | None:
    """A warning when another track speaks for SPEECH_GAP more of its length than the chosen one."""
    if len(shares) != len(streams):
        return None
    best = max(range(len(shares)), key=lambda i: shares[i])
    if shares[best] - shares[chosen] < SPEECH_GAP:
        return None
    return (
        f"{p.path.name}: {describe_track(streams[chosen])} is used as the voice but speaks {shares[chosen]:.0%} "
        f"of its length, {describe_track(streams[best])} {shares[best]:.0%}: if the voice is there, "
        f"ask for it (--audio-track {best + 1})"
    )
