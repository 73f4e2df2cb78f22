"""A talking portrait from a still image (AI/ML API `pixverse/v5/image-to-video`, seed 003): the library side
of `lipsync animate` and of image jobs in `lipsync run`.

    fit the script (one clip, or a chain with --chain) → conform the image (plan → execute) → one paid job
    per clip through the provider-job flow, clip i+1 starting from clip i's last frame → stitch → verify

Nothing is paid for before every check that can be made locally has passed (script fit, the model's enums,
the image). The caller supplies how one clip's job is run (`RunClip`): `lipsync animate` keeps the clips in a
ledger beside its output (like `lipsync submit`), a batch in its run ledger.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .fsutil import atomic_output, sha256_file
from .limits import DEFAULT_MAX_CREATES_PER_JOB, ImageLimits, load_image_limits, load_limits
from .providers.aimlapi import ImageJobRequest, check_choices
from .providers.base import Provider
from .providers.flow import FlowHooks, FlowResult, FlowSettings, ProviderJobFlow
from .providers.store import CreateRecord
from .stages.conform_image import (
    ImageOptions,
    ImageResult,
    conform_image,
    execute_image,
    last_frame_image,
    plan_image,
    probe_image,
)
from .stages.mux import stitch
from .stages.script_fit import CLI_OPTION_NAMES, ChainClip, ChainPlan, OptionNames, choose_duration, plan_chain
from .stages.text import normalize_text
from .stages.verify import PortraitExpectations, VerifyReport, verify_portrait
from .submit import submit_job, submit_store
from .voices import resolve_voice


@dataclass(frozen=True)
class PortraitSpec:
    """What the user asked for. None leaves a choice to the limits' defaults (720p; the shortest clip that
    holds the script)."""

    image: Path
    prompt: str
    text: str
    speaker: str | None = None
    resolution: str | None = None
    duration: int | None = None
    negative_prompt: str | None = None
    style: str | None = None
    seed: int | None = None
    chain: bool = False
    background: str = "#ffffff"  # what transparent pixels become

    def params(self) -> dict[str, Any]:
        """The choices that change the result (the image and script go into keys by hash / as text)."""
        return {
            "prompt": self.prompt,
            "speaker": self.speaker,
            "resolution": self.resolution,
            "duration": self.duration,
            "negative_prompt": self.negative_prompt,
            "style": self.style,
            "seed": self.seed,
            "chain": self.chain,
            "background": self.background,
        }


@dataclass(frozen=True)
class PortraitPlan:
    image: ImageResult  # the conformed image the first clip starts from
    script: ChainPlan  # one clip, or a chain's clips, each with its fit and reason

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image.to_dict(), "script": self.script.to_dict()}


@dataclass(frozen=True)
class ClipDone:
    index: int
    path: Path  # the provider's clip on our disk
    record: CreateRecord  # the ledger's record of its paid job (downloaded)
    started_with: str  # what the flow found: "create", "poll" (resumed), "reuse" ...

    @classmethod
    def from_flow(cls, index: int, result: FlowResult) -> ClipDone:
        return cls(index, result.path, result.record, result.started_with.action.value)

    def to_dict(self) -> dict[str, Any]:
        status = self.record.final_status or {}
        return {
            "clip": self.index,
            "job_id": self.record.provider_job_id,
            "started_with": self.started_with,
            "usage": status.get("usage") or {},
            "credits": status.get("credits"),
        }


RunClip = Callable[[int, ImageJobRequest, Path], ClipDone]  # (clip index, checked request, result path)


def check_portrait(
    spec: PortraitSpec, limits: ImageLimits, max_chars: int, names: OptionNames = CLI_OPTION_NAMES
) -> ChainPlan:
    """Every check that needs no image work (pure): the voice, the model's choices, the script's fit (its
    refusals name the options as `names` says)."""
    resolve_voice(spec.speaker or "Auto")
    if spec.chain and spec.duration is not None:
        raise ValidationError("a duration and a chain do not go together: a chain picks each clip's length")
    check_choices(
        ImageJobRequest(
            spec.image,
            spec.prompt,
            resolution=spec.resolution,
            duration=spec.duration,
            negative_prompt=spec.negative_prompt,
            style=spec.style,
            seed=spec.seed,
        ),
        limits,
    )
    return plan_script(spec, limits, max_chars, names)


def plan_script(
    spec: PortraitSpec, limits: ImageLimits, max_chars: int, names: OptionNames = CLI_OPTION_NAMES
) -> ChainPlan:
    """The clips the script is spoken over (pure): one clip of the chosen length, or with `chain` as many as
    it takes. ValidationError with the estimate and the fix when one clip cannot hold it."""
    resolution = spec.resolution or limits.default_resolution
    if spec.chain:
        return plan_chain(spec.text, resolution, limits, max_chars)
    fit = choose_duration(spec.text, resolution, limits, max_chars, requested=spec.duration, names=names)
    return ChainPlan(resolution, (ChainClip(0, normalize_text(spec.text), fit),), (fit.reason,))


def clip_request(spec: PortraitSpec, script: ChainPlan, clip: ChainClip, image: Path) -> ImageJobRequest:
    return ImageJobRequest(
        image=image,
        prompt=spec.prompt,
        text=clip.spoken,
        speaker=spec.speaker,
        resolution=script.resolution,
        duration=clip.fit.duration,
        negative_prompt=spec.negative_prompt,
        style=spec.style,
        seed=spec.seed,
    )


def prepare_portrait(
    spec: PortraitSpec, work: Path, limits: ImageLimits, max_chars: int, max_clips: int | None = None
) -> PortraitPlan:
    """Check the request, fit the script (into at most `max_clips` paid clips), conform the image into `work`
    and check the first clip's request as the API would; on any refusal a `work` folder made here is removed
    (nothing is left behind)."""
    made = not work.exists()
    try:
        script = check_portrait(spec, limits, max_chars)
        if max_clips is not None and len(script.clips) > max_clips:
            raise ValidationError(
                f"the script needs {len(script.clips)} clips ({len(script.clips)} paid jobs), over --max-clips "
                f"{max_clips}: shorten it, or raise --max-clips if that many is intended"
            )
        planned = plan_image(probe_image(spec.image), limits, ImageOptions(background=spec.background))
        image = execute_image(planned, work / f"image{planned.suffix}")
        clip_request(spec, script, script.clips[0], image.path).checked(limits)
    except BaseException:
        if made:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return PortraitPlan(image, script)


def make_clips(
    spec: PortraitSpec, plan: PortraitPlan, work: Path, limits: ImageLimits, run_clip: RunClip
) -> list[ClipDone]:
    """Each clip's paid job in order: a chain's next clip starts from the previous clip's last frame (the same
    bytes on a rerun, so a resumed chain finds its jobs in the ledger)."""
    done: list[ClipDone] = []
    image = plan.image.path
    for clip in plan.script.clips:
        if done:
            last = last_frame_image(done[-1].path, work / f"clip-{clip.index - 1}-last.png")
            image = conform_image(last, work / f"clip-{clip.index}-start.jpg", limits).path
        request = clip_request(spec, plan.script, clip, image).checked(limits)
        done.append(run_clip(clip.index, request, work / f"clip-{clip.index}.mp4"))
    return done


@dataclass(frozen=True)
class Assembled:
    path: Path  # one clip as the provider made it, or the chain's clips stitched
    commands: list[list[str]]  # the ffmpeg runs that made it (a stitch)
    verification: VerifyReport


def assemble_portrait(plan: PortraitPlan, clips: list[ClipDone], work: Path, limits: ImageLimits) -> Assembled:
    """The chain stitched into one file (one clip is used as is), then verified against what was asked:
    the resolution's short side, the summed length, speech, and a first frame like the submitted image."""
    commands: list[list[str]] = []
    path = clips[0].path
    if len(clips) > 1:
        stitched = stitch([c.path for c in clips], work / "portrait.mp4")
        path, commands = stitched.path, stitched.commands()
    expect = PortraitExpectations(
        image=plan.image.path,
        short_side=limits.short_side(plan.script.resolution),
        duration_s=float(plan.script.seconds),
        speech=True,
    )
    return Assembled(path, commands, verify_portrait(path, expect))


