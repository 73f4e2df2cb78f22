"""The 15 documented TTS voices. Users name a voice; each provider adapter maps it to what it takes."""

from __future__ import annotations

import difflib

from .errors import ValidationError

# PixVerse speaker ids, as documented (../shared/providers.md). "Auto" has no numeric id.
VOICE_IDS: dict[str, str] = {
    "Emily": "1",
    "James": "2",
    "Isabella": "3",
    "Liam": "4",
    "Chloe": "5",
    "Adrian": "6",
    "Harper": "7",
    "Ava": "8",
    "Sophia": "9",
    "Julia": "10",
    "Mason": "11",
    "Jack": "12",
    "Oliver": "13",
    "Ethan": "14",
    "Auto": "Auto",
}
VOICE_NAMES: tuple[str, ...] = tuple(VOICE_IDS)


def resolve_voice(name: str) -> str:
    """Canonical voice name for `name` (case-insensitive), or a ValidationError with a did-you-mean."""
    wanted = name.strip()
    for voice in VOICE_NAMES:
        if voice.lower() == wanted.lower():
            return voice
    if wanted in VOICE_IDS.values():
        return next(v for v, i in VOICE_IDS.items() if i == wanted)
    close = difflib.get_close_matches(wanted.capitalize(), VOICE_NAMES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; choose one of {', '.join(VOICE_NAMES)}"
    raise ValidationError(f"unknown speaker {name!r}{hint}")
