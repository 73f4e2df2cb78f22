"""What a planned run will cost, before anything is created.

Prices are data (pipeline/providers/prices.toml, overridable from config), in Decimal so 0.04 × 30 is 1.20.
A provider that documents no price has none here: its estimate says "unknown" with the reason, never a guess.
`estimate` is pure: the planned jobs (one per segment) and a price give per-job lines and a total.

The documents say what a second and 100 characters cost, not how a part of one is billed; each job is
rounded up to whole seconds and started hundreds of characters, so the estimate never falls under the bill.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from .errors import ConfigError
from .limits import PROVIDERS

UNKNOWN = "unknown"


class Price(BaseModel):
    """One provider's documented price of a lip-sync job; None where it documents none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str | None = None
    per_output_second: Decimal | None = Field(default=None, ge=0)
    per_100_tts_characters: Decimal | None = Field(default=None, ge=0)
    source: str = "no price documented"


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("pipeline.providers").joinpath("prices.toml").read_text(encoding="utf-8")
    return tomllib.loads(text, parse_float=Decimal)


def load_price(provider: str, overrides: dict[str, Any] | None = None) -> Price:
    """The documented price of `provider`, with a config's `overrides` applied last."""
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    merged = {**_table().get(provider, {}), **(overrides or {})}
    if overrides and "source" not in overrides:
        merged["source"] = f"the config ({', '.join(sorted(overrides))}) over: {merged.get('source', 'no document')}"
    try:
        return Price(**merged)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"prices.{provider}.{key}: {err['msg']}") from None


@dataclass(frozen=True)
class PlannedJob:
    """One provider job of a plan: what it is expected to return."""

    index: int
    seconds: float  # the output video's expected length
    tts_characters: int = 0  # characters the provider speaks (0 when audio is given)


@dataclass(frozen=True)
class CostLine:
    index: int
    seconds: float
    tts_characters: int
    amount: Decimal | None  # None: unknown
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seconds": self.seconds,
            "tts_characters": self.tts_characters,
            "amount": UNKNOWN if self.amount is None else str(self.amount),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Estimate:
    provider: str
    currency: str | None
    lines: tuple[CostLine, ...]
    total: Decimal | None  # None: at least one line is unknown
    reasons: tuple[str, ...]

    @property
    def known(self) -> bool:
        return self.total is not None

    def text(self) -> str:
        """The total for people: "USD 1.20", or "unknown"."""
        return UNKNOWN if self.total is None else f"{self.currency or ''} {self.total:.2f}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "currency": self.currency,
            "calls": len(self.lines),
            "total": UNKNOWN if self.total is None else str(self.total),
            "lines": [line.to_dict() for line in self.lines],
            "reasons": list(self.reasons),
        }


def estimate(provider: str, price: Price, jobs: Sequence[PlannedJob]) -> Estimate:
    """The cost of `jobs` at `price`: one line per job, the total only when every line is known."""
    lines = tuple(_line(price, job) for job in jobs)
    unknown = [line.index for line in lines if line.amount is None]
    reasons = [f"{len(lines)} provider call(s) at {provider}; price from: {price.source}"]
    if unknown:
        reasons.append(f"total unknown: {provider} documents no price for job(s) {', '.join(map(str, unknown))}")
        total = None
    else:
        total = sum((line.amount for line in lines if line.amount is not None), Decimal(0))
        if lines:
            reasons.append(
                "each job rounded up to whole seconds and started 100 characters: the documents do "
                "not say how parts are billed, so the estimate is not under the bill"
            )
    return Estimate(provider, price.currency, lines, total, tuple(reasons))


def _line(price: Price, job: PlannedJob) -> CostLine:
    if price.per_output_second is None:
        return CostLine(job.index, job.seconds, job.tts_characters, None, "no price per output second documented")
    seconds = math.ceil(job.seconds)
    amount = price.per_output_second * seconds
    reason = f"{seconds} s × {price.per_output_second}"
    if job.tts_characters:
        if price.per_100_tts_characters is None:
            return CostLine(
                job.index,
                job.seconds,
                job.tts_characters,
                None,
                "speaks a script, and no price per character is documented",
            )
        hundreds = -(-job.tts_characters // 100)
        amount += price.per_100_tts_characters * hundreds
        reason += f" + {hundreds} × 100 characters × {price.per_100_tts_characters}"
    return CostLine(job.index, job.seconds, job.tts_characters, amount, reason)


def budget_refusal(est: Estimate, budget: Decimal) -> str | None:
    """Why a run with this estimate must not start under `budget` (same currency), or None when it may."""
    if est.total is None:
        return (
            f"the estimate for {est.provider} is unknown ({est.reasons[-1]}), so a budget of {budget} "
            f"cannot be kept; set [prices.{est.provider}] in the config"
        )
    if est.total > budget:
        return f"the estimate {est.text()} is over the budget of {budget}"
    return None
