"""A batch config: TOML read with tomllib, validated with pydantic, resolved into one `JobSpec` per job.

Every error is a ConfigError naming the file, the key (e.g. `job[2].audio`) and how to fix it.
Paths in the file are relative to the file itself, so a config can travel with its media.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic import (
    ValidationError as PydanticValidationError,
)

from ..animate import PortraitSpec, check_portrait
from ..errors import ConfigError, LipsyncError
from ..fsutil import read_regular_file
from ..limits import DEFAULT_MAX_CREATES_PER_JOB, PROVIDERS, Limits, load_image_limits, load_limits
from ..prepare import MAX_SCRIPT_BYTES, LongMedia
from ..providers import BASE_URL_KEYS
from ..providers.download import TransferLimits
from ..stages.conform_image import ImageOptions
from ..stages.face import FaceThresholds
from ..stages.mouth import SyncPolicy
from ..stages.script_fit import CONFIG_OPTION_NAMES
from ..stages.sync import SyncMode, max_job_seconds
from ..stages.text import chunk_text
from ..voices import resolve_voice
from .rundir import reserved_name_reason

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_CONFIG_BYTES = 1_000_000  # a config is a few KB; a bigger "config" is a wrong path


def _check_job_id(job_id: str) -> str:
    why = reserved_name_reason(job_id)
    if why is not None:
        raise ValueError(f"{why}; choose another id")
    return job_id


JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN), AfterValidator(_check_job_id)]


def _check_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    return name


ProviderName = Annotated[str, AfterValidator(_check_provider)]


def _check_base_urls(urls: dict[str, str]) -> dict[str, str]:
    """Known keys with http(s) URLs; `fal` alone stands for both of fal's hosts (queue and storage)."""
    urls = dict(urls)
    if "fal" in urls:
        fal = urls.pop("fal")
        urls.setdefault("fal_queue", fal)
        urls.setdefault("fal_storage", fal)
    for key, url in urls.items():
        if key not in BASE_URL_KEYS:
            raise ValueError(
                f"unknown base URL key {key!r}; use {', '.join(BASE_URL_KEYS)} (or fal for both fal hosts)"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{key} = {url!r} is not an http(s) URL")
    return urls


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollSection(_Strict):
    """Overrides of the provider poll policy (rehearsals and tests use short intervals)."""

    interval_s: float | None = Field(None, gt=0)
    max_interval_s: float | None = Field(None, gt=0)
    timeout_s: float | None = Field(None, gt=0)


class DownloadSection(_Strict):
    """How long a result download may take, and how slow it may be (see providers.download.TransferLimits)."""

    deadline_s: float = Field(TransferLimits.deadline_s, gt=0)
    min_rate_bytes_s: float = Field(TransferLimits.min_rate, ge=0)
    rate_grace_s: float = Field(TransferLimits.rate_grace_s, ge=0)

    def transfer_limits(self) -> TransferLimits:
        return TransferLimits(self.deadline_s, self.min_rate_bytes_s, self.rate_grace_s)


class RehearseSection(_Strict):
    """How the in-process emulator behaves under `lipsync run --rehearse`."""

    latency_s: float = Field(2.0, ge=0)
    queue_s: float = Field(0.0, ge=0)


def _check_ledger(url: str | None) -> str | None:
    """None/"sqlite": the run directory's SQLite file; else a PostgreSQL URL without a password."""
    if url in (None, "sqlite"):
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f'{url!r}: use "sqlite" (the default) or a postgresql://user@host/database URL')
    parts = urlsplit(url)
    if parts.password is not None or "password=" in parts.query:
        raise ValueError("no password in the URL (it would sit in the config and its copies); set PGPASSWORD")
    return url


def _check_cluster(address: str | None) -> str | None:
    if address is not None and "://" not in address:
        raise ValueError(f"{address!r}: give the scheduler's address, e.g. tcp://host:8786")
    return address


class RunSection(_Strict):
    name: str = Field(min_length=1)
    provider: ProviderName
    output: str | None = None
    max_jobs: int | None = Field(None, ge=1, le=64)  # None: each provider's own default
    max_creates_per_job: int = Field(DEFAULT_MAX_CREATES_PER_JOB, ge=1, le=10_000)
    base_urls: Annotated[dict[str, str], AfterValidator(_check_base_urls)] = Field(default_factory=dict)
    provider_options: dict[ProviderName, dict[str, Any]] = Field(default_factory=dict)
    poll: PollSection = PollSection()
    download: DownloadSection = DownloadSection()
    rehearse: RehearseSection = RehearseSection()
    ledger: Annotated[str | None, AfterValidator(_check_ledger)] = None  # None: <output>/ledger.sqlite
    cluster: Annotated[str | None, AfterValidator(_check_cluster)] = None  # a Dask scheduler's address


