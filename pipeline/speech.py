"""Speech for TTS stand-ins: espeak-ng when installed, else a speech-like synthetic signal.

Used by the emulator (the TTS track of a result), the tests and the samples. The synthetic signal is
voiced syllables (a glottal pulse train through vowel formants) separated by word gaps, so loudness,
silence detection and cross-correlation behave as they do on real dialogue.
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .fsutil import atomic_output

LATIN_CHARS_PER_SECOND = 14.0  # ~150 words per minute
CJK_CHARS_PER_SECOND = 4.5


ASCII_PAUSE_MARKS = b".!?,;:"
PAUSE_MARKS = ASCII_PAUSE_MARKS.decode() + "。！？、，；："
_ASCII_SPACES = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.isspace() is true for in ASCII


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalnum()


def speech_counts(text: str) -> tuple[int, int, int]:
    """(CJK characters, other non-space characters, pause marks) of `text`: what its speaking time is made
    of. ASCII text is counted by bytes.translate (C speed: the chunker calls this on every window)."""
    if text.isascii():
        data = text.encode("ascii")
        return 0, len(data.translate(None, _ASCII_SPACES)), len(data) - len(data.translate(None, ASCII_PAUSE_MARKS))
    cjk = sum(1 for ch in text if _is_cjk(ch))
    other = sum(1 for ch in text if not _is_cjk(ch) and not ch.isspace())
    pauses = sum(1 for ch in text if ch in PAUSE_MARKS)
    return cjk, other, pauses


def estimate_speech_seconds(text: str) -> float:
    """Rough speaking time of `text`: CJK characters are slower than Latin letters; punctuation pauses."""
    cjk, other, pauses = speech_counts(text)
    return cjk / CJK_CHARS_PER_SECOND + other / LATIN_CHARS_PER_SECOND + 0.15 * pauses


_VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def synth_speech(
    seconds: float, *, sample_rate: int = 24000, seed: int = 0, f0: float = 140.0
) -> npt.NDArray[np.float32]:
    """A mono float32 speech-like signal of `seconds`, peak ~0.5, with syllables and word gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    pos = int(0.05 * sample_rate)
    while pos < n:
        syl = int(rng.uniform(0.12, 0.25) * sample_rate)
        end = min(n, pos + syl)
        t = np.arange(end - pos) / sample_rate
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) * rng.uniform(0.9, 1.15)
        phase = np.cumsum(pitch / sample_rate)
        source = (phase % 1.0) ** 3 - 0.25  # crude glottal pulse
        voiced = np.zeros_like(t)
        for formant, gain in zip(_VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))], (1.0, 0.5, 0.25), strict=True):
            voiced += gain * np.sin(2 * np.pi * formant * t) * source
        envelope = np.sin(np.pi * np.linspace(0, 1, len(t))) ** 0.7
        out[pos:end] += voiced * envelope
        pos = end + int(rng.choice([0.02, 0.03, 0.2], p=[0.5, 0.3, 0.2]) * sample_rate)
    peak = np.max(np.abs(out)) or 1.0
    return (0.5 * out / peak).astype(np.float32)


def write_wav(path: str | Path, samples: npt.NDArray[np.floating[Any]], sample_rate: int) -> None:
    """Write mono float samples as 16-bit PCM WAV, atomically."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with atomic_output(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


FOLLOWING_DYNAMIC_DB = 40.0


def sound_following(
    track: npt.NDArray[np.float64],
    fps: float,
    shift: int,
    path: Path,
    *,
    seed: int = 0,
    unrelated: float = 0.0,
    sample_rate: int = 48000,
) -> Path:
    """A voice-like buzz (140 Hz with harmonics and breath noise) whose level in frame j follows `track`
    (one value per video frame, e.g. a mouth opening; NaN counts as its minimum) at frame j - `shift`,
    mapped linearly onto FOLLOWING_DYNAMIC_DB of level. `unrelated` (0..1) mixes that much of a random
    syllable-rate level into it: sound that only partly follows. The ground truth of the lip-sync score."""
    filled = np.where(np.isnan(track), np.nanmin(track), track)
    level = (filled - filled.min()) / (np.ptp(filled) or 1.0)
    frames = len(level)
    rng = np.random.default_rng(seed)
    wander = np.convolve(rng.random(frames + 8), np.ones(5) / 5, mode="same")[4 : 4 + frames]
    wander = (wander - wander.min()) / (np.ptp(wander) or 1.0)
    level = (1 - unrelated) * level + unrelated * wander
    source = np.arange(frames) - shift
    shifted = np.where((source >= 0) & (source < frames), level[np.clip(source, 0, frames - 1)], 0.0)
    t = np.arange(int(frames / fps * sample_rate)) / sample_rate
    per_sample = shifted[np.minimum((t * fps).astype(int), frames - 1)]
    gain = 10 ** ((per_sample - 1) * FOLLOWING_DYNAMIC_DB / 20)
    buzz = 0.5 * np.sin(2 * np.pi * 140 * t) + 0.25 * np.sin(2 * np.pi * 280 * t) + 0.1 * rng.standard_normal(len(t))
    write_wav(path, 0.6 * gain * buzz, sample_rate)
    return path


def _espeak_voice(text: str) -> list[str]:
    """Mandarin for Chinese text: espeak-ng's default voice spells each CJK character out by its Unicode name."""
    return ["-v", "cmn"] if any(_is_cjk(ch) for ch in text) else []


def speak_to_wav(text: str, path: str | Path, *, voice_seed: int = 0, sample_rate: int = 24000) -> Path:
    """Speak `text` into a WAV file: espeak-ng if present, else synthetic speech of the estimated length."""
    path = Path(path)
    espeak = shutil.which("espeak-ng")
    if espeak:
        with atomic_output(path) as tmp:
            subprocess.run([espeak, *_espeak_voice(text), "-w", str(tmp), "--", text], check=True, capture_output=True)
        return path
    seconds = max(0.5, estimate_speech_seconds(text))
    write_wav(path, synth_speech(seconds, sample_rate=sample_rate, seed=voice_seed), sample_rate)
    return path
