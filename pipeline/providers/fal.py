"""fal.ai, `fal-ai/pixverse/lipsync` through the queue: `Authorization: Key <FAL_KEY>`.

Media go to fal's CDN first (a storage token from rest.fal.ai, then the bytes to the token's
`base_url` with the token, never the key; where the storage host has no token endpoint, the older
initiate flow: a signed upload URL from rest.fal.ai, PUT without credentials). The submit reply's
status/response/cancel URLs are stored in the handle and reused; the key is only ever sent to the queue
and storage hosts we were configured with.
A COMPLETED status that carries an error is a failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ..errors import AuthError, BillingError, LipsyncError, ProviderError
from ..safetext import printable
from ..voices import VOICE_NAMES
from .base import (
    JobHandle,
    JobRequest,
    JobState,
    JobStatus,
    Provider,
    Submission,
    Voice,
    error_text,
    http_error,
    iter_file,
    looks_moderated,
    media_type,
    optional_int,
    raw_file_headers,
    unknown_status,
)
from .http import CreateVerdict, classify_http_create, is_retryable_status, reply_json, require_safe_url, same_origin
from .poll import DOCUMENTED_JOB_S, PollPolicy
from .sse import StreamBroken, StreamLimits, read_events

log = logging.getLogger("lipsync.providers.fal")

APP = "fal-ai/pixverse"
ENDPOINT = f"/{APP}/lipsync"
TOKEN_PATH = "/storage/auth/token"
INITIATE_PATH = "/storage/upload/initiate"
NO_ENDPOINT = frozenset({404, 405})
TOKEN_MARGIN_S = 60.0
HANDLE_URLS = ("status", "response", "cancel")
STATUS_STREAM = StreamLimits(max_event_bytes=64 * 1024, max_events=1000, read_timeout_s=30.0)


@dataclass(frozen=True)
class StorageToken:
    header: str  # the whole Authorization value for the CDN: "<token_type> <token>"
    base_url: str
    expires_at: float  # time.time(); 0 when unknown


def parse_token(body: Any, now: float) -> StorageToken | None:
    if not isinstance(body, dict) or not body.get("token") or not body.get("base_url"):
        return None
    expires = body.get("expires_at")
    if isinstance(expires, str):
        try:
            expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except ValueError:
            expires_at = now + 300
    else:
        expires_at = float(expires) if isinstance(expires, (int, float)) else now + 300
    return StorageToken(f"{body.get('token_type') or 'Bearer'} {body['token']}", str(body["base_url"]), expires_at)


def error_for(status_code: int, body: Any, what: str) -> LipsyncError:
    message = error_text(body, "detail", "error", "message")
    if status_code in (401, 403) and any(w in message.lower() for w in ("balance", "credit", "billing", "locked")):
        return BillingError(f"{what}: {message}", provider="fal", code=status_code)
    if status_code == 403:
        return AuthError(f"{what}: key rejected ({message}); check FAL_KEY", provider="fal", code=status_code)
    return http_error("fal", "FAL_KEY", status_code, message, what)


def classify_create(status_code: int, body: Any) -> CreateVerdict:
    return classify_http_create(
        status_code, error_text(body, "detail", "error"), lambda: error_for(status_code, body, "submit")
    )


def request_urls(queue_base: str, request_id: str, body: dict[str, Any]) -> dict[str, str]:
    """The status/response/cancel URLs: those fal returned, if they are on the queue's host (the key goes
    there), else the documented ones (`…/fal-ai/pixverse/requests/{id}`, without `/lipsync`)."""
    documented = f"{queue_base}/{APP}/requests/{request_id}"
    urls = {"status": f"{documented}/status", "response": documented, "cancel": f"{documented}/cancel"}
    for key in HANDLE_URLS:
        given = body.get(f"{key}_url")
        if isinstance(given, str) and given:
            if same_origin(given, queue_base):
                urls[key] = given
            else:
                log.warning("fal: ignoring %s_url %s: not on the queue's host", key, printable(given))
    return urls


def parse_queue_status(body: Any) -> JobStatus:
    """The status reply, before looking at the result. COMPLETED with an error is a failure."""
    if not isinstance(body, dict):
        return unknown_status("fal", f"malformed reply {type(body).__name__}")
    raw = str(body.get("status") or "")
    if raw == "IN_QUEUE":
        return JobStatus(JobState.QUEUED, raw)
    if raw == "IN_PROGRESS":
        return JobStatus(JobState.RUNNING, raw)
    if raw == "COMPLETED":
        error, error_type = body.get("error"), body.get("error_type")
        if error or error_type:
            state = JobState.MODERATED if looks_moderated(error, error_type) else JobState.FAILED
            return JobStatus(state, raw, error_code=str(error_type or raw), error_message=str(error or error_type))
        return JobStatus(JobState.SUCCEEDED, raw, unconfirmed=True)
    if raw in ("CANCELLED", "CANCELED"):
        return JobStatus(JobState.CANCELED, raw, error_message="was canceled")
    return unknown_status("fal", raw or "no status")


def parse_stream_event(data: str) -> JobStatus | None:
    """One status-stream event (its `data`: a status object like the polled reply); None for an event
    without data. StreamBroken when it is not a JSON object."""
    if not data.strip():
        return None
    try:
        body = json.loads(data)
    except ValueError:
        raise StreamBroken("an event that is not JSON") from None
    if not isinstance(body, dict):
        raise StreamBroken(f"an event that is not a status object ({type(body).__name__})")
    return parse_queue_status(body)


def stream_url(status_url: str) -> str:
    """The documented status stream: the status URL's path + `/stream`, its query kept."""
    url = httpx.URL(status_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/stream"))


def parse_output(body: Any) -> JobStatus:
    """The result of a COMPLETED request: success only with `video.url` (and a non-zero size if given)."""
    video = body.get("video") if isinstance(body, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    size = optional_int(video.get("file_size"), nonnegative=True) if isinstance(video, dict) else None
    confirmed = bool(url) and (size is None or size > 0)
    return JobStatus(
        JobState.SUCCEEDED if confirmed else JobState.RUNNING,
        "COMPLETED",
        result_url=url or None,
        unconfirmed=not confirmed,
    )


def has_detail(body: Any) -> bool:
    """A reply in fal's own error shape (`{detail: ...}`): fal's answer, not a gateway's page."""
    return isinstance(body, dict) and "detail" in body


def is_transient_result(response: httpx.Response) -> bool:
    """Retry a result fetch on 408/429/5xx, except a 5xx in fal's own shape: that is how a failed run
    answers on its response_url, and asking again gives the same answer."""
    if response.status_code >= 500 and has_detail(reply_json(response)):
        return False
    return is_retryable_status(response.status_code)


def failed_output(status_code: int, body: Any) -> JobStatus:
    """A response_url that answers with an HTTP error: the run failed (422 = the input was refused)."""
    message = error_text(body, "detail", "error", "message")
    error_type = body.get("error_type") if isinstance(body, dict) else None
    state = JobState.MODERATED if looks_moderated(message, error_type) else JobState.FAILED
    return JobStatus(state, "COMPLETED", error_code=str(error_type or status_code), error_message=message)


class FalProvider(Provider):
    name = "fal"
    secret_env = "FAL_KEY"
    base_url_defaults: ClassVar[dict[str, str]] = {
        "fal_queue": "https://queue.fal.run",
        "fal_storage": "https://rest.fal.ai",
    }
    base_url_env: ClassVar[dict[str, str]] = {
        "fal_queue": "LIPSYNC_FAL_QUEUE_URL",
        "fal_storage": "LIPSYNC_FAL_STORAGE_URL",
    }
    voice_id_scheme = "name"
    streams_status = True  # GET {status_url}/stream: server-sent status events
    default_concurrency = 8  # fal's queue takes many requests; the queue limits the rest
    default_poll = PollPolicy(expected_s=DOCUMENTED_JOB_S)
    limits_key = "fal"
    classify_create = staticmethod(classify_create)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._token: StorageToken | None = None
        self._token_unsupported = False
        self._token_lock = threading.Lock()

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._secret()}"}

    def _on_queue_host(self, url: str, what: str) -> str:
        """`url` if it is on the configured queue host (the only place the key goes), else a ProviderError."""
        if not same_origin(url, self.base_urls["fal_queue"]):
            raise ProviderError(f"{what}: {url!r} is not on the configured fal queue host", provider=self.name)
        return url

    def _queue_request(self, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
        """A request to a stored queue URL; the key only goes to the configured queue host."""
        return self._request(method, self._on_queue_host(url, what), what=what, **kwargs)

    def _storage_token(self) -> StorageToken | None:
        """A CDN token (cached until a minute before it expires); None if the storage host has no token
        endpoint (then the older initiate flow is used, for the life of this adapter)."""
        with self._token_lock:
            if self._token_unsupported:
                return None
            if self._token is None or self._token.expires_at - TOKEN_MARGIN_S < time.time():
                response = self._request(
                    "POST",
                    self._url(TOKEN_PATH, "fal_storage"),
                    what="storage token",
                    params={"storage_type": "fal-cdn-v3"},
                    json={},
                )
                body = reply_json(response)
                if response.status_code in NO_ENDPOINT:
                    log.info(
                        "fal: no storage token endpoint (HTTP %d); using the upload initiate flow", response.status_code
                    )
                    self._token_unsupported = True
                    return None
                if response.status_code != 200:
                    raise error_for(response.status_code, body, "storage token")
                token = parse_token(body, time.time())
                if token is None:
                    raise ProviderError("storage token: reply has no token or base_url", provider=self.name)
                require_safe_url(token.base_url, what="fal storage base_url", allowed_loopback=self.loopback_origins)
                self._token = token
            return self._token

    def _upload(self, path: Path) -> str:
        """The file's bytes to fal's CDN with the storage token (not the key) → a URL the model can read."""
        token = self._storage_token()
        if token is None:
            return self._upload_initiated(path)
        what = f"upload {path.name}"
        response = self._request(
            "POST",
            token.base_url.rstrip("/") + "/files/upload",
            what=what,
            auth=False,
            body=lambda: iter_file(path),
            headers={
                "Authorization": token.header,
                **raw_file_headers(path),
                "X-Fal-File-Name": f"input{path.suffix.lower()}",
            },
        )
        body = reply_json(response)
        if response.status_code not in (200, 201):
            raise error_for(response.status_code, body, what)
        url = body.get("access_url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise ProviderError(f"{what}: reply has no access_url", provider=self.name)
        return url

    def _upload_initiated(self, path: Path) -> str:
        """The older flow: a signed upload URL from the storage host (with the key), then the bytes PUT to
        it (without) → the file URL it promised."""
        what = f"upload {path.name}"
        response = self._request(
            "POST",
            self._url(INITIATE_PATH, "fal_storage"),
            what=f"{what} (initiate)",
            params={"storage_type": "fal-cdn"},
            json={"file_name": f"input{path.suffix.lower()}", "content_type": media_type(path)},
        )
        body = reply_json(response)
        if response.status_code != 200:
            raise error_for(response.status_code, body, what)
        upload_url, file_url = (body.get(key) if isinstance(body, dict) else None for key in ("upload_url", "file_url"))
        if not (isinstance(upload_url, str) and upload_url and isinstance(file_url, str) and file_url):
            raise ProviderError(f"{what}: initiate reply has no upload_url/file_url", provider=self.name)
        put = self._request(
            "PUT", upload_url, what=what, auth=False, body=lambda: iter_file(path), headers=raw_file_headers(path)
        )
        if not 200 <= put.status_code < 300:
            raise error_for(put.status_code, reply_json(put), what)
        return file_url

    def _submission(self, req: JobRequest, reply_ref: str | None) -> Submission:
        payload: dict[str, Any] = {"video_url": req.video_url or self._upload(req.video)}
        if req.audio is not None:
            payload["audio_url"] = req.audio_url or self._upload(req.audio)
        else:
            payload["text"] = req.text
            payload["voice_id"] = req.speaker or "Auto"
        return Submission(self._json_create(self._url(ENDPOINT, "fal_queue"), payload), payload)

    def handle_from(self, body: Any, created_at: float) -> JobHandle | None:
        handle = self._handle_with_id(body, "request_id", created_at)
        if handle is None:
            return None
        return replace(handle, urls=request_urls(self.base_urls["fal_queue"], handle.job_id, body))

    def _handle_url(self, handle: JobHandle, key: str) -> str:
        return handle.urls.get(key) or request_urls(self.base_urls["fal_queue"], handle.job_id, {})[key]

    def poll(self, handle: JobHandle) -> JobStatus:
        what = f"status of request {handle.job_id}"
        # the stored URL's own query is kept (httpx's `params=` would replace it)
        status_url = httpx.URL(self._handle_url(handle, "status")).copy_merge_params({"logs": "1"})
        response = self._queue_request("GET", str(status_url), what=what)
        body = reply_json(response)
        if not 200 <= response.status_code < 300:
            raise error_for(response.status_code, body, what)
        status = parse_queue_status(body)
        if status.state is not JobState.SUCCEEDED:
            return status
        return self._result(handle)

    def stream_statuses(
        self, handle: JobHandle, timeout: float, *, on_chunk: Callable[[], None] = lambda: None
    ) -> Generator[JobStatus, None, None]:
        """The request's status events until COMPLETED (then its result, as `poll` gives it) or `timeout`.
        Never retried: the caller polls instead when this raises StreamBroken."""
        url = self._on_queue_host(
            stream_url(self._handle_url(handle, "status")), f"status stream of request {handle.job_id}"
        )
        request = self._client.build_request(
            "GET", url, headers={**self._auth_headers(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        )
        for event in read_events(self._client, request, STATUS_STREAM, timeout=timeout, on_chunk=on_chunk):
            status = parse_stream_event(event.data)
            if status is None:
                continue
            if status.state is JobState.SUCCEEDED:
                yield self._result(handle)
                return
            yield status
            if status.state in (JobState.FAILED, JobState.MODERATED, JobState.CANCELED):
                return

    def _result(self, handle: JobHandle) -> JobStatus:
        """The response_url of a COMPLETED request: the output, not there yet, or how the run failed."""
        what = f"result of request {handle.job_id}"
        response = self._queue_request(
            "GET", self._handle_url(handle, "response"), what=what, retry_on=is_transient_result
        )
        body = reply_json(response)
        if response.status_code == 200:
            return parse_output(body)
        if response.status_code == 404 or "in progress" in error_text(body, "detail").lower():
            return JobStatus(JobState.RUNNING, "COMPLETED", unconfirmed=True)
        if response.status_code in (401, 403):
            raise error_for(response.status_code, body, what)
        return failed_output(response.status_code, body)

    def cancel(self, handle: JobHandle) -> bool:
        response = self._queue_request(
            "PUT", self._handle_url(handle, "cancel"), what=f"cancel request {handle.job_id}"
        )
        return 200 <= response.status_code < 300

    def voices(self) -> list[Voice]:
        """fal has no voice list endpoint: the names are the `voice_id` enum of its documented schema."""
        return [Voice(name, name, source="docs") for name in VOICE_NAMES]
