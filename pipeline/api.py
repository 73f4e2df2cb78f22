"""The library face of lipsync-pipeline: what the `lipsync` commands do, as functions (re-exported by `pipeline`).

    import pipeline
    summary = pipeline.run_config("configs/rehearsal.toml", rehearse=True)
    print(summary.outcomes[0].final)

Each function takes keyword arguments, returns one of the pipeline's typed results and raises the typed
errors of `pipeline.errors` (each with a user-facing message and the CLI's exit code). `rehearse=True`
points the providers at an in-process emulator on loopback: the same code path as a real run, no credits.
Nothing heavy is imported here at module level (the stages load ffmpeg bindings, mediapipe, matplotlib
when used), so `import pipeline` stays fast. Examples: docs/api.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError, ValidationError

if TYPE_CHECKING:
    from decimal import Decimal

    from .animate import AnimateResult
    from .prepare import PrepareResult, StepProgress
    from .providers import PollPolicy, Provider
    from .providers.flow import FlowHooks, FlowSettings
    from .run.progress import Progress
    from .run.runner import RunSummary
    from .stages.audio_tracks import TrackChoice
    from .stages.probe import MediaProbe, Violation
    from .stages.sync import SyncMode
    from .stages.verify import VerifyReport
    from .submit import SubmitResult

PathLike = str | os.PathLike[str]


# ---- probe ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """What a media file is, the audio track prepare would take as the voice, and every provider limit it breaks."""

    probe: MediaProbe
    voice_track: TrackChoice | None  # None: the file has no sound
    violations: dict[str, list[Violation]]  # provider -> the limits it breaks (empty: within them all)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe.to_dict(),
            "voice_track": None if self.voice_track is None else self.voice_track.to_dict(),
            "violations": {name: [dataclasses.asdict(v) for v in vs] for name, vs in self.violations.items()},
        }


def probe(path: PathLike, *, provider: str | None = None) -> ProbeResult:
    """Describe a media file and check it against each provider's limits (`provider`: only that one's).

    Raises InputError for a file that cannot be read as media."""
    from .limits import PROVIDERS, load_limits
    from .stages.audio_tracks import choose_audio_track
    from .stages.conform_audio import measure_speech_shares
    from .stages.probe import check_limits
    from .stages.probe import probe as probe_file

    media = probe_file(Path(path))
    role: Literal["video", "audio"] = "video" if media.video is not None else "audio"
    names = [provider] if provider else list(PROVIDERS)
    violations = {name: check_limits(media, load_limits(name), role) for name in names}
    voice = None if media.audio is None else choose_audio_track(media, None, measure_speech_shares(media)[0])
    return ProbeResult(media, voice, violations)


# ---- prepare --------------------------------------------------------------------------------------


def prepare_media(
    video: PathLike,
    *,
    out_dir: PathLike,
    audio: PathLike | None = None,
    text: str | None = None,
    speaker: str | None = None,
    provider: str | None = None,
    sync_mode: SyncMode | str | None = None,
    start: float | None = None,
    end: float | None = None,
    audio_track: int | None = None,
    loudness: float | None = None,
    true_peak: float | None = None,
    require_face: bool = False,
    long_media: Literal["split", "trim"] = "split",
    voice_required: bool = True,
    progress: StepProgress | None = None,
) -> PrepareResult:
    """Conform `video` and a voice into provider-ready segments in `out_dir` (seg000.mp4, seg000.wav, ...).

    The voice is `audio` (its `audio_track`, numbered from 1), else TTS of `text` (one segment per chunk),
    else the video's own sound. `provider`: fit that provider's limits (default: the strictest of all);
    `sync_mode`: the length policy (pipeline.stages.sync.SyncMode); `loudness` (LUFS) and `true_peak` (dBTP):
    the voice's targets; `long_media`: footage longer than one job is "split" at pauses or "trim"med;
    `voice_required=False`: footage with no sound and no voice is conformed alone (with a warning).
    Raises ValidationError (InputError for a bad file) before any file is left behind."""
    from .prepare import PrepareRequest
    from .prepare import prepare as run_prepare
    from .stages.conform_audio import LoudnessTarget
    from .stages.sync import DEFAULT_SYNC_MODE, SyncMode

    try:
        mode = DEFAULT_SYNC_MODE if sync_mode is None else SyncMode(str(sync_mode).lower())
    except ValueError:
        choices = ", ".join(m.value for m in SyncMode)
        raise ValidationError(f"unknown sync mode {sync_mode!r}; choose one of {choices}") from None
    targets = {"integrated": loudness, "true_peak": true_peak}
    request = PrepareRequest(
        video=Path(video),
        audio=None if audio is None else Path(audio),
        text=text,
        speaker=speaker,
        provider=provider,
        sync_mode=mode,
        start=start,
        end=end,
        audio_track=audio_track,
        loudness=LoudnessTarget(**{k: v for k, v in targets.items() if v is not None}),
        require_face=require_face,
        long_media=long_media,
        voice_required=voice_required,
    )
    return run_prepare(request, Path(out_dir).absolute(), progress=progress)


# ---- a batch --------------------------------------------------------------------------------------


def run_config(
    config: PathLike,
    *,
    rehearse: bool = False,
    only: Iterable[str] = (),
    jobs: int | None = None,
    resubmit_uncertain: bool = False,
    retry_failed: bool = False,
    force: bool = False,
    only_rejected: bool = False,
    budget: Decimal | None = None,
    progress: Callable[[], Progress] | None = None,
    cluster: str | None = None,
) -> RunSummary:
    """Run (or resume) the batch a config file describes: prepare, lip-sync, verify and hand off each job
    into the config's output folder (`<output>/<job>/final.mp4` and `manifest.json`).

    `rehearse`: against the in-process emulator (no credits). `only`: these job ids. `jobs`: provider jobs in
    flight. `only_rejected`: only the jobs rejected in review (of `only`, else all), each made again from new
    provider jobs (billed again, once), the delivery it replaces kept as `<job>/take-<n>/`. `budget`: refuse
    (BillingError) before any job is created when the estimate is over it or unknown.
    `progress`: makes the display, once the config is loaded and within budget (default: nothing shown).
    `cluster`: a Dask scheduler's address (overrides `[run] cluster`): the jobs run as tasks on its workers.
    A job's failure is in its outcome (`summary.exit_code`), not raised; a bad config raises ConfigError."""
    from .run.config import load_config
    from .run.plan import refuse_over_budget
    from .run.progress import Progress
    from .run.runner import RunOptions, rejected_only, run_batch

    loaded = load_config(Path(config))
    selected = tuple(only)
    chosen = rejected_only(loaded, selected) if only_rejected else selected
    if budget is not None and (chosen or not only_rejected):  # no rejected job: nothing will be created
        refuse_over_budget(loaded, chosen, budget)
    options = RunOptions(
        jobs=jobs,
        only=selected,
        rehearse=rehearse,
        resubmit_uncertain=resubmit_uncertain,
        retry_failed=retry_failed,
        force=force,
        cluster=cluster,
        only_rejected=only_rejected,
    )
    with (progress or Progress)() as shown:
        return run_batch(loaded, options, shown)


