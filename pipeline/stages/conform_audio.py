"""Stage: conform a voice track (an audio file, or a video's own sound) to what a provider accepts.

plan_audio() decides, from the probe and the limits, the format (WAV PCM 16-bit, or MP3 when WAV is not
accepted or too big), the pinned sample rate, the channel count (everything above stereo is downmixed),
the trim and the silence padding; each choice carries its reason. A stereo source's channel levels
(measure_channels: each channel, their half-sum and half-difference) let the plan use one channel alone when
the other is dead (silence, hiss 30 dB under) or its phase-inverted copy (plan_channel_pick).
execute_audio() then runs two passes:
1. measure (check_voice, which a caller may run early and hand over): EBU R128 loudness of exactly what will
   be used (same trim and downmix), by ffmpeg's EBU R128 meter (`ebur128`), and where that range speaks;
2. normalize: the gain from the measured to the target loudness, resample, pad, encode; then the output is
   measured. A gain that would push the true peak over the ceiling gets a true-peak limiter instead of
   loudnorm's dynamic mode, which misses the target by 2-5 LU on short or peaky clips (measured on
   2-4 s of speech); limiting lowers loudness, so that pass is repeated with the shortfall added, and a
   written file whose true peak is still over the ceiling (resampling, MP3 ringing) is redone with the
   limiter lowered by the overshoot (next_pass).
Both passes read the source through the same chain: downmix, 64-bit float, a 40 Hz high-pass (DC offset
and rumble only cost headroom).
Silent and near-silent input (a knock over room tone included) is rejected between the two passes. Finally
pydub finds where the written voice speaks (speech_activity): the spans go to the manifest, and a track that
is mostly silence or starts late gets a warning, since the lips stay still wherever the voice does.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import tempfile
import warnings as pywarnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ffmpeg
import numpy as np
import numpy.typing as npt

from ..errors import InputError, ToolError, ValidationError
from ..ffmpeg import FfmpegRun, ProgressFn, Stream, compile_stream, ffmpeg_exe, media_path, run_ffmpeg
from ..fsutil import atomic_output
from ..limits import Limits
from .audio_tracks import TrackChoice, audio_streams, choose_audio_track
from .probe import MediaProbe

if TYPE_CHECKING:
    from pydub import AudioSegment

log = logging.getLogger("lipsync.conform_audio")

AudioFormat = Literal["wav", "mp3"]
MP3_BITRATES_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_SIZE_MARGIN = 0.98  # headers, and a little room under a provider's byte limit
SILENT_LUFS = -70.0  # the EBU R128 absolute gate: nothing above it means nothing to hear
TRUE_PEAK_RATE = 192000
_LIMITER_MARGIN_DB = 0.3  # the limiter is sample-peak; resampling back may overshoot a little
LIMITED_TOLERANCE_LU = 0.5
_MIN_MEASURED_SECONDS = 0.5
_READ_MARGIN_S = 1.0  # read a little past the range: atrim, not the demuxer, decides where it ends
# Raw dialogue peaks 15-22 dB over its loudness; the default target allows 14.5 dB, so a few dB of limiting is
# routine. Much more can be heard (squashed consonants, a click swallowing the words around it): warn.
AUDIBLE_LIMITING_DB = 8.0
# Making up what limiting took: a pass whose extra gain bought less than MIN_MAKEUP_SLOPE LU per dB is the
# last (a click over room tone: the click alone carries the gated loudness, more gain only raises the noise),
# and no pass adds more than MAX_MAKEUP_DB over the first one's gain.
MIN_MAKEUP_SLOPE = 0.15
MAX_MAKEUP_DB = 20.0
MAX_PASSES = 5  # limiting costs loudness (more gain next pass); a true-peak overshoot lowers the limiter's ceiling
# Below any voice's fundamental. Removes DC offset (a cheap recorder's) and rumble, which add to the peaks
# without adding loudness: left in, the limiter would flatten the speech to keep an offset under the ceiling.
HIGHPASS_HZ = 40
# Speech activity. A pause shorter than MIN_PAUSE_S is part of speaking; "silence" is SILENCE_BELOW_LU under
# the loudness target (what the track was normalized to; room tone sits lower, soft words higher).
MIN_PAUSE_S = 0.3
SILENCE_BELOW_LU = 25.0
ACTIVITY_STEP_MS = 10
MOSTLY_SILENT_RATIO = 0.2
MIN_SOUND_S = 0.25  # less sound than this (a click, a knock) is near-silence, whatever its loudness
LOUDNESS_MISS_LU = 1.0
# Near-silence of a quiet voice (under AudioOptions.min_loudness) is judged by speech against its noise floor:
# the floor is a low percentile of the level per FLOOR_STEP_S block (digital silence counted at the 16-bit
# quantisation level, the floor of any PCM file), and speech is what stands SPEECH_OVER_FLOOR_DB above it.
# Clean quiet dialogue has pauses near the floor and words 30-40 dB over it; room tone and hum are steady
# (within a dB or two of their floor); a knock stands over it for a few tens of ms.
FLOOR_STEP_S = 0.05
FLOOR_PERCENTILE = 10
SPEECH_OVER_FLOOR_DB = 15.0
QUANTISATION_FLOOR_DB = -96.0
MIN_QUIET_SPEECH_S = 0.5
SILENCE_FLOOR_DB = -120.0  # the level given to digital silence (log of zero)
LATE_START_S = 1.5
# A channel this far under the other is dead (a lav on one side, nothing or hiss on the other): the live one is
# used alone, since a downmix would cost 6 dB and stereo would leave one ear silent. Two channels whose sum is
# this far under either are a phase-inverted duplicate: summed they cancel, so one is taken.
DEAD_CHANNEL_DB = 30.0
# The early voice check measured a range this close to the final one (the video as encoded differs from the
# planned length by under a frame): its loudness and its activity stand for the final range's.
REUSE_TOLERANCE_S = 0.1
# Choosing between audio tracks by their speech: this much of each is read, at this rate (words need no more).
SPEECH_SCAN_S = 300.0
SPEECH_SCAN_RATE = 16000


@dataclass(frozen=True)
class LoudnessTarget:
    integrated: float = -16.0  # LUFS
    true_peak: float = -1.5  # dBTP

    def __post_init__(self) -> None:
        if not -70 < self.integrated < 0:
            raise ValidationError(f"loudness target must be between -70 and 0 LUFS (got {self.integrated:g})")
        if not -20 <= self.true_peak <= 0:
            raise ValidationError(f"true-peak ceiling must be between -20 and 0 dBTP (got {self.true_peak:g})")


@dataclass(frozen=True)
class AudioOptions:
    start: float | None = None  # seconds in the source
    end: float | None = None
    target_duration: float | None = None  # exact output length: trimmed, or padded with silence
    sample_rate: int = 48000
    channels: int | None = None  # None: mono stays mono, anything else becomes stereo
    format: AudioFormat | None = None  # None: chosen from the limits
    loudness: LoudnessTarget = field(default_factory=LoudnessTarget)
    min_loudness: float = -50.0  # LUFS; quieter input is rejected as near-silent
    track: TrackChoice | None = None  # the voice track (audio_tracks.choose_audio_track); None: chosen here


@dataclass(frozen=True)
class ChannelLevels:
    """RMS levels (dBFS) of a stereo source's planned range: each channel, their half-sum and half-difference."""

    left_db: float
    right_db: float
    mid_db: float  # (L + R) / 2: far under both when R is L inverted
    side_db: float  # (L - R) / 2