class DefaultsSection(_Strict):
    provider: ProviderName | None = None
    speaker: str = "Auto"
    sync_mode: SyncMode | None = None
    loudness_lufs: float | None = Field(-16.0, gt=-70, lt=0)
    true_peak_dbtp: float | None = Field(-1.5, ge=-20, le=0)
    audio_track: int | None = Field(None, ge=1)
    long_media: LongMedia = "split"
    limits: dict[str, Any] = Field(default_factory=dict)
    require_face: bool = False
    min_face_share: float = Field(FaceThresholds().min_face_share, ge=0, le=1)
    min_face_size: float = Field(FaceThresholds().min_face_size, gt=0, le=1)
    sync_check: Literal["warn", "fail"] = "warn"
    min_sync_confidence: float = Field(SyncPolicy().min_confidence, ge=0)


class JobSection(_Strict):
    id: JobId
    video: str | None = None
    image: str | None = None  # a talking portrait (AI/ML API image-to-video) instead of footage
    prompt: str | None = None
    resolution: str | None = None
    duration: int | None = None
    style: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    chain: bool = False
    background: str | None = None  # what a transparent image's clear pixels become (default white)
    audio: str | None = None
    text: str | None = None
    text_file: str | None = None
    provider: ProviderName | None = None
    speaker: str | None = None
    sync_mode: SyncMode | None = None
    loudness_lufs: float | None = Field(None, gt=-70, lt=0)
    true_peak_dbtp: float | None = Field(None, ge=-20, le=0)
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)
    audio_track: int | None = Field(None, ge=1)  # the voice's track in `audio` (from 1); default: flag, speech
    long_media: LongMedia | None = None  # longer than one provider job: "split" it, or "trim" it
    limits: dict[str, Any] = Field(default_factory=dict)
    require_face: bool | None = None
    min_face_share: float | None = Field(None, ge=0, le=1)
    min_face_size: float | None = Field(None, gt=0, le=1)
    sync_check: Literal["warn", "fail"] | None = None
    min_sync_confidence: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_voice_source(self) -> JobSection:
        if (self.video is None) == (self.image is None):
            raise ValueError("give exactly one of video (footage to lip-sync) or image (a still to animate)")
        if self.image is not None:
            return self._portrait_fields()
        portrait_only = [k for k in PORTRAIT_KEYS if getattr(self, k) not in (None, False)]
        if portrait_only:
            raise ValueError(f"{', '.join(portrait_only)} go with image, not video")
        # none of them: the video's own sound is the voice (prepare reads it from the video)
        given = [k for k in ("audio", "text", "text_file") if getattr(self, k) not in (None, "")]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of audio, text or text_file (got {', '.join(given)}); "
                f"with none, the video's own sound is the voice"
            )
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    def _portrait_fields(self) -> JobSection:
        if self.prompt is None or not self.prompt.strip():
            raise ValueError("an image job needs a prompt: what the clip shows")
        if (self.text in (None, "")) == (self.text_file in (None, "")):
            raise ValueError("an image job needs exactly one of text or text_file (the script it speaks)")
        footage_only = [k for k in FOOTAGE_KEYS if getattr(self, k) is not None]
        if footage_only:
            raise ValueError(f"{', '.join(footage_only)} go with video, not image")
        return self


PORTRAIT_KEYS = ("prompt", "resolution", "duration", "style", "negative_prompt", "seed", "chain", "background")
FOOTAGE_KEYS = ("audio", "sync_mode", "loudness_lufs", "true_peak_dbtp", "start", "end", "audio_track", "long_media")


