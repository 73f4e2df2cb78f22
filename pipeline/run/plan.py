"""`lipsync plan`: what a config would do and cost, before anything is created or written.

Per job: the provider jobs it makes (one per segment), each segment's source range and why it ends there,
and the estimated cost (pipeline.pricing). The segments are decided the way prepare decides them: a script's
chunks (text.chunk_text via prepare.text_spans), a voice's length policy and cut plan (prepare.plan_voice,
which measures the voice but writes nothing), a portrait's clips (animate.check_portrait). No network.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..errors import BillingError
from ..pricing import Estimate, PlannedJob, budget_refusal, estimate, load_price
from .config import JobSpec, RunConfig


@dataclass(frozen=True)
class PlannedPart:
    """One provider job of a job: the part of the source it carries and why it ends where it does."""

    index: int
    start: float  # seconds in the source video (a portrait: in the final clip sequence)
    end: float
    seconds: float  # the provider's output length
    tts_characters: int  # characters the provider speaks (0 with a voice track)
    cut_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "seconds": round(self.seconds, 6),
            "tts_characters": self.tts_characters,
            "cut_reason": self.cut_reason,
        }


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    provider: str
    voice: str  # "script", "audio", "own sound" or "portrait"
    parts: tuple[PlannedPart, ...]
    estimate: Estimate
    reasons: tuple[str, ...]
    refusal: str | None  # over run.max_creates_per_job: the run would refuse this job

    @property
    def creates(self) -> int:
        return len(self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "provider": self.provider,
            "voice": self.voice,
            "creates": self.creates,
            "segments": [p.to_dict() for p in self.parts],
            "estimate": self.estimate.to_dict(),
            "reasons": list(self.reasons),
            "refusal": self.refusal,
        }


@dataclass(frozen=True)
class RunPlan:
    name: str
    jobs: tuple[JobPlan, ...]

    @property
    def creates(self) -> int:
        return sum(job.creates for job in self.jobs)

    def total(self) -> Estimate:
        """Every job's lines as one estimate (its provider: the providers joined); unknown if any line is."""
        lines = tuple(line for job in self.jobs for line in job.estimate.lines)
        known = all(job.estimate.known for job in self.jobs)
        currencies = {job.estimate.currency for job in self.jobs if job.estimate.known}
        total = (
            sum((job.estimate.total for job in self.jobs if job.estimate.total is not None), Decimal(0))
            if known and len(currencies) <= 1
            else None
        )
        providers = "+".join(dict.fromkeys(job.provider for job in self.jobs))
        reasons = tuple(r for job in self.jobs for r in job.estimate.reasons)
        return Estimate(providers, next(iter(currencies), None), lines, total, reasons)

    def budget_refusal(self, budget: Decimal) -> str | None:
        """Why this run must not start under `budget`: a job whose price is unknown, or the total over it."""
        for job in self.jobs:
            if not job.estimate.known:
                return f"job {job.job_id!r}: {budget_refusal(job.estimate, budget)}"
        return budget_refusal(self.total(), budget)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "creates": self.creates,
            "total": self.total().to_dict()["total"],
            "currency": self.total().currency,
            "jobs": [job.to_dict() for job in self.jobs],
        }


def plan_run(config: RunConfig, only: tuple[str, ...] = ()) -> RunPlan:
    """The plan of every selected job of `config`."""
    return RunPlan(config.name, tuple(plan_job(config, spec) for spec in config.select(only)))


def plan_job(config: RunConfig, spec: JobSpec) -> JobPlan:
    if spec.portrait is not None:
        voice, parts, reasons = "portrait", *_portrait_parts(spec)
    elif spec.text is not None:
        voice, parts, reasons = "script", *_script_parts(spec)
    else:
        voice = "audio" if spec.audio is not None else "own sound"
        parts, reasons = _voice_parts(spec)
    price = load_price(spec.provider, config.prices.get(spec.provider))
    cost = estimate(spec.provider, price, [PlannedJob(p.index, p.seconds, p.tts_characters) for p in parts])
    refusal = None
    if len(parts) > config.max_creates_per_job:
        refusal = f"{len(parts)} paid provider jobs, over run.max_creates_per_job = {config.max_creates_per_job}"
    return JobPlan(spec.id, spec.provider, voice, tuple(parts), cost, tuple(reasons), refusal)


def _script_parts(spec: JobSpec) -> tuple[list[PlannedPart], list[str]]:
    from ..prepare import text_spans
    from ..stages.probe import probe_video
    from ..stages.text import spoken
    from .steps import prepare_request

    assert spec.video is not None  # a footage job
    chunks, spans = text_spans(prepare_request(spec), probe_video(spec.video), spec.limits)
    parts = [
        PlannedPart(
            span.index,
            span.start,
            span.end,
            span.duration,
            len(spoken(chunk)),
            f"script chunk {span.index + 1} of {len(chunks)}: {'; '.join(span.reasons)}",
        )
        for span, chunk in zip(spans, chunks, strict=True)
    ]
    return parts, [f"the script is {len(chunks)} TTS request(s) of at most {spec.limits.tts_max_chars} characters"]


def _voice_parts(spec: JobSpec) -> tuple[list[PlannedPart], list[str]]:
    from ..prepare import plan_voice
    from ..stages.probe import probe_video
    from .steps import prepare_request

    assert spec.video is not None  # a footage job
    voice = plan_voice(prepare_request(spec), probe_video(spec.video), spec.limits)
    reasons = [*voice.sync.reasons, *voice.warnings]
    if voice.cuts is None:
        end = min(voice.end, voice.start + voice.sync.duration)
        return [PlannedPart(0, voice.start, end, voice.sync.duration, 0, "one job: the whole pair fits")], reasons
    parts = [
        PlannedPart(
            s.index, voice.start + float(s.start), voice.start + float(s.end), float(s.duration), 0, s.cut.reason
        )
        for s in voice.cuts.segments
    ]
    return parts, [*reasons, *voice.cuts.reasons]


def _portrait_parts(spec: JobSpec) -> tuple[list[PlannedPart], list[str]]:
    from ..animate import check_portrait
    from ..limits import load_image_limits

    assert spec.portrait is not None
    script = check_portrait(spec.portrait, load_image_limits(spec.provider), spec.limits.tts_max_chars)
    parts, at = [], 0.0
    for clip in script.clips:
        parts.append(
            PlannedPart(clip.index, at, at + clip.fit.duration, clip.fit.duration, len(clip.spoken), clip.fit.reason)
        )
        at += clip.fit.duration
    return parts, list(script.reasons)


def refuse_over_budget(config: RunConfig, only: tuple[str, ...], budget: Decimal) -> RunPlan:
    """The run's plan if its estimate is within `budget`; else BillingError (exit 4) naming the estimate."""
    plan = plan_run(config, only)
    why = plan.budget_refusal(budget)
    if why is not None:
        raise BillingError(f"{config.path}: refused before any provider job was created: {why}")
    return plan