@dataclass(frozen=True)
class AudioPlan:
    source: Path
    source_seconds: float
    source_channels: int
    source_rate: int
    start: float  # seconds into the source
    take_seconds: float  # how much of the source is used
    pad_seconds: float  # silence appended
    lead_seconds: float  # silence before the sound's first sample: it starts that late on the file's timeline
    format: AudioFormat
    codec: str
    bitrate_kbps: int | None  # MP3 only
    sample_rate: int
    channels: int
    target: LoudnessTarget
    min_loudness: float
    channel_pick: int | None  # the one source channel used (dead or inverted other), else None: all, mixed
    estimated_bytes: int
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    track: TrackChoice | None = None  # which of the source's audio tracks is the voice, and why

    @property
    def stream(self) -> int:
        """ffmpeg's a:<stream> of the voice track."""
        return 0 if self.track is None else self.track.index

    @property
    def duration(self) -> float:
        return self.take_seconds + self.pad_seconds

    @property
    def total_samples(self) -> int:
        return round(self.duration * self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": str(self.source), "duration": self.duration}


@dataclass(frozen=True)
class LoudnessFigures:
    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    gain_db: float | None = None
    output_i: float | None = None
    output_tp: float | None = None
    output_lra: float | None = None
    normalization_type: str | None = None  # "linear" (a plain gain) or "limited" (gain + true-peak limiter)

    @property
    def linear(self) -> bool:
        return self.normalization_type == "linear"

    def to_dict(self) -> dict[str, Any]:
        finite = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}
        return {**finite, "linear": self.linear}


@dataclass(frozen=True)
class SpeechActivity:
    """Where a voice track speaks: spans of sound separated by pauses of at least MIN_PAUSE_S."""

    seconds: float  # the whole track
    spans: tuple[tuple[float, float], ...]  # (start, end) seconds
    silence_threshold_db: float  # dBFS RMS below which a stretch counts as silence

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.spans)

    @property
    def ratio(self) -> float:
        return self.speech_seconds / self.seconds if self.seconds else 0.0

    @property
    def leading_silence(self) -> float:
        return self.spans[0][0] if self.spans else self.seconds

    @property
    def trailing_silence(self) -> float:
        return self.seconds - self.spans[-1][1] if self.spans else self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "spans": [[round(a, 3), round(b, 3)] for a, b in self.spans],
            "speech_seconds": round(self.speech_seconds, 3),
            "speech_ratio": round(self.ratio, 3),
            "leading_silence": round(self.leading_silence, 3),
            "trailing_silence": round(self.trailing_silence, 3),
            "silence_threshold_db": round(self.silence_threshold_db, 1),
        }


@dataclass(frozen=True)
class AudioResult:
    path: Path
    plan: AudioPlan
    loudness: LoudnessFigures
    runs: tuple[FfmpegRun, ...]
    warnings: tuple[str, ...]
    speech: SpeechActivity | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "plan": self.plan.to_dict(),
            "loudness": self.loudness.to_dict(),
            "speech": None if self.speech is None else self.speech.to_dict(),
            "ffmpeg": [run.argv for run in self.runs],
            "warnings": list(self.warnings),
        }


# ---- planning (pure) ----------------------------------------------------------------------------


