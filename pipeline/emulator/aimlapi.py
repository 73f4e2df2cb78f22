"""AI/ML API (`pixverse/lip-sync`), served under /aimlapi.

Errors are {message, path, requestId, statusCode, timestamp}. A finished job says "completed" or
"succeeded" (the docs show both; jobs alternate), and a flapping one says "waiting" once first.
Media come as data URIs or URLs; only loopback URLs can be fetched.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..voices import VOICE_NAMES
from .inputs import check_tts_text, large_json_object, media_inputs, string_field
from .jobs import JobInput, Phase
from .state import (
    Dialect, EmulatorState, Reject, RejectKind, bearer, create_reply, endpoint, gateway_error, origin,
)

PROVIDER = "aimlapi"
MODEL = "pixverse/lip-sync"
CREDITS_PER_JOB = 2_000_000

_STATUS_CODES = {
    RejectKind.VALIDATION: 400, RejectKind.BAD_TYPE: 400, RejectKind.NOT_FOUND: 404, RejectKind.AUTH: 401,
    RejectKind.BILLING: 403, RejectKind.RATE_LIMIT: 429, RejectKind.MODERATED: 400, RejectKind.ACCOUNT: 403,
}


def error_body(status: int, message: str, path: str) -> JSONResponse:
    return JSONResponse({
        "message": message, "path": path, "requestId": secrets.token_hex(8), "statusCode": status,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }, status_code=status)


def reject(rej: Reject, request: Request) -> Response:
    return error_body(_STATUS_CODES[rej.kind], rej.message, request.url.path.removeprefix("/aimlapi"))


def server_error(n: int) -> Response:
    if n % 3 == 0:
        return gateway_error()
    status = 500 if n % 2 else 503
    return error_body(status, "upstream provider error", "/v2/video/generations")


DIALECT = Dialect(PROVIDER, key_from=bearer, reject=reject, server_error=server_error)


async def create(request: Request, state: EmulatorState) -> Response:
    async with large_json_object(request, state) as body:     # a 50 MB video is a 67 MB data URI
        return await _create(request, state, body)


async def _create(request: Request, state: EmulatorState, body: dict) -> Response:
    if body.get("model") != MODEL:
        raise Reject(RejectKind.VALIDATION, f"model must be {MODEL!r}, got {body.get('model')!r}")
    video_url, audio_url = string_field(body, "video_url"), string_field(body, "audio_url")
    content, speaker = string_field(body, "lip_sync_tts_content"), string_field(body, "lip_sync_tts_speaker")
    if video_url is None:
        raise Reject(RejectKind.VALIDATION, "video_url is required")
    if (audio_url is not None) == (content is not None or speaker is not None):
        raise Reject(RejectKind.VALIDATION,
                     "use either audio_url or lip_sync_tts_speaker with lip_sync_tts_content, not both")
    if audio_url is None:
        _check_tts(state, content, speaker)
    video, audio = await media_inputs(state, request, PROVIDER, video_url, audio_url)
    state.admit_create(PROVIDER)
    job = state.jobs[PROVIDER].create(
        lambda n: secrets.token_urlsafe(16)[:21], JobInput(video, audio, content, speaker), state.faults[PROVIDER],
    )
    reply = {"id": job.job_id, "status": "queued", "meta": {"usage": {"credits_used": CREDITS_PER_JOB}}}
    return create_reply(state, PROVIDER, JSONResponse(reply))


def _check_tts(state: EmulatorState, content: str | None, speaker: str | None) -> None:
    if content is None or speaker is None:
        raise Reject(RejectKind.VALIDATION, "lip_sync_tts_content and lip_sync_tts_speaker go together")
    if speaker not in VOICE_NAMES:
        raise Reject(RejectKind.VALIDATION, f"lip_sync_tts_speaker must be one of {', '.join(VOICE_NAMES)}")
    check_tts_text(state, PROVIDER, content, "lip_sync_tts_content")


async def status(request: Request, state: EmulatorState) -> Response:
    generation_id = request.query_params.get("generation_id")
    if not generation_id:
        raise Reject(RejectKind.VALIDATION, "generation_id is required")
    job = state.jobs[PROVIDER].get(generation_id)
    if job is None:
        raise Reject(RejectKind.NOT_FOUND, f"generation {generation_id} not found")
    seen = state.jobs[PROVIDER].observe(job, time.monotonic())
    reply = {"id": job.job_id, "status": "", "video": None, "error": None,
             "meta": {"usage": {"credits_used": CREDITS_PER_JOB}}}
    if seen.flapping or seen.phase is Phase.QUEUED:
        reply["status"] = "waiting" if seen.flapping else "queued"
    elif seen.phase is Phase.RUNNING:
        reply["status"] = "generating"
    elif seen.phase is Phase.SUCCEEDED:
        stored = state.result_file(job)
        url = state.files.url(origin(request), stored)
        if job.number % 2:
            reply.update(status="succeeded", video={"url": url})
        else:
            reply.update(status="completed", video={
                "url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                "file_size": job.rendered.size_bytes,
            })
    else:
        name = "ModerationError" if seen.phase is Phase.MODERATED else "GenerationError"
        message = "content moderation rejected the input" if seen.phase is Phase.MODERATED else (
            job.render_error or "generation failed")
        reply.update(status="error", error={"name": name, "message": message})
    return JSONResponse(reply)


ROUTES = [
    Route("/v2/video/generations", endpoint(DIALECT, create), methods=["POST"]),
    Route("/v2/video/generations", endpoint(DIALECT, status), methods=["GET"]),
]
