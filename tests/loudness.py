"""Independent audio measurements for tests: ffmpeg's loudnorm in its measuring pass (not the ebur128 meter, which
the code under test uses).

Also `voice_layout(path, [("speech", 2.0), ("silence", 1.5), ...])`: a voice track with speech where the layout says.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.ffmpeg import ffmpeg_exe
from pipeline.speech import synth_speech, write_wav

_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}")


@dataclass(frozen=True)
class R128:
    integrated: float  # LUFS
    true_peak: float  # dBTP


def r128_of(path: str | Path, *, start: float | None = None, duration: float | None = None) -> R128:
    """Integrated loudness and true peak of the first audio stream (optionally of a time window)."""
    window = (["-ss", str(start)] if start is not None else []) + (["-t", str(duration)] if duration else [])
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        *window,
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-af",
        "loudnorm=print_format=json",
        "-f",
        "null",
        "-",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace").stderr
    found = _JSON.search(out)
    if not found:
        raise AssertionError(f"loudnorm measured nothing in {path}: {out[-300:]}")
    figures = json.loads(found.group(0))
    return R128(float(figures["input_i"]), float(figures["input_tp"]))


def voice_layout(path: str | Path, layout: list[tuple[str, float]], *, rate: int = 48000) -> Path:
    """A mono WAV of synthetic speech and digital silence, in the order and lengths of `layout`.

    Each speech part is trimmed of synth_speech's own lead-in, so speech starts exactly where the layout says.
    """
    parts = []
    for seed, (kind, seconds) in enumerate(layout):
        if kind == "speech":
            voiced = synth_speech(seconds + 0.05, sample_rate=rate, seed=seed)[int(0.05 * rate) :]
            parts.append(voiced[: int(seconds * rate)])
        else:
            parts.append(np.zeros(int(seconds * rate), dtype=np.float32))
    write_wav(path, np.concatenate(parts), rate)
    return Path(path)