def _trim(p: MediaProbe, opts: AudioOptions, limits: Limits) -> tuple[float, float, float, list[str], list[str]]:
    """(start, take, pad, reasons, warnings) for the source range (on the file's timeline) and the output length."""
    assert p.audio is not None  # plan_audio picked the track
    total = p.audio.end or p.duration
    if not total:
        raise InputError(p.path, "cannot tell how long the audio is")
    start = max(0.0, opts.start or 0.0)
    end = min(total, opts.end) if opts.end is not None else total
    if start >= end:
        raise InputError(p.path, f"nothing to use between {start:g} s and {end:g} s (the audio lasts {total:.3f} s)")
    reasons: list[str] = []
    warnings: list[str] = []
    if start > 0 or end < total:
        reasons.append(f"trimmed to {start:.3f}-{end:.3f} s of {total:.3f} s")
    take, pad = end - start, 0.0
    if opts.target_duration is not None:
        if opts.target_duration < take:
            reasons.append(f"cut to {opts.target_duration:.3f} s to match the video")
        elif opts.target_duration > take:
            pad = opts.target_duration - take
            reasons.append(f"padded with {pad:.3f} s of silence to match the video")
        take = min(take, opts.target_duration)
    cap = limits.audio_max_seconds
    if take > cap:
        warnings.append(
            f"{p.path.name}: audio is {take:.3f} s, over the {cap:g} s limit: cut at "
            f"{start + cap:.3f} s (source {start + cap:.3f}-{start + take:.3f} s dropped)"
        )
        take = cap
    if take + pad > cap:
        pad = cap - take
        reasons.append(f"padding shortened to {pad:.3f} s to stay within the {cap:g} s limit")
    return start, take, pad, reasons, warnings


def _channels(p: MediaProbe, opts: AudioOptions) -> tuple[int, str]:
    assert p.audio is not None  # plan_audio picked the track
    have = p.audio.channels
    if opts.channels is not None:
        return opts.channels, f"{opts.channels} channel(s) as asked"
    if have == 1:
        return 1, "mono kept"
    if have == 2:
        return 2, "stereo kept"
    return 2, f"downmixed from {have} channels to stereo"


def plan_channel_pick(levels: ChannelLevels | None, channels: int) -> tuple[int | None, str | None]:
    """(source channel to use alone, reason), or (None, None) to keep both: from the measured stereo levels."""
    if levels is None:
        return None, None
    names = ("left", "right")
    loud = max(levels.left_db, levels.right_db)
    live = 0 if levels.left_db >= levels.right_db else 1
    quiet = min(levels.left_db, levels.right_db)
    spread = "on both output channels" if channels == 2 else "as mono"
    if loud - quiet > DEAD_CHANNEL_DB:
        under = "digital silence" if not math.isfinite(quiet) else f"{loud - quiet:.0f} dB under the {names[live]}"
        return live, (f"the {names[1 - live]} channel is dead ({under}): the {names[live]} channel alone, {spread}")
    if loud - levels.mid_db > DEAD_CHANNEL_DB:
        sum_is = "silence" if not math.isfinite(levels.mid_db) else f"{loud - levels.mid_db:.0f} dB under either"
        return 0, (
            f"the channels are phase-inverted copies (their sum is {sum_is}): the left channel alone, "
            f"{spread}, so they do not cancel"
        )
    return None, None


def _wav_bytes(seconds: float, rate: int, channels: int) -> int:
    return 44 + math.ceil(seconds * rate) * channels * 2


def _mp3_bitrate(seconds: float, channels: int, max_bytes: int) -> int | None:
    """The standard MP3 bitrate to use: 192/128 kbps (stereo/mono), lower if the file must be smaller."""
    wanted = 192 if channels > 1 else 128
    fitting = [b for b in MP3_BITRATES_KBPS if b <= wanted and b * 1000 / 8 * seconds <= max_bytes * _SIZE_MARGIN]
    return fitting[-1] if fitting else None


def _format(
    path: Path, seconds: float, rate: int, channels: int, forced: AudioFormat | None, limits: Limits
) -> tuple[AudioFormat, int | None, int, str]:
    """(format, mp3 bitrate, estimated bytes, reason)."""
    allowed = [f for f in ("wav", "mp3") if f in limits.audio_containers]
    if forced is not None and forced not in allowed:
        raise ValidationError(f"{path}: audio format {forced} is not accepted here (accepted: {', '.join(allowed)})")
    if not allowed:
        raise ValidationError(f"{path}: the limits accept neither WAV nor MP3 audio ({limits.audio_containers})")
    wav = _wav_bytes(seconds, rate, channels)
    wav_fits = wav <= limits.audio_max_bytes * _SIZE_MARGIN
    if forced == "wav" or allowed == ["wav"] or (forced is None and "wav" in allowed and wav_fits):
        if not wav_fits:
            raise ValidationError(
                f"{path}: {seconds:.1f} s of WAV would be {wav} bytes, over the "
                f"{limits.audio_max_bytes} byte limit; use MP3"
            )
        return "wav", None, wav, "WAV PCM 16-bit: lossless and within the size limit"
    if rate not in MP3_SAMPLE_RATES:
        raise ValidationError(f"{path}: MP3 cannot carry {rate} Hz audio; choose 48000 or 44100")
    kbps = _mp3_bitrate(seconds, channels, limits.audio_max_bytes)
    if kbps is None:
        raise ValidationError(f"{path}: {seconds:.1f} s of audio cannot fit in {limits.audio_max_bytes} bytes")
    why = "as asked" if forced else ("WAV is not accepted" if "wav" not in allowed else f"WAV would be {wav} bytes")
    return "mp3", kbps, math.ceil(kbps * 1000 / 8 * seconds), f"MP3 {kbps} kbps: {why}"


def _lead(p: MediaProbe, start: float, take: float) -> tuple[float, list[str]]:
    """Silence before the sound when it starts after `start` on the file's timeline (after the picture)."""
    assert p.audio is not None  # plan_audio picked the track
    lead = min(take, max(0.0, p.audio.start - start))
    if lead <= 0:
        return 0.0, []
    # the probed start is the first packet's, which may hold the encoder's priming: the executor places the
    # decoded samples by their own timestamps, so this figure is the plan's reason, not the cut
    return lead, [
        f"the sound starts about {p.audio.start:.3f} s into the file: {lead:.3f} s of silence before it, "
        "so it stays where it is against the picture"
    ]


