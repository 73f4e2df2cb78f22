"""AI/ML API, model `pixverse/lip-sync`: Bearer auth; media go inside the create request as data URIs
(or as URLs when the job gives them).

Also the pure pieces of `pixverse/v5/image-to-video` (seed 003, the talking portrait): `ImageJobRequest`,
`image_create_body`, `status_query`, `parse_image_generation`. Its ids look like `<uuid>:pixverse/v5/image-to-video`:
kept verbatim, URL-encoded as a query value.

A 50 MB video is ~67 MB of base64: the JSON body is streamed, base64-encoding the file in slices of a
multiple of 3 bytes (so only the last slice pads), with its exact length known before sending.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ..errors import BillingError, LipsyncError, ValidationError
from ..fsutil import sha256_file
from ..limits import ImageLimits, load_image_limits
from ..voices import VOICE_NAMES, resolve_voice
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
    looks_moderated,
    media_type,
    optional_float,
    optional_int,
    unknown_status,
)
from .http import CreateRequest, CreateVerdict, classify_http_create, is_retryable_status, reply_json
from .poll import DOCUMENTED_JOB_S, PollPolicy

PATH = "/v2/video/generations"
MODEL = "pixverse/lip-sync"
IMAGE_KIND = "image-to-video"  # the ProviderRequest kind of ImageJobRequest
B64_SLICE = 3 * (1 << 18)  # 768 KiB in, 1 MiB of base64 out
QUEUED = frozenset({"queued", "waiting", "pending"})
RUNNING = frozenset({"generating", "active", "processing", "in_progress"})
DONE = frozenset({"completed", "succeeded", "success"})
FAILED = frozenset({"error", "failed", "failure"})
CANCELED = frozenset({"canceled", "cancelled"})


@dataclass(frozen=True)
class DataUri:
    """A file to be sent as `data:<mime>;base64,...` inside a JSON string."""

    path: Path
    mime: str
    size: int

    @property
    def prefix(self) -> bytes:
        return f"data:{self.mime};base64,".encode()

    @property
    def encoded_length(self) -> int:
        return len(self.prefix) + 4 * ((self.size + 2) // 3)

    def chunks(self) -> Iterator[bytes]:
        """The prefix, then exactly `size` bytes of the file as base64 (the Content-Length was computed
        from `size`, so a file that changed since is an error, not a malformed request)."""
        yield self.prefix
        left = self.size
        with open(self.path, "rb") as f:
            while left > 0:
                piece = f.read(min(B64_SLICE, left))
                if not piece:
                    break
                left -= len(piece)
                yield base64.b64encode(piece)
            if left or f.read(1):
                raise ValidationError(f"{self.path}: the file changed while being sent")


@dataclass(frozen=True)
class StreamedJson:
    """A JSON object whose string values may be files (as data URIs), encoded lazily."""

    fields: dict[str, str | int | DataUri]

    def _parts(self) -> list[bytes | DataUri]:
        parts: list[bytes | DataUri] = []
        for i, (key, value) in enumerate(self.fields.items()):
            lead = (b"{" if i == 0 else b",") + json.dumps(key).encode() + b":"
            if isinstance(value, DataUri):
                parts += [lead + b'"', value, b'"']
            else:
                parts.append(lead + json.dumps(value, ensure_ascii=False).encode())
        parts.append(b"}" if self.fields else b"{}")
        return parts

    @property
    def length(self) -> int:
        return sum(p.encoded_length if isinstance(p, DataUri) else len(p) for p in self._parts())

    def chunks(self) -> Iterator[bytes]:
        for part in self._parts():
            if isinstance(part, DataUri):
                yield from part.chunks()
            else:
                yield part


def media_field(path: Path, url: str | None) -> str | DataUri:
    return url if url else DataUri(path, media_type(path), path.stat().st_size)


def described(fields: dict[str, str | int | DataUri]) -> dict[str, str | int]:
    """A create's fields for the reconcile record: files by name and size, never their bytes."""
    return {
        k: (f"data URI of {v.path.name} ({v.size} bytes)" if isinstance(v, DataUri) else v) for k, v in fields.items()
    }


