"""Stage: check every final file before it is handed off, and record what was measured.

A failed check fails the job with `VerificationError` (a GenerationFailed, exit 5): the provider was paid but
the job did not produce a usable file. The downloaded result is kept by the runner either way.

Checks: the expected streams are present; the file decodes end to end with no error output; video and audio
durations agree within one frame; the total duration is what was expected (within a frame); the delivered
audio lines up with the audio the provider synced the lips to (cross-correlation, within one frame).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, computed_field

from ..errors import LipsyncError, VerificationError
from ..ffmpeg import FfmpegRun, Stream, compile_stream, media_path, run_ffmpeg
from .avsync import OffsetMeasurement, decode_pcm, measure_offset
from .conform_audio import SILENCE_BELOW_LU
from .mouth import SyncPolicy, SyncScore, measure_sync, sync_problems
from .mux import DEFAULT_FPS, MuxResult, StitchPlan, video_timing
from .probe import MediaProbe, probe

log = logging.getLogger("lipsync.verify")

_DECODER_TAG = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")
"""ffmpeg's "[h264 @ 0x55…] " prefix: a memory address, which would make reports differ run to run."""


@dataclass(frozen=True)
class SyncReference:
    """A provider result whose audio (what its lips follow) must line up with the final's audio from `start_s`.
    `sent_s`: how long the voice we sent for it was; the result's video must be as long (None: not checked,
    e.g. a TTS segment, whose speech length only the provider knows)."""

    path: Path
    start_s: float = 0.0
    sent_s: float | None = None


@dataclass(frozen=True)
class VerifyExpectations:
    video: bool = True
    audio: bool = True
    references: tuple[SyncReference, ...] = ()  # each provider result in the final, where it starts
    duration_s: float | None = None  # e.g. the sum of the segments' durations
    max_offset_s: float | None = None  # default: one frame of the final's video


def expectations_for(
    final: MuxResult, provider_results: list[Path], sent_seconds: list[float | None] | None = None
) -> VerifyExpectations:
    """What a final built by `mux` (one result) or `stitch` (one result per segment) must satisfy: every
    segment's audio in line with what its lips follow (at its place in the final, so the joins too), every
    result as long as the voice sent for it, and the whole as long as its segments."""
    sent = sent_seconds or [None] * len(provider_results)
    if isinstance(final.plan, StitchPlan):
        starts = itertools.accumulate(final.plan.segment_seconds[:-1], initial=0.0)
        refs = tuple(SyncReference(Path(p), s, d) for p, s, d in zip(provider_results, starts, sent, strict=True))
        return VerifyExpectations(references=refs, duration_s=sum(final.plan.segment_seconds))
    return VerifyExpectations(
        references=(SyncReference(Path(provider_results[0]), 0.0, sent[0]),), duration_s=final.plan.video_seconds
    )


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    measured: float | int | str | None
    allowed: float | int | str | None
    detail: str = ""


class VerifyFigures(BaseModel):
    model_config = ConfigDict(frozen=True)

    size_bytes: int | None = None
    container: str | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_s: float | None = None
    audio_codec: str | None = None
    audio_channels: int | None = None
    audio_sample_rate: int | None = None
    audio_s: float | None = None
    offset_s: float | None = None
    offset_correlation: float | None = None
    speech_s: float | None = None  # talking portrait: seconds of sound in the audio
    speech_modulation: float | None = None  # talking portrait: how much that sound's loudness moves (speech ~1)
    first_frame_ssim: float | None = None  # talking portrait: the first frame against the submitted image


class SegmentVerification(BaseModel):
    """One provider result inside the final: where it sits, how long it is against what was sent, and how
    its audio lines up with the final's there."""

    model_config = ConfigDict(frozen=True)

    index: int
    result: str  # the provider result's file name
    start_s: float  # where the segment starts in the final
    sent_s: float | None  # the voice sent for it (None: TTS)
    returned_s: float | None  # the result's video, from its packets
    offset_s: float | None  # final audio vs the result's audio there (+: later in the final)
    correlation: float | None
    checks: list[Check]

    @computed_field  # type: ignore[prop-decorator]  # mypy refuses a decorator over @property; pydantic documents this
    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class VerifyReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    checks: list[Check]
    figures: VerifyFigures
    segments: list[SegmentVerification] = []
    commands: list[list[str]] = []
    lip_sync: list[SyncScore] = []  # per delivered segment (`with_lip_sync`)

    @computed_field  # type: ignore[prop-decorator]  # mypy refuses a decorator over @property; pydantic documents this
    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def raise_if_failed(self) -> None:
        bad = self.failed()
        if bad:
            what = "; ".join(f"{c.name}: {c.detail or f'{c.measured} (allowed {c.allowed})'}" for c in bad)
            raise VerificationError(f"{self.path}: verification failed: {what}")


