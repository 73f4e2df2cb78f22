"""Provider media limits, loaded from pipeline/providers/limits.toml and overridable from config."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError as PydanticValidationError

from .errors import ConfigError

PROVIDERS = ("pixverse", "aimlapi", "useapi", "fal")


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


@lru_cache(maxsize=None)
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("pipeline.providers").joinpath("limits.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_limits(provider: str | None = None, overrides: dict[str, Any] | None = None) -> Limits:
    """Limits for `provider` (None = the common defaults), with `overrides` applied last."""
    table = _table()
    if provider is not None and provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    merged = {**table["default"], **table.get(provider or "default", {}), **(overrides or {})}
    try:
        return Limits(**merged)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"limits.{key}: {err['msg']}") from None


def strictest(limits: list[Limits]) -> Limits:
    """The limits that satisfy every provider in the list (used when preparing without a provider)."""
    first = limits[0]
    return Limits(
        video_containers=tuple(c for c in first.video_containers if all(c in l.video_containers for l in limits)),
        video_max_side=min(l.video_max_side for l in limits),
        video_max_bytes=min(l.video_max_bytes for l in limits),
        video_max_seconds=min(l.video_max_seconds for l in limits),
        audio_containers=tuple(c for c in first.audio_containers if all(c in l.audio_containers for l in limits)),
        audio_max_bytes=min(l.audio_max_bytes for l in limits),
        audio_max_seconds=min(l.audio_max_seconds for l in limits),
        tts_max_chars=min(l.tts_max_chars for l in limits),
    )
