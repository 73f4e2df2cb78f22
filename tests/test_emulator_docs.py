"""The emulator against the providers' own documents: their example requests are accepted (media URLs
replaced by local ones), and malformed requests get each provider's documented error shape.

Example bodies are quoted from the docs in ../shared/seeds/ (000 AI/ML API, 001 useapi.net, 002 PixVerse
Platform, 004 fal.ai).
"""

from __future__ import annotations

import functools
import http.server
import threading

import httpx
import pytest
from emulator_client import Submitted, create, data_uri, headers, poll_until_final, upload
from media import make_audio, make_video

from pipeline.emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("emulator-docs")
    return {
        "video": make_video(d / "racoon-in-the-forest.mp4", seconds=0.6, width=192, height=108),
        "audio": make_audio(d / "speech.mp3", seconds=1.0, rate=24000),
        "wav": make_audio(d / "speech.wav", seconds=1.0, rate=24000),
        "too_long": make_video(d / "long.mp4", seconds=31, width=32, height=32, fps=2, audio=False),
        "too_wide": make_video(d / "wide.mp4", seconds=0.3, width=2000, height=64, audio=False),
        "mkv": make_video(d / "clip.mkv", seconds=0.3, width=64, height=64),
        "grainy": make_video(d / "grainy.mp4", seconds=1.0, width=320, height=240, grain=60),
        "text": _write(d / "notes.mp4", b"this is not a video at all\n" * 10),
        "dir": d,
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.2)) as e:
        yield e


