"""A batch config: TOML read with tomllib, validated with pydantic, resolved into one `JobSpec` per job.

Every error is a ConfigError naming the file, the key (e.g. `job[2].audio`) and how to fix it.
Paths in the file are relative to the file itself, so a config can travel with its media.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError as PydanticValidationError, model_validator

from ..errors import ConfigError, LipsyncError
from ..limits import PROVIDERS, Limits, load_limits
from ..prepare import read_text_file
from ..providers import BASE_URL_KEYS
from ..stages.face import FaceThresholds
from ..stages.mouth import SyncPolicy
from ..stages.sync import SyncMode
from ..voices import resolve_voice

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


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
            raise ValueError(f"unknown base URL key {key!r}; use {', '.join(BASE_URL_KEYS)} (or fal for both fal hosts)")
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


class RehearseSection(_Strict):
    """How the in-process emulator behaves under `lipsync run --rehearse`."""

    latency_s: float = Field(2.0, ge=0)
    queue_s: float = Field(0.0, ge=0)


class RunSection(_Strict):
    name: str = Field(min_length=1)
    provider: ProviderName
    output: str | None = None
    max_jobs: int | None = Field(None, ge=1, le=64)   # None: each provider's own default
    base_urls: Annotated[dict[str, str], AfterValidator(_check_base_urls)] = Field(default_factory=dict)
    provider_options: dict[ProviderName, dict[str, Any]] = Field(default_factory=dict)
    poll: PollSection = PollSection()
    rehearse: RehearseSection = RehearseSection()


class DefaultsSection(_Strict):
    provider: ProviderName | None = None
    speaker: str = "Auto"
    sync_mode: SyncMode | None = None
    loudness_lufs: float | None = Field(-16.0, gt=-70, lt=0)
    true_peak_dbtp: float | None = Field(-1.5, ge=-20, le=0)
    limits: dict[str, Any] = Field(default_factory=dict)
    require_face: bool = False
    min_face_share: float = Field(FaceThresholds().min_face_share, ge=0, le=1)
    min_face_size: float = Field(FaceThresholds().min_face_size, gt=0, le=1)
    sync_check: Literal["warn", "fail"] = "warn"
    min_sync_confidence: float = Field(SyncPolicy().min_confidence, ge=0)


class JobSection(_Strict):
    id: str = Field(pattern=JOB_ID_PATTERN)
    video: str
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
    limits: dict[str, Any] = Field(default_factory=dict)
    require_face: bool | None = None
    min_face_share: float | None = Field(None, ge=0, le=1)
    min_face_size: float | None = Field(None, gt=0, le=1)
    sync_check: Literal["warn", "fail"] | None = None
    min_sync_confidence: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_voice_source(self) -> "JobSection":
        given = [k for k in ("audio", "text", "text_file") if getattr(self, k) not in (None, "")]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of audio, text or text_file (got {', '.join(given) or 'none'})"
            )
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class ConfigFile(_Strict):
    run: RunSection
    defaults: DefaultsSection = DefaultsSection()
    job: list[JobSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> "ConfigFile":
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
    video: Path
    audio: Path | None
    text: str | None
    text_file: Path | None
    speaker: str
    sync_mode: SyncMode | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    start: float | None
    end: float | None
    limits: Limits
    face: FaceThresholds = FaceThresholds()
    require_face: bool = False
    sync: SyncPolicy = SyncPolicy()

    def params(self) -> dict[str, Any]:
        """The parameters that change a job's result (part of its idempotency key and its manifest)."""
        return {
            "provider": self.provider,
            "speaker": self.speaker if self.audio is None else None,
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

        return {"id": self.id, "video": rel(self.video), "audio": rel(self.audio), "text_file": rel(self.text_file),
                "text": self.text, **self.params()}


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

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(job.provider for job in self.jobs))

    def select(self, only: tuple[str, ...]) -> tuple[JobSpec, ...]:
        if not only:
            return self.jobs
        known = {job.id for job in self.jobs}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise ConfigError(f"{self.path}: --only {', '.join(unknown)}: no such job id; known: {', '.join(sorted(known))}")
        return tuple(job for job in self.jobs if job.id in only)


def load_config(path: str | Path) -> RunConfig:
    """Read, validate and resolve a config file. Raises ConfigError naming the file and key."""
    path = Path(os.path.abspath(path))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; create one with `lipsync init {path.name}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = ConfigFile.model_validate(raw)
    except PydanticValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    return _resolve(path, parsed)


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


def _key_name(loc: tuple) -> str:
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
    )


def _resolve_job(path: Path, index: int, spec: JobSection, parsed: ConfigFile) -> JobSpec:
    key = f"job[{index}]"
    defaults = parsed.defaults

    def existing(field_name: str, value: str) -> Path:
        resolved = Path(os.path.abspath(path.parent / value))  # as written: symlinks are the user's business
        if not resolved.is_file():
            raise ConfigError(f"{path}: {key}.{field_name}: no such file {resolved}; paths are relative to the config file")
        return resolved

    text = spec.text
    text_file = existing("text_file", spec.text_file) if spec.text_file else None
    if text_file is not None:
        try:
            text = read_text_file(text_file)
        except LipsyncError as exc:
            raise ConfigError(f"{path}: {key}.text_file: {exc.message}") from None
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
    return JobSpec(
        id=spec.id,
        provider=provider,
        video=existing("video", spec.video),
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
        **_checks(spec, defaults),
    )


def _checks(spec: JobSection, defaults: DefaultsSection) -> dict[str, Any]:
    """The face pre-flight and lip-sync check settings: the job's own, else the defaults'."""
    def pick(name: str):
        own = getattr(spec, name)
        return own if own is not None else getattr(defaults, name)

    return {
        "face": FaceThresholds(min_face_share=pick("min_face_share"), min_face_size=pick("min_face_size")),
        "require_face": pick("require_face"),
        "sync": SyncPolicy(check=pick("sync_check"), min_confidence=pick("min_sync_confidence")),
    }
