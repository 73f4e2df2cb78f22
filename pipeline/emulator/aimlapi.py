"""AI/ML API (`pixverse/lip-sync`, and `pixverse/v5/image-to-video` of seed 003), served under /aimlapi.

Both models share `POST/GET /v2/video/generations` (the body's `model` picks one); the image model's documents
also show the legacy path `/v2/generate/video/pixverse/generation`, served for both alike. Image-to-video ids are
`<uuid>:pixverse/v5/image-to-video` (seed 003's sample), its usage `tokens_used`, and a finished one always says
"completed" with the whole `video` object.

Errors are {message, path, requestId, statusCode, timestamp}. A finished job says "completed" or
"succeeded" (the docs show both; jobs alternate), and a flapping one says "waiting" once first.
Media come as data URIs or URLs; only loopback URLs can be fetched.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..limits import ImageLimits, load_image_limits
from ..voices import VOICE_NAMES
from . import portrait
from .bodies import LargeText
from .inputs import check_tts_text, fetch_input, is_loopback, large_json_object, media_inputs, small_text, string_field
from .jobs import Job, JobInput, Phase
from .portrait import PortraitInput
from .state import (
    Dialect,
    EmulatorState,
    Reject,
    RejectKind,
    bearer,
    create_reply,
    endpoint,
    gateway_error,
    origin,
)

PROVIDER = "aimlapi"
MODEL = "pixverse/lip-sync"
MODELS = (MODEL, portrait.MODEL)
CREDITS_PER_JOB = 2_000_000
LEGACY_PATH = "/v2/generate/video/pixverse/generation"

_STATUS_CODES = {
    RejectKind.VALIDATION: 400,
    RejectKind.BAD_TYPE: 400,
    RejectKind.NOT_FOUND: 404,
    RejectKind.AUTH: 401,
    RejectKind.BILLING: 403,
    RejectKind.RATE_LIMIT: 429,
    RejectKind.MODERATED: 400,
    RejectKind.ACCOUNT: 403,
}


def error_body(status: int, message: str, path: str) -> JSONResponse:
    return JSONResponse(
        {
            "message": message,
            "path": path,
            "requestId": secrets.token_hex(8),
            "statusCode": status,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
        status_code=status,
    )


def reject(rej: Reject, request: Request) -> Response:
    return error_body(_STATUS_CODES[rej.kind], rej.message, request.url.path.removeprefix("/aimlapi"))


def server_error(n: int) -> Response:
    if n % 3 == 0:
        return gateway_error()
    status = 500 if n % 2 else 503
    return error_body(status, "upstream provider error", "/v2/video/generations")


DIALECT = Dialect(PROVIDER, key_from=bearer, reject=reject, server_error=server_error)


async def create(request: Request, state: EmulatorState) -> Response:
    async with large_json_object(request, state) as body:  # a 50 MB video is a 67 MB data URI
        if body.get("model") == portrait.MODEL:
            return await _create_portrait(request, state, body)
        return await _create(request, state, body)


async def _create(request: Request, state: EmulatorState, body: dict[str, Any]) -> Response:
    if body.get("model") != MODEL:
        raise Reject(
            RejectKind.VALIDATION, f"model must be one of {', '.join(map(repr, MODELS))}, got {body.get('model')!r}"
        )
    video_url, audio_url = string_field(body, "video_url"), string_field(body, "audio_url")
    content, speaker = string_field(body, "lip_sync_tts_content"), string_field(body, "lip_sync_tts_speaker")
    if video_url is None:
        raise Reject(RejectKind.VALIDATION, "video_url is required")
    if (audio_url is not None) == (content is not None or speaker is not None):
        raise Reject(
            RejectKind.VALIDATION, "use either audio_url or lip_sync_tts_speaker with lip_sync_tts_content, not both"
        )
    if audio_url is None:
        _check_tts(state, content, speaker)
    video, audio = await media_inputs(state, request, PROVIDER, video_url, audio_url)
    state.admit_create(PROVIDER)
    job = state.jobs[PROVIDER].create(
        lambda n: secrets.token_urlsafe(16)[:21],
        JobInput(video, audio, small_text(content), small_text(speaker)),
        state.faults[PROVIDER],
    )
    reply = {"id": job.job_id, "status": "queued", "meta": {"usage": {"credits_used": CREDITS_PER_JOB}}}
    return create_reply(state, job, JSONResponse(reply))


def _check_tts(state: EmulatorState, content: str | LargeText | None, speaker: str | LargeText | None) -> None:
    if content is None or speaker is None:
        raise Reject(RejectKind.VALIDATION, "lip_sync_tts_content and lip_sync_tts_speaker go together")
    if speaker not in VOICE_NAMES:
        raise Reject(RejectKind.VALIDATION, f"lip_sync_tts_speaker must be one of {', '.join(VOICE_NAMES)}")
    check_tts_text(state, PROVIDER, content, "lip_sync_tts_content")


@dataclass(frozen=True)
class PortraitFields:
    """The create body's fields after the schema's rules (the image is still a reference)."""

    image_ref: str | LargeText
    prompt: str
    resolution: str
    duration: int
    text: str | None
    speaker: str | None


def _string(body: dict[str, Any], name: str, max_chars: int | None = None) -> str | LargeText | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, LargeText)):
        raise Reject(RejectKind.BAD_TYPE, f"{name} must be a string, got {type(value).__name__}", field_name=name)
    if max_chars is not None and len(value) > max_chars:
        raise Reject(RejectKind.VALIDATION, f"{name} must be at most {max_chars} characters", field_name=name)
    return value


_T = TypeVar("_T")


def _choice(body: dict[str, Any], name: str, allowed: tuple[_T, ...], default: _T) -> _T:
    value: _T = body.get(name, default)
    if value not in allowed or isinstance(value, bool) or type(value) is not type(allowed[0]):
        shown = ", ".join(map(str, allowed))
        raise Reject(RejectKind.VALIDATION, f"{name} must be one of {shown}, got {value!r}", field_name=name)
    return value


def _seed(body: dict[str, Any], limits: ImageLimits) -> None:
    seed = body.get("seed")
    if seed is None:
        return
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise Reject(RejectKind.VALIDATION, f"seed must be an integer, got {seed!r}", field_name="seed")
    if not 0 <= seed <= limits.seed_max:
        raise Reject(RejectKind.VALIDATION, f"seed must be between 0 and {limits.seed_max}", field_name="seed")


def _tts(body: dict[str, Any], state: EmulatorState) -> tuple[str | None, str | None]:
    """The optional TTS pair, under the same rules as the lip-sync model's."""
    content, speaker = string_field(body, "lip_sync_tts_content"), string_field(body, "lip_sync_tts_speaker")
    if content is None and speaker is None:
        return None, None
    _check_tts(state, content, speaker)
    return str(content), str(speaker)