# ---- one provider job -----------------------------------------------------------------------------


def lip_sync(
    *,
    provider: str,
    video: PathLike,
    out: PathLike,
    audio: PathLike | None = None,
    text: str | None = None,
    speaker: str | None = None,
    rehearse: bool = False,
    timeout: float | None = None,
    poll_interval: float | None = None,
    resubmit_uncertain: bool = False,
    retry_failed: bool = False,
    hooks: FlowHooks | None = None,
) -> SubmitResult:
    """One lip-sync job on prepared media (`prepare_media`'s segments): `video` with `audio`, or with `text`
    spoken by the provider's TTS (`speaker`), sent to `provider`; its result downloaded to `out`.

    Paid for once: the job is recorded in OUT.ledger.sqlite and the same call after a crash resumes it.
    The key comes from the provider's environment variable (e.g. FAL_KEY), or `rehearse` uses the emulator.
    `timeout` bounds the wait and the download; `hooks` follow the job (job id, statuses)."""
    from .providers import JobRequest
    from .providers.flow import FlowHooks
    from .submit import submit

    if (audio is None) == (text is None):
        raise ValidationError("give exactly one of audio or text")
    if speaker and text is None:
        raise ValidationError("a speaker goes with text (the provider's TTS)")
    request = JobRequest(Path(video), None if audio is None else Path(audio), text, speaker)
    with _provider(provider, rehearse=rehearse, timeout=timeout, poll_interval=poll_interval) as adapter:
        return submit(
            adapter,
            request,
            Path(out),
            hooks=hooks or FlowHooks(),
            settings=_flow_settings(timeout, resubmit_uncertain, retry_failed),
        )


