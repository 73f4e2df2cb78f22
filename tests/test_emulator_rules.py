"""The emulator's pure parts: the streaming body scanner, data URIs, output size, the job clock, media limits."""

from __future__ import annotations

import base64
import json
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.emulator import Faults
from pipeline.emulator.bodies import BodyError, LargeText, decode_data_uri, parse_object
from pipeline.emulator.jobs import Job, JobInput, Outcome, Phase, phase_at
from pipeline.emulator.media import MediaInfo, media_problems, output_size
from pipeline.limits import load_limits

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=40)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _resolved(value):
    if isinstance(value, LargeText):
        with open(value.path, encoding="utf-8", newline="") as f:
            return f.read()
    return value


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    spill_at=st.integers(1, 30),
    read_size=st.integers(1, 9),
)
def test_scanner_reads_what_json_reads(tmp_path, doc, ascii_only, indent, spill_at, read_size):
    path = tmp_path / "body.json"
    path.write_text(json.dumps(doc, ensure_ascii=ascii_only, indent=indent), encoding="utf-8")
    parsed = parse_object(path, tmp_path, spill_at=spill_at, read_size=read_size)
    assert {k: _resolved(v) for k, v in parsed.items()} == doc
    assert all(len(_resolved(v)) > spill_at for v in parsed.values() if isinstance(v, LargeText))


@pytest.mark.parametrize(
    "text", ["[1, 2]", '{"a": 1', '{"a" 1}', '{"a": "x}', '{"a": tru}', '{"a": 1} {}', "", '{"a": "\\q"}']
)
def test_scanner_refuses_what_is_not_one_json_object(tmp_path, text):
    path = tmp_path / "body.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BodyError):
        parse_object(path, tmp_path, read_size=3)


