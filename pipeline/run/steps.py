"""The runner's two ends, written against the stage modules: prepare a job's media, and deliver its result.

The runner decides when these run (and never runs them twice for the same inputs); here is only how a
`JobSpec` maps onto `pipeline.prepare` and onto mux → verify → hand off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ..fsutil import sha256_file
from ..killpoints import kill_point
from ..providers.store import CreateRecord
from .config import JobSpec
from .ledger import Stage

if TYPE_CHECKING:
    from ..animate import ClipDone, PortraitPlan
    from ..limits import ImageLimits
    from ..prepare import PrepareRequest
    from ..pricing import Estimate
    from ..stages.handoff import CostSection, Manifest, ProviderJob, SegmentSummary
    from ..stages.mux import MuxResult
    from ..stages.verify import VerifyReport

log = logging.getLogger("lipsync.run")


class PreparedSegment(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    video: Path
    audio: Path | None
    text: str | None
    speaker: str | None
    start: float
    end: float
    video_sha256: str
    audio_sha256: str | None
    seconds: float | None = None  # the prepared video's length (what the provider returns); None: cached before


class ConformReport(BaseModel):
    """What prepare decided and measured, as JSON for the manifest (kept with the cached prepare)."""

    model_config = ConfigDict(frozen=True)

    videos: list[dict[str, Any]]  # VideoResult.to_dict(): plan with reasons, attempts, output probe
    audios: list[dict[str, Any]]  # AudioResult.to_dict() (empty for TTS)
    sync: dict[str, Any] | None
    text_spans: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    loudness: list[dict[str, Any]]
    commands: list[list[str]]
    warnings: list[str]
    faces: list[dict[str, Any]] = []  # FacePresence.to_dict() per segment: the face pre-flight
    cuts: dict[str, Any] | None = None  # CutPlan.to_dict(): the source frames each segment plays, when known


class PreparedJob(BaseModel):
    """What prepare produced for one set of inputs: cached in the work dir, keyed by the inputs."""

    model_config = ConfigDict(frozen=True)

    inputs_key: str
    segments: list[PreparedSegment]
    report: ConformReport


@dataclass(frozen=True)
class SegmentResult:
    segment: PreparedSegment
    record: CreateRecord  # the ledger's record of the provider job (downloaded)
    path: Path  # the provider's result on our disk


def prepare_request(spec: JobSpec) -> PrepareRequest:
    """The prepare call a footage job makes (also what `lipsync plan` plans with)."""
    from ..prepare import PrepareRequest
    from ..stages.conform_audio import LoudnessTarget
    from ..stages.sync import DEFAULT_SYNC_MODE

    targets = {"integrated": spec.loudness_lufs, "true_peak": spec.true_peak_dbtp}
    loudness = LoudnessTarget(**{name: value for name, value in targets.items() if value is not None})
    assert spec.video is not None  # a footage job (a portrait job has an image instead)
    return PrepareRequest(
        video=spec.video,
        audio=spec.audio,
        text=spec.text,
        speaker=spec.speaker if spec.text else None,
        provider=spec.provider,
        limits=spec.limits,
        sync_mode=spec.sync_mode or DEFAULT_SYNC_MODE,
        start=spec.start,
        end=spec.end,
        loudness=loudness,
        audio_track=spec.audio_track if spec.text is None else None,
        face=spec.face,
        require_face=spec.require_face,
        long_media=spec.long_media,
    )


def prepare_job(spec: JobSpec, key: str, work: Path, progress: Callable[[float], None]) -> PreparedJob:
    """Probe and conform the job's inputs into `work`; every segment fits the provider's limits."""
    from ..prepare import prepare

    result = prepare(prepare_request(spec), work, progress=lambda _what, fraction: progress(fraction))
    segments = [
        PreparedSegment(
            index=s.index,
            video=s.video,
            audio=s.audio,
            text=s.text,
            speaker=s.speaker,
            start=s.start,
            end=s.end,
            video_sha256=sha256_file(s.video),
            audio_sha256=sha256_file(s.audio) if s.audio else None,
            seconds=video.probe.video.duration if video.probe.video else video.probe.duration,
        )
        for s, video in zip(result.segments, result.videos, strict=True)
    ]
    report = ConformReport(
        videos=[v.to_dict() for v in result.videos],
        audios=[a.to_dict() for a in result.audios],
        sync=None if result.sync is None else result.sync.to_dict(),
        text_spans=[t.to_dict() for t in result.text_spans],
        segments=[seg.to_dict() for seg in result.segments],
        loudness=[a.loudness.to_dict() for a in result.audios],
        commands=[list(run.argv) for run in result.runs],
        warnings=list(result.warnings),
        faces=[f.to_dict() for f in result.faces],
        cuts=None if result.cuts is None else result.cuts.to_dict(),
    )
    return PreparedJob(inputs_key=key, segments=segments, report=report)


def estimate_job(spec: JobSpec, prepared: PreparedJob, prices: dict[str, Any]) -> Estimate:
    """What the job's provider jobs will cost, from the media prepared for them (as `lipsync plan` estimates)."""
    from ..pricing import PlannedJob, estimate, load_price

    jobs = [
        PlannedJob(s.index, s.seconds if s.seconds is not None else s.end - s.start, len(s.text or ""))
        for s in prepared.segments
    ]
    return estimate(spec.provider, load_price(spec.provider, prices.get(spec.provider)), jobs)


