"""Fetching a result: streamed to disk, capped, checked, hashed, renamed into place only when complete.

The URL comes from the provider's reply, so it is treated as untrusted: https only (http only to a
loopback host), redirects followed by hand with the same check, no credentials ever sent, and the
provider's idea of a file name is ignored (the caller names the destination).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..errors import ProviderError
from ..fsutil import atomic_output
from .http import (RetryPolicy, TryAgain, is_retryable_status, parse_retry_after, require_safe_url,
                   run_with_retries)

log = logging.getLogger("lipsync.providers.download")

MAX_REDIRECTS = 5
_HEAD = 12
# Top-level boxes an ISO-BMFF/QuickTime file may open with (a QuickTime .mov can lack `ftyp`).
MEDIA_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
MEDIA_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})


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


def declared_length(headers: httpx.Headers) -> int | None:
    try:
        value = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def download_to(client: httpx.Client, url: str, dst: Path, *, max_bytes: int, policy: RetryPolicy,
                provider: str) -> Download:
    """Stream `url` into `dst` atomically; retry transport errors, 429/5xx and short bodies."""
    require_safe_url(url, what=f"{provider} result URL")
    with atomic_output(dst) as tmp:
        sha, size, ctype = run_with_retries(
            lambda: _fetch_once(client, url, tmp, max_bytes=max_bytes, provider=provider),
            policy=policy, provider=provider, what="download")
    log.debug("%s: downloaded %d bytes to %s (sha256 %s)", provider, size, dst, sha[:12])
    return Download(Path(dst), sha, size, ctype)


def _open(client: httpx.Client, url: str, provider: str) -> httpx.Response:
    """GET `url` as a stream, following up to MAX_REDIRECTS redirects, each one checked like the first."""
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(client.build_request("GET", url), stream=True)
        if not response.is_redirect:
            return response
        response.close()
        url = require_safe_url(str(response.url.join(response.headers["Location"])),
                               what=f"{provider} result redirect")
    raise ProviderError(f"result URL redirected more than {MAX_REDIRECTS} times", provider=provider)


def _fetch_once(client: httpx.Client, url: str, tmp: Path, *, max_bytes: int,
                provider: str) -> tuple[str, int, str | None]:
    try:
        response = _open(client, url, provider)
        try:
            _check_reply(response, max_bytes=max_bytes, provider=provider)
            sha, size = _stream_body(response, tmp, max_bytes=max_bytes, provider=provider)
            expected = declared_length(response.headers)
            if expected is not None and response.num_bytes_downloaded < expected:
                raise TryAgain(f"truncated: {response.num_bytes_downloaded} of {expected} bytes")
        finally:
            response.close()
    except httpx.RequestError as exc:
        raise TryAgain(f"{type(exc).__name__}: {exc}") from exc
    return sha, size, response.headers.get("Content-Type")


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


def _stream_body(response: httpx.Response, tmp: Path, *, max_bytes: int, provider: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    head = b""
    with open(tmp, "wb") as out:
        for chunk in response.iter_bytes():
            size += len(chunk)
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
