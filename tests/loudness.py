"""Independent audio measurements for tests: ffmpeg's ebur128 meter (not loudnorm, which the code under test uses)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.ffmpeg import ffmpeg_exe

_SUMMARY_I = re.compile(r"Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS")
_SUMMARY_PEAK = re.compile(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS")


@dataclass(frozen=True)
class Ebur128:
    integrated: float   # LUFS
    true_peak: float    # dBTP


def ebur128(path: str | Path, *, start: float | None = None, duration: float | None = None) -> Ebur128:
    """Integrated loudness and true peak of the first audio stream (optionally of a time window)."""
    window = (["-ss", str(start)] if start is not None else []) + (["-t", str(duration)] if duration else [])
    argv = [ffmpeg_exe(), "-hide_banner", "-nostats", *window, "-i", str(path), "-map", "0:a:0",
            "-af", "ebur128=peak=true", "-f", "null", "-"]
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace").stderr
    i, peak = _SUMMARY_I.findall(out), _SUMMARY_PEAK.findall(out)
    if not i or not peak:
        raise AssertionError(f"ebur128 measured nothing in {path}: {out[-300:]}")
    return Ebur128(float(i[-1]), float(peak[-1]))
