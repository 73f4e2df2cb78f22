"""The AI/ML API adapter's image-to-video pieces: the checked request, the streamed create body, the status
query, the reply parser; and all of them together against the emulator over loopback HTTP."""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from image_media import marked_portrait
from PIL import Image

from pipeline.emulator import Emulator, EmulatorSettings
from pipeline.errors import ValidationError
from pipeline.limits import load_image_limits
from pipeline.providers import aimlapi
from pipeline.providers.aimlapi import ImageJobRequest, image_create_body, parse_image_generation, status_query
from pipeline.providers.base import JobState

LIMITS = load_image_limits("aimlapi")
SEED_COMPLETED = {
    "id": "8ac142d3-7c9f-4071-bdc6-d0f2d3d9b327:pixverse/v5/image-to-video",
    "status": "completed",
    "video": {
        "url": "https://cdn.aimlapi.com/eagle/files/elephant/uCLDKRtL_AeOrRAwiR8UH_output.mp4",
        "content_type": "video/mp4",
        "file_name": "output.mp4",
        "file_size": 4259218,
    },
}


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "presenter.jpg"
    marked_portrait().save(path, "JPEG", quality=92)
    return path


def decoded(req: ImageJobRequest) -> dict:
    body = image_create_body(req)
    raw = b"".join(body.chunks())
    assert len(raw) == body.length
    return json.loads(raw)


def test_the_body_carries_the_image_as_a_data_uri_and_numbers_as_numbers(image):
    req = ImageJobRequest(
        image,
        "A presenter, calm.",
        text="Hello and welcome.",
        speaker="chloe",
        resolution="540p",
        duration=8,
        style="clay",
        seed=42,
        negative_prompt="blur",
    ).checked(LIMITS)
    doc = decoded(req)
    assert doc["image_url"] == "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    assert doc == doc | {
        "model": "pixverse/v5/image-to-video",
        "prompt": "A presenter, calm.",
        "resolution": "540p",
        "duration": 8,
        "seed": 42,
        "style": "clay",
        "negative_prompt": "blur",
        "lip_sync_tts_content": "Hello and welcome.",
        "lip_sync_tts_speaker": "Chloe",
    }
    assert isinstance(doc["duration"], int) and isinstance(doc["seed"], int)


def test_unset_fields_are_left_out_and_a_script_without_a_voice_gets_auto(image):
    doc = decoded(ImageJobRequest(image, "Still.", text="Hi.").checked(LIMITS))
    assert set(doc) == {"model", "prompt", "image_url", "lip_sync_tts_content", "lip_sync_tts_speaker"}
    assert doc["lip_sync_tts_speaker"] == "Auto"
    assert set(decoded(ImageJobRequest(image, "Still.").checked(LIMITS))) == {"model", "prompt", "image_url"}


def test_an_https_image_url_is_passed_through(image):
    url = "https://raw.githubusercontent.com/aimlapi/api-docs/main/reference-files/news-presenter.jpg"
    doc = decoded(ImageJobRequest(image, "Still.", image_url=url).checked(LIMITS))
    assert doc["image_url"] == url


