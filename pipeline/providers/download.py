"""Fetching a result: streamed to disk, capped, checked, hashed, renamed into place only when complete.

The URL comes from the provider's reply, so it is treated as untrusted: https only, to public addresses
only (checked on the address dialled, on every redirect hop: `netguard`), except the loopback origins of a
provider configured on loopback; redirects followed by hand with the same check; no credentials ever
sent; the provider's idea of a file name ignored (the caller names the destination). A download has an
overall deadline and a minimum average rate (`TransferLimits`), so a server dripping bytes cannot hold a
run for ever, and a size cap from the provider's limits (`result_cap`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..errors import ProviderError
from ..fsutil import atomic_output
from ..limits import Limits
from ..safetext import printable
from .http import (
    RetryPolicy,
    TryAgain,
    declared_length,
    is_retryable_status,
    parse_retry_after,
    require_safe_url,
    run_with_retries,
)
from .netguard import Deadline, Origin, Resolver, guarded_client

log = logging.getLogger("lipsync.providers.download")

MAX_REDIRECTS = 5
_HEAD = 12
# Top-level boxes an ISO-BMFF/QuickTime file may open with (a QuickTime .mov can lack `ftyp`).
MEDIA_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
MEDIA_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})
# A result is a lip-synced copy of an input within the provider's limits; leave room for a higher bitrate.
RESULT_CAP_FACTOR = 4


@dataclass(frozen=True)
class TransferLimits:
    """How long a download may take in all, and how slow it may be on average.

    Defaults: 30 minutes in all, and after the first minute at least 16 kB/s on average. A 50 MB result
    needs 28 kB/s (222 kbit/s) to arrive within the deadline, so only a link slower than a poor mobile
    connection misses it; the rate floor is well under that, so it only cuts off a stalled or dripping
    server early and never a slow-but-real link (the deadline decides those). A retried attempt shares
    the same deadline.
    """

    deadline_s: float = 1800.0
    min_rate: float = 16_000.0  # bytes per second, averaged since the body started
    rate_grace_s: float = 60.0  # no rate is judged before this many seconds of body

    def __post_init__(self) -> None:
        if not (self.deadline_s > 0 and self.min_rate >= 0 and self.rate_grace_s >= 0):
            raise ValueError(f"inconsistent download limits: {self}")


def too_slow(limits: TransferLimits, elapsed: float, size: int) -> str | None:
    """Why a body that delivered `size` bytes in `elapsed` seconds is too slow to go on, or None."""
    if elapsed <= limits.rate_grace_s:
        return None
    rate = size / elapsed
    if rate < limits.min_rate:
        return (
            f"{size} bytes in {elapsed:.0f} s ({rate:.0f} B/s) is under the minimum average rate of "
            f"{limits.min_rate:g} B/s"
        )
    return None


def result_cap(limits: Limits) -> int:
    """The most bytes a result may have: the provider's input cap times RESULT_CAP_FACTOR."""
    return limits.video_max_bytes * RESULT_CAP_FACTOR


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    size: int
    content_type: str | None


def looks_like_mp4(head: bytes) -> bool:
    """True if `head` (the first bytes of a file) opens an MP4/QuickTime box."""
    return len(head) >= 8 and head[4:8] in MEDIA_BOXES


def acceptable_content_type(value: str | None) -> bool:
    """A result is video; a missing or generic binary type is allowed (CDNs often send one)."""
    if not value:
        return True
    mime = value.split(";")[0].strip().lower()
    return mime.startswith("video/") or mime in MEDIA_CONTENT_TYPES


