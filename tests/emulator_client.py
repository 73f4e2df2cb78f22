"""A minimal client of each emulated protocol, written from the provider docs, for the emulator's own tests.

    submit(emu, provider, video, audio=None, text=None, speaker=None) -> Submitted   (uploads, then creates)
    poll_until_final(emu, sub, timeout=..)                            -> the last status reply (parsed JSON)
    result_url(provider, final) / status_word(provider, reply)        read a status reply
    headers(emu, provider)                                            auth headers (fresh trace id for PixVerse)
Not the project's provider adapters: those are tested against this emulator, so this must stay independent.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pipeline.voices import VOICE_IDS

MIME = {".mp4": "video/mp4", ".mov": "video/quicktime", ".wav": "audio/wav", ".mp3": "audio/mpeg"}


def mime(path: Path) -> str:
    return MIME.get(path.suffix, "application/octet-stream")


def headers(emu, provider: str) -> dict[str, str]:
    key = emu.env()[
        {"pixverse": "PIXVERSE_API_KEY", "aimlapi": "AIMLAPI_KEY", "useapi": "USEAPI_TOKEN", "fal": "FAL_KEY"}[provider]
    ]
    if provider == "pixverse":
        return {"API-KEY": key, "Ai-trace-id": str(uuid.uuid4())}
    if provider == "fal":
        return {"Authorization": f"Key {key}"}
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Submitted:
    provider: str
    reply: httpx.Response
    job_id: str | int | None = None
    urls: dict[str, str] = field(default_factory=dict)


def data_uri(path: Path) -> str:
    return f"data:{mime(path)};base64," + base64.b64encode(path.read_bytes()).decode()


def upload(emu, provider: str, path: Path) -> str | int:
    """Upload one file the provider's way; returns its handle (media_id, path or URL)."""
    with httpx.Client(timeout=30) as client:
        if provider == "pixverse":
            with open(path, "rb") as f:
                r = client.post(
                    f"{emu.base_urls['pixverse']}/openapi/v2/media/upload",
                    headers=headers(emu, provider),
                    files={"file": (path.name, f, mime(path))},
                )
            return r.json()["Resp"]["media_id"]
        if provider == "useapi":
            r = client.post(
                f"{emu.base_urls['useapi']}/v2/pixverse/files",
                content=path.read_bytes(),
                headers={**headers(emu, provider), "Content-Type": mime(path)},
            )
            return r.json()["path"]
        if provider == "fal":
            token = client.post(
                f"{emu.base_urls['fal_storage']}/storage/auth/token?storage_type=fal-cdn-v3",
                headers=headers(emu, provider),
                json={},
            ).json()
            r = client.post(
                f"{token['base_url']}/files/upload",
                content=path.read_bytes(),
                headers={
                    "Authorization": f"{token['token_type']} {token['token']}",
                    "Content-Type": mime(path),
                    "X-Fal-File-Name": path.name,
                },
            )
            return r.json()["access_url"]
        return data_uri(path)


def create_body(provider: str, video, audio, text: str | None, speaker: str | None) -> dict:
    if provider == "pixverse":
        body = {"video_media_id": video}
        return body | (
            {"audio_media_id": audio}
            if audio is not None
            else {"lip_sync_tts_speaker_id": VOICE_IDS[speaker], "lip_sync_tts_content": text}
        )
    if provider == "aimlapi":
        body = {"model": "pixverse/lip-sync", "video_url": video}
        return body | (
            {"audio_url": audio}
            if audio is not None
            else {"lip_sync_tts_content": text, "lip_sync_tts_speaker": speaker}
        )
    if provider == "useapi":
        body = {"video_path": video}
        if audio is not None:
            return body | {"audio_path": audio}
        return body | {"prompt": text, "speaker_id": VOICE_IDS[speaker]}
    body = {"video_url": video}
    return body | ({"audio_url": audio} if audio is not None else {"text": text, "voice_id": speaker})


CREATE_PATHS = {
    "pixverse": ("pixverse", "/openapi/v2/video/lip_sync/generate"),
    "aimlapi": ("aimlapi", "/v2/video/generations"),
    "useapi": ("useapi", "/v2/pixverse/videos/lipsync"),
    "fal": ("fal_queue", "/fal-ai/pixverse/lipsync"),
}


