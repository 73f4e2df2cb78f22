"""The emulator's AI/ML API `pixverse/v5/image-to-video` (seed 003), over real HTTP on loopback, spoken to the
way the seed's own samples do (plain httpx, not the project's adapter); results measured independently."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from emulator_client import headers
from image_media import animated_gif, marked_portrait
from media import gray_frames, media_info
from PIL import Image

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import ValidationError
from pipeline.limits import load_image_limits
from pipeline.providers import aimlapi
from pipeline.stages.conform_image import ImageOptions, conform_image, last_frame_image
from pipeline.stages.verify import PortraitExpectations, verify_portrait

MODEL = "pixverse/v5/image-to-video"
ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:pixverse/v5/image-to-video$")
LINE = "Hello and welcome. Here are the headlines."


@pytest.fixture(scope="module")
def emu():
    with Emulator(EmulatorSettings(latency_s=0.2, queue_s=0.1)) as e:
        yield e


@pytest.fixture(scope="module")
def portrait_jpg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("portrait") / "presenter.jpg"
    marked_portrait(480, 640).save(path, "JPEG", quality=95)
    return path


def data_uri(path: Path, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def post(emu, body: dict, path: str = "/v2/video/generations") -> httpx.Response:
    return httpx.post(emu.base_urls["aimlapi"] + path, json=body, headers=headers(emu, "aimlapi"), timeout=60)


def poll(emu, job_id: str, path: str = "/v2/video/generations") -> httpx.Response:
    # the id holds a colon: sent URL-encoded, as a query value should be
    url = f"{emu.base_urls['aimlapi']}{path}?generation_id={quote(job_id, safe='')}"
    return httpx.get(url, headers=headers(emu, "aimlapi"), timeout=30)


def wait(emu, job_id: str, path: str = "/v2/video/generations") -> tuple[list[str], dict]:
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = poll(emu, job_id, path).json()
        if not seen or seen[-1] != doc["status"]:
            seen.append(doc["status"])
        if doc["status"] not in ("queued", "generating", "waiting", "active"):
            return seen, doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not final: {seen}")


def body(image_url: str, **extra) -> dict:
    return {
        "model": MODEL,
        "prompt": "A presenter facing the camera, calm, studio light.",
        "image_url": image_url,
        **extra,
    }


def download(url: str, dst: Path) -> Path:
    dst.write_bytes(httpx.get(url, timeout=30).content)
    return dst


def test_a_talking_portrait_from_a_data_uri(emu, portrait_jpg, tmp_path):
    before = emu.accepted_creates("aimlapi")
    r = post(
        emu,
        body(
            data_uri(portrait_jpg),
            resolution="540p",
            duration=5,
            lip_sync_tts_content=LINE,
            lip_sync_tts_speaker="Chloe",
            seed=42,
            style="clay",
            negative_prompt="blur",
        ),
    )
    assert r.status_code == 200, r.text
    created = r.json()
    assert ID.match(created["id"]) and created["status"] == "queued"
    assert created["meta"]["usage"]["tokens_used"] > 0
    assert emu.accepted_creates("aimlapi") == before + 1
    seen, final = wait(emu, created["id"])
    assert set(seen) <= {"queued", "generating", "completed"} and seen[-1] == "completed"
    assert final["id"] == created["id"]
    video = final["video"]
    assert video["content_type"] == "video/mp4" and video["file_name"].endswith(".mp4") and video["file_size"] > 0
    result = download(video["url"], tmp_path / "result.mp4")
    assert result.stat().st_size == video["file_size"]
    tracks = media_info(result)
    v, a = tracks["Video"][0], tracks["Audio"][0]
    assert (int(v.width), int(v.height)) == (540, 720)  # 3:4 portrait, short side 540
    assert abs(float(v.duration) / 1000 - 5.0) <= 0.1 and abs(float(a.duration) / 1000 - 5.0) <= 0.15
    first = gray_frames(result)[0].astype(float)
    picture = np.asarray(Image.open(portrait_jpg).convert("L").resize((540, 720)), dtype=float)
    assert np.corrcoef(first.ravel(), picture.ravel())[0, 1] > 0.9
    report = verify_portrait(result, PortraitExpectations(portrait_jpg, short_side=540, duration_s=5))
    assert report.ok, report.failed()


def test_the_legacy_path_and_an_https_url_taken_as_is(emu, tmp_path):
    r = post(
        emu,
        body("https://example.com/reference-files/news-presenter.jpg", duration=8),
        path="/v2/generate/video/pixverse/generation",
    )
    assert r.status_code == 200, r.text
    _, final = wait(emu, r.json()["id"], path="/v2/generate/video/pixverse/generation")
    assert final["status"] == "completed"
    result = download(final["video"]["url"], tmp_path / "legacy.mp4")
    tracks = media_info(result)
    v = tracks["Video"][0]
    assert min(int(v.width), int(v.height)) == 720  # the default resolution
    assert abs(float(v.duration) / 1000 - 8.0) <= 0.1
    assert "Audio" not in tracks  # no TTS asked for: no speech


def test_1080p_five_seconds_from_a_png(emu, tmp_path):
    png = tmp_path / "square.png"
    Image.new("RGB", (600, 600), (200, 40, 40)).save(png)
    r = post(
        emu,
        body(
            data_uri(png, "image/png"),
            resolution="1080p",
            lip_sync_tts_content="Hi there.",
            lip_sync_tts_speaker="Auto",
        ),
    )
    assert r.status_code == 200, r.text
    _, final = wait(emu, r.json()["id"])
    v = media_info(download(final["video"]["url"], tmp_path / "hd.mp4"))["Video"][0]
    assert (int(v.width), int(v.height)) == (1080, 1080)


def _text_as_jpeg() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(b"this is not a picture at all").decode()


REJECTIONS = {
    "no prompt": ({"prompt": None}, "prompt is required"),
    "empty prompt": ({"prompt": "  "}, "prompt is required"),
    "no image": ({"image_url": None}, "image_url is required"),
    "bad resolution": ({"resolution": "4k"}, "resolution must be one of 360p, 540p, 720p, 1080p"),
    "bad duration": ({"duration": 6}, "duration must be one of 5, 8"),
    "duration as text": ({"duration": "5"}, "duration must be one of 5, 8, got '5'"),
    "1080p for 8 s": ({"resolution": "1080p", "duration": 8}, "1080p quality option does not support 8-second"),
    "bad style": ({"style": "noir"}, "style must be one of anime, 3d_animation, clay, comic, cyberpunk"),
    "fractional seed": ({"seed": 1.5}, "seed must be an integer"),
    "seed as text": ({"seed": "42"}, "seed must be an integer"),
    "negative seed": ({"seed": -1}, "seed must be between 0 and"),
    "text without speaker": ({"lip_sync_tts_content": "Hello."}, "go together"),
    "speaker without text": ({"lip_sync_tts_speaker": "Chloe"}, "go together"),
    "unknown speaker": ({"lip_sync_tts_content": "Hi.", "lip_sync_tts_speaker": "Bob"}, "lip_sync_tts_speaker must be"),
    "long text": ({"lip_sync_tts_content": "a" * 201, "lip_sync_tts_speaker": "Ava"}, "1..200 characters"),
    "text bytes as jpeg": ({"image_url": _text_as_jpeg()}, "does not hold a JPEG, PNG or WebP image"),
    "plain http url": ({"image_url": "http://example.com/a.jpg"}, "must be an https URL or a data URI"),
    "prompt not a string": ({"prompt": 7}, "prompt must be a string"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_each_rule_is_enforced_in_the_api_error_shape(emu, portrait_jpg, case):
    change, message = REJECTIONS[case]
    request = {k: v for k, v in {**body(data_uri(portrait_jpg)), **change}.items() if v is not None}
    before = emu.accepted_creates("aimlapi")
    r = post(emu, request)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert message in doc["message"] and doc["statusCode"] == 400
    assert {"path", "requestId", "timestamp"} <= set(doc) and doc["path"] == "/v2/video/generations"
    assert emu.accepted_creates("aimlapi") == before
    refusal = aimlapi.classify_create(r.status_code, doc)  # what the adapter makes of it: exit 6, their words
    assert isinstance(refusal, ValidationError) and refusal.exit_code == 6 and doc["message"] in str(refusal)


def test_a_loopback_url_is_fetched_and_checked(emu, portrait_jpg, tmp_path):
    first = post(emu, body(data_uri(portrait_jpg)))
    _, final = wait(emu, first.json()["id"])
    r = post(emu, body(final["video"]["url"]))  # the emulator's own mp4 as the "image"
    assert r.status_code == 400 and "found MPEG-4" in r.json()["message"]


def test_an_animated_gif_is_not_an_image_the_model_takes(emu, tmp_path):
    gif = animated_gif(tmp_path / "wave.gif")
    r = post(emu, body(data_uri(gif, "image/gif")))
    assert r.status_code == 400 and "found GIF" in r.json()["message"]


def test_an_unknown_model_names_both(emu, portrait_jpg):
    r = post(emu, {**body(data_uri(portrait_jpg)), "model": "pixverse/v4/image-to-video"})
    assert r.status_code == 400 and "'pixverse/v5/image-to-video'" in r.json()["message"]


def test_a_chain_continues_from_the_last_frame_without_a_jump(emu, portrait_jpg, tmp_path):
    """Two clips of a chain: the second made from the first's last frame; the frames either side of the join
    are compared (decoded independently)."""

    def clip(image: Path, name: str) -> Path:
        r = post(
            emu,
            body(
                data_uri(image), resolution="360p", lip_sync_tts_content="One more thing.", lip_sync_tts_speaker="Ava"
            ),
        )
        assert r.status_code == 200, r.text
        return download(wait(emu, r.json()["id"])[1]["video"]["url"], tmp_path / name)

    first = clip(portrait_jpg, "clip0.mp4")
    last = last_frame_image(first, tmp_path / "clip0-last.png")
    following = conform_image(last, tmp_path / "clip1-start.jpg", load_image_limits("aimlapi"), ImageOptions()).path
    second = clip(following, "clip1.mp4")
    before, after = gray_frames(first)[-1].astype(float), gray_frames(second)[0].astype(float)
    assert before.shape == after.shape
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.97
    assert np.abs(before - after).mean() < 0.5  # grey levels: no visible jump
    start = gray_frames(first)[0].astype(float)
    assert np.abs(before - start).mean() > np.abs(before - after).mean()  # the zoom moved; the join did not


def test_faults_apply_to_image_jobs_too(portrait_jpg):
    with Emulator(EmulatorSettings(latency_s=0.1, queue_s=0.0)) as e:
        e.faults("aimlapi").moderate = True
        r = post(e, body(data_uri(portrait_jpg)))
        _, final = wait(e, r.json()["id"])
        assert final["status"] == "error" and final["error"]["name"] == "ModerationError" and final["video"] is None
        e.faults("aimlapi").moderate = False
        e.faults("aimlapi").rate_limit_creates = 1
        refused = post(e, body(data_uri(portrait_jpg)))
        assert refused.status_code == 429 and refused.json()["statusCode"] == 429
        e.faults("aimlapi").drop_after_create = 1
        with pytest.raises(httpx.TransportError):
            post(e, body(data_uri(portrait_jpg)))
        assert e.accepted_creates("aimlapi") == 2  # the moderated job and the one whose reply was dropped