def plan_audio(
    p: MediaProbe, limits: Limits, opts: AudioOptions = AudioOptions(), levels: ChannelLevels | None = None
) -> AudioPlan:
    """Decide everything about the conformed voice track. Pure: reads only the probe, limits, options and
    the stereo source's measured channel levels (measure_channels), when given."""
    track = opts.track or choose_audio_track(p)
    p = p.with_audio_track(track.index)
    assert p.audio is not None  # with_audio_track selected it
    start, take, pad, reasons, warnings = _trim(p, opts, limits)
    if len(audio_streams(p)) > 1 or track.rule == "asked":
        reasons.insert(0, f"voice: {track.reason}")
    if p.audio.declared_duration is not None:
        reasons.append(
            f"the voice lasts {p.audio.duration:.3f} s as decoded; its header declares "
            f"{p.audio.declared_duration:.3f} s"
        )
    lead, lead_reasons = _lead(p, start, take)
    reasons += lead_reasons
    channels, channel_reason = _channels(p, opts)
    pick, pick_reason = plan_channel_pick(levels if p.audio.channels == 2 else None, channels)
    channel_reason = pick_reason or channel_reason
    fmt, kbps, size, format_reason = _format(p.path, take + pad, opts.sample_rate, channels, opts.format, limits)
    reasons += [
        format_reason,
        channel_reason,
        f"resampled to {opts.sample_rate} Hz"
        if p.audio.sample_rate != opts.sample_rate
        else f"{opts.sample_rate} Hz kept",
        f"DC offset and rumble below {HIGHPASS_HZ} Hz removed",
        f"loudness to {opts.loudness.integrated:g} LUFS, true peak {opts.loudness.true_peak:g} dBTP",
    ]
    return AudioPlan(
        source=p.path,
        source_seconds=p.audio.end or p.duration or 0.0,  # never 0: _trim refused an unknown length
        source_channels=p.audio.channels,
        source_rate=p.audio.sample_rate,
        start=start,
        take_seconds=take,
        pad_seconds=pad,
        lead_seconds=lead,
        format=fmt,
        codec="pcm_s16le" if fmt == "wav" else "libmp3lame",
        bitrate_kbps=kbps,
        sample_rate=opts.sample_rate,
        channels=channels,
        channel_pick=pick,
        target=opts.loudness,
        min_loudness=opts.min_loudness,
        estimated_bytes=size,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        track=track,
    )