def test_the_data_uri_is_streamed_never_built_in_memory(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)).save(big)
    size = big.stat().st_size
    assert size > 5_000_000
    body = image_create_body(ImageJobRequest(big, "Still.").checked(LIMITS))
    tracemalloc.start()
    try:
        total = sum(len(chunk) for chunk in body.chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == body.length and total > size * 4 // 3
    assert peak < body.length / 2  # a few 1 MB slices at a time, never the whole ~8 MB of base64


@pytest.mark.parametrize(
    "change, message",
    [
        ({"resolution": "1080p", "duration": 8}, "1080p does not take 8 s clips \\(use 5\\)"),
        ({"resolution": "4k"}, "resolution '4k' is not one of"),
        ({"duration": 6}, "720p does not take 6 s clips"),
        ({"style": "noir"}, "style 'noir' is not one of"),
        ({"seed": -3}, "seed must be an integer from 0"),
        ({"seed": True}, "seed must be an integer"),
        ({"seed": 2**31}, "seed must be an integer"),
        ({"speaker": "Ava"}, "a speaker was given without a script"),
        ({"text": "  "}, "the script is empty"),
        ({"prompt": " "}, "the prompt is empty"),
        ({"speaker": "Bobby", "text": "Hi."}, "Bobby"),
        ({"image_url": "http://example.com/a.jpg"}, "image_url must be an https URL"),
        ({"prompt": "x" * 2049}, "the prompt is 2049 characters, over 2048"),
    ],
)
def test_what_the_api_would_refuse_is_refused_before_sending(image, change, message):
    fields = {"image": image, "prompt": "Still."} | change
    with pytest.raises(ValidationError, match=message):
        ImageJobRequest(**fields).checked(LIMITS)


def test_an_unconformed_image_is_refused(tmp_path):
    webp = tmp_path / "a.webp"
    Image.new("RGB", (300, 300)).save(webp)
    with pytest.raises(ValidationError, match=r"a.webp: send a JPEG or PNG"):
        ImageJobRequest(webp, "Still.").checked(LIMITS)


@given(st.text(min_size=1, max_size=80))
def test_the_status_query_keeps_any_id_verbatim(job_id):
    query = status_query(job_id)
    assert parse_qs(query, keep_blank_values=True, strict_parsing=True) == {"generation_id": [job_id]}
    assert ":" not in query and "/" not in query.removeprefix("generation_id=")


def test_the_seed_replies_are_read():
    queued = parse_image_generation(
        {"id": SEED_COMPLETED["id"], "status": "queued", "meta": {"usage": {"tokens_used": 420000}}}
    )
    assert queued.status.state is JobState.QUEUED and queued.usage == {"tokens_used": 420000.0}
    assert parse_image_generation({"id": "x", "status": "generating"}).status.state is JobState.RUNNING
    done = parse_image_generation(SEED_COMPLETED)
    assert done.status.state is JobState.SUCCEEDED and done.video == aimlapi.ResultVideo(
        SEED_COMPLETED["video"]["url"], "video/mp4", "output.mp4", 4259218
    )
    other = parse_image_generation(
        {"id": "3yFHGAkECD5RPnpL11mHe", "status": "succeeded", "video": {"url": "https://cdn.aimlapi.com/panda/x.mp4"}}
    )
    assert other.status.state is JobState.SUCCEEDED and other.video.file_size is None
    empty = parse_image_generation({"id": "x", "status": "completed", "video": {"url": "u", "file_size": 0}})
    assert empty.status.state is JobState.RUNNING and empty.status.unconfirmed
    failed = parse_image_generation({"id": "x", "status": "error", "error": {"name": "E", "message": "bad image"}})
    assert (
        failed.status.state is JobState.FAILED and failed.status.error_message == "bad image" and failed.video is None
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["id", "status", "video", "meta", "error", "x"]), json_values) | json_values)
def test_any_reply_is_read_without_raising(body):
    reading = parse_image_generation(body)
    assert reading.video is None or reading.video.url
    assert all(isinstance(v, float) for v in reading.usage.values())


def test_the_pieces_make_a_talking_portrait_against_the_emulator(image, tmp_path):
    req = ImageJobRequest(image, "A presenter.", text="Hello there.", speaker="Emily", resolution="360p").checked(
        LIMITS
    )
    body = image_create_body(req)
    with Emulator(EmulatorSettings(latency_s=0.2, queue_s=0.0)) as emu:
        base = emu.base_urls["aimlapi"] + aimlapi.PATH
        auth = {"Authorization": f"Bearer {emu.env()['AIMLAPI_KEY']}"}
        created = httpx.post(
            base,
            content=body.chunks(),
            timeout=30,
            headers=auth | {"Content-Type": "application/json", "Content-Length": str(body.length)},
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        assert job_id.endswith(":pixverse/v5/image-to-video")
        assert parse_image_generation(created.json()).usage == {"tokens_used": 420000.0}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reading = parse_image_generation(httpx.get(f"{base}?{status_query(job_id)}", headers=auth).json())
            if reading.status.state is JobState.SUCCEEDED:
                break
            time.sleep(0.05)
        assert reading.status.state is JobState.SUCCEEDED and reading.video.file_size > 0
        result = tmp_path / "result.mp4"
        result.write_bytes(httpx.get(reading.video.url).content)
    assert result.stat().st_size == reading.video.file_size
