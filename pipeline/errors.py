"""One tree of errors, each carrying a user-facing message and the CLI exit code it maps to."""

from __future__ import annotations

from typing import Any


class LipsyncError(Exception):
    """Base for every error a user may see. `str(err)` is the one-line message."""

    exit_code = 1

    def __init__(self, message: str, *, provider: str | None = None, code: str | int | None = None):
        self.message = message
        self.provider = provider
        self.code = code
        super().__init__(self.render())

    def render(self) -> str:
        if self.provider is None:
            return self.message
        code = f" [{self.code}]" if self.code not in (None, "") else ""
        return f"{self.provider}{code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "message": self.render(),
            "exit_code": self.exit_code,
            "provider": self.provider,
            "code": self.code,
        }


class ValidationError(LipsyncError):
    """Bad input or config: exit 6."""

    exit_code = 6


class InputError(ValidationError):
    """A media or text input that cannot be used. The message names the file and the reason."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ValidationError):
    """A config file that cannot be used. The message names the file, the key and the fix."""


class JobTimeout(LipsyncError):
    exit_code = 2


class ResultPending(JobTimeout):
    """The provider says the job is done, but its result stayed missing: not a failure (it is paid for);
    the next run polls it again."""


class AuthError(LipsyncError):
    exit_code = 3


class BillingError(LipsyncError):
    """Out of credits, quota or subscription trouble."""

    exit_code = 4


class GenerationFailed(LipsyncError):
    exit_code = 5


class Moderated(GenerationFailed):
    pass


class VerificationError(GenerationFailed):
    """The final file failed a check (streams, decode, durations, A/V offset): the job produced no usable result."""


class ProviderError(LipsyncError):
    """The provider answered in a way we cannot act on (5xx after retries, malformed reply...)."""


class UncertainCreate(LipsyncError):
    """A create request was sent but its answer was lost: the job may exist and may be billed.

    Never retried automatically; carries what is needed to reconcile it by hand.
    """

    def __init__(self, message: str, *, provider: str, reconcile: dict[str, Any] | None = None):
        self.reconcile = reconcile or {}
        super().__init__(message, provider=provider)


class LedgerError(LipsyncError):
    """The run's ledger database cannot be reached or used (exit 1): nothing billable goes on without it."""


class ToolError(LipsyncError):
    """ffmpeg or another external tool failed unexpectedly."""


def worst_exit_code(codes: list[int]) -> int:
    """The exit code of a batch: the 'worst' job's. Validation/auth/billing outrank generic failures."""
    order = [0, 1, 2, 5, 4, 3, 6]
    return max(codes, key=order.index, default=0)