def error_for(status_code: int, message: str, what: str) -> LipsyncError:
    """AI/ML API's documented 403 is "out of credits"; the rest is the common mapping."""
    if status_code == 403:
        return BillingError(f"{what}: {message}", provider="aimlapi", code=status_code)
    return http_error("aimlapi", "AIMLAPI_KEY", status_code, message, what)


def classify_create(status_code: int, body: Any) -> CreateVerdict:
    message = error_text(body, "message", "error")
    return classify_http_create(status_code, message, lambda: error_for(status_code, message, "create"))


def is_generation_timeout(response: httpx.Response) -> bool:
    """A 504 in AI/ML API's own error shape: the documented "generation timeout", not a gateway's hiccup
    (a gateway's 504 is an HTML page and is retried)."""
    body = reply_json(response)
    return response.status_code == 504 and isinstance(body, dict) and "message" in body


def is_transient(response: httpx.Response) -> bool:
    return is_retryable_status(response.status_code) and not is_generation_timeout(response)


def parse_generation(body: Any) -> JobStatus:
    """A generation reply → JobStatus. Success = completed/succeeded with video.url; an `error` fails it."""
    if not isinstance(body, dict):
        return unknown_status("aimlapi", f"malformed reply {type(body).__name__}")
    raw = str(body.get("status") or "")
    word = raw.strip().lower()
    usage = (body.get("meta") or {}).get("usage") if isinstance(body.get("meta"), dict) else None
    credits = optional_float(usage.get("credits_used"), nonnegative=True) if isinstance(usage, dict) else None
    error = body.get("error")
    if error or word in FAILED:
        name = error.get("name") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else (str(error) if error else None)
        state = JobState.MODERATED if looks_moderated(name, message) else JobState.FAILED
        return JobStatus(
            state, raw, credits=credits, error_code=name or raw, error_message=message or "generation failed"
        )
    video: dict[str, Any] = body["video"] if isinstance(body.get("video"), dict) else {}
    if word in DONE:
        url = video.get("url") or None
        size = optional_int(video.get("file_size"), nonnegative=True)
        confirmed = bool(url) and (size is None or size > 0)
        return JobStatus(
            JobState.SUCCEEDED if confirmed else JobState.RUNNING,
            raw,
            result_url=url,
            credits=credits,
            unconfirmed=not confirmed,
        )
    if word in QUEUED:
        return JobStatus(JobState.QUEUED, raw, credits=credits)
    if word in RUNNING:
        return JobStatus(JobState.RUNNING, raw, credits=credits)
    if word in CANCELED:
        return JobStatus(JobState.CANCELED, raw, credits=credits, error_message="was canceled")
    return unknown_status("aimlapi", raw, credits=credits)


