"""fal.ai `fal-ai/pixverse/lipsync`: the queue under /fal/queue, storage under /fal/rest and /fal/cdn.

Submit answers status/response/cancel URLs under `fal-ai/pixverse/requests/{id}` (no `/lipsync`).
Validation errors are 422 {detail: [{loc, msg, type}]}; others {detail, error_type} with X-Fal-Error-Type.
A flapping job reports COMPLETED, then IN_PROGRESS once, then COMPLETED again.
`GET …/status/stream` answers server-sent events: the status object whenever it changes, a comment line
every 15 s of silence, and the connection closed after the final one (COMPLETED).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..voices import VOICE_NAMES
from .bodies import LargeText
from .callbacks import notify_when_final
from .inputs import (
    check_tts_text,
    large_json_object,
    media_inputs,
    read_json_object,
    small_text,
    spool_body,
    string_field,
    suffix_for,
)
from .jobs import FINAL_PHASES, Job, JobInput, Phase
from .state import (
    ConnectionDropped,
    Dialect,
    EmulatorState,
    Reject,
    RejectKind,
    create_reply,
    endpoint,
    gateway_error,
    origin,
)

PROVIDER = "fal"
APP = "fal-ai/pixverse"
TOKEN_TYPE = "Bearer"
# The docs' own minimal request sends only video_url: TTS then speaks something. We speak their example text.
DEFAULT_TEXT = "Hello, this is a test message."
STREAM_TICK_S = 0.05  # how often a status stream looks at its job
KEEPALIVE_S = 15.0


def key_from(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "key" else None


def infra_error(status: int, detail: str, error_type: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "error_type": error_type}, status_code=status, headers={"X-Fal-Error-Type": error_type}
    )


def validation_error(field: str, msg: str, kind: str = "value_error", status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", field], "msg": msg, "type": kind}]}, status_code=status)


def reject(rej: Reject, request: Request) -> Response:
    match rej.kind:
        case RejectKind.VALIDATION | RejectKind.BAD_TYPE:
            return validation_error(rej.field_name or "body", rej.message)
        case RejectKind.MODERATED:
            return validation_error(rej.field_name or "video_url", rej.message, "content_policy_violation")
        case RejectKind.NOT_FOUND:
            return JSONResponse({"detail": rej.message}, status_code=404)
        case RejectKind.AUTH:
            return JSONResponse({"detail": "No user found for Key ID and Secret"}, status_code=401)
        case RejectKind.BILLING:
            return JSONResponse(
                {
                    "detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
                    "fal.ai/dashboard/billing."
                },
                status_code=403,
            )
        case RejectKind.ACCOUNT:
            return JSONResponse({"detail": "User is locked. Reason: account under review."}, status_code=403)
        case _:
            return infra_error(429, "Too many concurrent requests", "rate_limited")


def server_error(n: int) -> Response:
    if n % 3 == 0:
        return gateway_error()
    return infra_error(500 if n % 2 else 503, "Internal server error", "internal_server_error")


DIALECT = Dialect(PROVIDER, key_from=key_from, reject=reject, server_error=server_error)


def _urls(request: Request, request_id: str) -> dict[str, str]:
    base = f"{origin(request)}/fal/queue/{APP}/requests/{request_id}"
    return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}


async def submit(request: Request, state: EmulatorState) -> Response:
    async with large_json_object(request, state) as body:  # media may come as data URIs
        return await _submit(request, state, body)


async def _submit(request: Request, state: EmulatorState, body: dict[str, Any]) -> Response:
    video_url, audio_url = string_field(body, "video_url"), string_field(body, "audio_url")
    text = string_field(body, "text")
    voice = string_field(body, "voice_id") or "Auto"
    if video_url is None:
        raise Reject(RejectKind.VALIDATION, "Field required", field_name="video_url")
    if voice not in VOICE_NAMES:
        raise Reject(
            RejectKind.VALIDATION, f"Input should be {', '.join(map(repr, VOICE_NAMES))}", field_name="voice_id"
        )
    if audio_url is None:
        text = text or DEFAULT_TEXT
        check_tts_text(state, PROVIDER, text, "text")
    video, audio = await media_inputs(state, request, PROVIDER, video_url, audio_url)
    state.admit_create(PROVIDER)
    job = state.jobs[PROVIDER].create(
        lambda n: str(uuid.uuid4()),
        JobInput(video, audio, None if audio else small_text(text), None if audio else voice),
        state.faults[PROVIDER],
    )
    if webhook := request.query_params.get("fal_webhook"):
        here = origin(request)
        notify_when_final(state, job, webhook, lambda phase: webhook_body(state, job, phase, here))
    position = state.jobs[PROVIDER].queue_position(job, time.monotonic())
    reply = {"request_id": job.job_id, **_urls(request, job.job_id), "queue_position": position}
    return create_reply(state, job, JSONResponse(reply))


def _job(request: Request, state: EmulatorState) -> Job:
    job = state.jobs[PROVIDER].get(request.path_params["request_id"])
    if job is None:
        raise Reject(RejectKind.NOT_FOUND, f"Request {request.path_params['request_id']} not found")
    return job


_LOGS = [{"message": "Generating lip-synced video", "level": "INFO", "source": "user", "timestamp": ""}]
_FAILURES = {
    Phase.FAILED: ("Generation failed", "generation_failed"),
    Phase.MODERATED: ("Content policy violation: the input was flagged", "content_policy_violation"),
    Phase.CANCELED: ("Request was cancelled", "request_cancelled"),
}


def status_reply(
    request: Request, state: EmulatorState, job: Job, logs: list[Any] | None
) -> tuple[dict[str, Any], int, bool]:
    """The status object of `job` now, its HTTP code, and whether it is final (COMPLETED)."""
    seen = state.jobs[PROVIDER].observe(job, time.monotonic())
    reply: dict[str, Any] = {"request_id": job.job_id, "response_url": _urls(request, job.job_id)["response_url"]}
    if seen.flapping:
        job.attrs["flap"] = "armed"  # this reply is true; the next one goes back to IN_PROGRESS once
    elif job.attrs.pop("flap", None) == "armed" or seen.phase is Phase.RUNNING:
        return {**reply, "status": "IN_PROGRESS", "logs": logs}, 202, False
    if seen.phase is Phase.QUEUED:
        position = state.jobs[PROVIDER].queue_position(job, time.monotonic())
        return {**reply, "status": "IN_QUEUE", "queue_position": position}, 202, False
    reply.update(status="COMPLETED", logs=logs, metrics={"inference_time": job.run_s})
    if seen.phase in _FAILURES:
        reply["error"], reply["error_type"] = _FAILURES[seen.phase]
    return reply, 200, True


async def status(request: Request, state: EmulatorState) -> Response:
    logs = _LOGS if request.query_params.get("logs") in ("1", "true") else None
    body, code, _ = status_reply(request, state, _job(request, state), logs)
    return JSONResponse(body, status_code=code)


async def status_stream(request: Request, state: EmulatorState) -> Response:
    job = _job(request, state)
    breaks = state.faults[PROVIDER].take("break_status_streams")
    return StreamingResponse(
        _status_events(request, state, job, breaks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


async def _status_events(request: Request, state: EmulatorState, job: Job, breaks: bool) -> AsyncIterator[str]:
    last, sent_at = None, time.monotonic()
    while True:
        body, _, final = status_reply(request, state, job, None)
        event = json.dumps(body)
        if event != last:
            yield f"data: {event}\n\n"
            last, sent_at = event, time.monotonic()
            if breaks:
                raise ConnectionDropped("emulator fault: status stream broken after its first event")
        if final:
            return
        if time.monotonic() - sent_at >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            sent_at = time.monotonic()
        await asyncio.sleep(STREAM_TICK_S)


def output(state: EmulatorState, job: Job, origin_url: str) -> dict[str, Any]:
    """The model's documented output for a finished job."""
    return {
        "video": {
            "url": state.files.url(origin_url, state.result_file(job)),
            "content_type": "video/mp4",
            "file_name": "output.mp4",
            "file_size": job.output.size_bytes,
        }
    }