def loudness_levels(samples: npt.NDArray[np.float64], sample_rate: int, step: float) -> tuple[float, ...]:
    """RMS dBFS of consecutive `step`-second blocks (the last one may be shorter); SILENCE_FLOOR_DB for zeros."""
    width = max(1, round(step * sample_rate))
    blocks = -(-len(samples) // width)
    padded = np.zeros(blocks * width)
    padded[: len(samples)] = samples
    counts = np.full(blocks, width, dtype=np.float64)
    if blocks:
        counts[-1] = len(samples) - (blocks - 1) * width
    power = (padded.reshape(blocks, width) ** 2).sum(axis=1) / counts
    with np.errstate(divide="ignore"):
        levels = 10 * np.log10(power)
    return tuple(float(max(level, SILENCE_FLOOR_DB)) for level in levels)


@dataclass(frozen=True)
class SpeechOverFloor:
    """How much of a voice stands out from its own noise floor (for a quiet voice: words, or only noise?)."""

    floor_db: float  # dBFS RMS: the FLOOR_PERCENTILE-th percentile of the block levels
    speech_seconds: float  # blocks at least SPEECH_OVER_FLOOR_DB above the floor
    peak_over_floor_db: float  # the loudest block over the floor

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def speech_over_floor(levels: tuple[float, ...], step: float) -> SpeechOverFloor:
    """Pure: the noise floor of block levels and the seconds of sound standing SPEECH_OVER_FLOOR_DB over it."""
    if not levels:
        return SpeechOverFloor(QUANTISATION_FLOOR_DB, 0.0, 0.0)
    heard = np.maximum(np.asarray(levels, dtype=np.float64), QUANTISATION_FLOOR_DB)
    floor = float(np.percentile(heard, FLOOR_PERCENTILE))
    over = heard - floor
    return SpeechOverFloor(floor, float(np.count_nonzero(over >= SPEECH_OVER_FLOOR_DB)) * step, float(over.max()))


_PCM = 1
_EXTENSIBLE = 0xFFFE  # what ffmpeg writes for more than two channels (Python 3.11's wave cannot read it)


def _pcm16_layout(path: Path) -> tuple[int, int, int, int]:
    """(sample rate, channels, offset of the samples, their byte count) of a 16-bit PCM WAV, plain or
    WAVE_FORMAT_EXTENSIBLE, from its RIFF chunks."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise ToolError(f"{path.name}: not a WAV file")
        rate = channels = 0
        while header := f.read(8):
            kind, size = header[:4], struct.unpack("<I", header[4:8])[0]
            if kind == b"data":
                if not rate:
                    raise ToolError(f"{path.name}: WAV samples before their format")
                return rate, channels, f.tell(), size
            body = f.read(size + (size & 1))
            if kind == b"fmt ":
                tag, channels, rate = struct.unpack("<HHI", body[:8])
                bits = struct.unpack("<H", body[14:16])[0]
                if tag not in (_PCM, _EXTENSIBLE) or bits != 16:
                    raise ToolError(f"{path.name}: WAV format {tag}, {bits} bits: 16-bit PCM expected")
    raise ToolError(f"{path.name}: WAV without samples")


def wav_levels(path: Path, step: float = FLOOR_STEP_S) -> tuple[float, ...]:
    """loudness_levels of a 16-bit PCM WAV (channels averaged), read a stretch at a time: ten minutes of
    stereo would be half a gigabyte as floats."""
    rate, channels, offset, size = _pcm16_layout(path)
    if size < 2 * channels:
        return ()
    samples = np.memmap(path, dtype="<i2", mode="r", offset=offset, shape=(size // 2 // channels, channels))
    width = max(1, round(step * rate))
    stretch = width * 256
    levels: list[float] = []
    for first in range(0, len(samples), stretch):
        mono = samples[first : first + stretch].astype(np.float64).mean(axis=1) / 32768
        levels += loudness_levels(mono, rate, width / rate)
    return tuple(levels)


def check_audible(figures: LoudnessFigures, plan: AudioPlan, floor: SpeechOverFloor | None = None) -> None:
    """Reject silence; and audio under the plan's minimum loudness unless speech stands out of its noise floor
    (quiet clean dialogue is normalized; room tone, hum and a knock are refused)."""
    where = f" (between {plan.start:.3f} and {plan.start + plan.take_seconds:.3f} s)" if plan.start else ""
    if not figures.input_i > SILENT_LUFS:
        raise InputError(plan.source, f"the audio is silent{where}: nothing to lip-sync to")
    if figures.input_i >= plan.min_loudness:
        return
    needed = min(MIN_QUIET_SPEECH_S, 0.5 * plan.take_seconds)
    if floor is None or floor.speech_seconds < needed:
        heard = (
            ""
            if floor is None
            else f", and only {floor.speech_seconds:.2f} s of it stands {SPEECH_OVER_FLOOR_DB:g} dB over its "
            f"noise floor ({floor.floor_db:.1f} dBFS): room tone, hum or a knock, no speech"
        )
        raise InputError(
            plan.source,
            f"the audio is near-silent{where}: {figures.input_i:.1f} LUFS, below {plan.min_loudness:g} LUFS{heard}",
        )


def check_sound(activity: SpeechActivity, plan: AudioPlan) -> None:
    """Reject a voice with (almost) nothing over its room tone: a click or a cough has a loudness, yet no words."""
    if activity.speech_seconds < min(MIN_SOUND_S, 0.5 * plan.take_seconds):
        raise InputError(
            plan.source,
            f"the audio is near-silent: only {activity.speech_seconds:.2f} s of its "
            f"{plan.take_seconds:.1f} s stands out from the background (a click or a "
            "knock over silence?): nothing to lip-sync to",
        )


def speech_warnings(activity: SpeechActivity, name: str) -> list[str]:
    """Warnings for a voice that will leave the lips still: mostly silence, or a late first word."""
    out = []
    if activity.ratio < MOSTLY_SILENT_RATIO:
        out.append(
            f"{name}: the voice is mostly silence ({activity.speech_seconds:.1f} s of speech in "
            f"{activity.seconds:.1f} s, {activity.ratio:.0%}): the lips will barely move"
        )
    if activity.spans and activity.leading_silence > LATE_START_S:
        out.append(
            f"{name}: the voice starts after {activity.leading_silence:.1f} s of silence: "
            "the face looks frozen until then"
        )
    return out


def peak_excess_db(measured: LoudnessFigures, target: LoudnessTarget) -> float:
    """How far the source's peaks stand above what the target allows (its crest factor beyond the target's)."""
    return (measured.input_tp - measured.input_i) - (target.true_peak - target.integrated)


def limiting_note(name: str, measured: LoudnessFigures, target: LoudnessTarget) -> str:
    return (
        f"{name}: peaks limited by about {peak_excess_db(measured, target):.1f} dB: reaching "
        f"{target.integrated:g} LUFS from {measured.input_i:.1f} LUFS would push the true peak "
        f"({measured.input_tp:.1f} dBTP) over {target.true_peak:g} dBTP"
    )


def plan_gain(measured: LoudnessFigures, target: LoudnessTarget) -> tuple[str, float]:
    """("linear", gain) when the gain to the target keeps the true peak under the ceiling, else ("limited", gain)."""
    gain = round(target.integrated - measured.input_i, 2)  # to 0.01 dB, as volume= applies it
    return ("linear" if measured.input_tp + gain <= target.true_peak else "limited"), gain


@dataclass(frozen=True)
class GainPass:
    """One normalize pass: a gain, and for "limited" the limiter's ceiling (dBFS at 192 kHz)."""

    kind: str  # "linear" or "limited"
    gain_db: float
    limit_db: float


def first_pass(measured: LoudnessFigures, target: LoudnessTarget) -> GainPass:
    kind, gain = plan_gain(measured, target)
    return GainPass(kind, gain, target.true_peak - _LIMITER_MARGIN_DB)


def next_pass(done: list[GainPass], outputs: list[LoudnessFigures], target: LoudnessTarget) -> GainPass | None:
    """The pass after `done` given what each produced (output_i, output_tp); None when the last one is good.

    A true peak over the ceiling (resampling back from 192 kHz, or an MP3 encoder's ringing) lowers the
    limiter's ceiling by the overshoot; a loudness shortfall after limiting raises the gain (next_gain).
    """
    last, out = done[-1], outputs[-1]
    assert out.output_tp is not None  # measure_output sets the output figures
    overshoot = out.output_tp - target.true_peak
    tries = [(p.gain_db, o.output_i) for p, o in zip(done, outputs, strict=True) if o.output_i is not None]
    assert len(tries) == len(done)  # as above
    gain = next_gain(tries, target)
    if overshoot <= 0 and (last.kind == "linear" or gain is None):
        return None
    limit = last.limit_db - max(0.0, overshoot) - (0.1 if overshoot > 0 else 0.0)
    gain = last.gain_db if gain is None else min(gain, done[0].gain_db + MAX_MAKEUP_DB)
    if overshoot <= 0 and gain == last.gain_db:
        return None  # the makeup cap is reached
    return GainPass("limited", gain, limit)


