"""useapi.net PixVerse v2, served under /useapi.

Errors are {error, code}. Uploads are raw bytes with the file's Content-Type. The docs list audio_path
and prompt as optional without calling them exclusive (their own sample body has both): one is needed,
and audio_path wins when both come. A job answers 404 until it is final. An account runs at most
`maxJobs` jobs at once (the create's own value, else the account's): creates beyond that get 429 and are
not accepted. Voice values carry stray whitespace, as real data does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..voices import VOICE_IDS
from .callbacks import notify_when_final
from .inputs import check_media, given, read_json_object, spool_body, suffix_for
from .jobs import Job, JobInput, Phase, phase_at
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

PROVIDER = "useapi"
USER_ID = "77001"
DEFAULT_EMAIL = "emulator@example.com"
FIELD_MAX = 1024

_REJECTS = {
    RejectKind.VALIDATION: (400, None),
    RejectKind.BAD_TYPE: (400, None),
    RejectKind.NOT_FOUND: (404, None),
    RejectKind.AUTH: (401, "Unauthorized"),
    RejectKind.BILLING: (412, "All Credits have been used up. Please upgrade your membership or purchase credits."),
    RejectKind.RATE_LIMIT: (429, "Reached the limit for concurrent generations."),
    RejectKind.MODERATED: (422, "Your prompt has triggered our AI moderator, please re-enter your prompt"),
    RejectKind.ACCOUNT: (
        596,
        "Your PixVerse account has pending error. Please address this issue at "
        "https://useapi.net/docs/api-pixverse-v2/post-pixverse-accounts-email before making "
        "any new API calls.",
    ),
}
_UPLOAD_TYPES = {
    "video/mp4": "video",
    "video/quicktime": "video",
    "audio/mpeg": "audio",
    "audio/mp3": "audio",
    "audio/wav": "audio",
    "audio/x-wav": "audio",
    "audio/wave": "audio",
    "audio/vnd.wave": "audio",
}
_STATUS = {
    Phase.SUCCEEDED: (1, "COMPLETED"),
    Phase.FAILED: (8, "FAILED"),
    Phase.MODERATED: (7, "MODERATED"),
    Phase.CANCELED: (8, "FAILED"),
}
# Stray whitespace on a few values, as the real list has.
VOICES = [
    {
        "speaker_id": f" {sid}" if sid in ("3", "12") else sid,
        "url": f"https://media.pixverse.ai/tts/{sid}.mp3",
        "display_name": f"{name} " if name in ("Ava", "Jack") else name,
    }
    for name, sid in VOICE_IDS.items()
]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status)


def reject(rej: Reject, request: Request) -> Response:
    status, fixed = _REJECTS[rej.kind]
    return error(status, fixed or rej.message)


def server_error(n: int) -> Response:
    if n % 3 == 0:
        return gateway_error()
    return error(500 if n % 2 else 503, "PixVerse API is temporarily unavailable")


DIALECT = Dialect(PROVIDER, key_from=bearer, reject=reject, server_error=server_error)


async def upload(request: Request, state: EmulatorState) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    role = _UPLOAD_TYPES.get(content_type)
    if role is None:
        raise Reject(
            RejectKind.VALIDATION,
            f"Content-Type {content_type or '(missing)'} not supported; use one of {', '.join(_UPLOAD_TYPES)}",
        )
    limits = state.limits(PROVIDER)
    path = state.files.new_path(suffix_for(content_type))
    size = await spool_body(request, path, max(limits.video_max_bytes, limits.audio_max_bytes))
    if size == 0:
        raise Reject(RejectKind.VALIDATION, "empty body: send the file's bytes")
    info = await check_media(state, PROVIDER, path, role)
    stored = state.files.add(PROVIDER, path, content_type, info=info)
    handle = f"upload/{USER_ID}/{stored.token}{path.suffix}"
    state.files.register(PROVIDER, handle, stored)
    return JSONResponse({"path": handle, "url": state.files.url(origin(request), stored)})


async def voices(request: Request, state: EmulatorState) -> Response:
    return JSONResponse({"tts_list": VOICES})


async def _lipsync_fields(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:  # closes any uploaded file's spooled copy
            return {k: v for k, v in form.items() if isinstance(v, str)}
    return await read_json_object(request)


def _text(body: dict[str, Any], name: str, limit: int = FIELD_MAX) -> str | None:
    value = body.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is not None and not isinstance(value, str):
        raise Reject(RejectKind.BAD_TYPE, f"{name} must be a string")
    if value is not None and len(value) > limit:
        raise Reject(RejectKind.VALIDATION, f"{name} is {len(value)} characters, maximum is {limit}")
    return value if given(value) else None


def _max_jobs(body: dict[str, Any], default: int) -> int:
    value = body.get("maxJobs")
    if value is None or value == "":
        return default
    try:
        max_jobs = int(value)
    except (TypeError, ValueError):
        raise Reject(RejectKind.VALIDATION, "maxJobs must be an integer 1…8") from None
    if not 1 <= max_jobs <= 8 or isinstance(value, (bool, float)):
        raise Reject(RejectKind.VALIDATION, f"maxJobs {value!r} out of range 1…8")
    return max_jobs


def _video(state: EmulatorState, video_id: str | None, video_path: str | None) -> Path:
    if (video_id is None) == (video_path is None):
        raise Reject(RejectKind.VALIDATION, "video_id or video_path is required (one of them)")
    if video_path is not None:
        return state.files.uploaded(PROVIDER, video_path, "video", "video_path")
    assert video_id is not None  # one of the two, checked above
    return state.finished_video(PROVIDER, video_id, "video_id")


def _speaker(speaker_id: str | None) -> str:
    wanted = (speaker_id or "Auto").strip()
    if wanted not in VOICE_IDS.values():
        raise Reject(RejectKind.VALIDATION, f"speaker_id {speaker_id!r} not found, see GET /videos/voices")
    return wanted


async def lipsync(request: Request, state: EmulatorState) -> Response:
    body = await _lipsync_fields(request)
    limits = state.limits(PROVIDER)
    video = _video(state, _text(body, "video_id"), _text(body, "video_path"))
    audio_path, prompt = _text(body, "audio_path"), _text(body, "prompt", limits.tts_max_chars)
    speaker_id = _text(body, "speaker_id")
    reply_url = _text(body, "replyUrl")
    _text(body, "replyRef")  # only its length is checked
    max_jobs = _max_jobs(body, state.settings.useapi_max_jobs)
    if audio_path is None and prompt is None:
        raise Reject(RejectKind.VALIDATION, "send audio_path, or prompt with speaker_id")
    audio, speaker = None, None
    if audio_path is not None:
        audio = state.files.uploaded(PROVIDER, audio_path, "audio", "audio_path")
    else:
        speaker = _speaker(speaker_id)
        if state.faults[PROVIDER].moderate:
            raise Reject(RejectKind.MODERATED, "prompt moderated")
    email = str(body.get("email") or request.query_params.get("email") or DEFAULT_EMAIL)
    if state.jobs[PROVIDER].running(time.monotonic(), lambda job: job.attrs.get("email") == email) >= max_jobs:
        return error(
            429,
            f"Account {email} is busy executing {max_jobs} tasks. "
            "All configured accounts are running at maximum capacity.",
        )
    state.admit_create(PROVIDER)
    job = state.jobs[PROVIDER].create(
        lambda n: f"user:{USER_ID}-pixverse:{email}-video:{900000 + n}",
        JobInput(video, audio, None if audio else prompt, speaker),
        state.faults[PROVIDER],
    )
    job.attrs.update(email=email, replyRef=str(body.get("replyRef") or ""), prompt=prompt or "")
    if reply_url:
        here = origin(request)
        notify_when_final(state, job, reply_url, lambda phase: video_object(state, job, phase, here))
    return create_reply(state, job, JSONResponse({"video_id": job.job_id}))


def video_object(
    state: EmulatorState, job: Job, phase: Phase, origin_url: str, *, flapping: bool = False
) -> dict[str, Any]:
    """The documented video object; non-final only while flapping (a COMPLETED without url)."""
    reply = {
        "video_id": job.job_id,
        "prompt": job.attrs.get("prompt", ""),
        "replyRef": job.attrs.get("replyRef", ""),
        "created": job.created_wall,
        "url": None,
        "output_width": None,
        "output_height": None,
    }
    if flapping:
        return reply | {"video_status": 1, "video_status_name": "COMPLETED", "video_status_final": False}
    code, name = _STATUS[phase]
    reply.update(video_status=code, video_status_name=name, video_status_final=True)
    if phase is Phase.SUCCEEDED:
        rendered = job.output
        reply.update(
            url=state.files.url(origin_url, state.result_file(job)),
            output_width=rendered.width,
            output_height=rendered.height,
        )
    return reply


async def videos(request: Request, state: EmulatorState) -> Response:
    """The account's videos, newest first, as "the response array" the docs say to look a video up in."""
    here, now = origin(request), time.monotonic()
    email = request.query_params.get("email") or DEFAULT_EMAIL
    table = state.jobs[PROVIDER]
    listed = [job for job in reversed(table.all()) if job.attrs.get("email", DEFAULT_EMAIL) == email]
    return JSONResponse([_listed_video(state, job, phase_at(job, now), here) for job in listed])