class ConfigFile(_Strict):
    run: RunSection
    defaults: DefaultsSection = DefaultsSection()
    prices: dict[ProviderName, dict[str, Any]] = Field(default_factory=dict)  # over providers/prices.toml
    job: list[JobSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ConfigFile:
        seen: set[str] = set()
        for spec in self.job:
            if spec.id in seen:
                raise ValueError(f"job id {spec.id!r} is used twice; job ids name output folders and must be unique")
            seen.add(spec.id)
        return self


@dataclass(frozen=True)
class JobSpec:
    """One job with defaults applied and paths made absolute: everything the runner needs."""

    id: str
    provider: str
    video: Path | None  # None for a talking portrait (`portrait`)
    audio: Path | None  # None with no text: the video's own sound is the voice
    text: str | None
    text_file: Path | None
    speaker: str
    sync_mode: SyncMode | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    start: float | None
    end: float | None
    limits: Limits
    audio_track: int | None = None
    portrait: PortraitSpec | None = None
    face: FaceThresholds = FaceThresholds()
    require_face: bool = False
    sync: SyncPolicy = SyncPolicy()
    long_media: LongMedia = "split"

    def params(self) -> dict[str, Any]:
        """The parameters that change a job's result (part of its idempotency key and its manifest)."""
        # audio_track, portrait and long_media only when not the default, so the keys of jobs without them
        # stay what they were
        track = {} if self.audio_track is None else {"audio_track": self.audio_track}
        portrait = {} if self.portrait is None else {"portrait": self.portrait.params()}
        long_media = {} if self.long_media == "split" else {"long_media": self.long_media}
        return {
            **track,
            **portrait,
            **long_media,
            "provider": self.provider,
            "speaker": self.speaker if self.text is not None else None,
            "sync_mode": self.sync_mode,
            "loudness_lufs": self.loudness_lufs,
            "true_peak_dbtp": self.true_peak_dbtp,
            "start": self.start,
            "end": self.end,
            "limits": self.limits.model_dump(mode="json"),
        }

    def manifest_config(self, base_dir: Path) -> dict[str, Any]:
        """The job as resolved (defaults applied), with paths relative to the config's folder."""

        def rel(path: Path | None) -> str | None:
            return None if path is None else Path(os.path.relpath(path, base_dir)).as_posix()

        image = {} if self.portrait is None else {"image": rel(self.portrait.image)}
        return {
            "id": self.id,
            "video": rel(self.video),
            **image,
            "audio": rel(self.audio),
            "text_file": rel(self.text_file),
            "text": self.text,
            **self.params(),
        }


@dataclass(frozen=True)
class RunConfig:
    path: Path
    name: str
    provider: str
    output: Path
    max_jobs: int | None
    base_urls: dict[str, str]
    provider_options: dict[str, dict[str, Any]]
    poll: PollSection
    rehearse: RehearseSection
    jobs: tuple[JobSpec, ...]
    max_creates_per_job: int = DEFAULT_MAX_CREATES_PER_JOB
    download: DownloadSection = DownloadSection()
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)  # a config's price overrides per provider
    ledger: str | None = None  # a PostgreSQL URL (no password); None: the run directory's SQLite file
    cluster: str | None = None  # a Dask scheduler's address; None: this machine alone

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(job.provider for job in self.jobs))

    def select(self, only: tuple[str, ...]) -> tuple[JobSpec, ...]:
        if not only:
            return self.jobs
        known = {job.id for job in self.jobs}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise ConfigError(
                f"{self.path}: --only {', '.join(unknown)}: no such job id; known: {', '.join(sorted(known))}"
            )
        return tuple(job for job in self.jobs if job.id in only)


