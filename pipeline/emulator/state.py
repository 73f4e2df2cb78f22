"""Shared plumbing of the four protocols: settings, stored files, fetching media inputs, fault gates,
typed rejections each protocol renders in its own error shape, and the dropped-connection reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..limits import Limits, load_limits
from .bodies import BodyError, LargeText, decode_data_uri, parse_object
from .faults import Faults
from .jobs import Job, JobStore
from .media import MediaInfo, inspect_media, media_problems

log = logging.getLogger("lipsync.emulator")

PROVIDERS = ("pixverse", "aimlapi", "useapi", "fal")
_CHUNK = 1 << 20


@dataclass
class EmulatorSettings:
    latency_s: float = 1.0          # time a job spends generating
    queue_s: float = 0.0            # time a job waits in the queue first
    port: int = 0                   # 0 = a free port
    api_keys: dict[str, str] | None = None   # provider -> key; None = any non-empty key
    host: str = "127.0.0.1"
    jitter_s: float = 0.0           # each job's latency gets up to this much extra
    output_short_side: int = 720    # result frame: short side scaled to this, never up
    useapi_max_jobs: int = 3        # the account's concurrent jobs when a create sends no maxJobs
    render_workers: int = 2
    workdir: Path | None = None     # uploads and results; None = a temp dir removed on stop


class RejectKind(StrEnum):
    VALIDATION = "validation"       # bad parameter value / missing / conflicting
    BAD_TYPE = "bad_type"           # wrong JSON type (PixVerse 400013)
    NOT_FOUND = "not_found"
    AUTH = "auth"
    BILLING = "billing"
    RATE_LIMIT = "rate_limit"
    MODERATED = "moderated"
    TRACE_REUSED = "trace_reused"


class Reject(Exception):
    """A request refused before anything was accepted; each protocol renders it in its own shape."""

    def __init__(self, kind: RejectKind, message: str, *, field_name: str | None = None):
        self.kind = kind
        self.message = message
        self.field_name = field_name
        super().__init__(message)


@dataclass(frozen=True)
class StoredFile:
    token: str
    provider: str
    path: Path
    content_type: str
    is_result: bool
    info: MediaInfo | None = None


class FileStore:
    """Uploaded inputs and rendered results, served at /files/<token><suffix>.

    Uploads are also indexed by the handle the provider gave them (PixVerse media_id, useapi path).
    """

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._handles: dict[tuple[str, str], StoredFile] = {}
        self._numbers = itertools.count(1)

    def next_number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def register(self, provider: str, handle: str, stored: StoredFile) -> None:
        with self._lock:
            self._handles[(provider, handle)] = stored

    def uploaded(self, provider: str, handle: str, kind: str, field_name: str) -> Path:
        """The file an earlier upload's handle names; Reject when unknown or not of `kind`."""
        with self._lock:
            stored = self._handles.get((provider, handle))
        if stored is None:
            raise Reject(RejectKind.VALIDATION, f"{field_name} {handle} not found", field_name=field_name)
        if stored.info is None or stored.info.kind != kind:
            raise Reject(RejectKind.VALIDATION, f"{field_name} {handle} is not {kind}", field_name=field_name)
        return stored.path

    def new_path(self, suffix: str = "") -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{secrets.token_urlsafe(12)}{suffix}"

    def add(self, provider: str, path: Path, content_type: str, *, is_result: bool = False,
            info: MediaInfo | None = None, token: str | None = None) -> StoredFile:
        """Make `path` downloadable; `token` fixes the URL when it was promised before the upload."""
        stored = StoredFile(token or secrets.token_urlsafe(16), provider, path, content_type, is_result, info)
        with self._lock:
            self._files[stored.token] = stored
        return stored

    def get(self, name: str) -> StoredFile | None:
        """`name` is the last URL segment, with or without its suffix."""
        with self._lock:
            return self._files.get(name.split(".", 1)[0])

    def url(self, origin: str, stored: StoredFile) -> str:
        return f"{origin}/files/{stored.token}{stored.path.suffix}"


