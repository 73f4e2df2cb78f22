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

import ffmpeg
from pydantic import BaseModel, ConfigDict, computed_field

from ..errors import LipsyncError, VerificationError
from ..ffmpeg import FfmpegRun, compile_stream, run_ffmpeg
from .avsync import OffsetMeasurement, measure_offset
from .mouth import SyncPolicy, SyncScore, measure_sync, sync_problems
from .mux import DEFAULT_FPS, MuxResult, StitchPlan, video_timing
from .probe import MediaProbe, probe

log = logging.getLogger("lipsync.verify")

_DECODER_TAG = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")
"""ffmpeg's "[h264 @ 0x55…] " prefix: a memory address, which would make reports differ run to run."""


@dataclass(frozen=True)
class SyncReference:
    """A provider result whose audio (what its lips follow) must line up with the final's audio from `start_s`."""

    path: Path
    start_s: float = 0.0


@dataclass(frozen=True)
class VerifyExpectations:
    video: bool = True
    audio: bool = True
    sync_reference: Path | None = None   # one provider result, at the start of the final
    segment_references: tuple[SyncReference, ...] = ()  # a stitched final: each segment's result and start
    duration_s: float | None = None      # e.g. the sum of the segments' durations
    max_offset_s: float | None = None    # default: one frame of the final's video

    def references(self) -> tuple[SyncReference, ...]:
        single = (SyncReference(Path(self.sync_reference)),) if self.sync_reference is not None else ()
        return single + self.segment_references


def expectations_for(final: MuxResult, provider_results: list[Path]) -> VerifyExpectations:
    """What a final built by `mux` (one result) or `stitch` (one result per segment) must satisfy."""
    if isinstance(final.plan, StitchPlan):
        starts = itertools.accumulate(final.plan.segment_seconds[:-1], initial=0.0)
        refs = tuple(SyncReference(Path(p), s) for p, s in zip(provider_results, starts))
        return VerifyExpectations(segment_references=refs, duration_s=sum(final.plan.segment_seconds))
    return VerifyExpectations(sync_reference=Path(provider_results[0]), duration_s=final.plan.video_seconds)


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


class VerifyReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    checks: list[Check]
    figures: VerifyFigures
    commands: list[list[str]] = []
    lip_sync: list[SyncScore] = []      # per delivered segment (`with_lip_sync`)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
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
            checks.append(Check(name=f"{kind}_stream", ok=present, measured=codec or "missing", allowed="present",
                                detail="" if present else f"no {kind} stream"))
    return checks


def _duration_checks(fig: VerifyFigures, expect: VerifyExpectations, frame: float) -> list[Check]:
    checks = []
    if fig.video_s is not None and fig.audio_s is not None:
        gap = abs(fig.video_s - fig.audio_s)
        checks.append(Check(name="av_duration", ok=gap <= frame + 1e-3, measured=round(gap, 4),
                            allowed=round(frame, 4),
                            detail=f"video {fig.video_s:.3f} s vs audio {fig.audio_s:.3f} s"))
    if expect.duration_s is not None:
        actual = (fig.video_s if fig.video_s is not None else fig.audio_s) or 0.0
        gap = abs(actual - expect.duration_s)
        checks.append(Check(name="duration", ok=gap <= frame + 1e-3, measured=round(gap, 4), allowed=round(frame, 4),
                            detail=f"{actual:.3f} s, expected {expect.duration_s:.3f} s"))
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
    return Check(name="decode", ok=not errors, measured="clean" if not errors else "errors", allowed="clean",
                 detail=first), run


def _offset_check(
    final: Path, ref: SyncReference, name: str, allowed: float
) -> tuple[Check, OffsetMeasurement | None]:
    """One reference's check, with its measurement (for the figures and the commands)."""
    try:
        m = measure_offset(ref.path, final, other_start=ref.start_s)
    except LipsyncError as err:
        return Check(name=name, ok=False, measured=None, allowed=round(allowed, 5), detail=str(err)), None
    ok = m.reliable and abs(m.seconds) <= allowed + 1e-4
    detail = (f"audio {m.seconds * 1000:+.1f} ms against {ref.path.name}"
              if m.reliable else f"audio does not match {ref.path.name} (r={m.correlation:.2f})")
    return Check(name=name, ok=ok, measured=round(m.seconds, 5), allowed=round(allowed, 5), detail=detail), m