def next_gain(tries: list[tuple[float, float]], target: LoudnessTarget) -> float | None:
    """The gain for another limited pass from the (gain, output loudness) pairs so far; None when close enough.

    Limiting eats part of any extra gain, so after two tries the step follows the measured slope (secant);
    a slope under MIN_MAKEUP_SLOPE also ends the search (None): more gain no longer buys loudness.
    """
    gain, output_i = tries[-1]
    miss = target.integrated - output_i
    if abs(miss) <= LIMITED_TOLERANCE_LU:
        return None
    slope = 1.0
    if len(tries) > 1 and tries[-1][0] != tries[-2][0]:
        slope = (output_i - tries[-2][1]) / (gain - tries[-2][0])
        if miss > 0 and slope < MIN_MAKEUP_SLOPE:
            return None
    return round(gain + miss / min(1.0, max(MIN_MAKEUP_SLOPE, slope)), 2)


# ---- execution ----------------------------------------------------------------------------------


def _source(plan: AudioPlan) -> Stream:
    """The planned range of the source, its samples placed by their timestamps on the file's timeline.

    No input seek: in a container without an index (FLV as ffmpeg writes it) the seek lands seconds away
    from where it was asked, so the range is cut from the decoded timestamps instead (audio decodes at
    hundreds of times real time). aresample's first_pts=0 puts silence before a sound that starts late
    (plan.lead_seconds) and drops the encoder's priming before 0, to the sample.
    """
    stream = _source_range(plan)
    layout = "mono" if plan.channels == 1 else "stereo"
    if plan.channel_pick is not None:
        pick = f"c{plan.channel_pick}"
        stream = stream.filter("pan", args=f"{layout}|c0={pick}" + ("" if plan.channels == 1 else f"|c1={pick}"))
    # floating point from here on: an integer filter chain would clip the high-pass's overshoot
    return stream.filter("aformat", sample_fmts="dblp", channel_layouts=layout).filter(
        "highpass", f=HIGHPASS_HZ, poles=2
    )


def _source_range(plan: AudioPlan) -> Stream:
    read = plan.start + plan.take_seconds + _READ_MARGIN_S
    return (
        ffmpeg.input(media_path(plan.source), t=f"{read:.6f}")[f"a:{plan.stream}"]
        .filter("aresample", first_pts=0)
        .filter("atrim", start=f"{plan.start:.6f}", duration=f"{plan.take_seconds:.6f}")
        .filter("asetpts", "PTS-STARTPTS")
    )


_RMS_KEY = "lavfi.astats.{}.RMS_level="


def measure_channels(plan: AudioPlan) -> tuple[ChannelLevels | None, FfmpegRun | None]:
    """The RMS levels of a stereo source's planned range (for plan_audio's channel pick); None otherwise.

    One read: the two channels, their half-sum and half-difference as four channels through astats, whose
    running figures the last frame's metadata carries."""
    if plan.source_channels != 2:
        return None, None
    with tempfile.TemporaryDirectory(prefix="lipsync-channels-") as scratch:
        stats = Path(scratch) / "astats.txt"
        graph = (
            _source_range(plan)
            .filter("aformat", sample_fmts="dblp", channel_layouts="stereo")
            .filter("pan", args="4.0|c0=c0|c1=c1|c2=0.5*c0+0.5*c1|c3=0.5*c0-0.5*c1")
            .filter("astats", metadata=1, measure_perchannel="RMS_level", measure_overall="none")
            .filter("ametadata", mode="print", file=str(stats))
        )
        run = run_ffmpeg(
            compile_stream(graph.output("-", f="null").global_args("-hide_banner", "-nostats")),
            what=f"measuring the channels of {plan.source.name}",
            duration=plan.take_seconds,
        )
        lines = stats.read_text(encoding="utf-8").splitlines() if stats.exists() else []
    levels = [_last_value(lines, _RMS_KEY.format(n)) for n in range(1, 5)]
    known = [level for level in levels if level is not None]
    if len(known) < len(levels):
        log.warning("%s: could not measure its channels; both kept", plan.source.name)
        return None, run
    return ChannelLevels(*known), run


def _last_value(lines: list[str], key: str) -> float | None:
    for line in reversed(lines):
        if line.startswith(key):
            return float(line[len(key) :])  # "-inf" for digital silence
    return None


_R128_SUMMARY = re.compile(
    r"Integrated loudness:\s+I:\s+(?P<i>\S+) LUFS\s+Threshold:\s+(?P<thresh>\S+) LUFS\s+"
    r"Loudness range:\s+LRA:\s+(?P<lra>\S+) LU.*?True peak:\s+Peak:\s+(?P<tp>\S+) dBFS",
    re.DOTALL,
)


@dataclass(frozen=True)
class R128:
    """An EBU R128 measurement: integrated loudness (LUFS), its relative gate, loudness range (LU) and true
    peak (dBTP; -inf for digital silence)."""

    integrated: float
    threshold: float
    lra: float
    true_peak: float


def _measure(
    stream: Stream, plan: AudioPlan, what: str, progress: ProgressFn | None, also: Stream | None = None
) -> tuple[R128, FfmpegRun]:
    """The EBU R128 figures of `stream` (the audio goes nowhere), in the same command as the output `also` when
    given. ffmpeg's `ebur128` meter with true peak: a quarter of the CPU of loudnorm's, which measures by
    running its whole normalizer (the figures agree within 0.1 LU and 0.1 dB); it prints them to 0.1."""
    # EBU R128 gates 400 ms blocks: a shorter clip would measure as silence without the padding
    padded = stream.filter("apad", whole_dur=_MIN_MEASURED_SECONDS)
    out = padded.filter("ebur128", peak="true", framelog="verbose").output("-", f="null")
    if also is not None:
        out = ffmpeg.merge_outputs(out, also)
    run = run_ffmpeg(
        compile_stream(out.global_args("-hide_banner", "-nostats")),
        what=f"{what} {plan.source.name}",
        duration=plan.take_seconds,
        progress=progress,
    )
    found = _R128_SUMMARY.search(run.stderr_tail)
    if found is None:
        raise InputError(plan.source, f"could not measure the loudness while {what}")
    figure = {key: float(value) for key, value in found.groupdict().items()}  # "-inf" for digital silence
    return R128(figure["i"], figure["thresh"], figure["lra"], figure["tp"]), run