def check_fields(body: dict[str, Any], limits: ImageLimits, state: EmulatorState) -> PortraitFields:
    """The create body under the schema's rules; Reject (400, the API's message) on the first broken one."""
    prompt = _string(body, "prompt", limits.prompt_max_chars)
    if prompt is None or not str(prompt).strip():
        raise Reject(RejectKind.VALIDATION, "prompt is required", field_name="prompt")
    image_ref = _string(body, "image_url")
    if image_ref is None or not len(image_ref):
        raise Reject(RejectKind.VALIDATION, "image_url is required", field_name="image_url")
    resolution = _choice(body, "resolution", limits.resolutions, limits.default_resolution)
    duration = _choice(body, "duration", limits.durations, limits.default_duration)
    if duration not in limits.durations_at(resolution):
        raise Reject(
            RejectKind.VALIDATION,
            f"the {resolution} quality option does not support {duration}-second videos",
            field_name="duration",
        )
    _string(body, "negative_prompt", limits.prompt_max_chars)
    if body.get("style") is not None:
        _choice(body, "style", limits.styles, None)
    _seed(body, limits)
    text, speaker = _tts(body, state)
    return PortraitFields(image_ref, str(prompt), resolution, duration, text, speaker)


async def portrait_image(
    state: EmulatorState, request: Request, ref: str | LargeText, limits: ImageLimits
) -> Path | None:
    """The image a create names: a data URI's bytes or a loopback URL's, checked to be an image the model takes.
    An https URL out of the emulator's reach is taken on trust (None), as the real API would fetch it."""
    if not ref.startswith("data:"):
        if isinstance(ref, LargeText):
            raise Reject(RejectKind.VALIDATION, f"image_url is not a URL or data URI ({len(ref)} characters)")
        parts = urlsplit(ref)
        if parts.scheme == "https" and not is_loopback(parts.hostname):
            return None
        if not is_loopback(parts.hostname):
            raise Reject(RejectKind.VALIDATION, "image_url must be an https URL or a data URI", field_name="image_url")
    image = await fetch_input(state, request, ref, state.files.new_path(".image"))
    problem = await run_in_threadpool(portrait.image_problem, image, limits)
    if problem:
        raise Reject(RejectKind.VALIDATION, problem, field_name="image_url")
    return image