class AimlapiProvider(Provider):
    name = "aimlapi"
    secret_env = "AIMLAPI_KEY"
    base_url_defaults: ClassVar[dict[str, str]] = {"aimlapi": "https://api.aimlapi.com"}
    base_url_env: ClassVar[dict[str, str]] = {"aimlapi": "LIPSYNC_AIMLAPI_BASE_URL"}
    voice_id_scheme = "name"
    default_concurrency = 4
    default_poll = PollPolicy(expected_s=DOCUMENTED_JOB_S)
    limits_key = "aimlapi"
    classify_create = staticmethod(classify_create)

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret()}"}

    request_kinds = (JobRequest.kind, IMAGE_KIND)

    def __init__(self, *, generation_path: str = PATH, **kwargs: Any):
        """`generation_path`: the documented `/v2/video/generations`, or seed 003's legacy
        `/v2/generate/video/pixverse/generation` (same bodies and replies); `run.provider_options.aimlapi`."""
        super().__init__(**kwargs)
        if generation_path not in (PATH, LEGACY_IMAGE_PATH):
            raise ValidationError(f"generation_path must be {PATH} or {LEGACY_IMAGE_PATH}, got {generation_path!r}")
        self.generation_path = generation_path

    def _submission(self, req: JobRequest | ImageJobRequest, reply_ref: str | None) -> Submission:
        if isinstance(req, ImageJobRequest):
            return self._json_submission(image_fields(req), IMAGE_MODEL)
        fields: dict[str, str | int | DataUri] = {"model": MODEL, "video_url": media_field(req.video, req.video_url)}
        if req.audio is not None:
            fields["audio_url"] = media_field(req.audio, req.audio_url)
        else:
            fields["lip_sync_tts_content"] = req.text or ""
            fields["lip_sync_tts_speaker"] = req.speaker or "Auto"
        return self._json_submission(fields, MODEL)

    def _json_submission(self, fields: dict[str, str | int | DataUri], model: str) -> Submission:
        body = StreamedJson(fields)
        request = CreateRequest(
            "POST",
            self._url(self.generation_path),
            lambda: {**self._auth_headers(), "Content-Type": "application/json"},
            body.chunks,
            body.length,
        )
        return Submission(request, described(fields), model)

    def handle_from(self, body: Any, created_at: float) -> JobHandle | None:
        return self._handle_with_id(body, "id", created_at)

    def poll(self, handle: JobHandle) -> JobStatus:
        what = f"status of job {handle.job_id}"
        url = self._url(self.generation_path)
        if handle.model == IMAGE_MODEL:  # its id holds a colon: sent verbatim, strictly URL-encoded
            response = self._request("GET", f"{url}?{status_query(handle.job_id)}", what=what, retry_on=is_transient)
        else:
            response = self._request(
                "GET", url, what=what, params={"generation_id": handle.job_id}, retry_on=is_transient
            )
        body = reply_json(response)
        message = error_text(body, "message", "error")
        if is_generation_timeout(response):
            return JobStatus(
                JobState.FAILED,
                "504",
                error_code="504",
                error_message=f"timed out at the provider (HTTP 504: {message})",
            )
        if response.status_code != 200:
            raise error_for(response.status_code, message, what)
        if handle.model == IMAGE_MODEL:
            generation = parse_image_generation(body)
            return replace(generation.status, usage=generation.usage)
        return parse_generation(body)

    def create_usage(self, raw_reply: str) -> dict[str, float]:
        """Both models report `meta.usage` in the create reply (seeds 002, 003); the image model's status
        replies do not repeat it."""
        try:
            return reply_usage(json.loads(raw_reply))
        except ValueError:
            return {}

    def voices(self) -> list[Voice]:
        """AI/ML API has no voice list endpoint: the names are the enum of its documented schema."""
        return [Voice(name, name, source="docs") for name in VOICE_NAMES]


# ---- pixverse/v5/image-to-video (seed 003): pure pieces the job flow calls -----------------------------

IMAGE_MODEL = "pixverse/v5/image-to-video"
LEGACY_IMAGE_PATH = "/v2/generate/video/pixverse/generation"  # the seed's older path, same body and replies
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class ImageJobRequest:
    """One talking portrait: a conformed still image, a prompt, and optionally a script with its voice.

    None leaves a field out of the body (the API's default applies: 720p, 5 s). `image_url`, when set, is a
    public https URL of the same image, sent instead of the data URI.
    """

    image: Path
    prompt: str
    text: str | None = None
    speaker: str | None = None
    resolution: str | None = None
    duration: int | None = None
    negative_prompt: str | None = None
    style: str | None = None
    seed: int | None = None
    image_url: str | None = None
    kind: ClassVar[str] = IMAGE_KIND

    def checked(self, limits: ImageLimits | None = None) -> ImageJobRequest:
        """This request with the speaker canonical (Auto for a script without one); ValidationError naming the
        field for what the API would refuse, so nothing is sent that cannot be accepted. `limits`: the
        provider's image limits (AI/ML API's by default)."""
        limits = limits or load_image_limits("aimlapi")
        if not Path(self.image).is_file() and self.image_url is None:
            raise ValidationError(f"{self.image}: no such file")
        if Path(self.image).suffix.lower() not in IMAGE_TYPES and self.image_url is None:
            raise ValidationError(f"{self.image}: send a JPEG or PNG (conform the image first)")
        if self.image_url is not None and not self.image_url.startswith("https://"):
            raise ValidationError(f"image_url must be an https URL, got {self.image_url[:60]!r}")
        if not self.prompt.strip():
            raise ValidationError("the prompt is empty")
        if self.speaker is not None and self.text is None:
            raise ValidationError("a speaker was given without a script to speak")
        if self.text is not None and not self.text.strip():
            raise ValidationError("the script is empty")
        check_choices(self, limits)
        return replace(
            self,
            image=Path(self.image),
            speaker=resolve_voice(self.speaker or "Auto") if self.text is not None else None,
        )

    def summary(self) -> dict[str, Any]:
        """What this request asks for, the image by hash: for keys, fingerprints and manifests, never bytes."""
        return {
            "image_sha256": None if self.image_url else sha256_file(self.image),
            "image_url": self.image_url,
            "prompt": self.prompt,
            "text": self.text,
            "speaker": self.speaker,
            "resolution": self.resolution,
            "duration": self.duration,
            "negative_prompt": self.negative_prompt,
            "style": self.style,
            "seed": self.seed,
        }


