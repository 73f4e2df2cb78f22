"""Server-sent events from a provider, read within bounds: httpx-sse parses the format (fields, comments,
multi-line data, CR/LF variants); this module caps what it may buffer and how long it may take.

    for event in read_events(client, request, StreamLimits(), timeout=remaining): ...

Raises `StreamBroken` (connection dropped, non-200, not an event stream, an event over its cap, too
many events) and simply ends at the deadline; the caller falls back to polling either way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

# A blank line (the end of an event) is a line terminator right after another one, "\r\n" being one.
_BLANK_LINE_END = re.compile(rb"(?<=\n)(?:\r\n?|\n)|(?<=\r)\r\n?")
_TAIL = 2  # bytes of the previous chunk a match may need (a "\r\n" split across chunks)


class StreamBroken(Exception):
    """A status stream that cannot be followed any further (the caller polls instead)."""


@dataclass(frozen=True)
class StreamLimits:
    """`max_event_bytes`: bytes one event may take on the wire (a status object is well under 4 KB).
    `max_events`: events in one stream (each is recorded by the caller: a flood must not be).
    `read_timeout_s`: the longest silence tolerated (fal sends a comment every 15 s); a stream ends at most
    one read timeout after its deadline."""

    max_event_bytes: int = 64 * 1024
    max_events: int = 1000
    read_timeout_s: float = 30.0


def bytes_since_blank_line(since: int, previous: bytes, chunk: bytes) -> int:
    """Bytes received since the last blank line, after `chunk` (`previous`: the bytes before it, of which
    the last two are looked at)."""
    window = previous[-_TAIL:] + chunk
    last = next(reversed(list(_BLANK_LINE_END.finditer(window))), None)
    if last is None:
        return since + len(chunk)
    return len(window) - last.end()


class _CappedStream(httpx.SyncByteStream):
    """The response's decoded bytes, refused once an event grows past its cap; ends at the deadline."""

    def __init__(
        self,
        response: httpx.Response,
        limits: StreamLimits,
        deadline: float,
        clock: Callable[[], float],
        on_chunk: Callable[[], None],
    ):
        self._response, self._limits, self._deadline, self._clock = response, limits, deadline, clock
        self._on_chunk = on_chunk

    def __iter__(self) -> Iterator[bytes]:
        since, previous = 0, b""
        for chunk in self._response.iter_bytes():
            since = bytes_since_blank_line(since, previous, chunk)
            if since > self._limits.max_event_bytes:
                raise StreamBroken(f"an event is over the {self._limits.max_event_bytes}-byte cap")
            previous = (previous + chunk)[-_TAIL:]
            self._on_chunk()
            yield chunk
            if self._clock() >= self._deadline:
                return


def read_events(
    client: httpx.Client,
    request: httpx.Request,
    limits: StreamLimits,
    *,
    timeout: float,
    on_chunk: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ServerSentEvent]:
    """The events of `request` (sent here, not retried) until the server closes the stream or `timeout` s
    have passed. StreamBroken for anything that is not a well-formed event stream within `limits`.
    `on_chunk` runs whenever bytes arrive (keep-alive comments too): what it raises ends the stream."""
    deadline = clock() + timeout
    request.headers["Accept-Encoding"] = "identity"
    read = max(0.1, min(limits.read_timeout_s, timeout))
    request.extensions["timeout"] = httpx.Timeout(connect=15.0, read=read, write=15.0, pool=15.0).as_dict()
    try:
        response = client.send(request, stream=True)
    except httpx.RequestError as exc:
        raise StreamBroken(f"{type(exc).__name__}: {exc}") from None
    try:
        if response.status_code != 200:
            raise StreamBroken(f"HTTP {response.status_code}")
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise StreamBroken("a compressed stream (its events could not be capped before inflating)")
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        capped = httpx.Response(
            200, headers=kept, stream=_CappedStream(response, limits, deadline, clock, on_chunk), request=request
        )
        for count, event in enumerate(EventSource(capped).iter_sse(), start=1):
            if count > limits.max_events:
                raise StreamBroken(f"more than {limits.max_events} events")
            yield event
    except (httpx.HTTPError, httpx.StreamError, SSEError) as exc:
        raise StreamBroken(f"{type(exc).__name__}: {exc}") from None
    finally:
        response.close()
