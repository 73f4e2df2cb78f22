"""PixVerse Platform (enterprise OpenAPI), served under /pixverse.

Every reply is the envelope {"ErrCode", "ErrMsg", "Resp"} with HTTP 200, even for errors; injected server
errors answer 5xx, every other one with the lower-case keys some real 500s use. Every request needs
`API-KEY` and a fresh uuid `Ai-trace-id`: a missing, malformed or REUSED trace id is refused with ErrCode
400033 (the docs say reuse leaves jobs stuck; refusing makes the mistake visible at once). IDs are JSON
numbers above 2^53 and odd, so a client that round-trips them through a float breaks.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..voices import VOICE_IDS
from .bodies import LargeText
from .inputs import (
    CONTAINER_MIME,
    check_media,
    check_tts_text,
    fetch_input,
    given,
    read_json_object,
    small_text,
    string_field,
    suffix_for,
)
from .jobs import JobInput, Phase
from .state import Dialect, EmulatorState, Reject, RejectKind, create_reply, endpoint, gateway_error, origin

PROVIDER = "pixverse"
BIG = 1 << 53

_CODES = {
    RejectKind.VALIDATION: (400017, "Invalid parameter"),
    RejectKind.BAD_TYPE: (400013, "Invalid binding request: incorrect parameter type or value"),
    RejectKind.NOT_FOUND: (400017, "Invalid parameter"),
    RejectKind.AUTH: (10003, "Invalid API key"),
    RejectKind.BILLING: (500090, "Insufficient balance"),
    RejectKind.RATE_LIMIT: (500044, "Reached the limit for concurrent generations."),
    RejectKind.MODERATED: (500054, "Content moderation failed"),
    RejectKind.TRACE_REUSED: (400033, "Invalid Ai-trace-id"),
    RejectKind.ACCOUNT: (10001, "Account abnormal"),
}
_STATUS = {
    Phase.QUEUED: 5,
    Phase.RUNNING: 5,
    Phase.SUCCEEDED: 1,
    Phase.MODERATED: 7,
    Phase.FAILED: 8,
    Phase.CANCELED: 6,
}
TTS_SPEAKERS = [{"speaker_id": sid, "name": name} for name, sid in VOICE_IDS.items()]


def envelope(resp: object, code: int = 0, msg: str = "success") -> JSONResponse:
    return JSONResponse({"ErrCode": code, "ErrMsg": msg, "Resp": resp})


def reject(rej: Reject, request: Request) -> Response:
    code, text = _CODES[rej.kind]
    return envelope({}, code, f"{text}: {rej.message}")


def server_error(n: int) -> Response:
    if n % 3 == 0:
        return gateway_error()
    if n % 2:
        return JSONResponse({"err_code": 500, "err_msg": "internal server error", "resp": None}, status_code=500)
    return JSONResponse({"ErrCode": 500, "ErrMsg": "internal server error", "Resp": None}, status_code=500)


def big_id(n: int) -> int:
    """Odd and above 2^53: not representable as a float."""
    return BIG + 2 * n + 1


def check_trace_id(request: Request, state: EmulatorState) -> None:
    trace = request.headers.get("ai-trace-id", "").strip()
    try:
        uuid.UUID(trace)
    except ValueError:
        raise Reject(RejectKind.TRACE_REUSED, f"Ai-trace-id {trace[:40]!r} is not a uuid") from None
    with state.lock:
        if trace in state.trace_ids:
            raise Reject(RejectKind.TRACE_REUSED, f"Ai-trace-id {trace} was already used")
        state.trace_ids.add(trace)


DIALECT = Dialect(
    PROVIDER,
    key_from=lambda r: r.headers.get("api-key"),
    reject=reject,
    server_error=server_error,
    precheck=check_trace_id,
)


async def upload(request: Request, state: EmulatorState) -> Response:
    async with request.form() as form:  # closes the upload's spooled file
        file, file_url = form.get("file"), form.get("file_url")
        if (file is None or isinstance(file, str)) == (not file_url):
            raise Reject(RejectKind.VALIDATION, "send exactly one of multipart field 'file' or form field 'file_url'")
        if file_url:
            path = await fetch_input(state, request, str(file_url), state.files.new_path())
        else:
            assert isinstance(file, UploadFile)  # checked above: exactly one of file and file_url
            path = state.files.new_path(suffix_for(file.content_type or ""))
            with open(path, "wb") as out:
                while chunk := await file.read(1 << 20):
                    out.write(chunk)
    info = await check_media(state, PROVIDER, path, None)
    stored = state.files.add(PROVIDER, path, CONTAINER_MIME.get(info.container, "application/octet-stream"), info=info)
    media_id = big_id(state.files.next_number())
    state.files.register(PROVIDER, str(media_id), stored)
    return envelope({"media_id": media_id, "media_type": info.kind, "url": state.files.url(origin(request), stored)})


async def tts_list(request: Request, state: EmulatorState) -> Response:
    try:
        page_num = int(request.query_params.get("page_num", "1"))
        page_size = int(request.query_params.get("page_size", "20"))
    except ValueError:
        raise Reject(RejectKind.BAD_TYPE, "page_num and page_size must be integers") from None
    if page_num < 1 or page_size < 1:
        raise Reject(RejectKind.VALIDATION, "page_num and page_size must be positive")
    start = (page_num - 1) * page_size
    return envelope({"total": len(TTS_SPEAKERS), "data": TTS_SPEAKERS[start : start + page_size]})


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Reject(RejectKind.BAD_TYPE, f"{name} must be an integer, got {type(value).__name__}")
    return value or None


def _source_video(state: EmulatorState, source_video_id: int | None, video_media_id: int | None) -> Path:
    if video_media_id is not None:
        return state.files.uploaded(PROVIDER, str(video_media_id), "video", "video_media_id")
    return state.finished_video(PROVIDER, str(source_video_id), "source_video_id")


async def generate(request: Request, state: EmulatorState) -> Response:
    body = await read_json_object(request)
    source_video_id, video_media_id = _int_field(body, "source_video_id"), _int_field(body, "video_media_id")
    audio_media_id = _int_field(body, "audio_media_id")
    speaker, content = string_field(body, "lip_sync_tts_speaker_id"), string_field(body, "lip_sync_tts_content")
    if given(source_video_id) == given(video_media_id):
        raise Reject(RejectKind.VALIDATION, "choose exactly one of source_video_id or video_media_id")
    tts = speaker is not None or content is not None
    if given(audio_media_id) == tts:
        raise Reject(
            RejectKind.VALIDATION,
            "choose exactly one of audio_media_id or lip_sync_tts_speaker_id + lip_sync_tts_content",
        )
    video = _source_video(state, source_video_id, video_media_id)
    audio = None
    if audio_media_id is not None:
        audio = state.files.uploaded(PROVIDER, str(audio_media_id), "audio", "audio_media_id")
    else:
        _check_tts(speaker, content, state)
    state.admit_create(PROVIDER)
    job = state.jobs[PROVIDER].create(
        lambda n: big_id(state.files.next_number()),
        JobInput(video=video, audio=audio, text=small_text(content), speaker=small_text(speaker)),
        state.faults[PROVIDER],
    )
    return create_reply(state, job, envelope({"video_id": int(job.job_id)}))


def _check_tts(speaker: str | LargeText | None, content: str | LargeText | None, state: EmulatorState) -> None:
    if speaker is None or content is None:
        raise Reject(RejectKind.VALIDATION, "lip_sync_tts_speaker_id and lip_sync_tts_content go together")
    if speaker not in VOICE_IDS.values():
        raise Reject(RejectKind.VALIDATION, f"unknown lip_sync_tts_speaker_id {speaker!r}")
    check_tts_text(state, PROVIDER, content, "lip_sync_tts_content")


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


async def result(request: Request, state: EmulatorState) -> Response:
    raw = request.path_params["video_id"]
    if not raw.isdigit():
        raise Reject(RejectKind.BAD_TYPE, f"video_id {raw!r} is not an integer")
    job = state.jobs[PROVIDER].get(str(int(raw)))
    if job is None:
        raise Reject(RejectKind.NOT_FOUND, f"video {raw} not found")
    seen = state.jobs[PROVIDER].observe(job, time.monotonic())
    rendered = job.rendered if seen.phase is Phase.SUCCEEDED else None
    resp = {
        "id": int(job.job_id),
        "status": _STATUS[seen.phase],
        "url": "",
        "outputWidth": 0,
        "outputHeight": 0,
        "size": 0,
        "create_time": _stamp(job.created_wall),
        "modify_time": _stamp(time.time()),
        "prompt": "",
        "negative_prompt": "",
        "resolution_ratio": 0,
        "seed": 0,
        "style": "",
    }
    if seen.flapping:
        resp["status"] = 1  # "success" before the file exists: url empty, size zero
    elif rendered is not None:
        stored = state.result_file(job)
        resp.update(
            url=state.files.url(origin(request), stored),
            outputWidth=rendered.width,
            outputHeight=rendered.height,
            size=rendered.size_bytes,
            resolution_ratio=min(rendered.width, rendered.height),
        )
    return envelope(resp)


ROUTES = [
    Route("/openapi/v2/media/upload", endpoint(DIALECT, upload), methods=["POST"]),
    Route("/openapi/v2/video/lip_sync/tts_list", endpoint(DIALECT, tts_list), methods=["GET"]),
    Route("/openapi/v2/video/lip_sync/generate", endpoint(DIALECT, generate), methods=["POST"]),
    Route("/openapi/v2/video/result/{video_id}", endpoint(DIALECT, result), methods=["GET"]),
]
