"""Getting what a request carries: bodies (small JSON, huge JSON, raw uploads) and media inputs named by
URL or data URI, checked against the provider's limits. Only loopback URLs can be fetched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .bodies import BodyError, LargeText, decode_data_uri, parse_object
from .media import MediaInfo, inspect_media, media_problems
from .state import EmulatorState, Reject, RejectKind

_CHUNK = 1 << 20

_MIME_SUFFIX = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
}
CONTAINER_MIME = {"mp4": "video/mp4", "mov": "video/quicktime", "mp3": "audio/mpeg", "wav": "audio/wav"}


def suffix_for(content_type: str) -> str:
    return _MIME_SUFFIX.get(content_type.split(";", maxsplit=1)[0].strip().lower(), ".bin")


async def spool_body(request: Request, dest: Path, max_bytes: int) -> int:
    """Stream the request body into `dest`; Reject when it exceeds `max_bytes`."""
    size = 0
    with open(dest, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise Reject(RejectKind.VALIDATION, f"file larger than {max_bytes} bytes")
            f.write(chunk)
    return size


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


async def fetch_input(state: EmulatorState, request: Request, ref: str | LargeText, dest: Path) -> Path:
    """Get a media input named by URL or data URI into `dest`. Only loopback URLs can be reached."""
    if ref.startswith("data:"):
        try:
            await run_in_threadpool(decode_data_uri, ref, dest)
        except BodyError as exc:
            raise Reject(RejectKind.VALIDATION, str(exc)) from None
        return dest
    if isinstance(ref, LargeText):
        raise Reject(RejectKind.VALIDATION, f"not a URL or data URI ({len(ref)} characters)")
    parts = urlsplit(ref)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Reject(RejectKind.VALIDATION, f"not a URL or data URI: {ref[:80]!r}")
    if parts.netloc == request.url.netloc and parts.path.startswith("/files/"):
        stored = state.files.get(parts.path.rsplit("/", 1)[-1])
        if stored is None:
            raise Reject(RejectKind.VALIDATION, f"could not download {ref}: 404")
        return stored.path
    if not is_loopback(parts.hostname):
        raise Reject(RejectKind.VALIDATION, f"could not download {ref}: host unreachable from the emulator")
    try:
        async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", ref) as reply:
            if reply.status_code != 200:
                raise Reject(RejectKind.VALIDATION, f"could not download {ref}: HTTP {reply.status_code}")
            with open(dest, "wb") as f:
                async for chunk in reply.aiter_bytes(_CHUNK):
                    f.write(chunk)
    except httpx.HTTPError as exc:
        raise Reject(RejectKind.VALIDATION, f"could not download {ref}: {type(exc).__name__}") from None
    return dest


async def check_media(state: EmulatorState, provider: str, path: Path, role: str | None) -> MediaInfo:
    """Inspect a media input off the event loop and Reject it if it breaks the provider's limits.

    `role` None accepts either kind (an upload endpoint that takes both).
    """
    info = await run_in_threadpool(inspect_media, path)
    problems = media_problems(info, state.limits(provider), role or info.kind or "video")
    if problems:
        raise Reject(RejectKind.VALIDATION, "; ".join(problems), field_name=role)
    return info


@contextlib.asynccontextmanager
async def large_json_object(
    request: Request, state: EmulatorState, max_bytes: int = 200_000_000
) -> AsyncIterator[dict[str, Any]]:
    """The request's JSON object, read without holding it in memory: long strings are `LargeText` files,
    removed when the block ends (decoded media live on in the file store)."""
    scratch = state.files.new_path(".body")
    scratch.mkdir()
    try:
        await spool_body(request, scratch / "body.json", max_bytes)
        try:
            body = await run_in_threadpool(parse_object, scratch / "body.json", scratch)
        except BodyError as exc:
            raise Reject(RejectKind.BAD_TYPE, f"request body is not a JSON object: {exc}") from None
        yield body
    finally:
        await run_in_threadpool(shutil.rmtree, scratch, True)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; Reject(BAD_TYPE) when it is not one."""
    body = await request.body()
    try:
        doc = json.loads(body)
    except ValueError:
        raise Reject(RejectKind.BAD_TYPE, "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise Reject(RejectKind.BAD_TYPE, "request body must be a JSON object")
    return doc


def check_tts_text(state: EmulatorState, provider: str, text: str | LargeText, field_name: str) -> None:
    """TTS text must be 1..tts_max_chars characters (the model's limit; providers count characters)."""
    limit = state.limits(provider).tts_max_chars
    if len(text) > limit or not str(text).strip():
        raise Reject(
            RejectKind.VALIDATION, f"{field_name} must be 1..{limit} characters, got {len(text)}", field_name=field_name
        )


def small_text(value: str | LargeText | None) -> str | None:
    """A text field that check_tts_text has passed: never a LargeText, whose length (past the body parser's
    spill size) is far over any model's character limit."""
    assert not isinstance(value, LargeText)
    return value


def string_field(body: dict[str, Any], name: str) -> str | LargeText | None:
    """A string field of a JSON body (None when absent or empty); Reject(BAD_TYPE) for another type."""
    value = body.get(name)
    if value is not None and not isinstance(value, (str, LargeText)):
        raise Reject(RejectKind.BAD_TYPE, f"{name} must be a string, got {type(value).__name__}", field_name=name)
    return value if given(value) else None


def given(value: object) -> bool:
    """Whether a field was really sent: null, "" and 0 are a Go server's 'unset'."""
    zero = isinstance(value, int) and not isinstance(value, bool) and value == 0
    return value is not None and value != "" and not zero


async def media_inputs(
    state: EmulatorState, request: Request, provider: str, video_ref: str | LargeText, audio_ref: str | LargeText | None
) -> tuple[Path, Path | None]:
    """Fetch and check a create's video and optional audio, each given as URL or data URI."""
    video = await fetch_input(state, request, video_ref, state.files.new_path(".video"))
    await check_media(state, provider, video, "video")
    if audio_ref is None:
        return video, None
    audio = await fetch_input(state, request, audio_ref, state.files.new_path(".audio"))
    await check_media(state, provider, audio, "audio")
    return video, audio