def _video_end(media: MediaProbe) -> float | None:
    """Where the last frame ends, read from the packets; the tagged duration if they cannot be read (the decode
    check reports that). Tagged durations of variable-rate video often leave out the last frame."""
    if media.video is None:
        return None
    try:
        return video_timing(media.path).seconds
    except LipsyncError:
        return media.video.duration or media.duration


def _figures(media: MediaProbe) -> VerifyFigures:
    v, a = media.video, media.audio
    return VerifyFigures(
        size_bytes=media.size_bytes,
        container=media.container,
        video_codec=v.codec if v else None,
        width=v.display_width if v else None,
        height=v.display_height if v else None,
        fps=v.fps if v else None,
        video_s=_video_end(media),
        audio_codec=a.codec if a else None,
        audio_channels=a.channels if a else None,
        audio_sample_rate=a.sample_rate if a else None,
        audio_s=(a.duration or media.duration) if a else None,
    )


def _stream_checks(fig: VerifyFigures, expect: VerifyExpectations) -> list[Check]:
    checks = []
    for kind, wanted, codec in (("video", expect.video, fig.video_codec), ("audio", expect.audio, fig.audio_codec)):
        if wanted:
            present = codec is not None
            checks.append(
                Check(
                    name=f"{kind}_stream",
                    ok=present,
                    measured=codec or "missing",
                    allowed="present",
                    detail="" if present else f"no {kind} stream",
                )
            )
    return checks


def _duration_checks(fig: VerifyFigures, expect: VerifyExpectations, frame: float) -> list[Check]:
    checks = []
    if fig.video_s is not None and fig.audio_s is not None:
        gap = abs(fig.video_s - fig.audio_s)
        checks.append(
            Check(
                name="av_duration",
                ok=gap <= frame + 1e-3,
                measured=round(gap, 4),
                allowed=round(frame, 4),
                detail=f"video {fig.video_s:.3f} s vs audio {fig.audio_s:.3f} s",
            )
        )
    if expect.duration_s is not None:
        actual = (fig.video_s if fig.video_s is not None else fig.audio_s) or 0.0
        gap = abs(actual - expect.duration_s)
        checks.append(
            Check(
                name="duration",
                ok=gap <= frame + 1e-3,
                measured=round(gap, 4),
                allowed=round(frame, 4),
                detail=f"{actual:.3f} s, expected {expect.duration_s:.3f} s",
            )
        )
    return checks


def _decode_check(final: Path) -> tuple[Check, FfmpegRun | None]:
    """Decode every frame and sample; ffmpeg at -v error prints nothing for a clean file."""
    out = ffmpeg.input(str(final)).output("-", format="null").global_args("-nostdin", "-v", "error")
    try:
        run = run_ffmpeg(compile_stream(out), what=f"decoding {final.name}")
    except LipsyncError as err:
        return Check(name="decode", ok=False, measured="error", allowed="clean", detail=str(err)), None
    errors = run.stderr_tail.strip()
    first = _DECODER_TAG.sub("", errors.splitlines()[0]) if errors else ""
    return Check(
        name="decode", ok=not errors, measured="clean" if not errors else "errors", allowed="clean", detail=first
    ), run


def _offset_check(final: Path, ref: SyncReference, name: str, allowed: float) -> tuple[Check, OffsetMeasurement | None]:
    """One reference's audio alignment, with its measurement (for the figures and the commands)."""
    try:
        m = measure_offset(ref.path, final, other_start=ref.start_s)
    except LipsyncError as err:
        return Check(name=name, ok=False, measured=None, allowed=round(allowed, 5), detail=str(err)), None
    ok = m.reliable and abs(m.seconds) <= allowed + 1e-4
    detail = (
        f"audio {m.seconds * 1000:+.1f} ms against {ref.path.name}"
        if m.reliable
        else f"audio does not match {ref.path.name} (r={m.correlation:.2f})"
    )
    return Check(name=name, ok=ok, measured=round(m.seconds, 5), allowed=round(allowed, 5), detail=detail), m


