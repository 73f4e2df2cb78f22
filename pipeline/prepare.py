"""Prepare: raw footage plus a voice track or a script → segments that fit every provider limit.

`prepare(PrepareRequest, out_dir)` is the library entry point (the CLI and the batch runner call it). It
writes deterministic names into `out_dir` (seg000.mp4, seg000.wav, ...) so reruns can cache by content,
and on any failure removes every file this call wrote. The voice track is, in order: `audio`, else TTS
`text`, else the video's own sound. `start`/`end` pick the part of the source video; they apply to the
voice track only when that is the video's own sound.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from .errors import InputError, ValidationError
from .ffmpeg import FfmpegRun, ProgressFn
from .fsutil import atomic_output, read_regular_file
from .limits import PROVIDERS, Limits, load_limits, strictest
from .speech import estimate_speech_seconds
from .stages.audio_tracks import choose_audio_track
from .stages.conform_audio import (
    AudioOptions,
    AudioResult,
    ChannelLevels,
    LoudnessTarget,
    VoiceCheck,
    check_voice,
    execute_audio,
    measure_channels,
    measure_speech_shares,
    plan_audio,
)
from .stages.conform_video import VideoOptions, VideoResult, execute_video, output_fps, plan_video
from .stages.cuts import CutCues, CutPlan, pauses_of, plan_cuts, sample_at
from .stages.face import FacePresence, FaceThresholds, face_presence, face_verdict
from .stages.probe import MediaProbe, probe_audio, probe_video
from .stages.sync import DEFAULT_SYNC_MODE, SyncMode, SyncPlan, TextSpan, max_job_seconds, plan_sync, plan_text_spans
from .stages.text import chunk_text, spoken
from .voices import resolve_voice

log = logging.getLogger("lipsync.prepare")
SEGMENT_FILE = re.compile(r"seg\d{3}\.(mp4|wav|mp3)")

LongMedia = Literal["split", "trim"]
StepProgress = Callable[[str, float], None]
"""Called with what is being done (e.g. "seg001 video") and the fraction of the whole prepare done (0..1)."""


@dataclass(frozen=True)
class PrepareRequest:
    video: Path
    audio: Path | None = None
    text: str | None = None
    speaker: str | None = None  # TTS voice name; "Auto" when not given
    provider: str | None = None  # None: the strictest limits of all providers
    sync_mode: SyncMode = DEFAULT_SYNC_MODE
    start: float | None = None  # seconds in the source video
    end: float | None = None
    limits: Limits | None = None  # overrides the provider's limits entirely
    loudness: LoudnessTarget = field(default_factory=LoudnessTarget)
    sample_rate: int = 48000
    audio_track: int | None = None  # the voice's track number (from 1) in --audio, else the video's sound
    face: FaceThresholds | None = field(default_factory=FaceThresholds)  # None: no face pre-flight
    require_face: bool = False  # a segment missing a face threshold is refused (before any create)
    long_media: LongMedia = "split"  # a voice and video longer than one job: "split" into jobs, or "trim"


@dataclass(frozen=True)
class Segment:
    index: int
    video: Path  # prepared mp4, inside every limit
    audio: Path | None  # prepared wav/mp3 (None for TTS)
    text: str | None  # TTS chunk (None when audio is given)
    speaker: str | None  # canonical voice name (pipeline.voices), for TTS
    start: float  # seconds in the source video
    end: float
    cut_reason: str | None = None  # footage split into jobs: why this segment ends where it does

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "video": str(self.video),
            "audio": None if self.audio is None else str(self.audio),
        }


@dataclass(frozen=True)
class PrepareResult:
    segments: list[Segment]
    limits: Limits
    sync: SyncPlan | None  # audio mode: the length policy applied
    text_spans: list[TextSpan]  # TTS mode: how the video was shared between chunks
    videos: list[VideoResult]  # one per segment
    audios: list[AudioResult]  # one per segment (empty for TTS)
    warnings: list[str]
    checks: list[FfmpegRun] = field(
        default_factory=list
    )  # runs that wrote no file (channel levels, the early voice check)
    faces: list[FacePresence] = field(default_factory=list)  # the face pre-flight, one per segment
    cuts: CutPlan | None = None  # the source frames each segment plays (from the range's start), when
    # each plays its range once; split: `audios` holds the one continuous
    # voice the segments' WAVs were cut from

    @property
    def runs(self) -> list[FfmpegRun]:
        return [
            *self.checks,
            *(run for step in self.videos for run in step.runs),
            *(run for step in self.audios for run in step.runs),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": [s.to_dict() for s in self.segments],
            "limits": self.limits.model_dump(),
            "sync": None if self.sync is None else self.sync.to_dict(),
            "text_spans": [s.to_dict() for s in self.text_spans],
            "videos": [v.to_dict() for v in self.videos],
            "audios": [a.to_dict() for a in self.audios],
            "checks": [run.argv for run in self.checks],
            "cuts": None if self.cuts is None else self.cuts.to_dict(),
            "warnings": self.warnings,
            "faces": [f.to_dict() for f in self.faces],
        }


def limits_for(request: PrepareRequest) -> Limits:
    if request.limits is not None:
        return request.limits
    if request.provider is not None:
        return load_limits(request.provider)
    return strictest([load_limits(p) for p in PROVIDERS])


def _check_request(request: PrepareRequest) -> str | None:
    """Refuse contradictory requests before any work; returns the canonical speaker for TTS."""
    if request.audio is not None and request.text is not None:
        raise ValidationError("give either a voice track (--audio) or a script (--text), not both")
    if request.speaker is not None and request.text is None:
        raise ValidationError("--speaker only applies to a script (--text or --text-file)")
    if request.start is not None and request.end is not None and request.end <= request.start:
        raise ValidationError(f"--end ({request.end:g} s) must be after --start ({request.start:g} s)")
    if request.start is not None and request.start < 0:
        raise ValidationError(f"--start must not be negative (got {request.start:g})")
    if request.audio_track is not None and request.text is not None:
        raise ValidationError("--audio-track picks a voice track; it does not apply to a script (--text)")
    if request.audio_track is not None and request.audio_track < 1:
        raise ValidationError(f"--audio-track counts from 1 (got {request.audio_track})")
    return resolve_voice(request.speaker or "Auto") if request.text is not None else None


def _source_range(p: MediaProbe, request: PrepareRequest) -> tuple[float, float]:
    assert p.video is not None  # probe_video found the picture
    total = p.video.duration or p.duration
    if not total:
        raise InputError(p.path, "cannot tell how long the video is")
    start = request.start or 0.0
    end = min(total, request.end) if request.end is not None else total
    if start >= end:
        raise InputError(p.path, f"nothing to use between {start:g} s and {end:g} s (the video lasts {total:.3f} s)")
    return start, end


def _seconds_of(p: MediaProbe) -> float:
    seconds = (p.video.duration if p.video else None) or p.duration
    if not seconds:
        raise InputError(p.path, "the conformed video has no duration")
    return seconds


class _Outputs:
    """The files this prepare call writes; removed again if the call fails."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.written: list[Path] = []

    def path(self, name: str) -> Path:
        path = self.out_dir / name
        self.written.append(path)
        return path

    def remove_all(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


class _Progress:
    def __init__(self, report: StepProgress | None, steps: int):
        self.report, self.steps, self.done = report, steps, 0

    def step(self, what: str) -> ProgressFn | None:
        """A ProgressFn for the next step, mapping its fraction into the whole."""
        log.info("prepare: %s", what)
        base, self.done = self.done, self.done + 1
        report = self.report
        if report is None:
            return None
        return lambda f: report(what, (base + f) / self.steps)


@dataclass(frozen=True)
class VoicePlan:
    """What prepare decides for a voice track (or the video's own sound) before any file is written: the
    voice's track, the length policy, the early voice check and, for footage split into jobs, the cut plan."""

    probe: MediaProbe  # the voice's source (the video itself for its own sound), track chosen
    own_sound: bool
    start: float  # the video's source range, seconds
    end: float
    sync: SyncPlan
    audio_limits: Limits  # `limits`, or for a split voice the whole track's (cut into jobs later)
    audio_opts: AudioOptions
    levels: ChannelLevels | None
    early: VoiceCheck
    cuts: CutPlan | None  # None: one job
    warnings: tuple[str, ...]
    checks: tuple[FfmpegRun, ...]


def plan_voice(request: PrepareRequest, vp: MediaProbe, limits: Limits) -> VoicePlan:
    """Choose the voice's track, the length policy and (split) the cuts; measures, writes nothing."""
    own_sound = request.audio is None
    if own_sound and vp.audio is None:
        raise InputError(vp.path, "has no sound: give a voice track (--audio) or a script (--text)")
    assert vp.video is not None  # probe_video found the picture
    ap = vp if request.audio is None else probe_audio(request.audio)
    start, end = _source_range(vp, request)
    # the file's own sound is cut on the file's timeline, where the picture may start late (edit list, TS)
    audio_range = (start + vp.video.start, end + vp.video.start) if own_sound else (None, None)
    shares, shares_run = measure_speech_shares(ap, audio_range[0] or 0.0, end - start if own_sound else None)
    track = choose_audio_track(ap, request.audio_track, shares)
    ap = ap.with_audio_track(track.index)
    assert ap.audio is not None  # with_audio_track selected it
    audio_seconds = (end - start) if own_sound else (ap.audio.end or ap.duration or 0.0)
    sync, split_warning = _length_policy(end - start, audio_seconds, request, limits)
    split = split_warning is None and sync.duration > max_job_seconds(limits)
    audio_limits = _whole_track_limits(limits, sync.duration) if split else limits
    audio_opts = AudioOptions(
        start=audio_range[0],
        end=audio_range[1],
        sample_rate=request.sample_rate,
        loudness=request.loudness,
        track=track,
        format="wav" if split else None,
    )
    # an unusable voice (silent, a knock over room tone) fails in a second, before the (slow) video encode;
    # the channel levels and the check are reused for the audio conform
    levels, channel_run = measure_channels(plan_audio(ap, audio_limits, audio_opts))
    early = check_voice(plan_audio(ap, audio_limits, replace(audio_opts, target_duration=sync.duration), levels))
    cuts = None
    if split:
        pauses = pauses_of(early.source_speech) if early.source_speech is not None else ()
        cuts = plan_cuts(
            sync.duration, output_fps(vp.video, VideoOptions().max_fps)[0], limits, cues=CutCues(pauses=pauses)
        )
    warnings = (
        *vp.warnings,
        *([] if own_sound else ap.warnings),
        *([track.warning] if track.warning else []),
        *sync.warnings,
        *([split_warning] if split_warning else []),
    )
    checks = tuple(run for run in (shares_run, channel_run, early.run) if run is not None)
    return VoicePlan(ap, own_sound, start, end, sync, audio_limits, audio_opts, levels, early, cuts, warnings, checks)


def _length_policy(
    video_s: float, audio_s: float, request: PrepareRequest, limits: Limits
) -> tuple[SyncPlan, str | None]:
    """The sync plan, whole when it will be split into jobs; with a warning when a split was asked for and
    cannot be done (a voice longer than its video: the loop/bounce of each part is not planned yet)."""
    whole = plan_sync(video_s, audio_s, request.sync_mode, limits, capped=False)
    if request.long_media == "trim" or whole.duration <= max_job_seconds(limits):
        return plan_sync(video_s, audio_s, request.sync_mode, limits), None
    if whole.video_extend is not None:
        return plan_sync(video_s, audio_s, request.sync_mode, limits), (
            f"the voice ({audio_s:.3f} s) is longer than the video ({video_s:.3f} s): splitting such a pair into "
            f"jobs is not supported yet, so it is trimmed to one job"
        )
    return whole, None


def _whole_track_limits(limits: Limits, seconds: float) -> Limits:
    """Limits that let the whole voice be conformed as one WAV, before it is cut into jobs' parts."""
    return limits.model_copy(
        update={"audio_max_seconds": math.ceil(seconds) + 1, "audio_max_bytes": 2**62, "audio_containers": ["wav"]}
    )


def _prepare_with_audio(
    request: PrepareRequest, vp: MediaProbe, limits: Limits, outputs: _Outputs, report: StepProgress | None
) -> PrepareResult:
    voice = plan_voice(request, vp, limits)
    assert vp.video is not None  # probe_video found the picture
    if voice.cuts is not None:
        return _prepare_split(vp, voice, limits, outputs, report)
    progress = _Progress(report, steps=2)
    video_plan = plan_video(
        vp,
        limits,
        VideoOptions(
            start=voice.start,
            end=voice.end,
            target_duration=voice.sync.duration,
            extend=voice.sync.video_extend,
            keep_audio=False,
        ),
    )
    video = execute_video(video_plan, outputs.path("seg000.mp4"), progress.step("seg000 video"))
    # the audio is cut/padded to the video as encoded (whole frames), so the two match to the sample
    audio_plan = plan_audio(
        voice.probe, limits, replace(voice.audio_opts, target_duration=_seconds_of(video.probe)), voice.levels
    )
    audio = execute_audio(
        audio_plan, outputs.path(f"seg000.{audio_plan.format}"), progress.step("seg000 audio"), checked=voice.early
    )
    segment = Segment(
        0, video.path, audio.path, None, None, voice.start, min(voice.end, voice.start + voice.sync.duration)
    )
    warnings = [*voice.warnings, *video_plan.warnings, *audio.warnings]
    once = (
        None
        if voice.sync.video_extend
        else _one_segment_plan(
            _seconds_of(video.probe), video_plan.fps or output_fps(vp.video, VideoOptions().max_fps)[0], limits
        )
    )
    return PrepareResult([segment], limits, voice.sync, [], [video], [audio], warnings, list(voice.checks), cuts=once)


def _one_segment_plan(seconds: float, fps: float, limits: Limits) -> CutPlan | None:
    """A job that plays its range of the source once, as a cut plan (the editor's cut list); None for a
    clip no plan can hold (under a frame, or limits overridden below two frames): it is delivered without one."""
    try:
        return plan_cuts(seconds, fps, limits)
    except ValidationError:
        return None


def _prepare_split(
    vp: MediaProbe, voice: VoicePlan, limits: Limits, outputs: _Outputs, report: StepProgress | None
) -> PrepareResult:
    """Footage longer than one job: each planned segment's video range conformed on its own, and its voice
    cut at sample-exact points out of one continuous normalized track (no per-part encode, so no drift)."""
    plan = voice.cuts
    assert plan is not None
    assert vp.video is not None  # probe_video found the picture
    fps = output_fps(vp.video, VideoOptions().max_fps)[0]
    rate = Fraction(str(fps))  # the frame grid conform_video encodes on (its fps filter's rate)
    progress = _Progress(report, steps=len(plan.segments) + 1)
    sample_rate = voice.audio_opts.sample_rate
    whole = plan_audio(
        voice.probe,
        voice.audio_limits,
        replace(voice.audio_opts, target_duration=float(plan.frames / rate)),
        voice.levels,
    )
    bounds = [
        (sample_at(s.start_frame, rate, sample_rate), sample_at(s.end_frame, rate, sample_rate)) for s in plan.segments
    ]
    with tempfile.TemporaryDirectory(prefix="lipsync-voice-") as scratch:
        master = execute_audio(
            whole, Path(scratch) / "voice.wav", progress.step("the whole voice"), checked=voice.early
        )
        wavs = _cut_wav(master.path, bounds, [outputs.path(f"seg{s.index:03d}.wav") for s in plan.segments])
    segments, videos, warnings = [], [], [*voice.warnings, *master.warnings]
    for seg, wav in zip(plan.segments, wavs, strict=True):
        name = f"seg{seg.index:03d}"
        # the plan rounds the source to whole frames: its last frame may end up to half a frame past the source
        start = float(voice.start + seg.start_frame / rate)
        end = min(float(voice.start + seg.end_frame / rate), voice.end)
        # the target is the range itself (end - start as conform_video computes it): whole frames already
        video_plan = plan_video(
            vp, limits, VideoOptions(start=start, end=end, target_duration=end - start, keep_audio=False)
        )
        video = execute_video(video_plan, outputs.path(f"{name}.mp4"), progress.step(f"{name} video"))
        segments.append(Segment(seg.index, video.path, wav, None, None, start, end, seg.cut.reason))
        videos.append(video)
        warnings += video_plan.warnings
    return PrepareResult(segments, limits, voice.sync, [], videos, [master], warnings, list(voice.checks), cuts=plan)


def _cut_wav(src: Path, bounds: list[tuple[int, int]], dsts: list[Path]) -> list[Path]:
    """Copy the samples [first, end) of the WAV `src` into each of `dsts` (same format; each written atomically)."""
    with wave.open(str(src), "rb") as whole:
        params = whole.getparams()
        if bounds[-1][1] > params.nframes:
            raise ValidationError(
                f"{src.name}: the voice holds {params.nframes} samples, the cut plan needs {bounds[-1][1]}"
            )
        for (first, end), dst in zip(bounds, dsts, strict=True):
            whole.setpos(first)
            frames = whole.readframes(end - first)
            with atomic_output(dst) as tmp, wave.open(str(tmp), "wb") as part:
                part.setparams(params)
                part.writeframes(frames)
    return dsts


def text_spans(request: PrepareRequest, vp: MediaProbe, limits: Limits) -> tuple[list[str], list[TextSpan]]:
    """A script's chunks (one TTS job each) and the part of the video each one gets."""
    assert request.text is not None  # a script's request
    chunks = chunk_text(request.text, limits.tts_max_chars, max_job_seconds(limits))
    start, end = _source_range(vp, request)
    speech = [estimate_speech_seconds(spoken(c)) for c in chunks]
    return chunks, plan_text_spans(start, end, speech, request.sync_mode, limits)


def _prepare_with_text(
    request: PrepareRequest,
    speaker: str | None,
    vp: MediaProbe,
    limits: Limits,
    outputs: _Outputs,
    report: StepProgress | None,
) -> PrepareResult:
    chunks, spans = text_spans(request, vp, limits)
    progress = _Progress(report, steps=len(spans))
    segments, videos, warnings = [], [], list(vp.warnings)
    for span, chunk in zip(spans, chunks, strict=True):
        plan = plan_video(
            vp,
            limits,
            VideoOptions(
                start=span.start,
                end=span.end,
                target_duration=span.duration,
                extend=span.extend,
                keep_audio=False,
            ),
        )
        name = f"seg{span.index:03d}"
        video = execute_video(plan, outputs.path(f"{name}.mp4"), progress.step(f"{name} video"))
        segments.append(Segment(span.index, video.path, None, spoken(chunk), speaker, span.start, span.end))
        videos.append(video)
        warnings += [*span.warnings, *plan.warnings]
    return PrepareResult(segments, limits, None, spans, videos, [], warnings)


def _face_preflight(request: PrepareRequest, result: PrepareResult) -> PrepareResult:
    """Look for a face in every conformed segment: warnings, or (require_face) a refusal before any create."""
    if request.face is None:
        return result
    faces = [face_presence(s.video, s.index) for s in result.segments]
    verdict = face_verdict(faces, request.face, require_face=request.require_face)
    if verdict.refusal is not None:
        raise ValidationError(f"{request.video}: {verdict.refusal}")
    return replace(result, faces=faces, warnings=[*result.warnings, *verdict.warnings])


MAX_SCRIPT_BYTES = 1_000_000  # 20 creates of 200 characters are 4 KB; a 1 MB script is already a mistake


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A script file as text (UTF-8, with or without a BOM)."""
    try:
        text = read_regular_file(path, MAX_SCRIPT_BYTES, "script", ValidationError).decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    if not text.strip():
        raise InputError(path, "the script is empty")
    return text


def _check_inputs_are_not_outputs(request: PrepareRequest, out_dir: Path) -> None:
    """An input named like a segment inside the output folder would be overwritten or removed as stale."""
    for given in (request.video, request.audio):
        if (
            given is not None
            and SEGMENT_FILE.fullmatch(Path(given).name)
            and Path(given).resolve().parent == out_dir.resolve()
        ):
            raise InputError(
                given, "is inside the output folder with a name prepare writes there; move it or choose another --out"
            )


def _remove_stale_segments(out_dir: Path, keep: list[Path]) -> None:
    """Segment files of an earlier prepare into the same folder that this result does not name."""
    for path in out_dir.iterdir():
        if SEGMENT_FILE.fullmatch(path.name) and path not in keep:
            log.info("prepare: removing %s, left over from an earlier prepare", path.name)
            path.unlink(missing_ok=True)


def prepare(
    request: PrepareRequest, out_dir: str | os.PathLike[str], progress: StepProgress | None = None
) -> PrepareResult:
    """Conform the request's media into `out_dir`. On failure, no file this call wrote is left behind."""
    speaker = _check_request(request)
    limits = limits_for(request)
    out_dir = Path(out_dir)
    _check_inputs_are_not_outputs(request, out_dir)
    outputs = _Outputs(out_dir)
    try:
        vp = probe_video(request.video)
        out_dir.mkdir(parents=True, exist_ok=True)
        if request.text is not None:
            result = _prepare_with_text(request, speaker, vp, limits, outputs, progress)
        else:
            result = _prepare_with_audio(request, vp, limits, outputs, progress)
        result = _face_preflight(request, result)
    except BaseException:
        outputs.remove_all()
        raise
    _remove_stale_segments(out_dir, outputs.written)
    for warning in result.warnings:
        log.warning(warning)
    return result
