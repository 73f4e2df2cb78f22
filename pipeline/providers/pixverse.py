"""PixVerse Platform (enterprise OpenAPI): `API-KEY` plus a fresh `Ai-trace-id` on every request.

Every reply is an envelope `{ErrCode, ErrMsg, Resp}` (lower-case keys in some 500s) that is checked even
on HTTP 200. Media and video ids are JSON numbers that can exceed 2**53: they stay Python ints from
parse to send, never floats, never strings on the wire.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
    media_type,
    optional_int,
    unknown_status,
)
from .http import CreateVerdict, Lost, Refused, is_retryable_status, reply_json
from .poll import DOCUMENTED_JOB_S, PollPolicy

API = "/openapi/v2"
AUTH_CODES = frozenset({10001, 10003})
BILLING_CODES = frozenset({500043, 500060, 500090})
BUSY_CODES = frozenset({500044})  # concurrent-generation limit: not accepted
TRY_LATER_CODES = frozenset({500045, 500069, 10005})
TRACE_CODES = frozenset({400033})  # trace id refused: nothing was done; a new one is sent
RESEND_CODES = BUSY_CODES | TRY_LATER_CODES | TRACE_CODES
MODERATION_CODES = frozenset({500054, 500063})
VALIDATION_CODES = frozenset({400013, 400017})
DEFINITE_CODES = AUTH_CODES | BILLING_CODES | MODERATION_CODES | VALIDATION_CODES
VOICE_PAGE_SIZE = 100
VOICE_MAX_PAGES = 10


@dataclass(frozen=True)
class Envelope:
    code: int
    message: str
    resp: Any


def parse_envelope(body: Any) -> Envelope | None:
    """The `{ErrCode, ErrMsg, Resp}` envelope in either key casing, or None if `body` is not one."""
    if not isinstance(body, dict):
        return None
    code = body.get("ErrCode", body.get("err_code"))
    if code is None:
        return None
    number = optional_int(code)
    if number is None:
        return None
    message = body.get("ErrMsg", body.get("err_msg")) or ""
    return Envelope(number, str(message), body.get("Resp", body.get("resp")))


def as_id(value: Any) -> int | None:
    """A PixVerse id as an exact int. Floats are refused: a float has already lost digits above 2**53."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def envelope_error(env: Envelope, what: str) -> LipsyncError | None:
    """The error an envelope code means (None for success). Codes are from the docs and field reports."""
    if env.code == 0:
        return None
    message, code = f"{what}: {env.message or 'no message'}", env.code
    if env.code in AUTH_CODES:
        return AuthError(f"{message}; check PIXVERSE_API_KEY", provider="pixverse", code=code)
    if env.code in BILLING_CODES:
        return BillingError(message, provider="pixverse", code=code)
    if env.code in MODERATION_CODES:
        return Moderated(message, provider="pixverse", code=code)
    if env.code in VALIDATION_CODES:
        return ValidationError(message, provider="pixverse", code=code)
    return ProviderError(message, provider="pixverse", code=code)


def is_transient(response: httpx.Response) -> bool:
    """Worth retrying an idempotent request: 429/5xx, a busy/try-later/trace-id code inside the envelope,
    or a 2xx that is not an envelope at all (a proxy's HTML page, a cut body)."""
    env = parse_envelope(reply_json(response))
    if env is None:
        return is_retryable_status(response.status_code) or 200 <= response.status_code < 300
    if env.code in RESEND_CODES:
        return True
    return is_retryable_status(response.status_code) and env.code not in DEFINITE_CODES


def classify_create(status_code: int, body: Any) -> CreateVerdict:
    env = parse_envelope(body)
    if env is None:
        if status_code in (429, 503):
            return Refused(f"HTTP {status_code}")
        if 200 <= status_code < 300 or status_code >= 500:
            return Lost(f"HTTP {status_code} without an ErrCode envelope")
        return ProviderError(
            f"create: HTTP {status_code} without an ErrCode envelope", provider="pixverse", code=status_code
        )
    if env.code in RESEND_CODES:
        return Refused(f"ErrCode {env.code}: {env.message}")
    error = envelope_error(env, "create")
    if error is not None:
        definite = env.code in DEFINITE_CODES or status_code < 500
        return error if definite else Lost(f"HTTP {status_code}, ErrCode {env.code}")
    if not 200 <= status_code < 300:
        return Lost(f"HTTP {status_code} with ErrCode 0")
    return None