# ---- `lipsync animate`: one portrait, its clips in a ledger beside the output ------------------------------


def portrait_work_dir(out: Path) -> Path:
    """Where the conformed image and the clips are kept beside OUT (a rerun reuses them)."""
    return out.with_name(out.name + ".work")


@dataclass(frozen=True)
class AnimateResult:
    provider: str
    output: Path
    sha256: str
    size: int
    ledger: Path
    work: Path
    plan: PortraitPlan
    clips: list[ClipDone]
    assembled: Assembled
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        report = self.assembled.verification
        return {
            "provider": self.provider,
            "output": str(self.output),
            "sha256": self.sha256,
            "size": self.size,
            "ledger": str(self.ledger),
            "work": str(self.work),
            "seconds": self.seconds,
            "job_ids": [c.record.provider_job_id for c in self.clips],
            "jobs": [c.to_dict() for c in self.clips],
            "plan": {
                "image": list(self.plan.image.plan.reasons),
                "script": list(self.plan.script.reasons),
                "resolution": self.plan.script.resolution,
                "durations": [c.fit.duration for c in self.plan.script.clips],
            },
            "verification": {
                "ok": report.ok,
                "figures": report.figures.model_dump(mode="json"),
                "failed": [c.name for c in report.failed()],
            },
        }


def animate(
    provider: Provider,
    spec: PortraitSpec,
    out: str | Path,
    *,
    hooks: FlowHooks = FlowHooks(),
    settings: FlowSettings = FlowSettings(),
    max_clips: int = DEFAULT_MAX_CREATES_PER_JOB,
) -> AnimateResult:
    """`spec` made into a talking portrait at `out`, each clip paid for once: rerunning after a crash resumes
    the jobs recorded in OUT.ledger.sqlite. OUT is written only once the result passed verification; a script
    needing more than `max_clips` paid clips is refused before any."""
    out = Path(out)
    provider.check_credential()  # a missing key leaves no work folder or ledger behind
    started = time.monotonic()
    work = portrait_work_dir(out)
    limits = load_image_limits(provider.name)
    plan = prepare_portrait(spec, work, limits, load_limits(provider.limits_key).tts_max_chars, max_clips)
    with submit_store(out) as store:

        def run_clip(index: int, request: ImageJobRequest, dst: Path) -> ClipDone:
            job = submit_job(provider, request, dst, command="animate", segment=index)
            return ClipDone.from_flow(index, ProviderJobFlow(provider, store, settings, hooks).run(job))

        clips = make_clips(spec, plan, work, limits, run_clip)
        ledger = store.path
    assembled = assemble_portrait(plan, clips, work, limits)
    assembled.verification.raise_if_failed()
    with atomic_output(out) as tmp:
        shutil.copyfile(assembled.path, tmp)
    return AnimateResult(
        provider.name,
        out,
        sha256_file(out),
        out.stat().st_size,
        ledger,
        work,
        plan,
        clips,
        assembled,
        round(time.monotonic() - started, 3),
    )
