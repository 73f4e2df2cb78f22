"""Audio alignment: decode audio to mono PCM through an ffmpeg pipe and measure the offset between two tracks.

Used by mux (where to place our master audio against the provider's returned audio) and by verify (does the
delivered audio still line up with the audio the provider synced the lips to).

Sign convention: `measure_offset(reference, other).seconds > 0` means the same sound happens *later* in `other`
than in `reference` (so `reference` must be delayed by that much to line up with `other`).
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
import numpy.typing as npt

from ..errors import ToolError
from ..ffmpeg import compile_stream

log = logging.getLogger("lipsync.avsync")

ANALYSIS_RATE = 16000
"""Speech carries its timing well below 8 kHz; 16 kHz gives 62.5 µs resolution before interpolation."""

MAX_LAG_S = 2.0
WINDOW_S = 20.0
SEARCH_S = 120.0
"""How much of a reference is read: provider results are at most 30 s; the window is chosen inside it."""
RELIABLE_CORRELATION = 0.3
"""Below this the two tracks are not the same recording (lossy re-encodes of one score ~0.9 or more)."""


@dataclass(frozen=True)
class OffsetMeasurement:
    seconds: float  # > 0: the sound is later in `other` than in `reference`
    correlation: float  # normalized cross-correlation at the peak, -1..1 (1 = identical up to gain)
    peak_to_sidelobe: float  # peak over the highest correlation farther than 5 ms from it
    window_s: float  # how much audio was compared
    max_lag_s: float  # the search range, ±
    commands: tuple[tuple[str, ...], ...] = ()  # the decodes it took, for the manifest

    @property
    def reliable(self) -> bool:
        return self.correlation >= RELIABLE_CORRELATION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reliable": self.reliable}


def pcm_command(
    path: str | os.PathLike[str], *, sample_rate: int = ANALYSIS_RATE, start: float = 0.0, duration: float | None = None
) -> list[str]:
    """argv that writes the first audio stream of `path`, from `start` seconds, as mono f32le on stdout.

    `first_pts=0` pads with silence when the audio starts after t=0 (and drops samples before it),
    so sample 0 is time `start` of the file, not the first audio packet.
    """
    window = ({"ss": f"{start:.6f}"} if start else {}) | ({"t": duration} if duration else {})
    out = (
        ffmpeg.input(str(path), **window)["a:0"]
        .filter("aresample", sample_rate, first_pts=0)
        .output("pipe:", format="f32le", ac=1, ar=sample_rate, map_metadata=-1)
    )
    return compile_stream(out.global_args("-nostdin", "-v", "error"))


def _run_pcm(argv: list[str], path: str | os.PathLike[str]) -> npt.NDArray[np.float64]:
    proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError(f"{path}: cannot decode audio: {reason[-1] if reason else f'exit {proc.returncode}'}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float64)


def decode_pcm(
    path: str | os.PathLike[str], *, sample_rate: int = ANALYSIS_RATE, start: float = 0.0, duration: float | None = None
) -> npt.NDArray[np.float64]:
    """The first audio stream of `path` as mono float64 samples on the file's timeline (see `pcm_command`)."""
    return _run_pcm(pcm_command(path, sample_rate=sample_rate, start=start, duration=duration), path)


def _sliding_energy(x: npt.NDArray[np.float64], width: int, count: int) -> npt.NDArray[np.float64]:
    """sum(x[k:k+width]**2) for k in 0..count-1 (zero-padded past the end)."""
    padded = np.concatenate([x, np.zeros(max(0, count + width - len(x)))])
    c: npt.NDArray[np.float64] = np.concatenate([[0.0], np.cumsum(padded**2)])
    return c[width : width + count] - c[:count]


def _loudest_start(x: npt.NDArray[np.float64], width: int, *, first: int, last: int, step: int) -> int:
    """The start in [first, last] (every `step` samples) of the `width`-long stretch of `x` with the most energy."""
    starts = np.arange(first, last + 1, max(1, step))
    c = np.concatenate([[0.0], np.cumsum(x**2)])
    ends = np.minimum(starts + width, len(x))
    return int(starts[np.argmax(c[ends] - c[np.minimum(starts, len(x))])])


def fft_length(n: int) -> int:
    """The smallest length >= n with no prime factor over 5: the FFT splits it into small factors. A window of
    round seconds usually is one (20 s + 2 x 2 s at 16 kHz: 384000), and twice as fast as the next power of two."""
    best = 1 << max(0, n - 1).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            length = threes
            while length < n:
                length *= 2
            best = min(best, length)
            threes *= 3
        fives *= 5
    return best


