"""The real adapters against minimal peers written from the provider docs only (not the emulator).

Each peer is deliberately different from our emulator where the docs allow it: PixVerse answers the
docs' literal sample (`size: 0`, `outputWidth: 0`) forever, ErrCode as a string, a lower-case 500 and an
HTML 502; AI/ML API says `waiting`/`active`/`succeeded`, has an id with ':' and '/', and a result CDN
that asks to come back with an HTTP-date Retry-After; useapi ids carry ':', '@', '+' and '-' and are
decoded by a standard router, with 404 while processing and no `video_status_final`; fal answers 200
(not 202) with absolute URLs on another path layout carrying their own query, and a CDN on another
origin. Every result is served as `application/octet-stream`, as real CDNs do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest
from media import make_audio, make_video
from provider_kit import create_job, run_job, serve_app
from pymediainfo import MediaInfo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.errors import GenerationFailed, JobTimeout, LipsyncError
from pipeline.fsutil import sha256_file
from pipeline.providers import (
    JobHandle,
    JobRequest,
    JobState,
    PollPolicy,
    RetryPolicy,
    credential_from_env,
    get_provider,
    wait_for_job,
)

FAST_POLL = PollPolicy(initial=0.05, factor=1.0, maximum=0.05, timeout=20)
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, max_retry_after=0.5)
KEYS = {"PIXVERSE_API_KEY": "pv-key", "AIMLAPI_KEY": "aiml-key", "USEAPI_TOKEN": "useapi-token", "FAL_KEY": "fal:key"}
OCTET = "application/octet-stream"


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("peer-media")
    return {
        "mp4": make_video(d / "talk.mp4", seconds=0.6, width=96, height=64, fps=10),
        "mov": make_video(d / "talk.mov", seconds=0.6, width=96, height=64, fps=10),
        "wav": make_audio(d / "voice.wav", seconds=0.6, rate=16000),
        "mp3": make_audio(d / "voice.mp3", seconds=0.6, rate=16000),
        "result": make_video(d / "result.mp4", seconds=0.5, width=64, height=48, fps=10),
    }


def adapter(name: str, base_urls: dict[str, str], **options):
    return get_provider(
        name,
        credential=credential_from_env(name),
        base_urls=base_urls,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        create_retry=FAST_RETRY,
        **options,
    )


def assert_delivered(out: Path, served: Path) -> None:
    """The downloaded file is the served result, byte for byte, and a video by an independent probe."""
    assert sha256_file(out) == sha256_file(served)
    tracks = MediaInfo.parse(out).tracks
    assert any(t.track_type == "Video" and t.width == 64 for t in tracks)


def origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def result_route(result: Path, seen: list[dict[str, str]] | None = None) -> Route:
    async def serve(request: Request) -> Response:
        if seen is not None:
            seen.append(dict(request.headers))
        return Response(result.read_bytes(), media_type=OCTET)

    return Route("/cdn/result.mp4", serve, methods=["GET"])


# --- PixVerse Platform ----------------------------------------------------------------------------------

PV_VOICES = [
    {"speaker_id": 1001 + i, "name": name}
    for i, name in enumerate(
        [
            "Emily",
            "James",
            "Isabella",
            "Liam",
            "Chloe",
            "Adrian",
            "Harper",
            "Ava",
            "Sophia",
            "Julia",
            "Mason",
            "Jack",
            "Oliver",
            "Ethan",
        ]
    )
] + [{"speaker_id": "auto", "name": "Auto"}]


@dataclass
class PixversePeer:
    """Follows the enterprise guide: envelope on every reply, ids as big JSON numbers, status 5 → 1."""

    result: Path
    create_codes: list[tuple[int, int]] = field(default_factory=list)  # (HTTP, ErrCode) answers before accepting
    traces: set[str] = field(default_factory=set)
    uploads: dict[int, tuple[str, str, bytes]] = field(default_factory=dict)
    creates: list[dict] = field(default_factory=list)
    polls: int = 0

    def envelope(self, resp, code=0, msg="success", status=200, casing=("ErrCode", "ErrMsg", "Resp")):
        return JSONResponse(dict(zip(casing, (code, msg, resp), strict=True)), status_code=status)

    def checked(self, request: Request) -> Response | None:
        trace = request.headers.get("ai-trace-id", "")
        if request.headers.get("api-key") != KEYS["PIXVERSE_API_KEY"]:
            return self.envelope(None, 10003, "invalid key")
        if not trace or trace in self.traces:
            return self.envelope(None, 400033, "Ai-trace-id reused")
        self.traces.add(trace)
        return None

    async def upload(self, request: Request) -> Response:
        if refused := self.checked(request):
            return refused
        form = await request.form()
        file = form["file"]
        media_id = 2**60 + 2 * len(self.uploads) + 1
        self.uploads[media_id] = (file.filename, file.content_type, await file.read())
        kind = file.content_type.split("/")[0]
        return self.envelope({"media_id": media_id, "media_type": kind, "url": f"https://media.example/{media_id}"})

    async def tts_list(self, request: Request) -> Response:
        if refused := self.checked(request):
            return refused
        page, size = int(request.query_params["page_num"]), int(request.query_params["page_size"])
        return self.envelope({"total": len(PV_VOICES), "data": PV_VOICES[(page - 1) * size : page * size]})

    async def generate(self, request: Request) -> Response:
        if refused := self.checked(request):
            return refused
        body = json.loads(await request.body())
        self.creates.append(body)
        if self.create_codes:
            http, code = self.create_codes.pop(0)
            casing = ("err_code", "err_msg", "resp") if http >= 500 else ("ErrCode", "ErrMsg", "Resp")
            return self.envelope(None, code, f"refused with {code}", status=http, casing=casing)
        return self.envelope({"video_id": 2**62 + 7})

    async def status(self, request: Request) -> Response:
        if refused := self.checked(request):
            return refused
        assert request.path_params["video_id"] == str(2**62 + 7)
        self.polls += 1
        if self.polls == 1:
            return Response("<html><body>502 Bad Gateway</body></html>", status_code=502, media_type="text/html")
        if self.polls == 2:
            return self.envelope(None, 500045, "try later", status=500, casing=("err_code", "err_msg", "resp"))
        sample = {
            "id": 2**62 + 7,
            "status": 5,
            "url": "",
            "outputWidth": 0,
            "outputHeight": 0,
            "size": 0,
            "create_time": "string",
            "modify_time": "string",
            "prompt": "string",
            "seed": 0,
        }
        if self.polls >= 4:  # the docs' success sample, literally: sizes stay 0
            sample.update(status=1, url=f"{origin(request)}/cdn/result.mp4")
        return JSONResponse({"ErrCode": "0", "ErrMsg": "string", "Resp": sample})

    def app(self) -> Starlette:
        api = "/openapi/v2"
        return Starlette(
            routes=[
                Route(f"{api}/media/upload", self.upload, methods=["POST"]),
                Route(f"{api}/video/lip_sync/tts_list", self.tts_list, methods=["GET"]),
                Route(f"{api}/video/lip_sync/generate", self.generate, methods=["POST"]),
                Route(f"{api}/video/result/{{video_id}}", self.status, methods=["GET"]),
                result_route(self.result),
            ]
        )


@pytest.mark.parametrize("video,audio", [("mp4", "wav"), ("mov", "mp3"), ("mp4", None)])
def test_pixverse_docs_peer_end_to_end(media, tmp_path, video, audio):
    peer = PixversePeer(media["result"])
    text = None if audio else "Hello from the docs peer."
    req = JobRequest(media[video], media[audio] if audio else None, text, "Oliver" if text else None)
    with serve_app(peer.app()) as url, adapter("pixverse", {"pixverse": url}) as provider:
        record = run_job(provider, req, tmp_path / "out.mp4")
    assert_delivered(tmp_path / "out.mp4", media["result"])
    assert record.job_id == str(2**62 + 7) and peer.polls == 3 + FAST_POLL.accept_unconfirmed_after
    assert record.unconfirmed  # said so in `lipsync submit --json`
    (create,) = peer.creates
    assert type(create["video_media_id"]) is int and create["video_media_id"] in peer.uploads
    name, ctype, data = peer.uploads[create["video_media_id"]]
    assert Path(name).suffix == f".{video}" and data == media[video].read_bytes()
    assert ctype == {"mp4": "video/mp4", "mov": "video/quicktime"}[video]
    if audio:
        name, ctype, data = peer.uploads[create["audio_media_id"]]
        assert Path(name).suffix == f".{audio}" and data == media[audio].read_bytes()
        assert ctype == {"wav": "audio/wav", "mp3": "audio/mpeg"}[audio]
        assert "lip_sync_tts_content" not in create
    else:  # the id from the account's own speaker list, as a string
        assert create["lip_sync_tts_speaker_id"] == "1013" and create["lip_sync_tts_content"] == text
        assert "audio_media_id" not in create


@pytest.mark.parametrize(
    "http,code,exit_code",
    [
        (200, 10001, 3),
        (200, 10003, 3),
        (200, 500043, 4),
        (500, 500090, 4),
        (200, 500060, 4),
        (200, 500054, 5),
        (200, 500063, 5),
        (400, 400017, 6),
        (200, 400013, 6),
    ],
)
def test_pixverse_error_codes_end_the_create_with_their_exit_code(media, http, code, exit_code):
    peer = PixversePeer(media["result"], create_codes=[(http, code)])
    with serve_app(peer.app()) as url, adapter("pixverse", {"pixverse": url}) as provider:
        with pytest.raises(LipsyncError) as info:
            create_job(provider, JobRequest(media["mp4"], media["wav"]))
    assert info.value.exit_code == exit_code and info.value.code == code
    assert len(peer.creates) == 1


@pytest.mark.parametrize("code", [500044, 500045, 500069, 10005, 400033])
def test_pixverse_try_later_codes_resend_the_create_once_accepted(media, code):
    peer = PixversePeer(media["result"], create_codes=[(200, code)])
    with serve_app(peer.app()) as url, adapter("pixverse", {"pixverse": url}) as provider:
        handle = create_job(provider, JobRequest(media["mp4"], media["wav"]))
    assert handle.job_id == str(2**62 + 7) and len(peer.creates) == 2


# --- AI/ML API ------------------------------------------------------------------------------------------

AIML_ID = "8ac142d3-7c9f-4071-bdc6-d0f2d3d9b327:pixverse/lip-sync"


@dataclass
class AimlPeer:
    """From the OpenAPI schema and the samples: Bearer key, data URIs in one JSON body, generation_id query."""

    result: Path
    statuses: list[dict]
    create_reply: tuple[int, dict] = (200, {"id": AIML_ID, "status": "queued", "meta": {"usage": {"credits_used": 2}}})
    bodies: list[dict] = field(default_factory=list)
    downloads: int = 0

    async def create(self, request: Request) -> Response:
        assert request.headers["authorization"] == f"Bearer {KEYS['AIMLAPI_KEY']}"
        raw = await request.body()
        assert len(raw) == int(request.headers["content-length"])
        self.bodies.append(json.loads(raw))  # strict: no trailing bytes, valid escapes
        status, reply = self.create_reply
        return JSONResponse(reply, status_code=status)

    async def status(self, request: Request) -> Response:
        assert request.query_params["generation_id"] == AIML_ID
        reply = dict(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])  # the last repeats
        if reply.get("video"):
            reply["video"] = {"url": f"{origin(request)}/cdn/result.mp4"}
        return JSONResponse(reply, status_code=reply.pop("http", 200))

    async def download(self, request: Request) -> Response:
        self.downloads += 1
        if self.downloads == 1:
            return Response(status_code=429, headers={"Retry-After": formatdate(time.time() + 1, usegmt=True)})
        return Response(self.result.read_bytes(), media_type=OCTET)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/video/generations", self.create, methods=["POST"]),
                Route("/v2/video/generations", self.status, methods=["GET"]),
                Route("/cdn/result.mp4", self.download, methods=["GET"]),
            ]
        )


def data_uri(value: str) -> tuple[str, bytes]:
    head, _, payload = value.partition(",")
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(payload, validate=True)


@pytest.mark.parametrize("video,audio", [("mp4", "wav"), ("mov", "mp3"), ("mp4", None)])
def test_aimlapi_docs_peer_end_to_end(media, tmp_path, video, audio):
    waits = ("queued", "waiting", "active", "generating")
    peer = AimlPeer(
        media["result"],
        [{"id": AIML_ID, "status": s} for s in waits] + [{"id": AIML_ID, "status": "succeeded", "video": True}],
    )
    text = None if audio else "Through the forest, past the roots — “quoted” \\ done"
    req = JobRequest(media[video], media[audio] if audio else None, text, "Oliver" if text else None)
    with serve_app(peer.app()) as url, adapter("aimlapi", {"aimlapi": url}) as provider:
        record = run_job(provider, req, tmp_path / "out.mp4")
    assert_delivered(tmp_path / "out.mp4", media["result"])
    assert record.job_id == AIML_ID and peer.downloads == 2 and not record.unconfirmed
    (body,) = peer.bodies
    assert body["model"] == "pixverse/lip-sync"
    assert data_uri(body["video_url"]) == (
        {"mp4": "video/mp4", "mov": "video/quicktime"}[video],
        media[video].read_bytes(),
    )
    if audio:
        assert data_uri(body["audio_url"]) == (
            {"wav": "audio/wav", "mp3": "audio/mpeg"}[audio],
            media[audio].read_bytes(),
        )
    else:
        assert body["lip_sync_tts_content"] == text and body["lip_sync_tts_speaker"] == "Oliver"


@pytest.mark.parametrize(
    "final,exit_code",
    [
        ({"status": "completed", "video": None, "error": {"name": "GenerationError", "message": "boom"}}, 5),
        ({"status": "generating", "error": {"name": "PartnerError", "message": "upstream gave up"}}, 5),
        ({"http": 504, "message": "Generation timeout", "path": "/v2/video/generations", "statusCode": 504}, 5),
    ],
)
def test_aimlapi_failures_end_the_wait(media, tmp_path, final, exit_code):
    peer = AimlPeer(media["result"], [{"id": AIML_ID, "status": "queued"}, {"id": AIML_ID, **final}])
    with serve_app(peer.app()) as url, adapter("aimlapi", {"aimlapi": url}) as provider:
        with pytest.raises(GenerationFailed) as info:
            run_job(provider, JobRequest(media["mp4"], media["wav"]), tmp_path / "out.mp4")
    assert info.value.exit_code == exit_code and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("status,exit_code", [(401, 3), (403, 4), (400, 6)])
def test_aimlapi_create_errors(media, status, exit_code):
    error = {
        "message": "nope",
        "path": "/v2/video/generations",
        "requestId": "r",
        "statusCode": status,
        "timestamp": "2025-01-01T00:00:00.000Z",
    }
    peer = AimlPeer(media["result"], [{}], create_reply=(status, error))
    with serve_app(peer.app()) as url, adapter("aimlapi", {"aimlapi": url}) as provider:
        with pytest.raises(LipsyncError) as info:
            create_job(provider, JobRequest(media["mp4"], media["wav"]))
    assert info.value.exit_code == exit_code and len(peer.bodies) == 1


# --- useapi.net -----------------------------------------------------------------------------------------

USEAPI_ID = "user:4242-pixverse:jane.doe+lipsync@example.com-video:31337"


@dataclass
class UseapiPeer:
    """From the useapi page: raw-bytes /files, 429 when busy, 404 while processing, a standard router."""

    result: Path
    busy_first: bool = True
    processing_polls: int = 2
    uploads: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    creates: list[dict] = field(default_factory=list)
    polled_ids: list[str] = field(default_factory=list)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {KEYS['USEAPI_TOKEN']}"

    async def upload(self, request: Request) -> Response:
        assert self.authorized(request)
        path = f"user/4242/file-{len(self.uploads)}"
        self.uploads[path] = (request.headers["content-type"], await request.body())
        return JSONResponse({"path": path, "url": f"https://media.example/{path}"})

    async def voices(self, request: Request) -> Response:
        return JSONResponse(
            {
                "tts_list": [
                    {"speaker_id": 12345, "display_name": " Oliver ", "url": " https://media.example/oliver.mp3 "},
                    {"speaker_id": " 777 ", "display_name": "Emily\n", "url": ""},
                ]
            }
        )

    async def lipsync(self, request: Request) -> Response:
        assert self.authorized(request)
        body = json.loads(await request.body())
        self.creates.append(body)
        if self.busy_first and len(self.creates) == 1:
            return JSONResponse(
                {"error": "Account jane.doe+lipsync@example.com is busy executing 2 tasks."}, status_code=429
            )
        return JSONResponse({"video_id": USEAPI_ID})

    async def video(self, request: Request) -> Response:
        video_id = request.path_params["video_id"]  # decoded by the router, as any server does
        self.polled_ids.append(video_id)
        if video_id != USEAPI_ID or len(self.polled_ids) <= self.processing_polls:
            return JSONResponse({"error": f"video {video_id} not found"}, status_code=404)
        return JSONResponse(
            {
                "video_id": USEAPI_ID,
                "video_status": 1,
                "video_status_name": "COMPLETED ",
                "url": f"{origin(request)}/cdn/result.mp4",
                "output_width": 64,
                "output_height": 48,
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/pixverse/files", self.upload, methods=["POST"]),
                Route("/v2/pixverse/videos/voices", self.voices, methods=["GET"]),
                Route("/v2/pixverse/videos/lipsync", self.lipsync, methods=["POST"]),
                Route("/v2/pixverse/videos/{video_id}", self.video, methods=["GET"]),
                result_route(self.result),
            ]
        )


@pytest.mark.parametrize("video,audio", [("mp4", "wav"), ("mov", "mp3"), ("mp4", None)])
def test_useapi_docs_peer_end_to_end(media, tmp_path, video, audio):
    peer = UseapiPeer(media["result"])
    text = None if audio else "Hello there."
    req = JobRequest(media[video], media[audio] if audio else None, text, "Oliver" if text else None)
    with serve_app(peer.app()) as url, adapter("useapi", {"useapi": url}, max_jobs=2) as provider:
        handle = create_job(provider, req, reply_ref="job-1/seg-0")  # what the batch runner sends
        status = wait_for_job(provider, handle)
        provider.download(status.result_url, tmp_path / "out.mp4", max_bytes=10_000_000)
    assert_delivered(tmp_path / "out.mp4", media["result"])
    assert set(peer.polled_ids) == {USEAPI_ID} and len(peer.polled_ids) == peer.processing_polls + 1
    assert len(peer.creates) == 2 and peer.creates[0] == peer.creates[1]  # 429 "busy": sent again as is
    create = peer.creates[-1]
    assert create["maxJobs"] == 2 and create["replyRef"] == "job-1/seg-0"
    ctype, data = peer.uploads[create["video_path"]]
    assert ctype == {"mp4": "video/mp4", "mov": "video/quicktime"}[video] and data == media[video].read_bytes()
    if audio:
        ctype, data = peer.uploads[create["audio_path"]]
        assert ctype == {"wav": "audio/wav", "mp3": "audio/mpeg"}[audio] and data == media[audio].read_bytes()
    else:  # the id the account's voice list gives, trimmed, as a string
        assert create["prompt"] == text and create["speaker_id"] == "12345"


def test_useapi_404_for_longer_than_the_grace_is_no_such_video(media):
    peer = UseapiPeer(media["result"], processing_polls=10**6)
    with serve_app(peer.app()) as url, adapter("useapi", {"useapi": url}, not_found_grace_s=60) as provider:
        fresh = provider.poll(JobHandle("useapi", USEAPI_ID, {}, time.time() - 5))
        stale = provider.poll(JobHandle("useapi", USEAPI_ID, {}, time.time() - 120))
    assert fresh.state is JobState.RUNNING
    assert stale.state is JobState.FAILED and "no such video" in stale.error_message


# --- fal.ai ---------------------------------------------------------------------------------------------


@dataclass
class FalPeer:
    """Queue + storage on one origin, the CDN on another. Submit answers 200 with absolute URLs in its own
    path layout (with a query of its own); status answers 200 whatever the state."""

    result: Path
    fail_result: bool = False
    legacy_storage: bool = False  # only the older initiate flow: no token endpoint
    cdn: str = ""
    cdn_seen: list[dict[str, str]] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)
    submits: list[dict] = field(default_factory=list)
    status_queries: list[dict[str, str]] = field(default_factory=list)
    result_fetches: int = 0
    canceled: bool = False
    stuck: bool = False

    def keyed(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Key {KEYS['FAL_KEY']}"

    async def token(self, request: Request) -> Response:
        assert self.keyed(request) and request.query_params["storage_type"] == "fal-cdn-v3"
        return JSONResponse(
            {"token": "cdn-token", "token_type": "Bearer", "base_url": self.cdn, "expires_at": "2099-01-01T00:00:00Z"}
        )

    async def cdn_upload(self, request: Request) -> Response:
        self.cdn_seen.append(dict(request.headers))
        assert request.headers["authorization"] == "Bearer cdn-token" and request.headers["x-fal-file-name"]
        name = f"{len(self.stored)}-{request.headers['x-fal-file-name']}"
        self.stored[name] = await request.body()
        return JSONResponse({"access_url": f"{self.cdn}/files/{name}"})

    async def initiate(self, request: Request) -> Response:
        assert self.keyed(request)
        body = json.loads(await request.body())
        name = f"{len(self.stored)}-{body['file_name']}"
        self.stored[name] = b""
        return JSONResponse({"upload_url": f"{self.cdn}/signed/{name}", "file_url": f"{self.cdn}/files/{name}"})

    async def signed_put(self, request: Request) -> Response:
        self.cdn_seen.append(dict(request.headers))
        self.stored[request.path_params["name"]] = await request.body()
        return Response(status_code=200)

    async def submit(self, request: Request) -> Response:
        assert self.keyed(request)
        self.submits.append(json.loads(await request.body()))
        base = f"{origin(request)}/v1/jobs/r-1"
        return JSONResponse(
            {
                "request_id": "r-1",
                "status_url": f"{base}/state?tenant=t1",
                "response_url": f"{base}/out",
                "cancel_url": f"{base}/abort",
            }
        )

    async def status(self, request: Request) -> Response:
        assert self.keyed(request)
        self.status_queries.append(dict(request.query_params))
        n = len(self.status_queries)
        if self.stuck or n == 2:
            return JSONResponse({"status": "IN_PROGRESS", "logs": [{"message": "working"}]})
        if n == 1:
            return JSONResponse({"status": "IN_QUEUE", "queue_position": 0})
        return JSONResponse({"status": "COMPLETED", "logs": []})

    async def response(self, request: Request) -> Response:
        assert self.keyed(request)
        self.result_fetches += 1
        if self.fail_result:
            return JSONResponse(
                {"detail": "Generation failed upstream", "error_type": "runner_error"},
                status_code=500,
                headers={"X-Fal-Error-Type": "runner_error"},
            )
        return JSONResponse(
            {
                "video": {
                    "url": f"{self.cdn}/cdn/result.mp4",
                    "file_name": "output.mp4",
                    "content_type": "video/mp4",
                    "file_size": self.result.stat().st_size,
                }
            }
        )

    async def cancel(self, request: Request) -> Response:
        assert self.keyed(request)
        self.canceled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    def queue_app(self) -> Starlette:
        storage = (
            Route("/storage/upload/initiate", self.initiate, methods=["POST"])
            if self.legacy_storage
            else Route("/storage/auth/token", self.token, methods=["POST"])
        )
        return Starlette(
            routes=[
                storage,
                Route("/fal-ai/pixverse/lipsync", self.submit, methods=["POST"]),
                Route("/v1/jobs/{rid}/state", self.status, methods=["GET"]),
                Route("/v1/jobs/{rid}/out", self.response, methods=["GET"]),
                Route("/v1/jobs/{rid}/abort", self.cancel, methods=["PUT"]),
            ]
        )

    def cdn_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/files/upload", self.cdn_upload, methods=["POST"]),
                Route("/signed/{name}", self.signed_put, methods=["PUT"]),
                result_route(self.result, self.cdn_seen),
            ]
        )


@pytest.fixture
def fal_peer(media):
    """start(**options) -> (peer, adapter): the CDN and the queue on two origins, stopped after the test."""
    with contextlib.ExitStack() as servers:

        def start(**kw):
            peer = FalPeer(media["result"], **kw)
            peer.cdn = servers.enter_context(serve_app(peer.cdn_app()))
            url = servers.enter_context(serve_app(peer.queue_app()))
            # The CDN is a loopback origin no base URL names: trusted explicitly, as a real CDN is public.
            return peer, adapter("fal", {"fal_queue": url, "fal_storage": url}, trusted_loopback=[peer.cdn])

        yield start


@pytest.mark.parametrize("audio,legacy_storage", [("wav", False), (None, False), ("wav", True)])
def test_fal_docs_peer_end_to_end(media, tmp_path, fal_peer, audio, legacy_storage):
    peer, provider = fal_peer(legacy_storage=legacy_storage)
    text = None if audio else "Hello, this is a test message."
    with provider:
        run_job(
            provider,
            JobRequest(media["mp4"], media[audio] if audio else None, text, "Emily" if text else None),
            tmp_path / "out.mp4",
        )
    assert_delivered(tmp_path / "out.mp4", media["result"])
    assert all(q == {"tenant": "t1", "logs": "1"} for q in peer.status_queries) and len(peer.status_queries) == 3
    assert all("key" not in h.get("authorization", "").lower() for h in peer.cdn_seen)
    assert peer.cdn_seen[-1].get("authorization") is None  # the result download carries no credentials
    (submit,) = peer.submits
    assert peer.stored[submit["video_url"].rsplit("/", 1)[1]] == media["mp4"].read_bytes()
    if audio:
        assert peer.stored[submit["audio_url"].rsplit("/", 1)[1]] == media["wav"].read_bytes()
    else:
        assert submit["text"] == text and submit["voice_id"] == "Emily" and "audio_url" not in submit


def test_fal_result_url_answering_an_error_fails_the_job_at_once(media, tmp_path, fal_peer):
    peer, provider = fal_peer(fail_result=True)
    with provider, pytest.raises(GenerationFailed) as info:
        run_job(provider, JobRequest(media["mp4"], media["wav"]), tmp_path / "out.mp4")
    assert "Generation failed upstream" in str(info.value) and peer.result_fetches == 1


def test_fal_timeout_cancels_with_put_on_the_given_cancel_url(media, fal_peer):
    peer, provider = fal_peer(stuck=True)
    with provider:
        handle = create_job(provider, JobRequest(media["mp4"], media["wav"]))
        with pytest.raises(JobTimeout):
            wait_for_job(provider, handle, PollPolicy(initial=0.05, maximum=0.05, timeout=0.3))
    assert peer.canceled