def _length_check(ref: SyncReference, name: str, frame: float) -> tuple[Check | None, float | None]:
    """The result's video against the voice that was sent for it (the provider lip-syncs all of it). Without
    a sent length (TTS, or a reference that is only a master sound) nothing is checked."""
    try:
        returned = video_timing(ref.path).seconds
    except LipsyncError as err:
        if ref.sent_s is None:
            return None, None
        return Check(name=name, ok=False, measured=None, allowed=None, detail=str(err)), None
    if ref.sent_s is None:
        return None, returned
    gap = returned - ref.sent_s
    return Check(
        name=name,
        ok=abs(gap) <= frame + 1e-3,
        measured=round(gap, 4),
        allowed=round(frame, 4),
        detail=f"{ref.path.name}: {returned:.3f} s returned for {ref.sent_s:.3f} s sent",
    ), returned


def _segment_checks(
    final: Path, refs: tuple[SyncReference, ...], allowed: float, frame: float, fig: VerifyFigures
) -> tuple[list[SegmentVerification], VerifyFigures, list[list[str]]]:
    """A record per reference (offset and length checks); the figures keep the worst offset and the weakest
    correlation."""
    segments, measured = [], []
    for i, ref in enumerate(refs):
        suffix = "" if len(refs) == 1 else f"_{i}"
        offset, m = _offset_check(final, ref, f"av_offset{suffix}", allowed)
        length, returned = _length_check(ref, f"segment_length{suffix}", frame)
        measured += [m] if m is not None else []
        segments.append(
            SegmentVerification(
                index=i,
                result=ref.path.name,
                start_s=round(ref.start_s, 6),
                sent_s=ref.sent_s,
                returned_s=returned,
                offset_s=round(m.seconds, 5) if m else None,
                correlation=round(m.correlation, 4) if m else None,
                checks=[offset] + ([length] if length else []),
            )
        )
    worst = max(measured, key=lambda m: abs(m.seconds), default=None)
    fig = fig.model_copy(
        update={
            "offset_s": round(worst.seconds, 5) if worst else None,
            "offset_correlation": round(min(m.correlation for m in measured), 4) if measured else None,
        }
    )
    return segments, fig, [list(argv) for m in measured for argv in m.commands]


def verify(final: str | Path, expect: VerifyExpectations = VerifyExpectations()) -> VerifyReport:
    """Run every check on `final`; never raises for a bad file (see `VerifyReport.raise_if_failed`)."""
    final = Path(final)
    media = _probe_or_report(final)
    if isinstance(media, VerifyReport):
        return media
    fig = _figures(media)
    frame = 1.0 / (fig.fps or DEFAULT_FPS)
    checks = _stream_checks(fig, expect)
    decode, run = _decode_check(final)
    checks.append(decode)
    commands = [run.argv] if run else []
    checks += _duration_checks(fig, expect, frame)
    segments: list[SegmentVerification] = []
    if expect.references and fig.audio_codec is not None:
        allowed = expect.max_offset_s if expect.max_offset_s is not None else frame
        segments, fig, decodes = _segment_checks(final, expect.references, allowed, frame, fig)
        checks += [check for segment in segments for check in segment.checks]
        commands += decodes
    return _report(final, checks, fig, commands, segments)


def _probe_or_report(final: Path) -> MediaProbe | VerifyReport:
    """The probe of `final`, or the report of a file that cannot be read at all."""
    try:
        return probe(final)
    except LipsyncError as err:
        fail = Check(name="readable", ok=False, measured="unreadable", allowed="readable", detail=str(err))
        return VerifyReport(path=str(final), checks=[fail], figures=VerifyFigures())


def _report(
    final: Path,
    checks: list[Check],
    fig: VerifyFigures,
    commands: list[list[str]],
    segments: list[SegmentVerification] | None = None,
) -> VerifyReport:
    report = VerifyReport(path=str(final), checks=checks, figures=fig, segments=segments or [], commands=commands)
    for c in report.failed():
        log.warning("%s: check %s failed: %s", final.name, c.name, c.detail)
    return report


# ---- talking portrait (image-to-video) -----------------------------------------------------------------

SPEECH_FRAME_S = 0.02
SILENT_DBFS = -60.0  # a frame under this is silence, however quiet the rest is
MIN_SPEECH_S = 0.5  # less sound than this is no spoken line
# Syllables and the gaps between words make speech's 20 ms loudness vary by about its own mean (coefficient
# of variation ~1); a held tone, a hum or a hiss varies by a few per cent. Between the two, with room.
MIN_SPEECH_MODULATION = 0.3
SSIM_SIZE = 256  # both pictures compared at this size, grey: the measure is about the picture,
# not about how the provider scaled or cropped it by a few pixels
_SSIM_ALL = re.compile(r"SSIM .*All:([0-9.]+)")