@dataclass(frozen=True)
class VoiceCheck:
    """Pass 1 of a plan: its loudness, and where its source speaks (silence SILENCE_BELOW_LU under that
    loudness, as on the normalized file). execute_audio reuses it for a plan reading the same range."""

    plan: AudioPlan
    measured: LoudnessFigures
    run: FfmpegRun
    source_speech: SpeechActivity | None
    floor: SpeechOverFloor | None = None  # measured for a voice under the minimum loudness
    levels: tuple[float, ...] = ()  # RMS dBFS per FLOOR_STEP_S of the range (the cut plan's quietest moments)

    def covers(self, plan: AudioPlan) -> bool:
        done = self.plan
        return (done.source, done.stream, done.start, done.channel_pick, done.channels) == (
            plan.source,
            plan.stream,
            plan.start,
            plan.channel_pick,
            plan.channels,
        ) and abs(done.take_seconds - plan.take_seconds) <= REUSE_TOLERANCE_S


def check_voice(plan: AudioPlan, progress: ProgressFn | None = None) -> VoiceCheck:
    """Pass 1 and the refusal of an unusable voice: silent, near-silent, or a knock over room tone.

    One read measures the loudness and writes the range (as measured) to a scratch WAV for the activity, so
    a caller can run it before slow work (the video encode) and hand it to execute_audio."""
    with tempfile.TemporaryDirectory(prefix="lipsync-voice-") as scratch:
        copy = Path(scratch) / "range.wav"
        source = _source(plan).filter_multi_output("asplit")
        r128, run = _measure(
            source[0],
            plan,
            "measuring the loudness of",
            progress,
            also=source[1].output(media_path(copy), c="pcm_s16le"),
        )
        measured = LoudnessFigures(r128.integrated, r128.true_peak, r128.lra, r128.threshold)
        levels = wav_levels(copy) if measured.input_i > SILENT_LUFS else ()
        quiet = SILENT_LUFS < measured.input_i < plan.min_loudness
        floor = speech_over_floor(levels, FLOOR_STEP_S) if quiet else None
        check_audible(measured, plan, floor)
        speech = _speech_or_none(copy, replace(plan, format="wav"), measured.input_i)
    if speech is not None:
        check_sound(speech, plan)
    return VoiceCheck(plan, measured, run, speech, floor, levels)


def measure_output(path: Path, plan: AudioPlan, figures: LoudnessFigures) -> tuple[LoudnessFigures, FfmpegRun]:
    r128, run = _measure(ffmpeg.input(media_path(path))["a:0"], plan, "checking the normalized audio of", None)
    return replace(figures, output_i=r128.integrated, output_tp=r128.true_peak, output_lra=r128.lra), run


def apply_gain(plan: AudioPlan, gain: GainPass, dst: Path, progress: ProgressFn | None = None) -> FfmpegRun:
    """Pass 2: gain (plus a true-peak limiter when "limited"), resample, pad to the exact length."""
    graph = _source(plan).filter("volume", f"{gain.gain_db:.2f}dB")
    if gain.kind == "limited":
        # limiting at 192 kHz catches the inter-sample (true) peaks a 48 kHz limiter would miss
        graph = graph.filter("aresample", TRUE_PEAK_RATE).filter(
            "alimiter",
            limit=f"{10 ** (gain.limit_db / 20):.5f}",
            attack=5,
            release=50,
            level="false",
            asc="false",
            latency="true",
        )
    graph = (
        graph.filter("aresample", plan.sample_rate)
        .filter("apad", whole_len=plan.total_samples)
        .filter("atrim", end_sample=plan.total_samples)
    )
    codec = {"c:a": plan.codec, "ar": plan.sample_rate, "ac": plan.channels}
    if plan.bitrate_kbps:
        codec["b:a"] = f"{plan.bitrate_kbps}k"
    out = graph.output(
        media_path(dst), f=plan.format, map_metadata=-1, fflags="+bitexact", **{"flags:a": "+bitexact"}, **codec
    )
    return run_ffmpeg(
        compile_stream(out.global_args("-hide_banner", "-nostats")),
        what=f"normalizing the audio of {plan.source.name}",
        duration=plan.take_seconds,
        progress=progress,
    )


def _load_segment(path: Path, fmt: AudioFormat) -> AudioSegment:
    with pywarnings.catch_warnings():  # pydub warns at import: no ffmpeg on PATH (we give it ours), audioop
        pywarnings.simplefilter("ignore", RuntimeWarning)
        pywarnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment
    if fmt == "wav":
        with path.open("rb") as wav:  # given a name, pydub leaves the file open
            return AudioSegment.from_wav(wav)  # read natively (16-bit PCM)
    AudioSegment.converter = ffmpeg_exe()
    # an explicit decoder: pydub then never asks ffprobe what the file is
    return AudioSegment.from_file(str(path), format=fmt, codec=fmt)


def speech_activity(path: Path, fmt: AudioFormat, loudness_lufs: float) -> SpeechActivity:
    """pydub's detect_nonsilent over the written voice, with silence SILENCE_BELOW_LU under `loudness_lufs`."""
    return _activity(_load_segment(path, fmt), loudness_lufs)