def download_to(
    client: httpx.Client,
    url: str,
    dst: Path,
    *,
    max_bytes: int,
    policy: RetryPolicy,
    provider: str,
    allowed_loopback: Collection[Origin] = (),
    limits: TransferLimits = TransferLimits(),
    resolver: Resolver | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Download:
    """Stream `url` into `dst` atomically; retry transport errors, 429/5xx and short bodies within the
    deadline. `client` lends its timeouts, headers and event hooks; the connections are `netguard`'s,
    which reach loopback only at `allowed_loopback` origins (`resolver` is for tests)."""
    what = f"{provider} result URL"
    require_safe_url(url, what=what, allowed_loopback=allowed_loopback)
    deadline = Deadline.after(limits.deadline_s)
    with (
        guarded_client(client, allowed_loopback=allowed_loopback, resolver=resolver, deadline=deadline) as guarded,
        atomic_output(dst) as tmp,
    ):

        def attempt() -> tuple[str, int, str | None]:
            return _fetch_once(
                guarded,
                url,
                tmp,
                max_bytes=max_bytes,
                provider=provider,
                allowed_loopback=allowed_loopback,
                limits=limits,
                deadline=deadline,
            )

        sha, size, ctype = run_with_retries(attempt, policy=policy, provider=provider, what="download", sleep=sleep)
    log.debug("%s: downloaded %d bytes to %s (sha256 %s)", provider, size, dst, sha[:12])
    return Download(Path(dst), sha, size, ctype)


def _open(client: httpx.Client, url: str, provider: str, allowed_loopback: Collection[Origin]) -> httpx.Response:
    """GET `url` as a stream, following up to MAX_REDIRECTS redirects, each one checked like the first."""
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(client.build_request("GET", url), stream=True)
        if not response.is_redirect:
            return response
        response.close()
        url = require_safe_url(
            _redirect_target(response, provider), what=f"{provider} result redirect", allowed_loopback=allowed_loopback
        )
    raise ProviderError(f"result URL redirected more than {MAX_REDIRECTS} times", provider=provider)


def _redirect_target(response: httpx.Response, provider: str) -> str:
    try:
        return str(response.url.join(response.headers["Location"]))
    except (KeyError, httpx.InvalidURL) as exc:
        raise ProviderError(
            f"result URL redirected without a usable Location ({printable(exc)})", provider=provider
        ) from None


def _fetch_once(
    client: httpx.Client,
    url: str,
    tmp: Path,
    *,
    max_bytes: int,
    provider: str,
    allowed_loopback: Collection[Origin],
    limits: TransferLimits,
    deadline: Deadline,
) -> tuple[str, int, str | None]:
    _check_deadline(deadline, provider)
    try:
        response = _open(client, url, provider, allowed_loopback)
        try:
            _check_reply(response, max_bytes=max_bytes, provider=provider)
            sha, size = _stream_body(response, tmp, max_bytes=max_bytes, provider=provider, limits=limits)
            expected = declared_length(response.headers)
            if expected is not None and response.num_bytes_downloaded < expected:
                raise TryAgain(f"truncated: {response.num_bytes_downloaded} of {expected} bytes")
        finally:
            response.close()
    except httpx.RequestError as exc:
        _check_deadline(deadline, provider)
        raise TryAgain(f"{type(exc).__name__}: {exc}") from exc
    return sha, size, response.headers.get("Content-Type")


def _check_deadline(deadline: Deadline, provider: str) -> None:
    if deadline.passed():
        raise ProviderError(
            f"result download not finished within its deadline of {deadline.seconds:g} s", provider=provider
        )


def _check_reply(response: httpx.Response, *, max_bytes: int, provider: str) -> None:
    if is_retryable_status(response.status_code):
        raise TryAgain(f"HTTP {response.status_code}", parse_retry_after(response.headers.get("Retry-After")))
    if response.status_code != 200:
        raise ProviderError(f"result download answered HTTP {response.status_code}", provider=provider)
    ctype = response.headers.get("Content-Type")
    if not acceptable_content_type(ctype):
        raise ProviderError(f"result download is {ctype!r}, not a video", provider=provider)
    expected = declared_length(response.headers)
    if expected is not None and expected > max_bytes:
        raise ProviderError(f"result is {expected} bytes, over the {max_bytes}-byte cap", provider=provider)


def _stream_body(
    response: httpx.Response, tmp: Path, *, max_bytes: int, provider: str, limits: TransferLimits
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    head = b""
    started = time.monotonic()
    with open(tmp, "wb") as out:
        for chunk in response.iter_bytes():
            size += len(chunk)
            slow = too_slow(limits, time.monotonic() - started, size)
            if slow is not None:
                raise ProviderError(f"result download too slow: {slow}", provider=provider)
            if size > max_bytes:
                raise ProviderError(f"result exceeds the {max_bytes}-byte cap", provider=provider)
            if len(head) < _HEAD:
                head += chunk[:_HEAD]
                if len(head) >= _HEAD and not looks_like_mp4(head):
                    raise ProviderError("result download is not an MP4/QuickTime file", provider=provider)
            digest.update(chunk)
            out.write(chunk)
    if not looks_like_mp4(head):
        raise ProviderError(f"result download is not an MP4/QuickTime file ({size} bytes)", provider=provider)
    return digest.hexdigest(), size