def face_refusal(spec: JobSpec, prepared: PreparedJob) -> str | None:
    """The face verdict of a *cached* prepare under the job's present thresholds: the cache key does not hold
    them (they change no media), so a run that now requires a face must ask again before any create."""
    from ..stages.face import FacePresence, face_verdict

    faces = [FacePresence.from_dict(f) for f in prepared.report.faces]
    return face_verdict(faces, spec.face, require_face=spec.require_face).refusal


def deliver_job(
    spec: JobSpec,
    prepared: PreparedJob,
    results: list[SegmentResult],
    *,
    work: Path,
    job_dir: Path,
    base_dir: Path,
    on_stage: Callable[[Stage], None],
    estimate: Estimate | None = None,
) -> Path:
    """Mux each provider result with its master audio, stitch segments, verify, and write the handoff folder."""
    from ..stages.handoff import FINAL_NAME, write_handoff
    from ..stages.mux import join_results
    from ..stages.verify import expectations_for, lip_sync_windows, verify, with_lip_sync

    muxed, final = join_results([r.path for r in results], [r.segment.audio for r in results], work, FINAL_NAME)
    on_stage(Stage.VERIFY)
    expect = expectations_for(final, [r.path for r in results], [_voice_seconds(r.segment) for r in results])
    report = with_lip_sync(verify(final.path, expect), lip_sync_windows(final), spec.sync)
    report.raise_if_failed()
    on_stage(Stage.HANDOFF)
    kill_point("handoff")
    manifest = _manifest(spec, prepared, results, muxed, final, report, base_dir, estimate)
    extra = [final.audio_file] if final.audio_file and final.audio_file.is_file() else []
    write_handoff(
        job_dir, final.path, manifest, extra_files=[*extra, *_cut_list(spec, prepared, results, report, work)]
    )
    return job_dir / FINAL_NAME