async def _create_portrait(request: Request, state: EmulatorState, body: dict[str, Any]) -> Response:
    limits = load_image_limits(PROVIDER)
    fields = check_fields(body, limits, state)
    image = await portrait_image(state, request, fields.image_ref, limits)
    state.admit_create(PROVIDER)
    inputs = PortraitInput(image, fields.prompt, fields.resolution, fields.duration, fields.text, fields.speaker)
    job = state.jobs[PROVIDER].create(lambda n: f"{uuid.uuid4()}:{portrait.MODEL}", inputs, state.faults[PROVIDER])
    reply = {"id": job.job_id, "status": "queued", "meta": {"usage": usage(job)}}
    return create_reply(state, job, JSONResponse(reply))


def is_portrait(job: Job) -> bool:
    return isinstance(job.inputs, PortraitInput)


def usage(job: Job) -> dict[str, Any]:
    return {"tokens_used": portrait.TOKENS_PER_JOB} if is_portrait(job) else {"credits_used": CREDITS_PER_JOB}


async def status(request: Request, state: EmulatorState) -> Response:
    generation_id = request.query_params.get("generation_id")
    if not generation_id:
        raise Reject(RejectKind.VALIDATION, "generation_id is required")
    job = state.jobs[PROVIDER].get(generation_id)
    if job is None:
        raise Reject(RejectKind.NOT_FOUND, f"generation {generation_id} not found")
    seen = state.jobs[PROVIDER].observe(job, time.monotonic())
    reply: dict[str, Any] = {"id": job.job_id, "status": "", "video": None, "error": None}
    if not is_portrait(job):  # seed 003's status samples carry no meta; the lip-sync model's (seed 002) do
        reply["meta"] = {"usage": usage(job)}
    if seen.flapping or seen.phase is Phase.QUEUED:
        reply["status"] = "waiting" if seen.flapping else "queued"
    elif seen.phase is Phase.RUNNING:
        reply["status"] = "generating"
    elif seen.phase is Phase.SUCCEEDED:
        stored = state.result_file(job)
        url = state.files.url(origin(request), stored)
        if job.number % 2 and not is_portrait(job):
            reply.update(status="succeeded", video={"url": url})
        else:
            reply.update(
                status="completed",
                video={
                    "url": url,
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": job.output.size_bytes,
                },
            )
    else:
        name = "ModerationError" if seen.phase is Phase.MODERATED else "GenerationError"
        message = (
            "content moderation rejected the input"
            if seen.phase is Phase.MODERATED
            else (job.render_error or "generation failed")
        )
        reply.update(status="error", error={"name": name, "message": message})
    return JSONResponse(reply)


ROUTES = [
    Route(path, endpoint(DIALECT, handler), methods=[method])
    for path in ("/v2/video/generations", LEGACY_PATH)
    for method, handler in (("POST", create), ("GET", status))
]