def _activity(segment: AudioSegment, loudness_lufs: float) -> SpeechActivity:
    from pydub.silence import detect_nonsilent  # after _load_segment has imported pydub quietly

    threshold = loudness_lufs - SILENCE_BELOW_LU
    spans = detect_nonsilent(
        segment, min_silence_len=round(MIN_PAUSE_S * 1000), silence_thresh=threshold, seek_step=ACTIVITY_STEP_MS
    )
    return SpeechActivity(len(segment) / 1000, tuple((a / 1000, b / 1000) for a, b in spans), threshold)


def measure_speech_shares(
    p: MediaProbe, start: float = 0.0, seconds: float | None = None
) -> tuple[tuple[float, ...], FfmpegRun | None]:
    """The share of each audio track's range that speaks (for choose_audio_track), from one read of them all.

    The speech activity of the voice check, with one silence level for every track: SILENCE_BELOW_LU under
    the loudest track's RMS, so a track of room tone or a quiet scratch mic counts as silence beside the
    voice. It finds sound, not words: continuous music scores high too, which is why a default flag
    comes first. A file with one audio track is not read; one whose tracks cannot all be decoded costs the
    shares (empty), not the job."""
    streams = audio_streams(p)
    if len(streams) < 2:
        return (), None
    seconds = min(seconds or SPEECH_SCAN_S, SPEECH_SCAN_S)
    source = ffmpeg.input(media_path(p.path), ss=f"{start:.6f}", t=f"{seconds:.6f}")
    with tempfile.TemporaryDirectory(prefix="lipsync-tracks-") as scratch:
        copies = [Path(scratch) / f"track{a.index}.wav" for a in streams]
        outputs = [
            source[f"a:{a.index}"].output(media_path(copy), ac=1, ar=SPEECH_SCAN_RATE, c="pcm_s16le")
            for a, copy in zip(streams, copies, strict=True)
        ]
        try:
            run = run_ffmpeg(
                compile_stream(ffmpeg.merge_outputs(*outputs).global_args("-hide_banner", "-nostats")),
                what=f"measuring the speech on each audio track of {p.path.name}",
                duration=seconds,
            )
        except ToolError as err:
            log.warning("%s: could not measure the speech on its audio tracks (%s)", p.path.name, err.message)
            return (), None
        segments = [_load_segment(copy, "wav") for copy in copies]
    reference = max(s.dBFS for s in segments)
    if not math.isfinite(reference):
        return tuple(0.0 for _ in segments), run
    return tuple(round(_activity(s, reference).ratio, 3) for s in segments), run


def execute_audio(
    plan: AudioPlan, dst: str | Path, progress: ProgressFn | None = None, checked: VoiceCheck | None = None
) -> AudioResult:
    """Check the voice is usable (or reuse `checked`, run on the same range), normalize into `dst` (written
    atomically), measure the result."""
    dst = Path(dst)
    warnings = list(plan.warnings)
    if checked is None or not checked.covers(plan):
        checked = check_voice(plan, None if progress is None else (lambda f: progress(0.5 * f)))
        runs = [checked.run]
    else:
        runs = []  # the caller's early check is its own run, already counted
    measured = checked.measured
    if checked.floor is not None:
        warnings.append(
            f"{plan.source.name}: a quiet voice ({measured.input_i:.1f} LUFS, under {plan.min_loudness:g} LUFS) is "
            f"raised by about {plan.target.integrated - measured.input_i:.0f} dB: its speech stands up to "
            f"{checked.floor.peak_over_floor_db:.0f} dB over its noise floor ({checked.floor.floor_db:.1f} dBFS), "
            f"which rises with it"
        )
    passes: list[GainPass] = [first_pass(measured, plan.target)]
    outputs: list[LoudnessFigures] = []
    with atomic_output(dst) as tmp:
        while True:
            gain = passes[-1]
            runs.append(apply_gain(plan, gain, tmp, None if progress is None else (lambda f: progress(0.5 + 0.5 * f))))
            figures, run = measure_output(
                tmp, plan, replace(measured, gain_db=gain.gain_db, normalization_type=gain.kind)
            )
            runs.append(run)
            outputs.append(figures)
            following = next_pass(passes, outputs, plan.target)
            if following is None or len(passes) == MAX_PASSES:
                break
            passes.append(following)
        speech = _speech_or_none(tmp, plan, plan.target.integrated)
    if figures.normalization_type == "limited":
        limited = limiting_note(plan.source.name, measured, plan.target)
        if peak_excess_db(measured, plan.target) > AUDIBLE_LIMITING_DB:
            warnings.append(limited)
        else:
            log.info(limited)
    if figures.output_i is not None and figures.output_i < plan.target.integrated - LOUDNESS_MISS_LU:
        warnings.append(
            f"{plan.source.name}: reached only {figures.output_i:.1f} LUFS of the "
            f"{plan.target.integrated:g} LUFS target: a few loud moments carry its loudness, and "
            f"more gain would only raise what lies between them"
        )
    if speech is not None:
        warnings += speech_warnings(speech, plan.source.name)
    return AudioResult(dst, plan, figures, tuple(runs), tuple(warnings), speech)


def _speech_or_none(path: Path, plan: AudioPlan, loudness_lufs: float) -> SpeechActivity | None:
    """Speech activity of `path` (in plan.format, at `loudness_lufs`): a file pydub cannot read costs the
    analysis, never the job."""
    try:
        speech = speech_activity(path, plan.format, loudness_lufs)
    except Exception as exc:
        log.warning("%s: could not analyse where the voice speaks (%s: %s)", plan.source.name, type(exc).__name__, exc)
        return None
    log.debug(
        "%s: speech %.1f of %.1f s, first word at %.2f s",
        plan.source.name,
        speech.speech_seconds,
        speech.seconds,
        speech.leading_silence,
    )
    return speech