def _listed_video(state: EmulatorState, job: Job, phase: Phase, origin_url: str) -> dict[str, Any]:
    if phase in _STATUS:
        return video_object(state, job, phase, origin_url)
    return {
        "video_id": job.job_id,
        "prompt": job.attrs.get("prompt", ""),
        "replyRef": job.attrs.get("replyRef", ""),
        "created": job.created_wall,
        "url": None,
        "video_status": 5,
        "video_status_name": "GENERATING",
        "video_status_final": False,
    }


async def video(request: Request, state: EmulatorState) -> Response:
    video_id = request.path_params["video_id"]
    job = state.jobs[PROVIDER].get(video_id)
    if job is None:
        raise Reject(RejectKind.NOT_FOUND, f"video {video_id} not found")
    seen = state.jobs[PROVIDER].observe(job, time.monotonic())
    if seen.phase not in _STATUS and not seen.flapping:
        raise Reject(RejectKind.NOT_FOUND, f"video {video_id} is still processing")
    return JSONResponse(video_object(state, job, seen.phase, origin(request), flapping=seen.flapping))


ROUTES = [
    Route("/v2/pixverse/files", endpoint(DIALECT, upload), methods=["POST"]),
    Route("/v2/pixverse/videos/voices", endpoint(DIALECT, voices), methods=["GET"]),
    Route("/v2/pixverse/videos/lipsync", endpoint(DIALECT, lipsync), methods=["POST"]),
    Route("/v2/pixverse/videos", endpoint(DIALECT, videos), methods=["GET"]),
    Route("/v2/pixverse/videos/{video_id}", endpoint(DIALECT, video), methods=["GET"]),
]