def check_choices(req: ImageJobRequest, limits: ImageLimits) -> None:
    """The model's enums and ranges (resolution, duration at that resolution, style, seed, prompt lengths)."""
    resolution = req.resolution or limits.default_resolution
    if resolution not in limits.resolutions:
        raise ValidationError(f"resolution {resolution!r} is not one of {', '.join(limits.resolutions)}")
    duration = req.duration if req.duration is not None else limits.default_duration
    if duration not in limits.durations_at(resolution):
        raise ValidationError(
            f"{resolution} does not take {duration} s clips "
            f"(use {' or '.join(map(str, limits.durations_at(resolution)))})"
        )
    if req.style is not None and req.style not in limits.styles:
        raise ValidationError(f"style {req.style!r} is not one of {', '.join(limits.styles)}")
    if req.seed is not None and (
        isinstance(req.seed, bool) or not isinstance(req.seed, int) or not 0 <= req.seed <= limits.seed_max
    ):
        raise ValidationError(f"seed must be an integer from 0 to {limits.seed_max}, got {req.seed!r}")
    for name, value in (("prompt", req.prompt), ("negative prompt", req.negative_prompt)):
        if value is not None and len(value) > limits.prompt_max_chars:
            raise ValidationError(f"the {name} is {len(value)} characters, over {limits.prompt_max_chars}")


def image_fields(req: ImageJobRequest) -> dict[str, str | int | DataUri]:
    """The create body's fields, in the seed's order; the image as a streamed data URI unless a URL is given."""
    image = req.image_url or DataUri(req.image, IMAGE_TYPES[req.image.suffix.lower()], req.image.stat().st_size)
    fields: dict[str, str | int | DataUri] = {"model": IMAGE_MODEL, "prompt": req.prompt, "image_url": image}
    optional = {
        "resolution": req.resolution,
        "duration": req.duration,
        "negative_prompt": req.negative_prompt,
        "style": req.style,
        "seed": req.seed,
        "lip_sync_tts_content": req.text,
        "lip_sync_tts_speaker": req.speaker,
    }
    return fields | {k: v for k, v in optional.items() if v is not None}


def image_create_body(req: ImageJobRequest) -> StreamedJson:
    """The create body of a checked request: streamed, its length known before sending."""
    return StreamedJson(image_fields(req))


def status_query(job_id: str) -> str:
    """`generation_id=<id>` with the id verbatim and URL-encoded (its colon and slashes included)."""
    return "generation_id=" + quote(job_id, safe="")


@dataclass(frozen=True)
class ResultVideo:
    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class ImageGeneration:
    """One create or status reply of the image model: our reading, the usage as the API words it
    (`tokens_used` in seed 003's sample, `credits_used` in another), and the result video when there is one."""

    status: JobStatus
    usage: dict[str, float]
    video: ResultVideo | None


def reply_usage(body: Any) -> dict[str, float]:
    """meta.usage's numeric entries, as named by the reply."""
    meta = body.get("meta") if isinstance(body, dict) else None
    usage = meta.get("usage") if isinstance(meta, dict) else None
    if not isinstance(usage, dict):
        return {}
    return {str(k): v for k, raw in usage.items() if (v := optional_float(raw)) is not None}


def parse_image_generation(body: Any) -> ImageGeneration:
    """A create or status reply of the image model. The state is read as for lip-sync (tolerant of waiting,
    active, succeeded); the video only with a URL."""
    video = body.get("video") if isinstance(body, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    result = None
    if isinstance(url, str) and url and isinstance(video, dict):  # a url only comes from a video object
        result = ResultVideo(
            url, video.get("content_type"), video.get("file_name"), optional_int(video.get("file_size"))
        )
    return ImageGeneration(parse_generation(body), reply_usage(body), result)