@dataclass(frozen=True)
class PortraitExpectations:
    """What a talking-portrait result must be: the resolution's short side, the clip's length, speech when a
    script was sent, and a first frame that looks like the submitted image."""

    image: Path  # the image as submitted (conformed)
    short_side: int  # 360 / 540 / 720 / 1080
    duration_s: float  # 5 or 8
    speech: bool = True  # a TTS script was sent
    side_tolerance_px: int = 2
    duration_tolerance_s: float = 0.5
    min_ssim: float = 0.5  # SSIM of the first frame against the image (1 = identical)


def speech_seconds(samples: npt.NDArray[np.float64], sample_rate: int) -> float:
    """Seconds of sound in mono samples: 20 ms frames within SILENCE_BELOW_LU of the loud end of the track
    (its 95th-percentile frame) and above SILENT_DBFS. Pure."""
    width = max(1, round(SPEECH_FRAME_S * sample_rate))
    count = len(samples) // width
    if count == 0:
        return 0.0
    frames = np.asarray(samples[: count * width], dtype=np.float64).reshape(count, width)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor = max(SILENT_DBFS, float(np.percentile(level, 95)) - SILENCE_BELOW_LU)
    return float(np.count_nonzero(level >= floor)) * width / sample_rate


def loudness_modulation(samples: npt.NDArray[np.float64], sample_rate: int) -> float:
    """How much the loudness of the sounding stretch moves: the coefficient of variation of the 20 ms RMS
    envelope from the first to the last frame above SILENT_DBFS (0 for silence). Pure."""
    width = max(1, round(SPEECH_FRAME_S * sample_rate))
    count = len(samples) // width
    if count == 0:
        return 0.0
    frames = np.asarray(samples[: count * width], dtype=np.float64).reshape(count, width)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    sounding = np.flatnonzero(20 * np.log10(rms + 1e-12) >= SILENT_DBFS)
    if sounding.size == 0:
        return 0.0
    envelope = rms[sounding[0] : sounding[-1] + 1]
    return float(np.std(envelope) / np.mean(envelope))


def first_frame_ssim(final: Path, image: Path) -> tuple[float, FfmpegRun]:
    """SSIM (ffmpeg's ssim filter) of the first frame of `final` against `image`, both grey at SSIM_SIZE."""

    def grey(stream: Stream) -> Stream:
        return stream.filter("scale", SSIM_SIZE, SSIM_SIZE).filter("format", "gray")

    frame = grey(ffmpeg.input(media_path(final))["V:0"].filter("trim", end_frame=1))
    picture = grey(ffmpeg.input(media_path(image))["v:0"])
    out = ffmpeg.filter([frame, picture], "ssim").output("-", format="null")
    run = run_ffmpeg(
        compile_stream(out.global_args("-nostdin", "-hide_banner", "-nostats")),
        what=f"comparing the first frame of {final.name} with {image.name}",
    )
    found = _SSIM_ALL.findall(run.stderr_tail)
    if not found:
        raise VerificationError(f"{final}: ffmpeg's ssim filter printed no score")
    return float(found[-1]), run