def load_config(path: str | Path) -> RunConfig:
    """Read, validate and resolve a config file. Raises ConfigError naming the file and key."""
    path = Path(os.path.abspath(path))
    try:
        raw = tomllib.loads(read_regular_file(path, MAX_CONFIG_BYTES, "config file", ConfigError).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; create one with `lipsync init {path.name}`") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = ConfigFile.model_validate(raw)
    except PydanticValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    return _resolve(path, parsed)


def _background(colour: str | None, where: str) -> str:
    try:
        return ImageOptions(colour).background if colour is not None else ImageOptions.background
    except LipsyncError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def check_creates_per_job(config: RunConfig, job_id: str, creates: int) -> int:
    """`creates` (the paid provider jobs one job would make: its segments) if within
    `run.max_creates_per_job`; else a ConfigError (exit 6) naming the job, the count and the key to raise."""
    limit = config.max_creates_per_job
    if creates > limit:
        raise ConfigError(
            f"{config.path}: job {job_id!r} would make {creates} paid provider jobs, over "
            f"run.max_creates_per_job = {limit}; shorten its script or audio, or raise "
            f"run.max_creates_per_job if that many is intended"
        )
    return creates


def text_creates(spec: JobSpec) -> int | None:
    """How many paid creates a TTS job makes (one per chunk of its script), before any media work; None for a
    job with an audio track (its segment count comes from prepare)."""
    if spec.text is None or spec.portrait is not None:  # a portrait's clips are planned with its image limits
        return None
    return len(chunk_text(spec.text, spec.limits.tts_max_chars, max_job_seconds(spec.limits)))


def _describe(exc: PydanticValidationError) -> str:
    err = exc.errors()[0]
    key = _key_name(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing" and key in ("run", "job"):
        return f"{key}: missing; add a [{key}] section" if key == "run" else "job: missing; add at least one [[job]]"
    if err["type"] == "missing":
        return f"{key}: missing; add `{key.rsplit('.', 1)[-1]} = ...`"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling"
    return f"{key}: {msg}"


def _key_name(loc: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int) and parts:
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _resolve(path: Path, parsed: ConfigFile) -> RunConfig:
    base = path.parent
    run = parsed.run
    jobs = tuple(_resolve_job(path, i, spec, parsed) for i, spec in enumerate(parsed.job))
    output = Path(os.path.abspath(base / (run.output or f"out/{run.name}")))
    return RunConfig(
        path=path,
        name=run.name,
        provider=run.provider,
        output=output,
        max_jobs=run.max_jobs,
        base_urls=dict(run.base_urls),
        provider_options={name: dict(opts) for name, opts in run.provider_options.items()},
        poll=run.poll,
        rehearse=run.rehearse,
        jobs=jobs,
        max_creates_per_job=run.max_creates_per_job,
        download=run.download,
        prices=_checked_prices(path, parsed.prices),
        ledger=run.ledger,
        cluster=run.cluster,
    )


def _checked_prices(path: Path, prices: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The config's price overrides, refused here (naming the file) rather than when a plan is priced."""
    from ..pricing import load_price

    for provider, overrides in prices.items():
        try:
            load_price(provider, overrides)
        except LipsyncError as exc:
            raise ConfigError(f"{path}: {exc.message}") from None
    return {provider: dict(overrides) for provider, overrides in prices.items()}


def _resolve_job(path: Path, index: int, spec: JobSection, parsed: ConfigFile) -> JobSpec:
    key = f"job[{index}]"
    defaults = parsed.defaults

    def existing(field_name: str, value: str) -> Path:
        resolved = Path(os.path.abspath(path.parent / value))  # as written: symlinks are the user's business
        if not resolved.is_file():
            raise ConfigError(
                f"{path}: {key}.{field_name}: no such file {resolved}; paths are relative to the config file"
            )
        return resolved

    text = spec.text
    text_file = existing("text_file", spec.text_file) if spec.text_file else None
    if text_file is not None:
        try:
            text = read_regular_file(text_file, MAX_SCRIPT_BYTES, "script (text_file)", ConfigError).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: {key}.text_file: not UTF-8 text; save it as UTF-8") from None
    if text is not None and not text.strip():
        raise ConfigError(f"{path}: {key}.text: the script is empty; write the words to speak")
    provider = spec.provider or defaults.provider or parsed.run.provider
    overrides = {**defaults.limits, **spec.limits}
    try:
        speaker = resolve_voice(spec.speaker or defaults.speaker)
        limits = load_limits(provider, overrides)
    except LipsyncError as exc:
        where = "speaker" if "speaker" in exc.message else "limits"
        raise ConfigError(f"{path}: {key}.{where}: {exc.message}") from None
    if spec.image is not None and provider != "aimlapi":
        raise ConfigError(
            f"{path}: {key}.provider: an image job runs on aimlapi (pixverse/v5/image-to-video), "
            f'not {provider}; set provider = "aimlapi" on the job'
        )
    portrait = (
        None
        if spec.image is None
        else PortraitSpec(
            image=existing("image", spec.image),
            prompt=spec.prompt or "",
            text=text or "",
            speaker=speaker,
            resolution=spec.resolution,
            duration=spec.duration,
            negative_prompt=spec.negative_prompt,
            style=spec.style,
            seed=spec.seed,
            chain=spec.chain,
            background=_background(spec.background, f"{path}: {key}.background"),
        )
    )
    if portrait is not None:
        try:
            check_portrait(portrait, load_image_limits(provider), limits.tts_max_chars, CONFIG_OPTION_NAMES)
        except LipsyncError as exc:
            raise ConfigError(f"{path}: {key}: {exc.message}") from None
    return JobSpec(
        id=spec.id,
        provider=provider,
        video=existing("video", spec.video) if spec.video else None,
        audio=existing("audio", spec.audio) if spec.audio else None,
        text=text,
        text_file=text_file,
        speaker=speaker,
        sync_mode=spec.sync_mode or defaults.sync_mode,
        loudness_lufs=spec.loudness_lufs if spec.loudness_lufs is not None else defaults.loudness_lufs,
        true_peak_dbtp=spec.true_peak_dbtp if spec.true_peak_dbtp is not None else defaults.true_peak_dbtp,
        start=spec.start,
        end=spec.end,
        limits=limits,
        audio_track=spec.audio_track if spec.audio_track is not None else defaults.audio_track,
        portrait=portrait,
        **_checks(spec, defaults),
        long_media=spec.long_media or defaults.long_media,
    )


def _checks(spec: JobSection, defaults: DefaultsSection) -> dict[str, Any]:
    """The face pre-flight and lip-sync check settings: the job's own, else the defaults'."""

    def pick(name: str) -> Any:
        own = getattr(spec, name)
        return own if own is not None else getattr(defaults, name)

    return {
        "face": FaceThresholds(min_face_share=pick("min_face_share"), min_face_size=pick("min_face_size")),
        "require_face": pick("require_face"),
        "sync": SyncPolicy(check=pick("sync_check"), min_confidence=pick("min_sync_confidence")),
    }