def webhook_body(state: EmulatorState, job: Job, phase: Phase, origin_url: str) -> dict[str, Any]:
    if phase is Phase.SUCCEEDED:
        return {"request_id": job.job_id, "status": "OK", "payload": output(state, job, origin_url), "error": None}
    return {"request_id": job.job_id, "status": "ERROR", "payload": None, "error": _FAILURES[phase][0]}


async def response(request: Request, state: EmulatorState) -> Response:
    job = _job(request, state)
    phase = state.jobs[PROVIDER].observe(job, time.monotonic()).phase
    match phase:
        case Phase.QUEUED | Phase.RUNNING:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        case Phase.SUCCEEDED:
            return JSONResponse(output(state, job, origin(request)))
        case Phase.MODERATED:
            return validation_error("video_url", _FAILURES[phase][0], "content_policy_violation")
        case _:
            return infra_error(500 if phase is Phase.FAILED else 400, *_FAILURES[phase])


async def cancel(request: Request, state: EmulatorState) -> Response:
    job = _job(request, state)
    if state.jobs[PROVIDER].observe(job, time.monotonic()).phase in FINAL_PHASES:
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
    job.canceled = True
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


# ---- storage --------------------------------------------------------------------------------------------


async def auth_token(request: Request, state: EmulatorState) -> Response:
    token = secrets.token_urlsafe(24)
    with state.lock:
        state.upload_tokens.add(token)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    return JSONResponse(
        {"token": token, "token_type": TOKEN_TYPE, "base_url": f"{origin(request)}/fal/cdn", "expires_at": expires}
    )


