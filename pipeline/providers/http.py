"""One httpx client factory and the two retry disciplines of the adapters.

- Idempotent requests (uploads, polls, voice lists, downloads): retried on transport errors, 408/425/429
  and 5xx, with exponential backoff, jitter and the server's Retry-After.
- Creates (billable): sent once per call (`send_create_once`); the provider-job flow retries only what was
  *refused* (429, "too many jobs") or never fully left this machine, recording each outcome first. Once
  the whole request was sent, a lost answer is never resent blindly: a second send could be a second
  paid job.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Collection, Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import tenacity

from ..errors import LipsyncError, ProviderError, ValidationError
from ..safetext import printable
from .netguard import BlockedAddress, Origin, address_refusal, is_loopback_host, parse_ip, url_origin

log = logging.getLogger("lipsync.providers.http")
T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(connect=15.0, read=60.0, write=120.0, pool=30.0)
RETRYABLE_STATUS = frozenset({408, 425, 429})
MAX_REPLY_BYTES = 1_000_000  # a status or create reply is a few KB; a bigger one is refused


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. `initial` doubles per attempt up to `maximum`, plus jitter."""

    attempts: int = 5
    initial: float = 1.0
    maximum: float = 30.0
    max_retry_after: float = 120.0  # a Retry-After longer than this is capped

    @classmethod
    def for_refused_creates(cls) -> RetryPolicy:
        """Providers ask to wait 10-30 s when at their concurrency limit; keep trying for a few minutes."""
        return cls(attempts=10, initial=10.0, maximum=30.0)


class RetriesExhausted(ProviderError):
    """A retried request still failed after every attempt (the provider is down or overloaded)."""


class TryAgain(Exception):
    """Raised by one attempt inside a `retrying` loop: it failed in a way worth another try."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Refused:
    """The provider declined a create without accepting a job (safe to send again after waiting)."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Lost:
    """A create answer that does not say whether a job was made (e.g. a gateway's 502)."""

    reason: str


CreateVerdict = Refused | Lost | LipsyncError | None
"""What an adapter's create classifier says of a reply: None means accepted, an error is final."""


def classify_http_create(
    status_code: int, message: str, final_error: Callable[[], LipsyncError], *, definite: Container[int] = ()
) -> CreateVerdict:
    """The create verdict of a provider whose errors are HTTP statuses: 2xx accepted; 429/503 refused (no job
    was made: safe to send again after waiting); any other 5xx lost (a job may exist), unless the provider
    documents that code as definite; everything else the provider's final error."""
    if 200 <= status_code < 300:
        return None
    if status_code in (429, 503):
        return Refused(f"HTTP {status_code}: {message}")
    if status_code >= 500 and status_code not in definite:
        return Lost(f"HTTP {status_code}: {message}")
    return final_error()


def require_configured_url(url: str, *, what: str) -> str:
    """`url` if it is https, or http to a loopback host: for URLs the user configured (base URLs), which
    may name a private gateway. URLs a provider sends us go through `require_safe_url` instead."""
    parsed = _absolute(url, what)
    if parsed.scheme == "https" or (parsed.scheme == "http" and is_loopback_host(parsed.host)):
        return url
    raise ValidationError(f"{what}: only https URLs are allowed (http only to loopback): {url!r}")


def require_safe_url(url: str, *, what: str, allowed_loopback: Collection[Origin] = ()) -> str:
    """`url` if a provider may send us there: https to a name or a public address, or http(s) to exactly
    one of the `allowed_loopback` origins (a provider configured on loopback). A name is checked again
    on the address it resolves to, when connecting (`netguard.GuardedBackend`). Else a ValidationError."""
    parsed = _absolute(url, what)
    origin = url_origin(parsed)
    if parsed.scheme in ("http", "https") and origin in allowed_loopback:
        return url
    if parsed.scheme != "https":
        raise ValidationError(f"{what}: only https URLs are allowed: {printable(url)}")
    ip = parse_ip(parsed.host)
    why = None if ip is None else address_refusal(ip)
    if why is not None:
        raise BlockedAddress(
            f"{what}: {printable(parsed.host)} is {why}; results are only fetched from public "
            f"addresses: {printable(url)}"
        )
    return url