def _cut_list(
    spec: JobSpec, prepared: PreparedJob, results: list[SegmentResult], verification: VerifyReport, work: Path
) -> list[Path]:
    """`timeline.otio` and `cuts.edl` in `work` for an editor: one clip per segment, on the source's own
    timecode; none when the segments do not each play a range of the source once from its first frame
    (a script's parts, a looped video, a range starting later: not drawn yet)."""
    from ..stages.cuts import CutPlan
    from ..stages.timeline import build_timeline, source_timecode, write_timeline

    cuts = prepared.report.cuts
    if cuts is None or spec.video is None or prepared.segments[0].start != 0:
        return []
    offsets = {s.index: s.offset_s for s in verification.segments}  # in the order of `results`
    by_segment = {
        r.segment.index: {"provider_job": r.record.provider_job_id, "offset_s": offsets.get(i)}
        for i, r in enumerate(results)
    }
    metadata = [by_segment[index] for index in sorted(by_segment)]
    timeline = build_timeline(
        CutPlan.from_dict(cuts),
        spec.video,
        start_timecode=source_timecode(spec.video),
        name=spec.id,
        clip_metadata=metadata,
    )
    files = write_timeline(timeline, work)
    return [files.otio, files.edl]


def deliver_portrait(
    spec: JobSpec,
    plan: PortraitPlan,
    clips: list[ClipDone],
    limits: ImageLimits,
    *,
    work: Path,
    job_dir: Path,
    base_dir: Path,
    on_stage: Callable[[Stage], None],
) -> Path:
    """Stitch a portrait's clips (one is used as is), verify it against what was asked, write the handoff folder."""
    from ..animate import assemble_portrait
    from ..stages.handoff import FINAL_NAME, ConformSection, InputFile, Manifest, tool_versions, write_handoff

    assert spec.portrait is not None
    on_stage(Stage.VERIFY)
    assembled = assemble_portrait(plan, clips, work, limits)
    assembled.verification.raise_if_failed()
    on_stage(Stage.HANDOFF)
    inputs = [InputFile.describe("image", spec.portrait.image, base_dir)]
    if spec.text_file is not None:
        inputs.append(InputFile.describe("script", spec.text_file, base_dir))
    records = [c.record for c in clips]
    manifest = Manifest(
        job_id=spec.id,
        created_at=min((r.created_at or time.time()) for r in records),
        completed_at=time.time(),
        inputs=inputs,
        config=spec.manifest_config(base_dir),
        conform=ConformSection(
            image=_image_section(plan), script=plan.script.to_dict(), text_chunks=[c.spoken for c in plan.script.clips]
        ),
        provider_jobs=[_provider_job(r) for r in records],
        verification=assembled.verification,
        ffmpeg_commands=[*assembled.commands, *assembled.verification.commands],
        tools=tool_versions(),
    )
    write_handoff(job_dir, assembled.path, manifest)
    return job_dir / FINAL_NAME


def _image_section(plan: PortraitPlan) -> dict[str, Any]:
    """The conformed image for the manifest, without the paths of this machine."""
    image = plan.image.to_dict()
    del image["path"], image["plan"]["source"], image["plan"]["probe"]["path"]
    return image


def _voice_seconds(segment: PreparedSegment) -> float | None:
    """How long the voice sent with a segment is (None for TTS: only the provider knows its speech)."""
    from ..stages.probe import probe_audio

    if segment.audio is None:
        return None
    audio = probe_audio(segment.audio).audio
    return audio.duration if audio else None