async def _store_upload(request: Request, state: EmulatorState, content_type: str, name: str) -> str:
    limits = state.limits(PROVIDER)
    path = state.files.new_path(suffix_for(content_type) if suffix_for(content_type) != ".bin" else _suffix(name))
    await spool_body(request, path, max(limits.video_max_bytes, limits.audio_max_bytes))
    stored = state.files.add(PROVIDER, path, content_type or "application/octet-stream")
    return state.files.url(origin(request), stored)


def _suffix(name: str) -> str:
    return "." + name.rsplit(".", 1)[-1].lower()[:5] if "." in name else ".bin"


async def cdn_upload(request: Request, state: EmulatorState) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    with state.lock:
        known = token.strip() in state.upload_tokens
    if scheme != TOKEN_TYPE or not known:
        return JSONResponse({"detail": "Invalid upload token"}, status_code=401)
    content_type = request.headers.get("content-type", "application/octet-stream")
    url = await _store_upload(request, state, content_type, request.headers.get("x-fal-file-name", "upload.bin"))
    return JSONResponse({"access_url": url})


async def upload_initiate(request: Request, state: EmulatorState) -> Response:
    body = await read_json_object(request)
    file_name, content_type = string_field(body, "file_name"), string_field(body, "content_type")
    if file_name is None or content_type is None:
        raise Reject(RejectKind.VALIDATION, "file_name and content_type are required", field_name="file_name")
    if isinstance(file_name, LargeText) or isinstance(content_type, LargeText):
        raise Reject(RejectKind.VALIDATION, "file_name and content_type must be short strings", field_name="file_name")
    token = secrets.token_urlsafe(16)
    with state.lock:
        state.pending_uploads[token] = (file_name, content_type)
    upload_url = f"{origin(request)}/fal/cdn/upload/{token}"
    return JSONResponse({"upload_url": upload_url, "file_url": f"{origin(request)}/files/{token}{_suffix(file_name)}"})


async def signed_put(request: Request, state: EmulatorState) -> Response:
    """The pre-signed URL of the older initiate flow: no auth, the file keeps the URL promised earlier."""
    token = request.path_params["token"]
    with state.lock:
        pending = state.pending_uploads.pop(token, None)
    if pending is None:
        return Response("unknown upload", status_code=404, media_type="text/plain")
    file_name, content_type = pending
    limits = state.limits(PROVIDER)
    path = state.files.root / f"{token}{_suffix(file_name)}"
    state.files.root.mkdir(parents=True, exist_ok=True)
    await spool_body(request, path, max(limits.video_max_bytes, limits.audio_max_bytes))
    state.files.add(PROVIDER, path, content_type, token=token)
    return Response(status_code=200)


QUEUE_ROUTES = [
    Route(f"/{APP}/lipsync", endpoint(DIALECT, submit), methods=["POST"]),
    Route(f"/{APP}/requests/{{request_id}}/status", endpoint(DIALECT, status), methods=["GET"]),
    Route(f"/{APP}/requests/{{request_id}}/status/stream", endpoint(DIALECT, status_stream), methods=["GET"]),
    Route(f"/{APP}/requests/{{request_id}}/cancel", endpoint(DIALECT, cancel), methods=["PUT"]),
    Route(f"/{APP}/requests/{{request_id}}", endpoint(DIALECT, response), methods=["GET"]),
]
STORAGE_ROUTES = [
    Route("/storage/auth/token", endpoint(DIALECT, auth_token), methods=["POST"]),
    Route("/storage/upload/initiate", endpoint(DIALECT, upload_initiate), methods=["POST"]),
]
CDN_ROUTES = [
    Route("/files/upload", endpoint(DIALECT, cdn_upload, authenticated=False), methods=["POST"]),
    Route("/upload/{token}", endpoint(DIALECT, signed_put, authenticated=False), methods=["PUT"]),
]
