"""useapi.net, PixVerse v2 (drives a PixVerse web account): Bearer auth, raw-bytes uploads to `/files`.

`GET /videos/{video_id}` answers 404 while the video is still being made; a 404 that lasts longer than
`not_found_grace_s` after the create means no such video (failed, not waited on until the poll timeout).
`maxJobs` (1..8) is how many jobs the account runs at once, so it is also our concurrency.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ..errors import AuthError, BillingError, LipsyncError, Moderated, ProviderError, ValidationError
from ..voices import VOICE_IDS
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
    optional_int,
    raw_file_headers,
    unknown_status,
)
from .http import CreateVerdict, classify_http_create, is_retryable_status, reply_json
from .poll import DOCUMENTED_JOB_S, PollPolicy

API = "/v2/pixverse"
ACCOUNT_ATTENTION = 596  # "your PixVerse account has a pending error": not transient
RUNNING = frozenset({"GENERATING", "PROCESSING", "RUNNING", "IN_PROGRESS"})
QUEUED = frozenset({"QUEUED", "WAITING", "PENDING"})
PIXVERSE_CODES = {1: "COMPLETED", 5: "GENERATING", 7: "MODERATED", 8: "FAILED"}
REPLY_REF_MAX = 1024  # replyRef's documented maximum length
NOT_FOUND_GRACE_S = 1200.0  # jobs take tens of seconds; 20 min of 404s is not "still processing"


def is_transient(response: httpx.Response) -> bool:
    return is_retryable_status(response.status_code) and response.status_code != ACCOUNT_ATTENTION


def error_for(status_code: int, message: str, what: str) -> LipsyncError:
    """useapi's documented error statuses, then the common mapping."""
    if status_code == 412:
        return BillingError(f"{what}: {message}", provider="useapi", code=status_code)
    if status_code == 422:
        return Moderated(f"{what}: {message}", provider="useapi", code=status_code)
    if status_code == ACCOUNT_ATTENTION:
        return AuthError(
            f"{what}: the PixVerse account needs attention: {message}", provider="useapi", code=status_code
        )
    return http_error("useapi", "USEAPI_TOKEN", status_code, message, what)


def classify_create(status_code: int, body: Any) -> CreateVerdict:
    message = error_text(body, "error", "message")
    return classify_http_create(
        status_code, message, lambda: error_for(status_code, message, "create"), definite=(ACCOUNT_ATTENTION,)
    )


def status_name(body: dict[str, Any]) -> str:
    """`video_status_name`, or the PixVerse status code in `video_status` when the name is missing."""
    name = str(body.get("video_status_name") or "").strip().upper()
    if name:
        return name
    code = optional_int(body.get("video_status"))
    return PIXVERSE_CODES.get(code, str(code)) if code is not None else ""


def parse_video(body: Any) -> JobStatus:
    """A video object → JobStatus. Success = COMPLETED with a URL and non-zero size, unless
    `video_status_final` says it is not final yet (the docs accept final *or* COMPLETED)."""
    if not isinstance(body, dict):
        return unknown_status("useapi", f"malformed reply {type(body).__name__}")
    name = status_name(body)
    final = body.get("video_status_final")
    url = body.get("url") or None
    width, height = (optional_int(body.get(key), nonnegative=True) for key in ("output_width", "output_height"))
    error = body.get("error") or body.get("errorMessage")
    if name == "MODERATED":
        return JobStatus(JobState.MODERATED, name, error_code=name, error_message=error or "was moderated")
    if name == "FAILED":
        return JobStatus(JobState.FAILED, name, error_code=name, error_message=error or "generation failed")
    if name == "COMPLETED":
        if final is not False and url and all(v is None or v > 0 for v in (width, height)):
            return JobStatus(JobState.SUCCEEDED, name, result_url=url, width=width, height=height)
        return JobStatus(
            JobState.RUNNING,
            name,
            result_url=url if final is not False else None,
            width=width or None,
            height=height or None,
            unconfirmed=final is not False,
        )
    if name in QUEUED:
        return JobStatus(JobState.QUEUED, name)
    if name in RUNNING:
        return JobStatus(JobState.RUNNING, name)
    if final is True:
        return JobStatus(
            JobState.FAILED,
            name or "final",
            error_code=name or None,
            error_message=error or f"ended with status {name or 'unknown'}",
        )
    return unknown_status("useapi", name or "no status")


def video_list(body: Any) -> list[dict[str, Any]]:
    """The video objects of a `GET /videos` reply: "the response array", or the first array inside an
    object (the docs show no wrapper, a proxy may add one)."""
    if isinstance(body, dict):
        body = next((value for value in body.values() if isinstance(value, list)), [])
    return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []


def find_by_reply_ref(body: Any, reply_ref: str) -> dict[str, Any] | None:
    """The newest video created with `reply_ref` (the list is newest first; a later one wins a tie)."""
    return next((video for video in video_list(body) if str(video.get("replyRef") or "") == reply_ref), None)


def not_found_status(handle: JobHandle, grace_s: float, now: float) -> JobStatus:
    """A 404 for a job: still processing, unless it has lasted `grace_s` since the create was accepted."""
    age = now - handle.created_at
    if handle.created_at > 0 and age > grace_s:
        return JobStatus(
            JobState.FAILED,
            "404",
            error_code="404",
            error_message=f"is still unknown to useapi {age:.0f} s after its create (no such video)",
        )
    return JobStatus(JobState.RUNNING, "404 (still processing)")