def measure_offset_samples(
    reference: npt.NDArray[np.float64],
    other: npt.NDArray[np.float64],
    sample_rate: int,
    *,
    max_lag_s: float = MAX_LAG_S,
    window_s: float = WINDOW_S,
) -> OffsetMeasurement:
    """Find the lag of `other` against `reference` by FFT cross-correlation within ±max_lag_s.

    The loudest window of `other` (so a long silent intro does not hide the speech) is slid over the matching
    stretch of `reference`, ±max_lag; each lag's correlation is normalized by the energy of the reference part
    it overlaps, so a truncated or quieter copy still scores near 1. The peak is refined by parabolic
    interpolation.
    """
    max_lag = int(max_lag_s * sample_rate)
    usable = min(len(other), len(reference))
    width = min(int(window_s * sample_rate), usable - max_lag)
    if width < sample_rate // 4:
        # Too short to leave room for the search range: compare what there is, with a smaller range.
        max_lag = max(0, usable // 4)
        width = usable - max_lag
    if width <= 0:
        return OffsetMeasurement(0.0, 0.0, 0.0, 0.0, max_lag_s)
    at = _loudest_start(other, width, first=max_lag, last=max(max_lag, usable - width), step=sample_rate // 10)
    # the template other[at : at+width] lines up with reference[at - lag : ...]: span index max_lag - lag
    template = other[at : at + width] - np.mean(other[at : at + width])
    span = reference[at - max_lag : at + width + max_lag]
    span = span - np.mean(span)
    # circular correlation: with n >= width + 2*max_lag, the lags wanted (0..2*max_lag) never wrap around
    n = fft_length(width + 2 * max_lag)
    corr_full = np.fft.irfft(np.fft.rfft(span, n) * np.conj(np.fft.rfft(template, n)), n)
    starts = np.arange(2 * max_lag + 1)  # reference start index s = max_lag - lag
    corr = corr_full[starts]
    energy = _sliding_energy(span, width, len(starts))
    denom = np.sqrt(np.maximum(energy, 1e-12) * max(float(np.sum(template**2)), 1e-12))
    ncc = corr / denom
    # Only trust lags where the reference window has real content (avoid dividing silence by silence).
    ncc[energy < 1e-6 * max(float(np.max(energy)), 1e-12)] = 0.0
    best = int(np.argmax(ncc))
    frac = 0.0
    if 0 < best < len(ncc) - 1:
        a, b, c = ncc[best - 1], ncc[best], ncc[best + 1]
        if a - 2 * b + c < 0:
            frac = 0.5 * (a - c) / (a - 2 * b + c)
    lag_samples = max_lag - (best + frac)
    guard = max(1, int(0.005 * sample_rate))
    side = np.concatenate([ncc[: max(0, best - guard)], ncc[best + guard + 1 :]])
    sidelobe = float(np.max(np.abs(side))) if side.size else 0.0
    return OffsetMeasurement(
        seconds=float(lag_samples / sample_rate),
        correlation=float(ncc[best]),
        peak_to_sidelobe=float(ncc[best] / max(sidelobe, 1e-6)),  # finite: it goes into JSON
        window_s=width / sample_rate,
        max_lag_s=max_lag / sample_rate,
    )


def measure_offset(
    reference: str | Path,
    other: str | Path,
    *,
    other_start: float = 0.0,
    max_lag_s: float = MAX_LAG_S,
    window_s: float = WINDOW_S,
    sample_rate: int = ANALYSIS_RATE,
) -> OffsetMeasurement:
    """Offset of the audio in file `other` (from `other_start` seconds on) against the audio in file `reference`
    (see module docstring)."""
    ref_command = pcm_command(reference, sample_rate=sample_rate, duration=SEARCH_S)
    ref = _run_pcm(ref_command, reference)
    # only as much of `other` as can line up with the reference
    other_command = pcm_command(
        other, sample_rate=sample_rate, start=other_start, duration=len(ref) / sample_rate + max_lag_s
    )
    oth = _run_pcm(other_command, other)
    commands = (ref_command, other_command)
    result = measure_offset_samples(ref, oth, sample_rate, max_lag_s=max_lag_s, window_s=window_s)
    log.debug("offset %s vs %s: %+.4f s (r=%.3f)", other, reference, result.seconds, result.correlation)
    return replace(result, commands=tuple(tuple(argv) for argv in commands))