def _absolute(url: str, what: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValidationError(f"{what}: not a URL ({printable(str(exc))})") from None
    if not parsed.host:
        raise ValidationError(f"{what}: not an absolute URL: {printable(url)}")
    return parsed


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port; False when either is not a URL (a control character in a reply's URL)."""
    try:
        ua, ub = httpx.URL(a), httpx.URL(b)
    except (httpx.InvalidURL, TypeError):
        return False
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or garbage."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable_status(code: int) -> bool:
    return code in RETRYABLE_STATUS or 500 <= code <= 599


def retryable_reply(response: httpx.Response) -> bool:
    return is_retryable_status(response.status_code)


def backoff_seconds(policy: RetryPolicy, attempt: int, retry_after: float | None, jitter: float) -> float:
    """Wait before retry number `attempt` (1-based): exponential with `jitter` (0..1 of `initial`),
    never shorter than the server's Retry-After (capped at policy.max_retry_after)."""
    base: float = min(policy.maximum, policy.initial * 2 ** (attempt - 1)) + jitter * policy.initial
    if retry_after is not None:
        base = max(base, min(retry_after, policy.max_retry_after))
    return base


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff_seconds(policy, state.attempt_number, getattr(exc, "retry_after", None), random.random())

    return wait


def _before_sleep(provider: str, what: str, policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], None]:
    def note(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: %s: %s; retrying in %.1f s (attempt %d of %d)",
            provider,
            printable(what),
            printable(getattr(exc, "reason", exc)),
            wait,
            state.attempt_number + 1,
            policy.attempts,
        )

    return note


def retrying(
    policy: RetryPolicy, *, provider: str, what: str, sleep: Callable[[float], None] = time.sleep
) -> tenacity.Retrying:
    """A tenacity loop that retries `TryAgain` and re-raises it when the attempts run out."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception_type(TryAgain),
        before_sleep=_before_sleep(provider, what, policy),
        sleep=sleep,
        reraise=True,
    )


def run_with_retries(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    provider: str,
    what: str,
    gave_up: str = "gave up",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `attempt` until it stops raising TryAgain; RetriesExhausted when the attempts run out.
    `sleep` waits between attempts (a batch passes one that a stop request interrupts)."""
    try:
        return retrying(policy, provider=provider, what=what, sleep=sleep)(attempt)
    except TryAgain as exc:
        raise RetriesExhausted(
            f"{what}: {gave_up} after {policy.attempts} attempts ({exc.reason})", provider=provider
        ) from None


def make_client(
    *,
    timeout: float | httpx.Timeout | None = None,
    event_hooks: dict[str, Any] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """The client every adapter uses. No default auth header: each request adds its own, so a
    download or a CDN upload never carries a key by accident. Redirects are not followed."""
    return httpx.Client(
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        event_hooks=event_hooks,
        transport=transport,
        follow_redirects=False,
        headers={"User-Agent": "lipsync-pipeline"},
    )


class ReplyTooLarge(Exception):
    """A reply body longer than we read (decoded size: a gzip bomb counts as what it inflates to)."""


def declared_length(headers: httpx.Headers) -> int | None:
    try:
        value = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def read_capped(response: httpx.Response, limit: int = MAX_REPLY_BYTES) -> httpx.Response:
    """`response` (sent with stream=True) with its body read, streaming, to at most `limit` bytes; closed.
    ReplyTooLarge when the body, declared or decoded, is longer: it is never held whole in memory."""
    try:
        declared = declared_length(response.headers)
        if declared is not None and declared > limit and "Content-Encoding" not in response.headers:
            raise ReplyTooLarge(f"the reply declares {declared} bytes, over the {limit}-byte cap")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise ReplyTooLarge(f"the reply is over the {limit}-byte cap")
    finally:
        response.close()
    kept = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=kept,
        content=bytes(body),
        request=response.request,
        extensions=response.extensions,
    )


def _transport_reason(exc: httpx.RequestError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def send_idempotent(
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    *,
    what: str,
    provider: str,
    policy: RetryPolicy,
    retry_on: Callable[[httpx.Response], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Send a request that is safe to repeat; return the first reply that is not worth retrying, its body
    read (at most MAX_REPLY_BYTES: a longer one is retried like a garbled reply).

    `retry_on(response)` says which replies mean "try later" (default: 408/425/429/5xx); adapters
    extend it (an error code inside a 200) or narrow it (useapi's 596 is not transient).
    Raises RetriesExhausted when every attempt failed.
    """
    retry_on = retry_on or retryable_reply

    def attempt() -> httpx.Response:
        try:
            response = read_capped(client.send(build(), stream=True))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # e.g. a control character in an id
            raise ProviderError(f"{what}: {exc}", provider=provider) from None
        except httpx.RequestError as exc:
            raise TryAgain(_transport_reason(exc)) from exc
        except ReplyTooLarge as exc:
            raise TryAgain(str(exc)) from None
        if retry_on(response):
            raise TryAgain(f"HTTP {response.status_code}", parse_retry_after(response.headers.get("Retry-After")))
        return response

    return run_with_retries(attempt, policy=policy, provider=provider, what=what, sleep=sleep)


class _TrackedBody:
    """An upload body that remembers whether it was handed over to the socket to the last byte."""

    def __init__(self, chunks: Iterable[bytes], on_finished: Callable[[], None] = lambda: None):
        self._chunks = chunks
        self._on_finished = on_finished
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        self.finished = True
        self._on_finished()


@dataclass(frozen=True)
class CreateRequest:
    """A billable request, rebuilt for each attempt: `headers()` afresh (PixVerse wants a new trace id
    per request), `body()` yields the bytes, `length` is their count (known up front, no chunking)."""

    method: str
    url: str
    headers: Callable[[], dict[str, str]]
    body: Callable[[], Iterable[bytes]]
    length: int


@dataclass(frozen=True)
class Accepted:
    """A create reply that accepted the job: its parsed body and its text as received (kept verbatim)."""

    body: Any
    raw: str


CreateOutcome = Accepted | Refused | Lost
"""One create attempt: accepted; refused or never fully sent (nothing exists: safe to send again); or
lost (the request may have reached the provider: never sent again blindly)."""


def send_create_once(
    client: httpx.Client,
    req: CreateRequest,
    *,
    provider: str,
    classify: Callable[[httpx.Response], CreateVerdict],
    after_send: Callable[[], None] = lambda: None,
) -> CreateOutcome:
    """Send a create exactly once and say what became of it; a definite error reply is raised.

    `after_send` runs the moment the last byte of the body was handed to the socket (a test hook)."""
    body = _TrackedBody(req.body(), after_send)
    request = client.build_request(
        req.method, req.url, content=body, headers={**req.headers(), "Content-Length": str(req.length)}
    )
    try:
        response = read_capped(client.send(request, stream=True))
    except httpx.UnsupportedProtocol as exc:
        raise ProviderError(f"create: {exc}", provider=provider) from None
    except httpx.RequestError as exc:
        if not body.finished:
            return Refused(f"not sent: {_transport_reason(exc)}")
        return Lost(_transport_reason(exc))
    except ReplyTooLarge as exc:  # an answer we will not read whole may still have made a job
        return Lost(str(exc))
    verdict = classify(response)
    if isinstance(verdict, Refused) and verdict.retry_after is None:
        return Refused(verdict.reason, parse_retry_after(response.headers.get("Retry-After")))
    if verdict is None:
        return Accepted(reply_json(response), response.text)
    if isinstance(verdict, LipsyncError):
        raise verdict
    return verdict


def reply_json(response: httpx.Response) -> Any:
    """The reply's JSON, or None when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None