def animate_image(
    image: PathLike,
    *,
    prompt: str,
    text: str,
    out: PathLike,
    speaker: str | None = "Auto",
    resolution: str | None = None,
    duration: int | None = None,
    style: str | None = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
    background: str = "#ffffff",
    chain: bool = False,
    max_clips: int | None = None,
    provider: str = "aimlapi",
    rehearse: bool = False,
    timeout: float | None = None,
    poll_interval: float | None = None,
    resubmit_uncertain: bool = False,
    retry_failed: bool = False,
    hooks: FlowHooks | None = None,
) -> AnimateResult:
    """A talking portrait: the still `image` speaking `text` (`prompt`: what the clip shows), verified and
    written to `out`. `chain`: a long script over several clips, each from the last frame of the one before;
    one needing more than `max_clips` paid clips (default: the config's max_creates_per_job default, 20) is
    refused (ValidationError) before any.

    Each clip is paid for once (OUT.ledger.sqlite; the conformed image and clips in OUT.work/): the same
    call after a crash resumes. `rehearse`, `timeout`, `hooks`: as for `lip_sync`."""
    from .animate import PortraitSpec, animate
    from .limits import DEFAULT_MAX_CREATES_PER_JOB
    from .providers.flow import FlowHooks

    spec = PortraitSpec(
        image=Path(image),
        prompt=prompt,
        text=text,
        speaker=speaker,
        resolution=resolution,
        duration=duration,
        negative_prompt=negative_prompt,
        style=style,
        seed=seed,
        chain=chain,
        background=background,
    )
    with _provider(provider, rehearse=rehearse, timeout=timeout, poll_interval=poll_interval) as adapter:
        return animate(
            adapter,
            spec,
            Path(out),
            hooks=hooks or FlowHooks(),
            settings=_flow_settings(timeout, resubmit_uncertain, retry_failed),
            max_clips=DEFAULT_MAX_CREATES_PER_JOB if max_clips is None else max_clips,
        )


@contextmanager
def _provider(name: str, *, rehearse: bool, timeout: float | None, poll_interval: float | None) -> Iterator[Provider]:
    """The adapter for `name` with its key from the environment, or against an emulator started for it."""
    from .providers import credential_from_env, get_provider, provider_class

    poll = provider_class(name).default_poll
    if not rehearse:
        with get_provider(name, credential=credential_from_env(name), poll=_poll(poll, timeout, poll_interval)) as p:
            yield p
        return
    from .emulator import Emulator, EmulatorSettings
    from .run.config import RehearseSection
    from .run.runner import rehearsal_poll

    pace = RehearseSection.model_validate({})  # the defaults of a config's [run.rehearse]
    with Emulator(EmulatorSettings(latency_s=pace.latency_s, queue_s=pace.queue_s)) as emu:
        quick = _poll(rehearsal_poll(poll, pace.latency_s, pace.queue_s), timeout, poll_interval)
        with get_provider(name, credential=emu.credentials()[name], base_urls=emu.base_urls, poll=quick) as p:
            yield p


def _poll(poll: PollPolicy, timeout: float | None, interval: float | None) -> PollPolicy:
    if timeout is not None:
        poll = dataclasses.replace(poll, timeout=timeout)
    if interval is not None:
        poll = dataclasses.replace(poll, initial=interval, maximum=max(poll.maximum, interval))
    return poll


def _flow_settings(timeout: float | None, resubmit_uncertain: bool, retry_failed: bool) -> FlowSettings:
    from .providers.download import TransferLimits
    from .providers.flow import FlowSettings

    return FlowSettings(
        resubmit_uncertain=resubmit_uncertain,
        retry_failed=retry_failed,
        transfer=TransferLimits(deadline_s=timeout) if timeout else TransferLimits(),
    )


# ---- verify ---------------------------------------------------------------------------------------


def verify(path: PathLike, *, audio: PathLike | None = None, min_confidence: float | None = None) -> VerifyReport:
    """The delivery checks on any video file: streams, a clean decode, durations, a face, the lips against the
    sound (offset in frames, confidence in standard deviations above chance, at least `min_confidence`,
    default 3) and, with `audio` (the master voice), the sound against it.

    Returns the report (`report.ok`; `report.raise_if_failed()` raises VerificationError); raises
    InputError for a missing file or one without video, ValidationError for one that is not media."""
    from .stages.mouth import SyncPolicy
    from .stages.verify import SyncReference, VerifyExpectations, with_lip_sync
    from .stages.verify import verify as run_verify

    file = Path(path)
    if not file.is_file():
        raise InputError(file, "no such file")
    given = {} if min_confidence is None else {"min_confidence": min_confidence}
    policy = SyncPolicy.model_validate({"check": "fail", **given})
    references = (SyncReference(Path(audio)),) if audio is not None else ()
    report = run_verify(file, VerifyExpectations(references=references))
    unreadable = next((c for c in report.checks if c.name == "readable" and not c.ok), None)
    if unreadable is not None:
        raise ValidationError(unreadable.detail)
    if report.figures.video_codec is None:
        raise InputError(file, "has no video stream: nothing to lip-sync")
    return with_lip_sync(report, [(0.0, None)], policy)