def parse_result(resp: Any) -> JobStatus:
    """A `video/result` Resp → JobStatus. Success needs status 1, a URL and a non-zero output size; with
    the URL but a zero or missing size (the docs' own sample says `size: 0`) it is unconfirmed, and the
    poller takes the URL after a few such replies."""
    if not isinstance(resp, dict):
        return unknown_status("pixverse", f"malformed Resp {type(resp).__name__}")
    status = optional_int(resp.get("status"))
    raw = str(resp.get("status"))
    url = resp.get("url") or None
    sizes = [optional_int(resp.get(key), nonnegative=True) for key in ("outputWidth", "outputHeight", "size")]
    width, height = (v if v else None for v in sizes[:2])
    if status == 1:
        confirmed = bool(url) and any(sizes) and all(v is None or v > 0 for v in sizes)
        return JobStatus(
            JobState.SUCCEEDED if confirmed else JobState.RUNNING,
            raw,
            result_url=url,
            width=width,
            height=height,
            unconfirmed=not confirmed,
        )
    if status == 5:
        return JobStatus(JobState.RUNNING, raw)
    if status == 7:
        return JobStatus(
            JobState.MODERATED, raw, error_code=raw, error_message="failed content moderation (credits refunded)"
        )
    if status == 8:
        return JobStatus(JobState.FAILED, raw, error_code=raw, error_message="generation failed")
    if status == 6:
        return JobStatus(JobState.FAILED, raw, error_code=raw, error_message="was deleted")
    return unknown_status("pixverse", raw)


class PixverseProvider(Provider):
    name = "pixverse"
    secret_env = "PIXVERSE_API_KEY"
    base_url_defaults: ClassVar[dict[str, str]] = {"pixverse": "https://app-api.pixverse.ai"}
    base_url_env: ClassVar[dict[str, str]] = {"pixverse": "LIPSYNC_PIXVERSE_BASE_URL"}
    voice_id_scheme = "id"
    default_concurrency = 4  # the account's concurrent-generation limit is per plan
    default_poll = PollPolicy(initial=3.0, expected_s=DOCUMENTED_JOB_S)  # the docs: a status check every 3-5 s
    limits_key = "pixverse"
    classify_create = staticmethod(classify_create)

    def _auth_headers(self) -> dict[str, str]:
        return {"API-KEY": self._secret(), "Ai-trace-id": str(uuid.uuid4())}

    def _resp(self, response: httpx.Response, what: str) -> Any:
        """The Resp of a reply whose envelope says success; the mapped error otherwise."""
        env = parse_envelope(reply_json(response))
        if env is None:
            raise ProviderError(
                f"{what}: HTTP {response.status_code} without an ErrCode envelope",
                provider=self.name,
                code=response.status_code,
            )
        error = envelope_error(env, what)
        if error is not None:
            raise error
        return env.resp

    def _upload(self, path: Path) -> int:
        """Multipart upload (not billable, so retried) → media_id."""
        mime = media_type(path)
        with open(path, "rb") as fh:
            response = self._request(
                "POST",
                self._url(f"{API}/media/upload"),
                what=f"upload {path.name}",
                retry_on=is_transient,
                files={"file": (f"media{path.suffix.lower()}", fh, mime)},
            )
        resp = self._resp(response, f"upload {path.name}")
        media_id = as_id(resp.get("media_id") if isinstance(resp, dict) else None)
        if media_id is None:
            raise ProviderError(f"upload {path.name}: reply has no integer media_id", provider=self.name)
        return media_id

    def _submission(self, req: JobRequest, reply_ref: str | None) -> Submission:
        payload: dict[str, Any] = {"video_media_id": self._upload(req.video)}
        if req.audio is not None:
            payload["audio_media_id"] = self._upload(req.audio)
        else:
            speaker = req.speaker or "Auto"
            payload["lip_sync_tts_speaker_id"] = self.listed_speaker_id(speaker) or VOICE_IDS[speaker]
            payload["lip_sync_tts_content"] = req.text
        return Submission(self._json_create(self._url(f"{API}/video/lip_sync/generate"), payload), payload)

    def handle_from(self, body: Any, created_at: float) -> JobHandle | None:
        env = parse_envelope(body)
        video_id = as_id(env.resp.get("video_id")) if env and isinstance(env.resp, dict) else None
        if video_id is None:
            return None
        return JobHandle(self.name, str(video_id), {}, created_at)

    def poll(self, handle: JobHandle) -> JobStatus:
        video_id = as_id(handle.job_id)
        if video_id is None:
            raise ProviderError(f"{handle.job_id!r} is not a PixVerse video id", provider=self.name)
        response = self._request(
            "GET", self._url(f"{API}/video/result/{video_id}"), what=f"status of job {video_id}", retry_on=is_transient
        )
        return parse_result(self._resp(response, f"status of job {video_id}"))

    def voices(self) -> list[Voice]:
        voices: list[Voice] = []
        for page in range(1, VOICE_MAX_PAGES + 1):
            response = self._request(
                "GET",
                self._url(f"{API}/video/lip_sync/tts_list"),
                what="voice list",
                retry_on=is_transient,
                params={"page_num": page, "page_size": VOICE_PAGE_SIZE},
            )
            resp = self._resp(response, "voice list")
            rows = resp.get("data") or [] if isinstance(resp, dict) else []
            voices += [
                Voice(str(r.get("name", "")).strip(), str(r.get("speaker_id", "")).strip())
                for r in rows
                if isinstance(r, dict)
            ]
            total = optional_int(resp.get("total"), nonnegative=True) if isinstance(resp, dict) else None
            if not rows or total is None or len(voices) >= total:
                break
        return voices