def create(emu, provider: str, body: dict) -> Submitted:
    base, path = CREATE_PATHS[provider]
    r = httpx.post(emu.base_urls[base] + path, json=body, headers=headers(emu, provider), timeout=30)
    sub = Submitted(provider, r)
    if r.status_code == 200 and provider == "pixverse" and r.json()["ErrCode"] == 0:
        sub.job_id = r.json()["Resp"]["video_id"]
    elif r.status_code == 200 and provider != "pixverse":
        doc = r.json()
        sub.job_id = doc.get("id") or doc.get("video_id") or doc.get("request_id")
        sub.urls = {k: v for k, v in doc.items() if k.endswith("_url")}
    return sub


def submit(
    emu, provider: str, video: Path, audio: Path | None = None, text: str | None = None, speaker: str | None = "Emily"
) -> Submitted:
    video_ref = upload(emu, provider, video)
    audio_ref = upload(emu, provider, audio) if audio is not None else None
    return create(emu, provider, create_body(provider, video_ref, audio_ref, text, speaker))


def poll_once(emu, sub: Submitted, *, logs: bool = False) -> httpx.Response:
    h = headers(emu, sub.provider)
    if sub.provider == "pixverse":
        return httpx.get(f"{emu.base_urls['pixverse']}/openapi/v2/video/result/{sub.job_id}", headers=h)
    if sub.provider == "aimlapi":
        return httpx.get(
            f"{emu.base_urls['aimlapi']}/v2/video/generations", params={"generation_id": sub.job_id}, headers=h
        )
    if sub.provider == "useapi":
        return httpx.get(f"{emu.base_urls['useapi']}/v2/pixverse/videos/{sub.job_id}", headers=h)
    return httpx.get(sub.urls["status_url"], params={"logs": 1} if logs else None, headers=h)


def status_word(provider: str, reply: httpx.Response) -> str:
    """The raw status of one poll reply: '404' for useapi's still-processing answer."""
    if provider == "useapi" and reply.status_code == 404:
        return "404"
    doc = reply.json()
    match provider:
        case "pixverse":
            return str(doc["Resp"]["status"])
        case "useapi":
            return doc["video_status_name"] + ("" if doc["video_status_final"] else "?")
        case _:
            return doc["status"]


_RUNNING = {"5", "queued", "generating", "waiting", "404", "IN_QUEUE", "IN_PROGRESS"}


def poll_until_final(emu, sub: Submitted, *, timeout: float = 30.0) -> list[httpx.Response]:
    """Every poll reply, the final one last (a flapping reply is not final for a doc-following client)."""
    replies = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = poll_once(emu, sub)
        replies.append(reply)
        word = status_word(sub.provider, reply)
        if word not in _RUNNING and not word.endswith("?") and not _empty_success(sub.provider, reply):
            return replies
        time.sleep(0.05)
    raise AssertionError(f"{sub.provider} job {sub.job_id} not final after {timeout}s: {replies[-1].text}")


def _empty_success(provider: str, reply: httpx.Response) -> bool:
    return provider == "pixverse" and reply.json()["Resp"]["status"] == 1 and not reply.json()["Resp"]["url"]


def result_url(emu, sub: Submitted, final: httpx.Response) -> str:
    doc = final.json()
    match sub.provider:
        case "pixverse":
            return doc["Resp"]["url"]
        case "aimlapi":
            return doc["video"]["url"]
        case "useapi":
            return doc["url"]
        case _:
            return httpx.get(sub.urls["response_url"], headers=headers(emu, "fal")).json()["video"]["url"]


def run_job(
    emu,
    provider: str,
    video: Path,
    audio: Path | None = None,
    text: str | None = None,
    speaker: str | None = "Emily",
    dst: Path | None = None,
) -> Path:
    """Submit, wait, download the result to `dst`; returns `dst`."""
    sub = submit(emu, provider, video, audio, text, speaker)
    assert sub.job_id is not None, sub.reply.text
    final = poll_until_final(emu, sub)[-1]
    data = httpx.get(result_url(emu, sub, final)).content
    dst.write_bytes(data)
    return dst
