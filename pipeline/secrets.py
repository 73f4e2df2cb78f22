"""Provider credentials: read only from the environment, and scrubbed from anything we print or store.

Redaction knows every secret this process was given, not only what the current shell happens to hold:
- `record_environment()` (called once when the CLI starts) records the keys in the environment then, and
  `providers.credential_from_env` records every key it hands out, into one process-wide `SecretRegistry`;
- a run records `fingerprints()` (length + SHA-256, never the value) in what it stores, and a later
  `lipsync status` in a shell without the key loads them (`add_fingerprints`), so a key a provider
  echoed back into a stored message is still found and hidden.
`redact(text)` and `redact_data(obj)` (for JSON-like records: ledger rows, manifests, reports) apply it
all; keys still in the current environment are hidden too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

SECRET_ENV_VARS = ("PIXVERSE_API_KEY", "AIMLAPI_KEY", "USEAPI_TOKEN", "FAL_KEY")
MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
MASK = "***"


@dataclass(frozen=True)
class Fingerprint:
    """What a stored record keeps of a secret: enough to recognise it, nothing to recover it."""

    length: int
    sha256: str

    @classmethod
    def of(cls, value: str) -> Fingerprint:
        return cls(len(value), hashlib.sha256(value.encode()).hexdigest())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(int(d["length"]), str(d["sha256"]))


class SecretRegistry:
    """The secrets of this process (values, in memory only) and fingerprints of secrets of earlier runs."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._fingerprints: set[Fingerprint] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        value = (value or "").strip()
        if len(value) >= MIN_SECRET_LEN:
            with self._lock:
                self._values.add(value)

    def record_environment(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        for var in SECRET_ENV_VARS:
            self.add(env.get(var))

    def add_fingerprints(self, fingerprints: Iterable[Fingerprint]) -> None:
        with self._lock:
            self._fingerprints.update(f for f in fingerprints if f.length >= MIN_SECRET_LEN)

    def fingerprints(self) -> list[Fingerprint]:
        """Fingerprints of every secret known here, for a record a later process reads."""
        with self._lock:
            known = {Fingerprint.of(v) for v in self._values} | self._fingerprints
        return sorted(known, key=lambda f: (f.length, f.sha256))

    def redact(self, text: str, extra: Iterable[str] = ()) -> str:
        with self._lock:
            values = self._values | {v.strip() for v in extra if len(v.strip()) >= MIN_SECRET_LEN}
            pending = self._fingerprints - {Fingerprint.of(v) for v in values}
        for value in sorted(values, key=len, reverse=True):  # a key containing another goes first
            text = text.replace(value, MASK)
        for fingerprint in pending:
            text = _redact_by_fingerprint(text, fingerprint)
        return text


def _redact_by_fingerprint(text: str, fingerprint: Fingerprint) -> str:
    """Every window of `fingerprint.length` characters that hashes to it, masked (one hash per position)."""
    n = fingerprint.length
    out: list[str] = []
    start = i = 0
    while i + n <= len(text):
        if hashlib.sha256(text[i : i + n].encode()).hexdigest() == fingerprint.sha256:
            out.append(text[start:i] + MASK)
            i += n
            start = i
        else:
            i += 1
    return "".join(out) + text[start:]


REGISTRY = SecretRegistry()


def record_environment(env: Mapping[str, str] | None = None) -> None:
    """Record the keys this process was started with (the CLI calls this first)."""
    REGISTRY.record_environment(env)


def fingerprints() -> list[Fingerprint]:
    return REGISTRY.fingerprints()


def add_fingerprints(items: Iterable[Fingerprint | Mapping[str, Any]]) -> None:
    """Fingerprints read from a stored record (dicts as written by `Fingerprint.to_dict`)."""
    REGISTRY.add_fingerprints(f if isinstance(f, Fingerprint) else Fingerprint.from_dict(f) for f in items)


def redact(text: str) -> str:
    """`text` with every secret this process knows (and any still in the environment) replaced by '***'."""
    return REGISTRY.redact(text, (os.environ.get(var, "") for var in SECRET_ENV_VARS))


def redact_data(obj: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string, keys included, redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {redact_data(k): redact_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Installed on our log handler so no record can carry a key to stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