@dataclass
class EmulatorState:
    settings: EmulatorSettings
    workdir: Path
    executor: object
    faults: dict[str, Faults] = field(default_factory=lambda: {p: Faults() for p in PROVIDERS})
    jobs: dict[str, JobStore] = field(default_factory=dict)
    files: FileStore | None = None
    trace_ids: set[str] = field(default_factory=set)            # PixVerse Ai-trace-id values seen
    upload_tokens: set[str] = field(default_factory=set)        # fal CDN tokens issued
    pending_uploads: dict[str, tuple[str, str]] = field(default_factory=dict)  # fal initiate: token -> (name, type)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _error_count: dict[str, int] = field(default_factory=dict)
    _results: dict[tuple[str, str], StoredFile] = field(default_factory=dict)

    def __post_init__(self):
        self.files = FileStore(self.workdir / "files")
        for provider in PROVIDERS:
            self.jobs[provider] = JobStore(
                provider, queue_s=self.settings.queue_s, latency_s=self.settings.latency_s,
                jitter_s=self.settings.jitter_s, short_side=self.settings.output_short_side,
                out_dir=self.workdir / "results", executor=self.executor,
            )
        (self.workdir / "results").mkdir(parents=True, exist_ok=True)

    def limits(self, provider: str) -> Limits:
        return load_limits(provider)

    def key_ok(self, provider: str, key: str | None) -> bool:
        if not key or not key.strip():
            return False
        if self.settings.api_keys is None or provider not in self.settings.api_keys:
            return True
        return secrets.compare_digest(key.strip(), self.settings.api_keys[provider])

    def nth_server_error(self, provider: str) -> int:
        with self.lock:
            self._error_count[provider] = self._error_count.get(provider, 0) + 1
            return self._error_count[provider]

    def finished_video(self, provider: str, job_id: str, field_name: str) -> Path:
        """The result of an earlier successful job, used as the source video of a new one."""
        job = self.jobs[provider].get(job_id)
        rendered = job.rendered if job is not None else None
        if rendered is None:
            raise Reject(RejectKind.VALIDATION, f"{field_name} {job_id} is not a completed video", field_name=field_name)
        return rendered.path

    async def media_inputs(self, request: Request, provider: str, video_ref: str | LargeText,
                           audio_ref: str | LargeText | None) -> tuple[Path, Path | None]:
        """Fetch and check a create's video and optional audio, each given as URL or data URI."""
        video = await fetch_input(self, request, video_ref, self.files.new_path(".video"))
        await check_media(self, provider, video, "video")
        if audio_ref is None:
            return video, None
        audio = await fetch_input(self, request, audio_ref, self.files.new_path(".audio"))
        await check_media(self, provider, audio, "audio")
        return video, audio

    def result_file(self, job: Job) -> StoredFile:
        """The downloadable file of a rendered job, registered on first use."""
        key = (job.provider, job.job_id)
        with self.lock:
            if key not in self._results:
                self._results[key] = self.files.add(job.provider, job.rendered.path, "video/mp4", is_result=True)
            return self._results[key]

    def admit_create(self, provider: str) -> None:
        """Billing and rate-limit faults, checked once a create is valid. Refused creates are not counted."""
        faults = self.faults[provider]
        if faults.out_of_credits:
            raise Reject(RejectKind.BILLING, "insufficient credits")
        if faults.take("rate_limit_creates"):
            raise Reject(RejectKind.RATE_LIMIT, "reached the limit for concurrent generations")


def origin(request: Request) -> str:
    """scheme://host:port the client used to reach us: every URL we hand out starts with it."""
    return f"{request.url.scheme}://{request.url.netloc}"


def state_of(request: Request) -> EmulatorState:
    return request.app.state.emulator


# ---- the gate every endpoint goes through -------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    """How one protocol authenticates and shapes its errors."""

    provider: str
    key_from: Callable[[Request], str | None]
    reject: Callable[[Reject, Request], Response]
    server_error: Callable[[int], Response]     # argument: the n-th injected error, to vary the shape
    precheck: Callable[[Request, "EmulatorState"], None] | None = None   # after auth (PixVerse trace ids)


Handler = Callable[[Request, EmulatorState], Awaitable[Response]]


def endpoint(dialect: Dialect, handler: Handler, *, authenticated: bool = True):
    """Wrap a handler with: slow replies, auth, injected 5xx, and Reject -> the protocol's error reply."""

    async def wrapped(request: Request) -> Response:
        state = state_of(request)
        faults = state.faults[dialect.provider]
        if faults.slow_reply_s > 0:
            await asyncio.sleep(faults.slow_reply_s)
        try:
            if authenticated and not state.key_ok(dialect.provider, dialect.key_from(request)):
                raise Reject(RejectKind.AUTH, "invalid or missing API key")
            if dialect.precheck is not None:
                dialect.precheck(request, state)
            if faults.take("server_errors"):
                return dialect.server_error(state.nth_server_error(dialect.provider))
            return await handler(request, state)
        except Reject as rej:
            log.debug("%s %s rejected: %s", dialect.provider, request.url.path, rej.message)
            return dialect.reject(rej, request)

    return wrapped


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# ---- create replies that never arrive -------------------------------------------------------------------

class ConnectionDropped(Exception):
    """Raised mid-reply on purpose so the server closes the connection: the client sees a transport error."""