def _manifest(
    spec: JobSpec,
    prepared: PreparedJob,
    results: list[SegmentResult],
    muxed: list[MuxResult],
    final: MuxResult,
    verification: VerifyReport,
    base_dir: Path,
    estimate: Estimate | None,
) -> Manifest:
    from pydantic import TypeAdapter

    from ..prepare import Segment
    from ..stages.handoff import AudioSection, ConformSection, InputFile, Manifest, tool_versions
    from ..stages.sync import SyncPlan

    assert spec.video is not None  # a footage job
    inputs = [InputFile.describe("video", spec.video, base_dir)]
    if spec.audio is not None:
        inputs.append(InputFile.describe("audio", spec.audio, base_dir))
    if spec.text_file is not None:
        inputs.append(InputFile.describe("script", spec.text_file, base_dir))
    conformed = prepared.report
    provider_jobs = [_provider_job(r.record) for r in results]
    commands = [*conformed.commands, *(c for m in muxed for c in m.to_dict()["commands"])]
    if len(muxed) > 1:
        commands += final.to_dict()["commands"]
    conform = ConformSection(
        video={"segments": conformed.videos},
        audio={"segments": conformed.audios} if conformed.audios else None,
        # the cached prepare keeps these as JSON; the manifest holds them as the typed records they were
        sync=TypeAdapter(SyncPlan | None).validate_python(conformed.sync),
        text_chunks=[s.text for s in prepared.segments if s.text],
        segments=TypeAdapter(list[Segment]).validate_python(conformed.segments),
        faces=conformed.faces,
    )
    loudness = {"segments": conformed.loudness}
    return Manifest(
        job_id=spec.id,
        created_at=min((p.created_at or time.time()) for p in provider_jobs),
        completed_at=time.time(),
        inputs=inputs,
        config=spec.manifest_config(base_dir),
        conform=conform,
        audio=AudioSection(loudness=loudness, mux=final.to_dict()),
        provider_jobs=provider_jobs,
        segments=_segment_summaries(prepared, results, verification),
        cost=None if estimate is None else _cost_section(estimate, provider_jobs),
        verification=verification,
        ffmpeg_commands=[*commands, *verification.commands],
        tools=tool_versions(),
    )


def _segment_summaries(
    prepared: PreparedJob, results: list[SegmentResult], verification: VerifyReport
) -> list[SegmentSummary]:
    """Per segment: its source range and cut reason, its provider job, and its verification at its join."""
    from ..stages.handoff import SegmentSummary

    cut_reasons = {s["index"]: s.get("cut_reason") for s in prepared.report.segments}
    # verification.segments are in the order of `results`
    checked = dict(zip((r.segment.index for r in results), verification.segments, strict=False))
    summaries: list[SegmentSummary] = []
    for r in results:
        seg, v = r.segment, checked.get(r.segment.index)
        summaries.append(
            SegmentSummary(
                index=seg.index,
                source_start=seg.start,
                source_end=seg.end,
                cut_reason=cut_reasons.get(seg.index),
                provider_job=r.record.provider_job_id,
                final_start_s=None if v is None else v.start_s,
                offset_s=None if v is None else v.offset_s,
                correlation=None if v is None else v.correlation,
                sent_s=None if v is None else v.sent_s,
                returned_s=None if v is None else v.returned_s,
                ok=None if v is None else v.ok,
            )
        )
    return summaries


def _cost_section(estimate: Estimate, provider_jobs: list[ProviderJob]) -> CostSection:
    from ..pricing import UNKNOWN
    from ..stages.handoff import CostSection, SegmentCost

    credits = [p.credits for p in provider_jobs if p.credits is not None]
    return CostSection(
        estimated=UNKNOWN if estimate.total is None else str(estimate.total),
        currency=estimate.currency,
        price_source=estimate.reasons[0] if estimate.reasons else None,
        segments=[
            SegmentCost(
                segment=line.index,
                seconds=line.seconds,
                tts_characters=line.tts_characters,
                estimated=UNKNOWN if line.amount is None else str(line.amount),
                reason=line.reason,
            )
            for line in estimate.lines
        ],
        reported_credits=sum(credits) if credits else None,
    )


def _provider_job(rec: CreateRecord) -> ProviderJob:
    from ..stages.handoff import ProviderJob

    status = rec.final_status or {}
    urls = (rec.handle or {}).get("urls") or {}
    return ProviderJob(
        provider=rec.provider,
        endpoint=urls.get("status") or urls.get("create") or next(iter(urls.values()), rec.provider),
        job_id=rec.provider_job_id or "",
        segment=rec.segment,
        created_at=rec.created_at,
        finished_at=rec.finished_at,
        poll_count=rec.polls,
        credits=status.get("credits"),
        final_status=rec.provider_state,
        result_url=rec.result_url,
        width=status.get("width"),
        height=status.get("height"),
        usage=status.get("usage") or None,
    )