@pytest.fixture(scope="module")
def local_host(media):
    """Another server on loopback, standing in for a public file host (the emulator may fetch from it)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media["dir"]))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ---- AI/ML API (seed 000) -------------------------------------------------------------------------------

AIML_EXAMPLE = {
    "model": "pixverse/lip-sync",
    "video_url": "https://raw.githubusercontent.com/aimlapi/api-docs/main/reference-files/racoon-in-the-forest.mp4",
    "lip_sync_tts_content": "Through the forest, past the roots — I’ve got to get there fast! No time to stop!",
    "lip_sync_tts_speaker": "Oliver",
}


def test_aimlapi_docs_example_is_accepted_with_a_local_url(emu, media, local_host):
    body = AIML_EXAMPLE | {"video_url": f"{local_host}/racoon-in-the-forest.mp4"}
    sub = create(emu, "aimlapi", body)
    assert sub.reply.status_code == 200
    doc = sub.reply.json()
    assert doc["status"] == "queued" and isinstance(doc["id"], str)
    assert isinstance(doc["meta"]["usage"]["credits_used"], (int, float))
    final = poll_until_final(emu, sub)[-1].json()
    assert final["status"] in ("completed", "succeeded") and final["video"]["url"]


def test_aimlapi_accepts_data_uris_for_video_and_audio(emu, media):
    body = {"model": "pixverse/lip-sync", "video_url": data_uri(media["video"]), "audio_url": data_uri(media["audio"])}
    assert create(emu, "aimlapi", body).reply.status_code == 200


def test_aimlapi_takes_a_data_uri_bigger_than_memory_wants(emu, media, tmp_path):
    """Past 64 KiB a string value goes through the streaming path; what is decoded must be the very file."""
    body = {"model": "pixverse/lip-sync", "video_url": data_uri(media["grainy"]), "audio_url": data_uri(media["audio"])}
    assert len(body["video_url"]) > 200_000
    sub = create(emu, "aimlapi", body)
    assert sub.reply.status_code == 200, sub.reply.text
    job = next(j for j in emu.jobs("aimlapi") if j.job_id == sub.job_id)
    assert job.inputs.video.read_bytes() == media["grainy"].read_bytes()
    assert not list((emu.workdir / "files").glob("*.body"))  # the spooled body and spilled strings are gone


def test_aimlapi_cannot_reach_the_internet(emu):
    sub = create(emu, "aimlapi", AIML_EXAMPLE)
    assert sub.reply.status_code == 400 and "could not download" in sub.reply.json()["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"audio_url": "data:audio/mpeg;base64,AAAA"},  # audio_url and TTS together
        {"lip_sync_tts_speaker": "Bob"},  # not in the voice enum
        {"lip_sync_tts_speaker": "oliver"},  # the enum is case-sensitive
        {"lip_sync_tts_speaker": None},  # content without a speaker
        {"lip_sync_tts_content": "x" * 201},  # over 200 characters
        {"model": "pixverse/v5/image-to-video"},  # another model
        {"video_url": None},  # required
        {"video_url": "ftp://example.com/x.mp4"},  # not a URL we can use
        {"video_url": "data:video/mp4;base64,@@not-base64@@"},
    ],
)
def test_aimlapi_malformed_requests_get_400_in_its_error_shape(emu, media, change):
    body = {k: v for k, v in (AIML_EXAMPLE | {"video_url": data_uri(media["video"])} | change).items() if v is not None}
    r = create(emu, "aimlapi", body).reply
    doc = r.json()
    assert r.status_code == 400 and doc["statusCode"] == 400
    assert set(doc) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert doc["path"] == "/v2/video/generations" and doc["message"]


def test_aimlapi_unknown_generation_is_404(emu):
    r = httpx.get(
        emu.base_urls["aimlapi"] + "/v2/video/generations",
        params={"generation_id": "nope"},
        headers=headers(emu, "aimlapi"),
    )
    assert r.status_code == 404 and r.json()["statusCode"] == 404


# ---- useapi.net (seed 001) ------------------------------------------------------------------------------


def test_useapi_docs_examples_are_accepted(emu, media):
    video_path = upload(emu, "useapi", media["video"])
    audio_path = upload(emu, "useapi", media["audio"])
    first = create(emu, "useapi", {"audio_path": audio_path, "video_path": video_path})
    assert first.reply.status_code == 200
    assert first.reply.json()["video_id"].startswith("user:") and "-pixverse:" in first.reply.json()["video_id"]
    poll_until_final(emu, first)
    # the curl example: {"audio_path": "…", "video_id": "…"}, video_id being an earlier PixVerse video
    assert create(emu, "useapi", {"audio_path": audio_path, "video_id": first.job_id}).reply.status_code == 200
    # the documented request body, every field present
    full = {
        "video_id": first.job_id,
        "audio_path": audio_path,
        "prompt": "Optional text prompt",
        "speaker_id": 12345,
        "replyUrl": "Place your call back URL here",
        "replyRef": "Place your reference id here",
        "maxJobs": 3,
    }
    assert create(emu, "useapi", full).reply.status_code == 200


def test_useapi_lipsync_takes_multipart_form_data(emu, media):
    video_path = upload(emu, "useapi", media["video"])
    r = httpx.post(
        emu.base_urls["useapi"] + "/v2/pixverse/videos/lipsync",
        headers=headers(emu, "useapi"),
        files={"video_path": (None, video_path), "prompt": (None, "Hello there"), "speaker_id": (None, "3")},
    )
    assert r.status_code == 200 and r.json()["video_id"]


@pytest.mark.parametrize(
    "change",
    [
        {"video_path": None},  # no video at all
        {"video_path": "upload/0/nothing.mp4"},  # never uploaded
        {"prompt": "x" * 201},
        {"speaker_id": "99"},
        {"replyRef": "r" * 1025},
        {"replyUrl": "https://example.com/" + "u" * 1010},
        {"maxJobs": 0},
        {"maxJobs": 9},
        {"prompt": None},  # neither audio_path nor prompt
    ],
)
def test_useapi_malformed_requests_get_400_error_code(emu, media, change):
    body = {"video_path": upload(emu, "useapi", media["video"]), "prompt": "Hello", "speaker_id": "1"} | change
    r = create(emu, "useapi", {k: v for k, v in body.items() if v is not None}).reply
    assert r.status_code == 400 and r.json()["code"] == 400 and r.json()["error"]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_useapi_upload_needs_a_media_content_type(emu, media, content_type):
    h = headers(emu, "useapi") | ({"Content-Type": content_type} if content_type else {})
    r = httpx.post(emu.base_urls["useapi"] + "/v2/pixverse/files", content=media["video"].read_bytes(), headers=h)
    assert r.status_code == 400 and r.json()["code"] == 400


def test_useapi_upload_rejects_audio_sent_as_video(emu, media):
    r = httpx.post(
        emu.base_urls["useapi"] + "/v2/pixverse/files",
        content=media["audio"].read_bytes(),
        headers=headers(emu, "useapi") | {"Content-Type": "video/mp4"},
    )
    assert r.status_code == 400 and "expected a video" in r.json()["error"]


# ---- PixVerse Platform (seed 002) -----------------------------------------------------------------------


def _pix(emu, path: str, **kw) -> dict:
    h = headers(emu, "pixverse") | kw.pop("headers", {})
    r = httpx.request(kw.pop("method", "POST"), emu.base_urls["pixverse"] + path, headers=h, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_pixverse_upload_answers_the_documented_shape(emu, media):
    with open(media["video"], "rb") as f:
        video = _pix(emu, "/openapi/v2/media/upload", files={"file": ("v.mp4", f, "video/mp4")})
    with open(media["wav"], "rb") as f:
        audio = _pix(emu, "/openapi/v2/media/upload", files={"file": ("a.wav", f, "audio/wav")})
    assert video["ErrCode"] == 0 and video["ErrMsg"] == "success"
    assert video["Resp"]["media_type"] == "video" and audio["Resp"]["media_type"] == "audio"
    assert isinstance(video["Resp"]["media_id"], int) and video["Resp"]["url"].startswith("http")


def test_pixverse_upload_by_file_url(emu, media, local_host):
    doc = _pix(emu, "/openapi/v2/media/upload", data={"file_url": f"{local_host}/speech.mp3"})
    assert doc["ErrCode"] == 0 and doc["Resp"]["media_type"] == "audio"


def test_pixverse_generate_per_the_parameter_table(emu, media):
    video = upload(emu, "pixverse", media["video"])
    audio = upload(emu, "pixverse", media["wav"])
    by_audio = _pix(emu, "/openapi/v2/video/lip_sync/generate", json={"video_media_id": video, "audio_media_id": audio})
    assert by_audio["ErrCode"] == 0 and isinstance(by_audio["Resp"]["video_id"], int)
    tts = {"video_media_id": video, "lip_sync_tts_speaker_id": "Auto", "lip_sync_tts_content": "x" * 200}
    assert _pix(emu, "/openapi/v2/video/lip_sync/generate", json=tts)["ErrCode"] == 0
    done = poll_until_final(emu, Submitted("pixverse", None, job_id=by_audio["Resp"]["video_id"]))[-1].json()["Resp"]
    assert done["status"] == 1 and done["url"] and done["size"] > 0
    assert {"create_time", "modify_time", "outputWidth", "outputHeight", "id"} <= set(done)
    again = {"source_video_id": done["id"], "audio_media_id": audio}
    assert _pix(emu, "/openapi/v2/video/lip_sync/generate", json=again)["ErrCode"] == 0


@pytest.mark.parametrize(
    "body, code",
    [
        ({"audio_media_id": "A"}, 400017),  # no video
        ({"video_media_id": "V", "source_video_id": "V", "audio_media_id": "A"}, 400017),  # two videos
        ({"video_media_id": "V"}, 400017),  # no audio
        (
            {
                "video_media_id": "V",
                "audio_media_id": "A",
                "lip_sync_tts_speaker_id": "1",
                "lip_sync_tts_content": "hi",
            },
            400017,
        ),  # audio and TTS
        ({"video_media_id": "A", "audio_media_id": "A"}, 400017),  # audio id as the video
        ({"video_media_id": "V", "audio_media_id": "V"}, 400017),  # video id as the audio
        ({"video_media_id": "V", "lip_sync_tts_speaker_id": "1"}, 400017),  # speaker without text
        ({"video_media_id": "V", "lip_sync_tts_speaker_id": "1", "lip_sync_tts_content": "x" * 201}, 400017),
        ({"video_media_id": "V", "lip_sync_tts_speaker_id": "99", "lip_sync_tts_content": "hi"}, 400017),
        ({"video_media_id": "V", "lip_sync_tts_speaker_id": 1, "lip_sync_tts_content": "hi"}, 400013),  # not a string
        ({"video_media_id": "V-as-string", "audio_media_id": "A"}, 400013),  # id as a JSON string
        ({"video_media_id": "V-as-float", "audio_media_id": "A"}, 400013),  # id through a float
    ],
)
def test_pixverse_malformed_generate_gets_errcode_with_http_200(emu, media, body, code):
    ids = {"V": upload(emu, "pixverse", media["video"]), "A": upload(emu, "pixverse", media["wav"])}
    ids["V-as-string"], ids["V-as-float"] = str(ids["V"]), float(ids["V"])
    real = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = emu.accepted_creates("pixverse")
    doc = _pix(emu, "/openapi/v2/video/lip_sync/generate", json=real)
    assert doc["ErrCode"] == code and doc["ErrMsg"]
    assert emu.accepted_creates("pixverse") == before


def test_pixverse_refuses_a_body_that_is_not_json(emu):
    doc = _pix(
        emu,
        "/openapi/v2/video/lip_sync/generate",
        content=b"video_media_id=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert doc["ErrCode"] == 400013


# ---- fal.ai (seed 004) ----------------------------------------------------------------------------------

FAL_FULL_EXAMPLE = {
    "video_url": "https://v3.fal.media/files/penguin/T-ONORYMYLoEOB9lXryA2_IKEy3yAyi1evJGBAkXGZx_output.mp4",
    "audio_url": "https://v3.fal.media/files/monkey/k4iyN8bJZWwJXMKH-pO9r_speech.mp3",
    "voice_id": "Auto",
    "text": "Hello, this is a test message.",
}


def test_fal_docs_examples_are_accepted(emu, media):
    video_url = upload(emu, "fal", media["video"])
    audio_url = upload(emu, "fal", media["audio"])
    required = create(emu, "fal", {"video_url": video_url})
    full = create(emu, "fal", FAL_FULL_EXAMPLE | {"video_url": video_url, "audio_url": audio_url})
    for sub in (required, full):
        doc = sub.reply.json()
        assert sub.reply.status_code == 200 and set(doc) >= {"request_id", "status_url", "response_url", "cancel_url"}
        assert doc["status_url"].endswith(f"/fal-ai/pixverse/requests/{doc['request_id']}/status")
        assert "/lipsync" not in doc["response_url"]
    final = poll_until_final(emu, full)[-1]
    output = httpx.get(full.urls["response_url"], headers=headers(emu, "fal")).json()
    assert final.json()["status"] == "COMPLETED"
    assert set(output["video"]) == {"url", "content_type", "file_name", "file_size"}


def test_fal_older_upload_flow(emu, media):
    storage = emu.base_urls["fal_storage"]
    init = httpx.post(
        f"{storage}/storage/upload/initiate?storage_type=fal-cdn",
        headers=headers(emu, "fal"),
        json={"file_name": "speech.mp3", "content_type": "audio/mpeg"},
    ).json()
    assert (
        httpx.put(
            init["upload_url"], content=media["audio"].read_bytes(), headers={"Content-Type": "audio/mpeg"}
        ).status_code
        == 200
    )
    assert httpx.get(init["file_url"]).content == media["audio"].read_bytes()


def test_fal_cdn_upload_needs_the_issued_token(emu, media):
    token = httpx.post(
        emu.base_urls["fal_storage"] + "/storage/auth/token?storage_type=fal-cdn-v3",
        headers=headers(emu, "fal"),
        json={},
    ).json()
    r = httpx.post(token["base_url"] + "/files/upload", content=b"x", headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "change, field",
    [
        ({"video_url": None}, "video_url"),
        ({"voice_id": "Bob"}, "voice_id"),
        ({"audio_url": None, "text": "x" * 201}, "text"),
        ({"video_url": 12}, "video_url"),
    ],
)
def test_fal_malformed_requests_get_422_with_detail(emu, media, change, field):
    body = (
        FAL_FULL_EXAMPLE
        | {"video_url": upload(emu, "fal", media["video"]), "audio_url": upload(emu, "fal", media["audio"])}
        | change
    )
    r = create(emu, "fal", {k: v for k, v in body.items() if v is not None}).reply
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", field] and detail["msg"] and detail["type"]


def test_fal_cancel_and_early_response(media):
    with Emulator(EmulatorSettings(latency_s=0.5, queue_s=5.0)) as emu:
        body = {"video_url": upload(emu, "fal", media["video"]), "audio_url": upload(emu, "fal", media["audio"])}
        ahead = create(emu, "fal", body)
        sub = create(emu, "fal", body)
        assert ahead.reply.json()["queue_position"] == 0 and sub.reply.json()["queue_position"] == 1
        h = headers(emu, "fal")
        early = httpx.get(sub.urls["response_url"], headers=h)
        queued = httpx.get(sub.urls["status_url"], headers=h)
        cancel = httpx.put(sub.urls["cancel_url"], headers=h)
        after = httpx.get(sub.urls["status_url"], headers=h).json()
    assert early.status_code == 400
    assert queued.status_code == 202 and queued.json()["status"] == "IN_QUEUE" and "queue_position" in queued.json()
    assert cancel.status_code == 202 and cancel.json()["status"] == "CANCELLATION_REQUESTED"
    assert after["status"] == "COMPLETED" and after["error"]


# ---- media limits, the same for every provider ---------------------------------------------------------

BAD_VIDEOS = [
    ("too_long", "over 30s"),
    ("too_wide", "longest side over 1920"),
    ("mkv", "not supported"),
    ("text", "expected a video"),
    ("audio", "expected a video"),
]


@pytest.mark.parametrize(
    "provider, name, reason",
    [
        (provider, name, reason)
        for provider in ("pixverse", "aimlapi", "useapi", "fal")
        for name, reason in BAD_VIDEOS
        if (provider, name) != ("pixverse", "audio")  # PixVerse uploads take audio too; generate checks the kind
    ],
)
def test_videos_outside_the_limits_are_refused(emu, media, provider, name, reason):
    path = media[name]
    if provider == "pixverse":
        with open(path, "rb") as f:
            doc = _pix(emu, "/openapi/v2/media/upload", files={"file": (path.name, f, "video/mp4")})
        assert doc["ErrCode"] == 400017 and reason in doc["ErrMsg"]
    elif provider == "useapi":
        r = httpx.post(
            emu.base_urls["useapi"] + "/v2/pixverse/files",
            content=path.read_bytes(),
            headers=headers(emu, "useapi") | {"Content-Type": "video/mp4"},
        )
        assert r.status_code == 400 and reason in r.json()["error"]
    elif provider == "aimlapi":
        body = {
            "model": "pixverse/lip-sync",
            "video_url": "data:video/mp4;base64," + data_uri(path).split(",")[1],
            "audio_url": data_uri(media["audio"]),
        }
        r = create(emu, "aimlapi", body).reply
        assert r.status_code == 400 and reason in r.json()["message"]
    else:
        body = {"video_url": upload(emu, "fal", path), "audio_url": upload(emu, "fal", media["audio"])}
        r = create(emu, "fal", body).reply
        assert r.status_code == 422 and reason in r.json()["detail"][0]["msg"]