def _offset_checks(final: Path, refs: tuple[SyncReference, ...], allowed: float, fig: VerifyFigures):
    """A check per reference; the figures keep the worst offset and the weakest correlation."""
    results = [_offset_check(final, ref, "av_offset" if len(refs) == 1 else f"av_offset_{i}", allowed)
               for i, ref in enumerate(refs)]
    measured = [m for _, m in results if m is not None]
    worst = max(measured, key=lambda m: abs(m.seconds), default=None)
    fig = fig.model_copy(update={
        "offset_s": round(worst.seconds, 5) if worst else None,
        "offset_correlation": round(min(m.correlation for m in measured), 4) if measured else None,
    })
    commands = [list(argv) for m in measured for argv in m.commands]
    return [check for check, _ in results], fig, commands


def verify(final: str | Path, expect: VerifyExpectations = VerifyExpectations()) -> VerifyReport:
    """Run every check on `final`; never raises for a bad file (see `VerifyReport.raise_if_failed`)."""
    final = Path(final)
    try:
        media = probe(final)
    except LipsyncError as err:
        fail = Check(name="readable", ok=False, measured="unreadable", allowed="readable", detail=str(err))
        return VerifyReport(path=str(final), checks=[fail], figures=VerifyFigures())
    fig = _figures(media)
    frame = 1.0 / (fig.fps or DEFAULT_FPS)
    checks = _stream_checks(fig, expect)
    decode, run = _decode_check(final)
    checks.append(decode)
    commands = [run.argv] if run else []
    checks += _duration_checks(fig, expect, frame)
    if expect.references() and fig.audio_codec is not None:
        allowed = expect.max_offset_s if expect.max_offset_s is not None else frame
        offset_checks, fig, decodes = _offset_checks(final, expect.references(), allowed, fig)
        checks += offset_checks
        commands += decodes
    report = VerifyReport(path=str(final), checks=checks, figures=fig, commands=commands)
    for c in report.failed():
        log.warning("%s: check %s failed: %s", final.name, c.name, c.detail)
    return report


# --- lips against the sound (stages/mouth.py), per delivered segment -------------------------------------


def lip_sync_check(score: SyncScore, policy: SyncPolicy, name: str = "lip_sync") -> Check:
    """A segment's lip-sync figures as a check: out of bounds fails it with `check = "fail"`, else only says so."""
    problems = sync_problems(score, policy)
    measured = score.status if score.status != "ok" else f"{score.offset_frames:+d} frames, {score.confidence:.1f} sd"
    allowed = f"±{policy.max_offset_frames} frames, ≥ {policy.min_confidence:g} sd"
    detail = "; ".join(problems) if problems else f"r={score.correlation:.2f} at {score.offset_frames:+d} frames"
    if problems and policy.check == "warn":
        detail = f"warning only: {detail}"
    return Check(name=name, ok=not problems or policy.check == "warn", measured=measured, allowed=allowed,
                 detail=detail)


def lip_sync_windows(final: MuxResult) -> list[tuple[float, float | None]]:
    """Each delivered segment's (start s, duration s) in a final built by `mux` (one) or `stitch` (several)."""
    if isinstance(final.plan, StitchPlan):
        seconds = final.plan.segment_seconds
        return list(zip(itertools.accumulate(seconds[:-1], initial=0.0), seconds))
    return [(0.0, None)]


def with_lip_sync(report: VerifyReport, segments: list[tuple[float, float | None]], policy: SyncPolicy,
                  *, audio: Path | None = None) -> VerifyReport:
    """`report` plus a lip-sync score and check per segment of its file, each (start s, duration s | None)."""
    if report.figures.video_codec is None or (report.figures.audio_codec is None and audio is None):
        return report
    scores = [measure_sync(report.path, segment=i, start=start, duration=duration, audio=audio)
              for i, (start, duration) in enumerate(segments)]
    names = ["lip_sync"] if len(scores) == 1 else [f"lip_sync_{i}" for i in range(len(scores))]
    checks = [lip_sync_check(score, policy, name) for score, name in zip(scores, names)]
    for check in checks:
        if check.detail.startswith("warning only"):
            log.warning("%s: %s", Path(report.path).name, check.detail)
    return report.model_copy(update={"checks": [*report.checks, *checks], "lip_sync": scores})
