"""Provider media limits, loaded from pipeline/providers/limits.toml and overridable from config."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from .errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)
_SECTIONS = ("default", "image")  # limits.toml's tables that are not a provider's


class Limits(BaseModel):
    """What a provider accepts. Every stage takes one of these; none hard-codes a number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    video_containers: tuple[str, ...] = Field(min_length=1)
    video_max_side: int = Field(gt=0)
    video_max_bytes: int = Field(gt=0)
    video_max_seconds: float = Field(gt=0)
    audio_containers: tuple[str, ...] = Field(min_length=1)
    audio_max_bytes: int = Field(gt=0)
    audio_max_seconds: float = Field(gt=0)
    tts_max_chars: int = Field(gt=0)


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("pipeline").joinpath("providers", "limits.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


PROVIDERS = tuple(name for name in _table() if name not in _SECTIONS)
"""The providers limits.toml has a table for (each provider class names its own as `limits_key`)."""


def load_limits(provider: str | None = None, overrides: dict[str, Any] | None = None) -> Limits:
    """Limits for `provider` (None = the common defaults), with `overrides` applied last."""
    table = _table()
    if provider is not None and provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    merged = {**table["default"], **table.get(provider or "default", {}), **(overrides or {})}
    return _validated(Limits, merged, "limits")


def _validated(model: type[_M], merged: dict[str, Any], label: str) -> _M:
    try:
        return model(**merged)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{label}{'.' + key if key else ''}: {err['msg']}") from None


def strictest(limits: list[Limits]) -> Limits:
    """The limits that satisfy every provider in the list (used when preparing without a provider)."""
    first = limits[0]
    return Limits(
        video_containers=tuple(c for c in first.video_containers if all(c in lim.video_containers for lim in limits)),
        video_max_side=min(lim.video_max_side for lim in limits),
        video_max_bytes=min(lim.video_max_bytes for lim in limits),
        video_max_seconds=min(lim.video_max_seconds for lim in limits),
        audio_containers=tuple(c for c in first.audio_containers if all(c in lim.audio_containers for lim in limits)),
        audio_max_bytes=min(lim.audio_max_bytes for lim in limits),
        audio_max_seconds=min(lim.audio_max_seconds for lim in limits),
        tts_max_chars=min(lim.tts_max_chars for lim in limits),
    )


class ImageLimits(BaseModel):
    """What a talking-portrait provider takes: the still image, and the model's enums (see limits.toml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_formats: tuple[str, ...] = Field(min_length=1)
    output_formats: tuple[str, ...] = Field(min_length=1)
    image_max_side: int = Field(gt=0)
    image_min_side: int = Field(gt=1)
    image_max_bytes: int = Field(gt=0)
    jpeg_quality: int = Field(ge=1, le=95)
    jpeg_min_quality: int = Field(ge=1, le=95)
    resolutions: tuple[str, ...] = Field(min_length=1)
    default_resolution: str
    durations: tuple[int, ...] = Field(min_length=1)
    default_duration: int
    resolution_durations: dict[str, tuple[int, ...]] = {}
    styles: tuple[str, ...] = ()
    seed_max: int = Field(gt=0)
    prompt_max_chars: int = Field(gt=0)
    speech_fill: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _defaults_are_choices(self) -> ImageLimits:
        if self.default_resolution not in self.resolutions:
            raise ValueError(f"default_resolution {self.default_resolution!r} is not among the resolutions")
        if self.default_duration not in self.durations_at(self.default_resolution):
            raise ValueError(f"default_duration {self.default_duration} is not allowed at {self.default_resolution}")
        if self.jpeg_min_quality > self.jpeg_quality:
            raise ValueError("jpeg_min_quality is above jpeg_quality")
        return self

    def durations_at(self, resolution: str) -> tuple[int, ...]:
        """The clip lengths `resolution` allows, shortest first."""
        return tuple(sorted(self.resolution_durations.get(resolution, self.durations)))

    def short_side(self, resolution: str) -> int:
        """ "720p" -> 720: the short side of the rendered frame."""
        return int(resolution.removesuffix("p"))


IMAGE_PROVIDERS = ("aimlapi",)
# Paid provider jobs one job may make unless the user raises it: a stray file or script is not 157 jobs.
DEFAULT_MAX_CREATES_PER_JOB = 20


def load_image_limits(provider: str = "aimlapi", overrides: dict[str, Any] | None = None) -> ImageLimits:
    """Still-image limits and model enums for `provider`, with `overrides` applied last."""
    if provider not in IMAGE_PROVIDERS:
        raise ConfigError(f"{provider!r} has no image-to-video model; choose one of {', '.join(IMAGE_PROVIDERS)}")
    table = _table()["image"]
    merged = {**table["default"], **table.get(provider, {}), **(overrides or {})}
    return _validated(ImageLimits, merged, "image limits")
