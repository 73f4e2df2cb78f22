"""Shared plumbing of the four protocols: settings, stored files, jobs and faults, the gate every endpoint
goes through, typed rejections each protocol renders in its own error shape, and the dropped-connection reply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..limits import Limits, load_limits
from .faults import Faults
from .jobs import Job, JobStore
from .media import MediaInfo

log = logging.getLogger("lipsync.emulator")

PROVIDERS = ("pixverse", "aimlapi", "useapi", "fal")


@dataclass
class EmulatorSettings:
    latency_s: float = 1.0  # time a job spends generating
    queue_s: float = 0.0  # time a job waits in the queue first
    port: int = 0  # 0 = a free port
    api_keys: dict[str, str] | None = None  # provider -> key; None = any non-empty key
    host: str = "127.0.0.1"
    jitter_s: float = 0.0  # each job's latency gets up to this much extra
    output_short_side: int = 720  # result frame: short side scaled to this, never up
    useapi_max_jobs: int = 3  # the account's concurrent jobs when a create sends no maxJobs
    render_workers: int = 2
    workdir: Path | None = None  # uploads and results; None = a temp dir removed on stop


class RejectKind(StrEnum):
    VALIDATION = "validation"  # bad parameter value / missing / conflicting
    BAD_TYPE = "bad_type"  # wrong JSON type (PixVerse 400013)
    NOT_FOUND = "not_found"
    AUTH = "auth"
    BILLING = "billing"
    RATE_LIMIT = "rate_limit"
    MODERATED = "moderated"
    TRACE_REUSED = "trace_reused"
    ACCOUNT = "account"  # the account needs a human before any call works


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

    def add(
        self,
        provider: str,
        path: Path,
        content_type: str,
        *,
        is_result: bool = False,
        info: MediaInfo | None = None,
        token: str | None = None,
    ) -> StoredFile:
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
    executor: Executor
    faults: dict[str, Faults] = field(default_factory=lambda: {p: Faults() for p in PROVIDERS})
    jobs: dict[str, JobStore] = field(init=False)
    files: FileStore = field(init=False)
    trace_ids: set[str] = field(default_factory=set)  # PixVerse Ai-trace-id values seen
    upload_tokens: set[str] = field(default_factory=set)  # fal CDN tokens issued
    pending_uploads: dict[str, tuple[str, str]] = field(default_factory=dict)  # fal initiate: token -> (name, type)
    lock: threading.Lock = field(default_factory=threading.Lock)
    background: set[asyncio.Task[None]] = field(default_factory=set)  # asyncio tasks (callbacks) kept alive
    _error_count: dict[str, int] = field(default_factory=dict)
    _results: dict[tuple[str, str], StoredFile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.files = FileStore(self.workdir / "files")
        self.jobs = {
            provider: JobStore(
                provider,
                queue_s=self.settings.queue_s,
                latency_s=self.settings.latency_s,
                jitter_s=self.settings.jitter_s,
                short_side=self.settings.output_short_side,
                out_dir=self.workdir / "results",
                executor=self.executor,
            )
            for provider in PROVIDERS
        }
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
            raise Reject(
                RejectKind.VALIDATION, f"{field_name} {job_id} is not a completed video", field_name=field_name
            )
        return rendered.path

    def result_file(self, job: Job) -> StoredFile:
        """The downloadable file of a rendered job, registered on first use."""
        key = (job.provider, job.job_id)
        with self.lock:
            if key not in self._results:
                self._results[key] = self.files.add(job.provider, job.output.path, "video/mp4", is_result=True)
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
    state: EmulatorState = request.app.state.emulator
    return state


# ---- the gate every endpoint goes through -------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one protocol authenticates and shapes its errors."""

    provider: str
    key_from: Callable[[Request], str | None]
    reject: Callable[[Reject, Request], Response]
    server_error: Callable[[int], Response]  # argument: the n-th injected error, to vary the shape
    precheck: Callable[[Request, EmulatorState], None] | None = None  # after auth (PixVerse trace ids)


Handler = Callable[[Request, EmulatorState], Awaitable[Response]]


def endpoint(
    dialect: Dialect, handler: Handler, *, authenticated: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with: slow replies, auth, injected 5xx, and Reject -> the protocol's error reply."""

    async def wrapped(request: Request) -> Response:
        state = state_of(request)
        faults = state.faults[dialect.provider]
        if faults.slow_reply_s > 0:
            await asyncio.sleep(faults.slow_reply_s)
        try:
            if authenticated and not state.key_ok(dialect.provider, dialect.key_from(request)):
                raise Reject(RejectKind.AUTH, "invalid or missing API key")
            if authenticated and faults.account_error:
                raise Reject(RejectKind.ACCOUNT, "the account has a pending error")
            if dialect.precheck is not None:
                dialect.precheck(request, state)
            if faults.take("server_errors"):
                return dialect.server_error(state.nth_server_error(dialect.provider))
            return await handler(request, state)
        except Reject as rej:
            log.debug("%s %s rejected: %s", dialect.provider, request.url.path, rej.message)
            return dialect.reject(rej, request)

    return wrapped


def gateway_error() -> Response:
    """What a load balancer in front of any provider answers when the backend is down: HTML, not JSON."""
    return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502, media_type="text/html")


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


def create_reply(state: EmulatorState, job: Job, reply: Response) -> Response:
    """The reply to the accepted create of `job`, unless a fault eats it (the job keeps why, for the tests)."""
    faults = state.faults[job.provider]
    if faults.take("drop_after_create"):
        log.info("%s: dropping the reply to an accepted create", job.provider)
        job.answer_lost = "connection dropped after the create was accepted"
        return DroppedResponse(reply)
    if faults.take("error_after_create"):
        log.info("%s: answering an accepted create with a gateway error", job.provider)
        job.answer_lost = "502 from a gateway after the create was accepted"
        return gateway_error()
    return reply