class UseapiProvider(Provider):
    name = "useapi"
    secret_env = "USEAPI_TOKEN"
    base_url_defaults: ClassVar[dict[str, str]] = {"useapi": "https://api.useapi.net"}
    base_url_env: ClassVar[dict[str, str]] = {"useapi": "LIPSYNC_USEAPI_BASE_URL"}
    voice_id_scheme = "id"
    default_concurrency = 3  # the docs' own maxJobs example; the account may allow up to 8
    default_poll = PollPolicy(initial=3.0, expected_s=DOCUMENTED_JOB_S)  # 404 while running: not every second
    limits_key = "useapi"
    can_reconcile = True  # replyRef is stored and listed by GET /videos
    classify_create = staticmethod(classify_create)

    def __init__(
        self,
        *,
        max_jobs: int | None = None,
        email: str | None = None,
        not_found_grace_s: float = NOT_FOUND_GRACE_S,
        **kwargs: Any,
    ):
        if max_jobs is not None and not 1 <= max_jobs <= 8:
            raise ValidationError(f"useapi maxJobs must be 1..8, got {max_jobs}")
        self.max_jobs = max_jobs
        self.email = email
        self.not_found_grace_s = not_found_grace_s
        super().__init__(**kwargs)

    @property
    def max_concurrency(self) -> int | None:
        return self.max_jobs

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret()}"}

    def _account(self) -> dict[str, str]:
        return {"email": self.email} if self.email else {}

    def _upload(self, path: Path) -> str:
        """Raw bytes with the file's MIME type (not billable, so retried) → path."""
        what = f"upload {path.name}"
        response = self._request(
            "POST",
            self._url(f"{API}/files"),
            what=what,
            retry_on=is_transient,
            params=self._account(),
            body=lambda: iter_file(path),
            headers=raw_file_headers(path),
        )
        body = reply_json(response)
        if response.status_code != 200:
            raise error_for(response.status_code, error_text(body, "error", "message"), what)
        uploaded = body.get("path") if isinstance(body, dict) else None
        if not isinstance(uploaded, str) or not uploaded:
            raise ProviderError(f"{what}: reply has no path", provider=self.name)
        return uploaded

    def _submission(self, req: JobRequest, reply_ref: str | None) -> Submission:
        payload: dict[str, Any] = {"video_path": self._upload(req.video)}
        if req.audio is not None:
            payload["audio_path"] = self._upload(req.audio)
        else:
            payload["prompt"] = req.text
            speaker = req.speaker or "Auto"
            speaker_id = self.listed_speaker_id(speaker) or (None if speaker == "Auto" else VOICE_IDS[speaker])
            if speaker_id is not None:  # optional: without it the account's default (Auto) speaks
                payload["speaker_id"] = speaker_id
        if self.max_jobs is not None:
            payload["maxJobs"] = self.max_jobs
        if reply_ref:
            payload["replyRef"] = reply_ref[:REPLY_REF_MAX]
        payload.update(self._account())
        return Submission(self._json_create(self._url(f"{API}/videos/lipsync"), payload), payload)

    def handle_from(self, body: Any, created_at: float) -> JobHandle | None:
        return self._handle_with_id(body, "video_id", created_at)

    def find_created(self, reply_ref: str) -> tuple[JobHandle, str] | None:
        """`GET /videos` lists the account's videos with the replyRef each was created with."""
        response = self._request(
            "GET", self._url(f"{API}/videos"), what="video list", retry_on=is_transient, params=self._account()
        )
        body = reply_json(response)
        if response.status_code != 200:
            raise error_for(response.status_code, error_text(body, "error", "message"), "video list")
        match = find_by_reply_ref(body, reply_ref[:REPLY_REF_MAX])
        if match is None:
            return None
        handle = self._handle_with_id(match, "video_id", time.time())
        return None if handle is None else (handle, json.dumps(match, ensure_ascii=False))

    def poll(self, handle: JobHandle) -> JobStatus:
        what = f"status of job {handle.job_id}"
        response = self._request(
            "GET", self._url(f"{API}/videos/{quote(handle.job_id, safe=':@')}"), what=what, retry_on=is_transient
        )
        if response.status_code == 404:
            return not_found_status(handle, self.not_found_grace_s, time.time())
        body = reply_json(response)
        if response.status_code != 200:
            raise error_for(response.status_code, error_text(body, "error", "message"), what)
        return parse_video(body)

    def voices(self) -> list[Voice]:
        response = self._request(
            "GET", self._url(f"{API}/videos/voices"), what="voice list", retry_on=is_transient, params=self._account()
        )
        body = reply_json(response)
        if response.status_code != 200:
            raise error_for(response.status_code, error_text(body, "error", "message"), "voice list")
        rows = body.get("tts_list") if isinstance(body, dict) else None
        return [
            Voice(
                str(r.get("display_name") or "").strip(),
                str(r.get("speaker_id") or "").strip(),
                str(r.get("url") or "").strip() or None,
            )
            for r in rows or []
            if isinstance(r, dict)
        ]