def _portrait_checks(
    final: Path, fig: VerifyFigures, expect: PortraitExpectations
) -> tuple[list[Check], VerifyFigures, list[list[str]]]:
    """Short side, length, speech and first-frame checks; the figures with speech_s and first_frame_ssim."""
    checks: list[Check] = []
    commands: list[list[str]] = []
    if fig.width is not None and fig.height is not None:
        short = min(fig.width, fig.height)
        checks.append(
            Check(
                name="short_side",
                ok=abs(short - expect.short_side) <= expect.side_tolerance_px,
                measured=short,
                allowed=f"{expect.short_side}±{expect.side_tolerance_px}",
                detail=f"{fig.width}x{fig.height}",
            )
        )
    if fig.video_s is not None:
        gap = abs(fig.video_s - expect.duration_s)
        checks.append(
            Check(
                name="duration",
                ok=gap <= expect.duration_tolerance_s,
                measured=round(fig.video_s, 3),
                allowed=f"{expect.duration_s:g}±{expect.duration_tolerance_s:g}",
                detail=f"{fig.video_s:.3f} s, expected {expect.duration_s:g} s",
            )
        )
    if expect.speech and fig.audio_codec is not None:
        try:
            samples = decode_pcm(final, sample_rate=16000)
            speech = round(speech_seconds(samples, 16000), 3)
            modulation = round(loudness_modulation(samples, 16000), 3)
            checks.append(
                Check(
                    name="speech",
                    ok=speech >= MIN_SPEECH_S and modulation >= MIN_SPEECH_MODULATION,
                    measured=speech,
                    allowed=f">={MIN_SPEECH_S} s, loudness modulation >={MIN_SPEECH_MODULATION}",
                    detail=f"{speech:.2f} s of sound, loudness modulation {modulation:.2f}",
                )
            )
            fig = fig.model_copy(update={"speech_s": speech, "speech_modulation": modulation})
        except LipsyncError as err:
            checks.append(Check(name="speech", ok=False, measured=None, allowed=f">={MIN_SPEECH_S}", detail=str(err)))
    if fig.video_codec is not None:
        try:
            ssim, run = first_frame_ssim(final, expect.image)
            commands.append(run.argv)
            checks.append(
                Check(
                    name="first_frame",
                    ok=ssim >= expect.min_ssim,
                    measured=round(ssim, 4),
                    allowed=f">={expect.min_ssim:g}",
                    detail=f"SSIM {ssim:.3f} against {Path(expect.image).name}",
                )
            )
            fig = fig.model_copy(update={"first_frame_ssim": round(ssim, 4)})
        except LipsyncError as err:
            checks.append(
                Check(name="first_frame", ok=False, measured=None, allowed=f">={expect.min_ssim:g}", detail=str(err))
            )
    return checks, fig, commands


def verify_portrait(final: str | Path, expect: PortraitExpectations) -> VerifyReport:
    """Check a talking-portrait result; never raises for a bad file (see `VerifyReport.raise_if_failed`)."""
    final = Path(final)
    media = _probe_or_report(final)
    if isinstance(media, VerifyReport):
        return media
    fig = _figures(media)
    checks = _stream_checks(fig, VerifyExpectations(video=True, audio=expect.speech))
    decode, run = _decode_check(final)
    checks.append(decode)
    portrait, fig, commands = _portrait_checks(final, fig, expect)
    return _report(final, checks + portrait, fig, ([run.argv] if run else []) + commands)


# --- lips against the sound (stages/mouth.py), per delivered segment -------------------------------------


def lip_sync_check(score: SyncScore, policy: SyncPolicy, name: str = "lip_sync") -> Check:
    """A segment's lip-sync figures as a check: out of bounds fails it with `check = "fail"`, else only says so."""
    problems = sync_problems(score, policy)
    measured = score.status if score.status != "ok" else f"{score.offset_frames:+d} frames, {score.confidence:.1f} sd"
    allowed = f"±{policy.max_offset_frames} frames, ≥ {policy.min_confidence:g} sd"
    detail = "; ".join(problems) if problems else f"r={score.correlation:.2f} at {score.offset_frames:+d} frames"
    if problems and policy.check == "warn":
        detail = f"warning only: {detail}"
    return Check(
        name=name, ok=not problems or policy.check == "warn", measured=measured, allowed=allowed, detail=detail
    )


def lip_sync_windows(final: MuxResult) -> list[tuple[float, float | None]]:
    """Each delivered segment's (start s, duration s) in a final built by `mux` (one) or `stitch` (several)."""
    if isinstance(final.plan, StitchPlan):
        seconds = final.plan.segment_seconds
        return list(zip(itertools.accumulate(seconds[:-1], initial=0.0), seconds, strict=True))
    return [(0.0, None)]


def with_lip_sync(
    report: VerifyReport, segments: list[tuple[float, float | None]], policy: SyncPolicy, *, audio: Path | None = None
) -> VerifyReport:
    """`report` plus a lip-sync score and check per segment of its file, each (start s, duration s | None)."""
    if report.figures.video_codec is None or (report.figures.audio_codec is None and audio is None):
        return report
    scores = [
        measure_sync(report.path, segment=i, start=start, duration=duration, audio=audio)
        for i, (start, duration) in enumerate(segments)
    ]
    names = ["lip_sync"] if len(scores) == 1 else [f"lip_sync_{i}" for i in range(len(scores))]
    checks = [lip_sync_check(score, policy, name) for score, name in zip(scores, names, strict=True)]
    for check in checks:
        if check.detail.startswith("warning only"):
            log.warning("%s: %s", Path(report.path).name, check.detail)
    return report.model_copy(update={"checks": [*report.checks, *checks], "lip_sync": scores})