def test_a_huge_string_value_never_sits_in_memory(tmp_path):
    payload = base64.b64encode(bytes(range(256)) * 120_000).decode()  # ~41 MB of base64
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"model": "pixverse/lip-sync", "video_url": "data:video/mp4;base64," + payload}))
    del payload
    tracemalloc.start()
    try:
        doc = parse_object(path, tmp_path)
        decode_data_uri(doc["video_url"], tmp_path / "video.bin")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(doc["video_url"], LargeText) and doc["model"] == "pixverse/lip-sync"
    assert (tmp_path / "video.bin").read_bytes() == bytes(range(256)) * 120_000
    assert peak < 12_000_000  # json.loads alone would need twice the 41 MB


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), wrap=st.sampled_from([None, 76]), in_file=st.booleans())
def test_data_uris_decode_to_their_bytes(tmp_path, data, wrap, in_file):
    b64 = base64.b64encode(data).decode()
    if wrap:
        b64 = "\n".join(b64[i : i + wrap] for i in range(0, len(b64), wrap))
    uri = "data:audio/mpeg;base64," + b64
    source: str | LargeText = uri
    if in_file:
        (tmp_path / "uri.txt").write_text(uri, encoding="utf-8")
        source = LargeText(tmp_path / "uri.txt", len(uri))
    decode_data_uri(source, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data


@pytest.mark.parametrize("uri", ["data:video/mp4;base64", "data:video/mp4;base64,abc", "data:;base64,!!!!"])
def test_broken_data_uris_are_refused(tmp_path, uri):
    with pytest.raises(BodyError):
        decode_data_uri(uri, tmp_path / "out.bin")


@given(width=st.integers(2, 8000), height=st.integers(2, 8000), short=st.sampled_from([360, 540, 720, 1080]))
def test_output_size_is_even_never_upscaled_and_keeps_the_shape(width, height, short):
    w, h = output_size(width, height, short)
    assert w % 2 == 0 and h % 2 == 0
    assert min(w, h) <= max(short, 2) and w <= max(width, 2) and h <= max(height, 2)
    if min(width, height) >= 50 and min(w, h) >= 50:
        assert w / h == pytest.approx(width / height, rel=0.05)


def test_output_size_examples():
    assert output_size(1920, 1080, 720) == (1280, 720)
    assert output_size(1080, 1920, 720) == (720, 1280)
    assert output_size(320, 240, 720) == (320, 240)
    assert output_size(321, 241, 720) == (320, 240)


def _job(outcome: Outcome, queue_s=1.0, run_s=2.0) -> Job:
    return Job(
        provider="fal",
        number=1,
        job_id="j",
        created_at=100.0,
        created_wall=0.0,
        queue_s=queue_s,
        run_s=run_s,
        outcome=outcome,
        inputs=JobInput(Path("v.mp4"), None, "hi", "Auto"),
    )


_ORDER = [Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.MODERATED]


@given(
    outcome=st.sampled_from([Outcome.FAILED, Outcome.MODERATED, Outcome.STUCK]),
    times=st.lists(st.floats(100.0, 200.0), min_size=2, max_size=10),
)
def test_the_clock_only_moves_forward(outcome, times):
    job = _job(outcome)
    phases = [phase_at(job, t) for t in sorted(times)]
    assert [_ORDER.index(p) for p in phases] == sorted(_ORDER.index(p) for p in phases)


def test_phases_on_the_clock():
    assert phase_at(_job(Outcome.FAILED), 100.5) is Phase.QUEUED
    assert phase_at(_job(Outcome.FAILED), 102.0) is Phase.RUNNING
    assert phase_at(_job(Outcome.FAILED), 103.5) is Phase.FAILED
    assert phase_at(_job(Outcome.MODERATED), 103.5) is Phase.MODERATED
    assert phase_at(_job(Outcome.STUCK), 10_000) is Phase.RUNNING
    assert phase_at(_job(Outcome.SUCCEEDED), 10_000) is Phase.RUNNING  # not rendered yet: never success
    canceled = replace(_job(Outcome.SUCCEEDED), canceled=True)
    assert phase_at(canceled, 100.0) is Phase.CANCELED


GOOD_VIDEO = MediaInfo("video", "mp4", 10.0, 1920, 1080, 5_000_000)
GOOD_AUDIO = MediaInfo("audio", "wav", 10.0, None, None, 1_000_000)


@pytest.mark.parametrize(
    "info, role, words",
    [
        (GOOD_VIDEO, "video", None),
        (GOOD_AUDIO, "audio", None),
        (replace(GOOD_VIDEO, container="mov"), "video", None),
        (replace(GOOD_AUDIO, container="mp3"), "audio", None),
        (replace(GOOD_VIDEO, duration_s=30.0), "video", None),
        (replace(GOOD_VIDEO, duration_s=30.5), "video", "over 30s"),
        (replace(GOOD_VIDEO, width=1921), "video", "longest side"),
        (replace(GOOD_VIDEO, width=1080, height=1921), "video", "longest side"),
        (replace(GOOD_VIDEO, size_bytes=50_000_001), "video", "bytes"),
        (replace(GOOD_VIDEO, container="webm"), "video", "not supported"),
        (replace(GOOD_AUDIO, container="m4a"), "audio", "not supported"),
        (replace(GOOD_AUDIO, duration_s=None), "audio", "no duration"),
        (GOOD_AUDIO, "video", "expected a video"),
        (GOOD_VIDEO, "audio", "expected a audio"),
        (MediaInfo(None, "unknown", None, None, None, 10), "video", "no audio or video"),
    ],
)
def test_media_limits(info, role, words):
    problems = media_problems(info, load_limits("pixverse"), role)
    assert (problems == []) if words is None else any(words in p for p in problems)


def test_countdown_faults_fire_exactly_as_often_as_set_across_threads():
    faults = Faults(rate_limit_creates=50)
    fired: list[bool] = []

    def hammer():
        fired.extend(faults.take("rate_limit_creates") for _ in range(100))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(fired) == 50 and faults.rate_limit_creates == 0


def test_clear_restores_a_fault_free_provider():
    faults = Faults(server_errors=2, moderate=True, slow_reply_s=1.0, audio_offset_ms=40, account_error=True)
    faults.clear()
    assert faults == Faults()
