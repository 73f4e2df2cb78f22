"""The one job model every provider adapter speaks: upload → create → poll → download.

An adapter subclasses `Provider` and supplies the protocol: how to upload and build the create request,
how to read the replies (pure functions of a reply), how to cancel and list voices. The create template,
retries, downloads and the create-is-never-sent-twice rule live here and in `http.py`, so the four
adapters look alike.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import httpx

from ..errors import AuthError, LipsyncError, ProviderError, ValidationError
from ..fsutil import sha256_file
from ..safetext import printable
from ..voices import resolve_voice
from .download import Download, TransferLimits, download_to
from .http import (
    CreateOutcome,
    CreateRequest,
    CreateVerdict,
    RetryPolicy,
    make_client,
    reply_json,
    require_configured_url,
    require_safe_url,
    send_create_once,
    send_idempotent,
)
from .netguard import guarded_client, loopback_origins, url_origin

if TYPE_CHECKING:
    from .poll import DurationEstimator, PollPolicy

log = logging.getLogger("lipsync.providers")

_UPLOAD_CHUNK = 1 << 20
MEDIA_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".wav": "audio/wav", ".mp3": "audio/mpeg"}
MAX_REPLY_NUMBER = 2**53  # no size, width, count or credit figure is bigger; floats stop being exact here
_MAX_NUMBER_TEXT = 40
_MODERATION_WORDS = ("moderat", "content policy", "content_policy", "nsfw", "sensitive", "prohibited")

__all__ = [
    "Download",
    "JobHandle",
    "JobRequest",
    "JobState",
    "JobStatus",
    "Provider",
    "ProviderRequest",
    "Submission",
    "Voice",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MODERATED = "moderated"
    CANCELED = "canceled"


class ProviderRequest(Protocol):
    """What the job flow needs of any request: its kind (a provider takes only the kinds it declares), its
    validation before anything is paid for, and what it asks for by hash (fingerprints, reconcile records)."""

    kind: ClassVar[str]

    def checked(self) -> ProviderRequest: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobRequest:
    """One lip-sync job on prepared media: a video plus either an audio track or a TTS text.

    `video_url` / `audio_url`, when set, are public URLs of the same media; providers that take URLs
    (AI/ML API, fal) use them instead of uploading the files.
    """

    video: Path
    audio: Path | None = None
    text: str | None = None
    speaker: str | None = None
    video_url: str | None = None
    audio_url: str | None = None
    kind: ClassVar[str] = "lip-sync"

    def checked(self) -> JobRequest:
        """This request with paths as Paths and the speaker canonicalised; ValidationError if unusable."""
        if (self.audio is None) == (self.text is None):
            raise ValidationError("a job needs exactly one of an audio track or a TTS text")
        for path in (self.video, self.audio):
            if path is not None and not Path(path).is_file():
                raise ValidationError(f"{path}: no such file")
        if self.text is not None and not self.text.strip():
            raise ValidationError("the TTS text is empty")
        speaker = resolve_voice(self.speaker or "Auto") if self.text is not None else None
        return JobRequest(
            Path(self.video),
            None if self.audio is None else Path(self.audio),
            self.text,
            speaker,
            self.video_url,
            self.audio_url,
        )

    def summary(self) -> dict[str, Any]:
        """What this request asks for, with media by hash: for fingerprints and manifests, never bytes."""
        return {
            "video_sha256": sha256_file(self.video),
            "audio_sha256": sha256_file(self.audio) if self.audio else None,
            "text": self.text,
            "speaker": self.speaker,
        }


@dataclass(frozen=True)
class JobHandle:
    """Everything needed to poll, cancel or download a job later, from another process (the ledger keeps it).

    `urls` holds provider-issued URLs to reuse (fal: status, response, cancel); `model` the model the create
    asked for, where one provider serves several (AI/ML API's replies differ by model).
    """

    provider: str
    job_id: str
    urls: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # time.time() when the provider accepted the job
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobHandle:
        return cls(
            provider=str(d["provider"]),
            job_id=str(d["job_id"]),
            urls={str(k): str(v) for k, v in (d.get("urls") or {}).items()},
            created_at=float(d.get("created_at") or 0.0),
            model=d.get("model"),
        )


@dataclass(frozen=True)
class JobStatus:
    """One status reply, normalised. `raw_status` is the provider's own word or code, kept for the user."""

    state: JobState
    raw_status: str
    result_url: str | None = None
    width: int | None = None
    height: int | None = None
    credits: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    unconfirmed: bool = False  # the provider says done, but the evidence (URL, size) is missing
    usage: dict[str, float] = field(default_factory=dict)  # the reply's usage figures, as it names them

    @property
    def reported_done(self) -> bool:
        """The provider says the job succeeded (with or without its result yet): from here on the job is
        paid for and is never failed or created again."""
        return self.state is JobState.SUCCEEDED or self.unconfirmed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Voice:
    name: str  # the provider's display name
    provider_id: str  # what the provider takes: an id (PixVerse, useapi) or the name (AI/ML API, fal)
    preview_url: str | None = None
    source: str = "api"  # "api" if listed by the provider, "docs" if it has no list endpoint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Submission:
    """A create ready to send: the request, what it asks for (ids/URLs, no bytes) to reconcile by hand, and
    the model it asks for when the provider serves several (recorded in the job's handle)."""

    request: CreateRequest
    fields: dict[str, Any]
    model: str | None = None


def media_type(path: Path) -> str:
    """The MIME type a provider expects for `path`, from its suffix."""
    known = MEDIA_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.split("/")[0] in ("video", "audio"):
        return guessed
    raise ValidationError(f"{path}: unsupported media type (expected one of {', '.join(MEDIA_TYPES)})")


def iter_file(path: Path, chunk: int = _UPLOAD_CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(chunk):
            yield data


def raw_file_headers(path: Path) -> dict[str, str]:
    """The headers of a request whose body is the file's bytes (see `iter_file`)."""
    return {"Content-Type": media_type(path), "Content-Length": str(path.stat().st_size)}


def looks_moderated(*texts: object) -> bool:
    joined = " ".join(str(t) for t in texts if t).lower()
    return any(word in joined for word in _MODERATION_WORDS)


_Number = TypeVar("_Number", int, float)


def _optional_number(value: Any, kind: type[_Number], nonnegative: bool) -> _Number | None:
    """`kind(value)` when it is a finite number of sane size (and not negative, if asked), else None.
    JSON as Python reads it allows Infinity, NaN, 1e999 and integers of any length: none may crash a poll."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and len(value) > _MAX_NUMBER_TEXT):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if (
        (isinstance(number, float) and not math.isfinite(number))
        or abs(number) > MAX_REPLY_NUMBER
        or (nonnegative and number < 0)
    ):
        return None
    return number


def optional_int(value: Any, *, nonnegative: bool = False) -> int | None:
    """An int from a reply field that may be missing, null, a number or a numeric string; None when it is
    not a finite number under MAX_REPLY_NUMBER (or negative, for a size or a count: `nonnegative`)."""
    return _optional_number(value, int, nonnegative)


def optional_float(value: Any, *, nonnegative: bool = False) -> float | None:
    return _optional_number(value, float, nonnegative)


def unknown_status(provider: str, raw: str, **fields: Any) -> JobStatus:
    """A status word we do not know: logged (made printable), treated as still running (the wait stays
    bounded)."""
    log.warning("%s: unknown job status %s; still waiting", provider, printable(repr(raw)))
    return JobStatus(JobState.RUNNING, raw, **fields)


def error_text(body: Any, *keys: str) -> str:
    """The first non-empty message under `keys` in a JSON error body (or the text itself)."""
    if isinstance(body, dict):
        for key in keys:
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, list) and value:
                return "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
    return str(body)[:200] if body else "no message"


def http_error(provider: str, secret_env: str, status: int, message: str, what: str) -> LipsyncError:
    """The common mapping of an HTTP error status to our error tree (adapters map their own codes first)."""
    if status == 401:
        return AuthError(f"{what}: key rejected ({message}); check {secret_env}", provider=provider, code=status)
    if status in (400, 413, 422):
        return ValidationError(f"{what}: {message}", provider=provider, code=status)
    return ProviderError(f"{what}: HTTP {status}: {message}", provider=provider, code=status)


class Provider:
    """Base of the four adapters. Each subclass declares what it is (the class attributes below: nothing
    outside its module keeps a table about it) and implements the protocol hooks."""

    name: ClassVar[str]
    secret_env: ClassVar[str]  # the environment variable its key is read from (by the CLI)
    base_url_defaults: ClassVar[dict[str, str]]  # URL key -> the real host; a key per host the adapter talks to
    base_url_env: ClassVar[dict[str, str]]  # URL key -> the environment variable that overrides it
    voice_id_scheme: ClassVar[str]  # "id": numeric speaker ids from its voice list; "name": names
    default_concurrency: ClassVar[int] = 4  # jobs at once when the config does not say
    default_poll: ClassVar[PollPolicy]
    limits_key: ClassVar[str]  # its table in limits.toml (and prices, where documented)
    request_kinds: ClassVar[tuple[str, ...]] = (JobRequest.kind,)  # the `ProviderRequest.kind`s it takes
    can_reconcile: ClassVar[bool] = False  # `find_created` can find a create whose answer was lost
    streams_status: ClassVar[bool] = False  # `stream_statuses` follows a job without polling

    def __init__(
        self,
        *,
        credential: str | None,
        base_urls: Mapping[str, str],
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        create_retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        client_timeout: float | httpx.Timeout | None = None,
        trusted_loopback: Iterable[str] = (),
        durations: DurationEstimator | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from .poll import DurationEstimator  # poll.py builds on this module

        self.base_urls = {
            key: require_configured_url(base_urls.get(key) or default, what=f"{self.name} base URL").rstrip("/")
            for key, default in self.base_url_defaults.items()
        }
        # The only loopback places a reply may send us: a base URL on loopback (the emulator, a local
        # gateway), exactly its host and port, plus `trusted_loopback` (a test's separate CDN).
        self.loopback_origins = loopback_origins([*self.base_urls.values(), *trusted_loopback])
        self._configured_origins = frozenset(url_origin(url) for url in self.base_urls.values())
        self._credential = (credential or "").strip() or None
        self.poll_policy = poll or self.default_poll
        self.sleep = sleep  # between retries: a batch passes one that a stop request cuts short
        # how long this provider's jobs took in this process (shared by a run's jobs: one adapter per provider)
        self.durations = durations if durations is not None else DurationEstimator()
        self.retry = retry or RetryPolicy()
        self.create_retry = create_retry or RetryPolicy.for_refused_creates()
        self._client = client or make_client(timeout=client_timeout)
        self._listed_speakers: dict[str, str] | None = None
        self._speakers_lock = threading.Lock()

    @property
    def max_concurrency(self) -> int | None:
        """How many jobs the provider runs at once for us, when the protocol says (useapi's maxJobs)."""
        return None

    # --- the job model: the flow (flow.py) calls these in order -----------------------------------
    def submission(self, req: ProviderRequest, *, reply_ref: str | None = None) -> Submission:
        """Upload what needs uploading and build the create request. Never billable, so repeatable."""
        if req.kind not in self.request_kinds:
            raise ValidationError(
                f"{self.name} takes no {req.kind} jobs (only {', '.join(self.request_kinds)}); "
                f"choose a provider that does",
                provider=self.name,
            )
        self._secret()
        return self._submission(req, reply_ref)

    def send_create(self, submission: Submission, *, after_send: Callable[[], None] = lambda: None) -> CreateOutcome:
        """Send the create once: accepted, refused (nothing exists) or lost (a job may exist); a definite
        error reply (auth, billing, validation) is raised."""
        return send_create_once(
            self._client, submission.request, provider=self.name, classify=self._classify_create, after_send=after_send
        )

    def handle_from(self, body: Any, created_at: float) -> JobHandle | None:
        """The handle from an accepting reply, or None if it carries no usable job id."""
        raise NotImplementedError

    def create_usage(self, raw_reply: str) -> dict[str, float]:
        """The usage figures an accepting create reply reports (as it names them), for a provider whose
        status replies may not repeat them; none by default."""
        return {}

    def find_created(self, reply_ref: str) -> tuple[JobHandle, str] | None:
        """Look up a job created with `reply_ref` (a create whose answer was lost): its handle and the
        provider's record of it as text, or None if the provider has no such job."""
        raise NotImplementedError(f"{self.name} documents no way to look up a job by reference")

    def poll(self, handle: JobHandle) -> JobStatus:
        """One status request (retried on transport errors, 429 and 5xx)."""
        raise NotImplementedError

    def stream_statuses(
        self, handle: JobHandle, timeout: float, *, on_chunk: Callable[[], None] = lambda: None
    ) -> Generator[JobStatus, None, None]:
        """The job's statuses as the provider pushes them (where `streams_status`), for at most `timeout` s,
        ending after a final one. Raises `sse.StreamBroken` when the stream cannot be followed; `on_chunk`
        runs whenever bytes arrive, and what it raises ends the stream (a batch's stop request)."""
        raise NotImplementedError(f"{self.name} has no status stream")

    def cancel(self, handle: JobHandle) -> bool:
        """Ask the provider to stop the job. False where the protocol has no cancel."""
        return False

    def voices(self) -> list[Voice]:
        raise NotImplementedError

    def download(self, url: str, dst: Path, *, max_bytes: int, limits: TransferLimits = TransferLimits()) -> Download:
        """Stream a result to `dst` (atomically), from a public address or one of `loopback_origins`,
        within `limits` (deadline, minimum rate). Result hosts never get our credentials.
        `max_bytes`: `download.result_cap(limits)` of the job's provider limits."""
        return download_to(
            self._client,
            url,
            Path(dst),
            max_bytes=max_bytes,
            policy=self.retry,
            provider=self.name,
            allowed_loopback=self.loopback_origins,
            limits=limits,
            sleep=self.sleep,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol hooks ------------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        """Headers for one request to this provider's API hosts (called afresh for every request)."""
        raise NotImplementedError

    def _submission(self, req: Any, reply_ref: str | None) -> Submission:
        """Upload what needs uploading and build the create request (`req` is of one of `request_kinds`)."""
        raise NotImplementedError

    @staticmethod
    def classify_create(status_code: int, body: Any) -> CreateVerdict:
        """None if the reply accepted the job; Refused to wait and resend; Lost if unknowable; else an error."""
        raise NotImplementedError

    def _classify_create(self, response: httpx.Response) -> CreateVerdict:
        return self.classify_create(response.status_code, reply_json(response))

    # --- helpers for subclasses ----------------------------------------------------------------
    def check_credential(self) -> None:
        """AuthError naming the variable when no key was given: before anything is written or sent."""
        self._secret()

    def _secret(self) -> str:
        if self._credential is None:
            raise AuthError(f"no API key: set the environment variable {self.secret_env}", provider=self.name)
        return self._credential

    def _url(self, path: str, key: str | None = None) -> str:
        return self.base_urls[key or self.name] + path

    def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        retry_on: Callable[[httpx.Response], bool] | None = None,
        auth: bool = True,
        body: Callable[[], Iterable[bytes]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """An idempotent request, retried on transport errors, 429 and 5xx. Auth headers and the `body()`
        stream are made afresh for every try."""
        extra = kwargs.pop("headers", {})

        def build() -> httpx.Request:
            headers = {**(self._auth_headers() if auth else {}), **extra}
            content = body() if body is not None else kwargs.get("content")
            return self._client.build_request(method, url, headers=headers, **{**kwargs, "content": content})

        if self._is_configured(url):
            return send_idempotent(
                self._client,
                build,
                what=what,
                provider=self.name,
                policy=self.retry,
                retry_on=retry_on,
                sleep=self.sleep,
            )
        # A host a reply named (fal's CDN): public addresses only, like a result download.
        require_safe_url(url, what=what, allowed_loopback=self.loopback_origins)
        with guarded_client(self._client, allowed_loopback=self.loopback_origins) as guarded:
            return send_idempotent(
                guarded, build, what=what, provider=self.name, policy=self.retry, retry_on=retry_on, sleep=self.sleep
            )

    def _is_configured(self, url: str) -> bool:
        try:
            return url_origin(url) in self._configured_origins
        except httpx.InvalidURL:
            return False

    def _handle_with_id(
        self, body: Any, key: str, created_at: float, urls: dict[str, str] | None = None
    ) -> JobHandle | None:
        """A handle from a reply whose job id is the non-empty string `body[key]`."""
        job_id = body.get(key) if isinstance(body, dict) else None
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)  # documented as a string; a number is still the job's id
        if not isinstance(job_id, str) or not job_id.strip():
            return None
        return JobHandle(self.name, job_id.strip(), urls or {}, created_at)

    def listed_speaker_id(self, speaker: str) -> str | None:
        """The id the provider's own voice list gives `speaker` (read once per adapter), or None when the
        list lacks it or cannot be read (the caller falls back to the documented id)."""
        with self._speakers_lock:
            if self._listed_speakers is None:
                try:
                    self._listed_speakers = {v.name.lower(): v.provider_id for v in self.voices() if v.provider_id}
                except (ProviderError, ValidationError) as exc:
                    log.warning(
                        "%s: voice list unavailable (%s); using the documented speaker ids", self.name, exc.message
                    )
                    self._listed_speakers = {}
            return self._listed_speakers.get(speaker.lower())

    def _json_create(self, url: str, payload: dict[str, Any]) -> CreateRequest:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return CreateRequest(
            "POST", url, lambda: {**self._auth_headers(), "Content-Type": "application/json"}, lambda: [body], len(body)
        )