class DroppedResponse(Response):
    """Announces the full reply, sends part of it, then breaks the connection."""

    def __init__(self, full: Response):
        super().__init__(content=full.body, status_code=full.status_code, media_type=full.media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionDropped("emulator fault: connection dropped after the create was accepted")


def create_reply(state: EmulatorState, provider: str, reply: Response) -> Response:
    """The reply to an accepted create, unless a drop fault eats it."""
    if state.faults[provider].take("drop_after_create"):
        log.info("%s: dropping the reply to an accepted create", provider)
        return DroppedResponse(reply)
    return reply


# ---- media inputs ---------------------------------------------------------------------------------------

_MIME_SUFFIX = {
    "video/mp4": ".mp4", "video/quicktime": ".mov", "audio/mpeg": ".mp3", "audio/mp3": ".mp3",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
}
CONTAINER_MIME = {"mp4": "video/mp4", "mov": "video/quicktime", "mp3": "audio/mpeg", "wav": "audio/wav"}


def suffix_for(content_type: str) -> str:
    return _MIME_SUFFIX.get(content_type.split(";")[0].strip().lower(), ".bin")


async def spool_body(request: Request, dest: Path, max_bytes: int) -> int:
    """Stream the request body into `dest`; Reject when it exceeds `max_bytes`."""
    size = 0
    with open(dest, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise Reject(RejectKind.VALIDATION, f"file larger than {max_bytes} bytes")
            f.write(chunk)
    return size


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


async def fetch_input(state: EmulatorState, request: Request, ref: str | LargeText, dest: Path) -> Path:
    """Get a media input named by URL or data URI into `dest`. Only loopback URLs can be reached."""
    if ref.startswith("data:"):
        try:
            await run_in_threadpool(decode_data_uri, ref, dest)
        except BodyError as exc:
            raise Reject(RejectKind.VALIDATION, str(exc)) from None
        return dest
    if isinstance(ref, LargeText):
        raise Reject(RejectKind.VALIDATION, f"not a URL or data URI ({len(ref)} characters)")
    parts = urlsplit(ref)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Reject(RejectKind.VALIDATION, f"not a URL or data URI: {ref[:80]!r}")
    if parts.netloc == request.url.netloc and parts.path.startswith("/files/"):
        stored = state.files.get(parts.path.rsplit("/", 1)[-1])
        if stored is None:
            raise Reject(RejectKind.VALIDATION, f"could not download {ref}: 404")
        return stored.path
    if not _is_loopback(parts.hostname):
        raise Reject(RejectKind.VALIDATION, f"could not download {ref}: host unreachable from the emulator")
    try:
        async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", ref) as reply:
            if reply.status_code != 200:
                raise Reject(RejectKind.VALIDATION, f"could not download {ref}: HTTP {reply.status_code}")
            with open(dest, "wb") as f:
                async for chunk in reply.aiter_bytes(_CHUNK):
                    f.write(chunk)
    except httpx.HTTPError as exc:
        raise Reject(RejectKind.VALIDATION, f"could not download {ref}: {type(exc).__name__}") from None
    return dest


async def check_media(state: EmulatorState, provider: str, path: Path, role: str | None) -> MediaInfo:
    """Inspect a media input off the event loop and Reject it if it breaks the provider's limits.

    `role` None accepts either kind (an upload endpoint that takes both).
    """
    info = await run_in_threadpool(inspect_media, path)
    problems = media_problems(info, state.limits(provider), role or info.kind or "video")
    if problems:
        raise Reject(RejectKind.VALIDATION, "; ".join(problems), field_name=role)
    return info




def gateway_error() -> Response:
    """What a load balancer in front of any provider answers when the backend is down: HTML, not JSON."""
    return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502, media_type="text/html")


@contextlib.asynccontextmanager
async def large_json_object(request: Request, state: EmulatorState, max_bytes: int = 200_000_000) -> AsyncIterator[dict]:
    """The request's JSON object, read without holding it in memory: long strings are `LargeText` files,
    removed when the block ends (decoded media live on in the file store)."""
    scratch = state.files.new_path(".body")
    scratch.mkdir()
    try:
        await spool_body(request, scratch / "body.json", max_bytes)
        try:
            yield await run_in_threadpool(parse_object, scratch / "body.json", scratch)
        except BodyError as exc:
            raise Reject(RejectKind.BAD_TYPE, f"request body is not a JSON object: {exc}") from None
    finally:
        await run_in_threadpool(shutil.rmtree, scratch, True)


async def read_json_object(request: Request) -> dict:
    """The request body as a JSON object; Reject(BAD_TYPE) when it is not one."""
    body = await request.body()
    try:
        doc = json.loads(body)
    except ValueError:
        raise Reject(RejectKind.BAD_TYPE, "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise Reject(RejectKind.BAD_TYPE, "request body must be a JSON object")
    return doc


def string_field(body: dict, name: str) -> str | LargeText | None:
    """A string field of a JSON body (None when absent or empty); Reject(BAD_TYPE) for another type."""
    value = body.get(name)
    if value is not None and not isinstance(value, (str, LargeText)):
        raise Reject(RejectKind.BAD_TYPE, f"{name} must be a string, got {type(value).__name__}", field_name=name)
    return value if given(value) else None


def given(value: object) -> bool:
    """Whether a field was really sent: null, "" and 0 are a Go server's 'unset'."""
    return value is not None and value != "" and not (isinstance(value, int) and not isinstance(value, bool) and value == 0)
